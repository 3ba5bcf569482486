//! `preprocess` → `train` end to end, with a kill in the middle of a checkpoint save.

use h5gpt_tests::{bin, run, text};
use std::process::Command;

#[test]
fn train_survives_a_kill_during_a_checkpoint_save() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    let text_body = "the quick brown fox jumps over the lazy dog. ".repeat(400);
    std::fs::write(&corpus, text_body).unwrap();
    let shards = dir.path().join("shards");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
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
    let args = [
        "--shards",
        &p(&shards),
        "--out",
        &p(&out),
        "--model",
        "tiny",
        "--micro-batch",
        "4",
        "--total-batch-tokens",
        "256",
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--device",
        "cpu",
    ];
    let o = Command::new(bin("train"))
        .args(args)
        .env("H5GPT_FAULT", "abort-during-save:2")
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "the fault hook must kill the run: {}",
        text(&o)
    );
    let ckpts = out.join("checkpoints");
    assert!(
        ckpts.join("step-00000002/state.json").is_file(),
        "the first checkpoint is complete"
    );
    assert!(
        !ckpts.join("step-00000004").exists(),
        "the interrupted save never appears complete"
    );

    let o = Command::new(bin("train")).args(args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("resuming from") && stdout.contains("(step 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("step     5 | loss"), "{stdout}");
    assert!(ckpts.join("step-00000006/state.json").is_file());
    assert!(
        !ckpts.join("step-00000002").exists(),
        "only the last two checkpoints are kept"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (0..6).collect::<Vec<_>>());
}
