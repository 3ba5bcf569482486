//! The crate graph ARCHITECTURE.md draws, read from `cargo metadata`: `h5gpt` (cli) → {core,
//! preprocess, formats}, `train` → {core, tokenizer, formats}, `preprocess` → {tokenizer,
//! formats}; `h5gpt`, `core`, `preprocess`, `tokenizer` and `formats` reach neither `tch` nor
//! `torch-sys`, and `formats` depends on no other h5gpt crate.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// This machine's target triple, as rustc names it (`host:` in `rustc -vV`).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// The resolved graph for this machine's platform (offline: the build has fetched every crate
/// it needs, and only those): package name → the names of its normal (non-dev, non-build)
/// dependencies.
fn normal_dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(host_triple())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let name_of: BTreeMap<&str, &str> = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    doc["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .expect("dep_kinds")
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| name_of[d["pkg"].as_str().unwrap()].to_string())
                .collect();
            (name_of[node["id"].as_str().unwrap()].to_string(), deps)
        })
        .collect()
}

/// Every package `root` reaches through normal dependencies, itself excluded.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        for dep in &graph[&name] {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

/// The h5gpt crates among `names`.
fn ours(names: &BTreeSet<String>) -> BTreeSet<&str> {
    names
        .iter()
        .filter(|n| n.starts_with("h5gpt-") || *n == "h5gpt")
        .map(String::as_str)
        .collect()
}

#[test]
fn the_crate_graph_is_the_one_architecture_md_draws() {
    let graph = normal_dependency_graph();
    assert_eq!(
        ours(&graph["h5gpt-train"]),
        BTreeSet::from(["h5gpt-core", "h5gpt-tokenizer", "h5gpt-formats"]),
        "train's h5gpt dependencies"
    );
    assert_eq!(
        ours(&graph["h5gpt-preprocess"]),
        BTreeSet::from(["h5gpt-tokenizer", "h5gpt-formats"]),
        "preprocess's h5gpt dependencies"
    );
    assert_eq!(
        ours(&graph["h5gpt"]),
        BTreeSet::from(["h5gpt-core", "h5gpt-preprocess", "h5gpt-formats"]),
        "the h5gpt command's h5gpt dependencies"
    );
    assert_eq!(
        ours(&graph["h5gpt-formats"]),
        BTreeSet::new(),
        "formats depends on no other h5gpt crate"
    );
    for torch_free in [
        "h5gpt",
        "h5gpt-core",
        "h5gpt-preprocess",
        "h5gpt-tokenizer",
        "h5gpt-formats",
    ] {
        let reach = reachable(&graph, torch_free);
        for torch in ["tch", "torch-sys"] {
            assert!(
                !reach.contains(torch),
                "{torch_free} reaches {torch}: {reach:?}"
            );
        }
    }
    // The check can fail: train itself reaches libtorch.
    assert!(reachable(&graph, "h5gpt-train").contains("torch-sys"));
}
