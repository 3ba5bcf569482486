//! `h5gpt` with `h5gpt-torch` beside it: `--version` reports the libtorch it runs on, and the
//! docs keep everything the old README said (`scripts/docs_nothing_lost.py`).

use h5gpt_tests::{run, text};
use std::process::Command;

#[test]
fn version_names_the_libtorch_and_cuda() {
    let o = run("h5gpt", &["--version"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("h5gpt "), "{stdout}");
    assert!(lines[1].starts_with("h5gpt-torch: /"), "{stdout}");
    let torch = lines
        .iter()
        .find_map(|l| l.strip_prefix("libtorch: "))
        .unwrap_or_else(|| panic!("no libtorch line: {stdout}"));
    assert!(
        torch.split('.').take(2).all(|n| n.parse::<u32>().is_ok()),
        "{stdout}"
    );
    assert!(lines.iter().any(|l| l.starts_with("cuda: ")), "{stdout}");
}

#[test]
fn the_docs_keep_every_flag_file_and_heading_of_the_old_readme() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let o = Command::new("python3")
        .arg("scripts/docs_nothing_lost.py")
        .current_dir(root)
        .output()
        .expect("python3 runs");
    assert!(o.status.success(), "{}", text(&o));
}
