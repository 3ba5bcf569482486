//! Fault injection for tests: `H5GPT_FAULT=KIND:N` arms the fault point named `KIND` at its N-th
//! occurrence (e.g. `abort-after-shard:2`, `abort-during-save:1`). A testing aid: it lets kill
//! tests stop a process at a known point without depending on timing.
//!
//! The hooks exist only in builds with the `fault-injection` feature
//! (`--features h5gpt-formats/fault-injection`, as `scripts/check.sh` and the end-to-end tests
//! build). Without it [`armed`] is always `None` and no environment variable is read, so a normal
//! build cannot be made to fail on purpose.
//!
//! The fault points (`KIND`):
//! - `abort-after-shard:N`: `preprocess` aborts right after its N-th shard is renamed into place.
//! - `abort-in-dedup:N`: `preprocess --dedup` aborts in its dedup pass after batch N.
//! - `abort-during-save:N`: `train` aborts in the middle of its N-th checkpoint save.
//! - `nan-at-step:N`: `train` makes step N's loss NaN.
//! - `hold-lock:SECONDS`: a lock holder sleeps SECONDS after taking a run or output folder lock.

/// Whether this build has the fault hooks (the `fault-injection` feature).
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// The occurrence at which fault point `kind` fires, if `H5GPT_FAULT` arms it; always `None`
/// without the `fault-injection` feature.
pub fn armed(kind: &str) -> Option<usize> {
    if !ENABLED {
        return None; // a constant: the compiler drops the rest from a normal build
    }
    parse(&std::env::var("H5GPT_FAULT").ok()?, kind)
}

/// The N of `spec` = `KIND:N` when `KIND` is `kind`.
fn parse(spec: &str, kind: &str) -> Option<usize> {
    spec.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_the_kind_and_its_count() {
        assert_eq!(parse("abort-during-save:2", "abort-during-save"), Some(2));
        assert_eq!(parse("abort-during-save:2", "nan-at-step"), None);
        assert_eq!(parse("abort-during-save", "abort-during-save"), None);
        assert_eq!(parse("abort-during-save:x", "abort-during-save"), None);
    }
}
