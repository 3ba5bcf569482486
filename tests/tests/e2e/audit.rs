//! Issue 13: the sample audit. A real (tiny) run on two data-parallel ranks, resumed once on
//! one rank, records what its loaders fed (the test-only hook `H5GPT_RECORD_FED`); `inspect
//! --run` recomputes the same ids from the run's own records, proves the epochs, and finds
//! text.

use crate::train_dist::{p, run_ranks_with};
use h5gpt_tests::{run, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// (rank, step start position, micro-batch) → ids, from the hook's files.
type Fed = BTreeMap<(usize, u64, usize), Vec<u64>>;

fn recorded(dir: &Path) -> Fed {
    let mut fed = Fed::new();
    for rank in 0..2 {
        let path = dir.join(format!("fed-rank{rank}.jsonl"));
        for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let ids = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap());
            let key = (
                rank,
                v["step_start"].as_u64().unwrap(),
                v["micro"].as_u64().unwrap() as usize,
            );
            assert!(
                fed.insert(key, ids.collect()).is_none(),
                "{key:?} fed twice"
            );
        }
    }
    fed
}

fn inspect_json(args: &[&str]) -> Value {
    let o = run("inspect", &[args, &["--json"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn train_args(shards: &Path, out: &Path, steps: usize) -> Vec<String> {
    let steps = steps.to_string();
    [
        "--shards",
        &p(shards),
        "--out",
        &p(out),
        "--model",
        "tiny",
        "--micro-batch",
        "2",
        "--total-batch-tokens",
        "64",
        "--max-steps",
        &steps,
        "--save-every",
        "4",
        "--keep-checkpoints",
        "1",
        "--eval-every",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn audit_matches_what_the_loader_fed_across_a_resume_on_another_world_size() {
    let dir = tempfile::tempdir().unwrap();
    // About 20 rows of 32 tokens: the run goes through a few epochs.
    let corpus = dir.path().join("corpus.txt");
    let body: String = (0..110)
        .map(|i| format!("alpha{} beta{} ", i % 13, (i * 7) % 11))
        .collect();
    std::fs::write(&corpus, body).unwrap();
    let shards = dir.path().join("shards");
    let o = run(
        "preprocess",
        &[
            "--input",
            &p(&corpus),
            "--out",
            &p(&shards),
            "--seq-len",
            "32",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = dir.path().join("run");
    let record = dir.path().join("fed");
    std::fs::create_dir_all(&record).unwrap();
    let env = [("H5GPT_RECORD_FED", record.to_str().unwrap())];
    // Two ranks for 12 steps, then one rank on to 25 (checkpoint 12 is the resume point).
    run_ranks_with(&train_args(&shards, &out, 12), 2, &env);
    run_ranks_with(&train_args(&shards, &out, 25), 1, &env);
    let fed = recorded(&record);

    let segments = std::fs::read_to_string(out.join("segments.jsonl")).unwrap();
    assert_eq!(segments.lines().count(), 2, "{segments}");

    // Every step, rank and micro-batch: inspect says what the loader fed.
    let mut computed = Fed::new();
    for step in 0..25 {
        let report = inspect_json(&["--run", &p(&out), "--step", &step.to_string()]);
        let world = report["world_size"].as_u64().unwrap();
        assert_eq!(world, if step < 12 { 2 } else { 1 }, "step {step}");
        let position = report["position"].as_u64().unwrap();
        for feed in report["feeds"].as_array().unwrap() {
            let ids = feed["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect();
            let key = (
                feed["rank"].as_u64().unwrap() as usize,
                position,
                feed["micro"].as_u64().unwrap() as usize,
            );
            computed.insert(key, ids);
        }
    }
    assert!(fed.len() > 25, "the hook recorded {} feeds", fed.len());
    assert_eq!(computed, fed);
    // A step the run did not take is refused.
    let o = run("inspect", &["--run", &p(&out), "--step", "25"]);
    assert!(!o.status.success(), "{}", text(&o));

    // Every row exactly once per epoch, across the resume.
    let report = inspect_json(&["--run", &p(&out), "--check-epochs"]);
    assert_eq!(report["ok"], true, "{report}");
    let set = &report["sets"][0];
    let rows = set["rows"].as_u64().unwrap();
    assert_eq!(set["reads"].as_u64().unwrap(), 50);
    assert_eq!(set["complete_epochs"].as_u64().unwrap(), 50 / rows);
    assert_eq!(set["partial_epoch_rows"].as_u64().unwrap(), 50 % rows);
    assert_eq!(report["world_sizes"], serde_json::json!([2, 1]));

    // --find: text that spans data rows 0 and 1 is reported in both, at the steps that read
    // them.
    let shown = inspect_json(&[&p(&shards), "--show", "2", "--decode"]);
    let texts: Vec<&str> = (0..2)
        .map(|i| shown["rows"][i]["text"].as_str().unwrap())
        .collect();
    let needle = format!("{}{}", &texts[0][texts[0].len() - 7..], &texts[1][..7]);
    let found = inspect_json(&["--run", &p(&out), "--find", &needle]);
    let steps_of = |id: u64| -> Vec<u64> {
        let mut steps: Vec<u64> = (0..25u64)
            .filter(|&step| {
                fed.iter()
                    .any(|((_, start, _), ids)| *start / 2 == step && ids.contains(&id))
            })
            .collect();
        steps.dedup();
        steps
    };
    let span = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["rows"][0]["id"] == 0 && m["rows"][1]["id"] == 1)
        .unwrap_or_else(|| panic!("no span over rows 0 and 1 for {needle:?}: {found}"));
    assert_eq!(span["steps"][0], serde_json::json!(steps_of(0)));
    assert_eq!(span["steps"][1], serde_json::json!(steps_of(1)));
    assert!(!steps_of(0).is_empty());

    // A resume recorded at the wrong stream position is caught.
    let tampered: String = segments
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if i == 1 {
                v["position"] = (v["position"].as_u64().unwrap() + 1).into();
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(out.join("segments.jsonl"), tampered).unwrap();
    let o = run("inspect", &["--run", &p(&out), "--check-epochs"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAILED"),
        "{}",
        text(&o)
    );
}
