//! The libtorch binaries link libtorch, and libtorch_cuda where this libtorch has it (the build
//! script keeps it against `--as-needed`, or CUDA is never registered).

use std::path::Path;
use std::process::Command;

/// The shared libraries `ldd` lists for `binary`; `None` without `ldd`.
fn ldd(binary: &Path) -> Option<String> {
    let out = Command::new("ldd").arg(binary).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn libtorch_binaries_keep_libtorch_cuda() {
    if ldd(Path::new(env!("CARGO_BIN_EXE_train"))).is_none() {
        eprintln!("no ldd here; skipped");
        return;
    }
    for bin in [
        env!("CARGO_BIN_EXE_train"),
        env!("CARGO_BIN_EXE_h5gpt-torch"),
        env!("CARGO_BIN_EXE_h5gpt-export"),
    ] {
        let libs = ldd(Path::new(bin)).unwrap();
        let cpu = libs
            .lines()
            .find(|l| l.contains("libtorch_cpu.so"))
            .unwrap_or_else(|| panic!("{bin} links no libtorch_cpu:\n{libs}"));
        let dir = cpu
            .split("=>")
            .nth(1)
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| Path::new(p).parent())
            .expect("ldd names libtorch_cpu's path");
        if dir.join("libtorch_cuda.so").exists() {
            assert!(libs.contains("libtorch_cuda.so"), "{bin}:\n{libs}");
        }
    }
}
