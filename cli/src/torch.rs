//! The commands that need libtorch: `h5gpt train|sample|eval|export …` execs `h5gpt-torch
//! train|sample|eval|export …` (git's dispatch, to one executable). It is looked for in
//! `$H5GPT_TORCH` when set, then beside this executable (`target/release/`, or where `cargo
//! install` put both), then on `PATH`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The subcommands `h5gpt-torch` runs.
pub const COMMANDS: [&str; 4] = ["train", "sample", "eval", "export"];

/// The executable's name.
const TORCH: &str = "h5gpt-torch";

/// Where `h5gpt-torch` is, or why it was not found (every place looked at).
fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("H5GPT_TORCH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("H5GPT_TORCH={}: no such file", path.display()))
        };
    }
    let mut looked = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.canonicalize().ok())
        .and_then(|exe| exe.parent().map(PathBuf::from))
    {
        let beside = dir.join(TORCH);
        if beside.is_file() {
            return Ok(beside);
        }
        looked.push(dir.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(TORCH);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        looked.push("PATH".into());
    }
    Err(format!("{TORCH} is not in {}", looked.join(" nor on ")))
}

/// The hint for a missing `h5gpt-torch`.
const HINT: &str = "---> HINT: build it beside h5gpt (`cargo build --release --workspace --bins`, \
     after `source scripts/env.sh`), or install both (`cargo install --path cli` and \
     `cargo install --path train`), or set H5GPT_TORCH=/path/to/h5gpt-torch";

/// Replaces this process by `h5gpt-torch ARGS…` (`args[0]` is the subcommand); returns only
/// when it cannot: exit 1 with what is missing.
pub fn run(args: &[OsString]) -> ExitCode {
    let command = args[0].to_string_lossy().into_owned();
    let torch = match find() {
        Ok(path) => path,
        Err(why) => {
            eprintln!(
                "h5gpt {command}: error: `{command}` runs on libtorch, through {TORCH}, and {why}\n{HINT}"
            );
            return ExitCode::from(h5gpt_formats::exit::RUNTIME);
        }
    };
    let error = Command::new(&torch).args(args).exec();
    eprintln!(
        "h5gpt {command}: error: cannot run {}: {error}\n{HINT}",
        torch.display()
    );
    ExitCode::from(h5gpt_formats::exit::RUNTIME)
}

/// What `h5gpt --version` prints: this version, then where `h5gpt-torch` is, the libtorch it
/// runs on and whether it has CUDA; or why that is not known.
pub fn version_report() -> String {
    let mut report = format!("h5gpt {}\n", env!("CARGO_PKG_VERSION"));
    match find() {
        Err(why) => report.push_str(&format!(
            "{TORCH}: not found ({why}): train, sample, eval and export are unavailable\n"
        )),
        Ok(path) => {
            report.push_str(&format!("{TORCH}: {}\n", path.display()));
            match Command::new(&path).arg("version-info").output() {
                Ok(out) if out.status.success() => {
                    report.push_str(&String::from_utf8_lossy(&out.stdout));
                }
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    report.push_str(&format!(
                        "libtorch: not loadable ({})\n",
                        stderr.trim().lines().next().unwrap_or("no message")
                    ));
                }
                Err(e) => report.push_str(&format!("libtorch: cannot run {TORCH}: {e}\n")),
            }
        }
    }
    report
}
