//! The `h5gpt` command on its own: it links no libtorch, runs `preprocess` with none on the
//! library path, says what is missing when `h5gpt-torch` is not there, and generates
//! completions and man pages from the commands' declarations.

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `h5gpt` copied alone into `dir`: no `h5gpt-torch` beside it.
fn lone_h5gpt(dir: &Path) -> PathBuf {
    let exe = dir.join("h5gpt");
    std::fs::copy(env!("CARGO_BIN_EXE_h5gpt"), &exe).unwrap();
    exe
}

/// Runs `exe` with `args`, with no libtorch on the library path, no `h5gpt-torch` on `PATH`
/// and no `H5GPT_TORCH`.
fn run_bare(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .env("LD_LIBRARY_PATH", "")
        .env("PATH", "/usr/bin:/bin")
        .env_remove("H5GPT_TORCH")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn preprocess_and_inspect_run_without_libtorch() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = lone_h5gpt(tmp.path());
    let corpus = tmp.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let shards = tmp.path().join("shards");
    let o = run_bare(
        &exe,
        &[
            "preprocess",
            "--input",
            corpus.to_str().unwrap(),
            "--out",
            shards.to_str().unwrap(),
            "--seq-len",
            "32",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(shards.join("data_params.json").is_file());
    let o = run_bare(&exe, &["inspect", shards.to_str().unwrap(), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("rows"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_libtorch_command_without_h5gpt_torch_says_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = lone_h5gpt(tmp.path());
    for command in ["train", "sample", "eval", "export"] {
        let o = run_bare(&exe, &[command, "--help"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(&format!("h5gpt {command}: error"))
                && stderr.contains("h5gpt-torch is not in")
                && stderr.contains("HINT"),
            "{stderr}"
        );
    }
    let o = Command::new(&exe)
        .args(["train", "--help"])
        .env("H5GPT_TORCH", tmp.path().join("nowhere"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("H5GPT_TORCH="));
    // --version still answers, and says what it could not find.
    let o = run_bare(&exe, &["--version"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with(&format!("h5gpt {}\n", env!("CARGO_PKG_VERSION")))
            && stdout.contains("h5gpt-torch: not found"),
        "{stdout}"
    );
}

#[test]
fn completions_cover_every_command_and_its_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(env!("CARGO_BIN_EXE_h5gpt"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        // A flag of each command, declared where the command parses it.
        for flag in [
            "total-batch-tokens",
            "dedup-threshold",
            "max-new-tokens",
            "per-item",
            "check-epochs",
            "peak-tflops",
        ] {
            assert!(script.contains(flag), "{shell}: no --{flag}");
        }
    }
    let o = Command::new(env!("CARGO_BIN_EXE_h5gpt"))
        .args(["completions", "powershell-9"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn man_writes_a_page_per_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let o = Command::new(env!("CARGO_BIN_EXE_h5gpt"))
        .arg("man")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for (page, flag) in [
        ("h5gpt", "preprocess"),
        ("h5gpt-preprocess", "dedup\\-threshold"),
        ("h5gpt-inspect", "check\\-epochs"),
        ("h5gpt-train", "total\\-batch\\-tokens"),
        ("h5gpt-sample", "max\\-new\\-tokens"),
        ("h5gpt-eval", "per\\-item"),
        ("h5gpt-export", "checkpoint"),
        ("h5gpt-plan", "peak\\-tflops"),
        ("h5gpt-completions", "shell"),
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1"))).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
        assert!(text.contains(flag), "{page}: no {flag}");
    }
}

#[test]
fn the_help_shows_every_command() {
    let o = Command::new(env!("CARGO_BIN_EXE_h5gpt"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let help = String::from_utf8_lossy(&o.stdout);
    for command in [
        "preprocess",
        "inspect",
        "train",
        "sample",
        "eval",
        "export",
        "plan",
        "completions",
        "man",
    ] {
        assert!(help.contains(&format!("  {command} ")), "{command}: {help}");
    }
    // No command is a usage error that shows the help.
    let o = Command::new(env!("CARGO_BIN_EXE_h5gpt")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}
