//! Panics: tch raises libtorch's errors (a shape mismatch, CUDA out of memory) as panics,
//! which the trainer catches and turns into errors with hints. Those are expected and should
//! print nothing of their own; any other panic is a bug and must still say where it happened.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// How many [`catch_libtorch`] calls this thread is inside.
    static CATCHING: Cell<usize> = const { Cell::new(0) };
}

/// The message of a caught panic (a `String` or `&str` payload; anything else is unknown).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// Whether a panic raised at `file` is a libtorch error tch raised (its generated wrappers and
/// `nn` modules unwrap libtorch's errors inside the tch crate).
pub fn raised_by_tch(file: &str) -> bool {
    file.contains("/tch-") || file.starts_with("tch-")
}

/// Installs the panic hook of a binary that catches libtorch errors with [`catch_libtorch`]:
/// such a panic, raised by tch inside it, prints nothing (the caller reports it as an error);
/// every other panic is reported by the previous (default) hook, with its file:line.
pub fn install_hook() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let catching = CATCHING.with(Cell::get) > 0;
        let from_tch = info.location().is_some_and(|l| raised_by_tch(l.file()));
        if !(catching && from_tch) {
            report(info);
        }
    }));
}

/// Runs `f`, returning the message of a panic it raises as the error. Under
/// [`install_hook`], a libtorch error tch raises in it prints nothing.
pub fn catch_libtorch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    result.map_err(|payload| panic_message(payload.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tch_sources_count_as_libtorch_errors() {
        assert!(raised_by_tch(
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tch-0.24.0/src/wrappers/tensor_generated.rs"
        ));
        assert!(raised_by_tch("tch-0.24.0/src/nn/linear.rs"));
        assert!(!raised_by_tch("train/src/trainer.rs"));
        assert!(!raised_by_tch("/work/h5gpt/train/src/model.rs"));
    }

    #[test]
    fn a_caught_panic_becomes_its_message() {
        assert_eq!(catch_libtorch(|| 7), Ok(7));
        assert_eq!(
            catch_libtorch(|| -> () { panic!("bad {}", 1) }),
            Err("bad 1".to_string())
        );
        assert_eq!(
            catch_libtorch(|| -> () { std::panic::panic_any(3u8) }),
            Err("unknown panic".to_string())
        );
        // Nesting counts back down to zero.
        assert_eq!(CATCHING.with(Cell::get), 0);
    }
}
