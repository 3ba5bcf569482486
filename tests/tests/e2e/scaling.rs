//! A real scaling-law sweep end to end, as a user runs it: preprocess the generated small
//! language with a val/ split, `plan sweep` (18 tiny models of 4 budgets, 4 to 65 steps each),
//! the sweep's own script, `plan fit`. Sanity checks only: the runs are far too small for the law to mean
//! much, but everything must be finite, the exponents positive and E below every run's loss.

use crate::preprocess::s;
use h5gpt_tests::{bin, run, small_language, text};
use std::process::Command;

#[test]
fn sweep_train_fit_on_the_small_language() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, small_language::jsonl(1500, 120, 5)).unwrap();
    let shards = dir.path().join("shards");
    let o = run(
        "preprocess",
        &[
            "--input",
            s(&corpus),
            "--out",
            s(&shards),
            "--seq-len",
            "32",
            "--val-fraction",
            "0.05",
            "--train-tokenizer",
            "bpe",
            "--vocab-size",
            "300",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    let sweep = dir.path().join("sweep");
    let o = run(
        "plan",
        &[
            "sweep",
            "--flops",
            "2e8,4e8,8e8,1.6e9",
            "--ratio",
            "0.5",
            "--spread",
            "8",
            "--shards",
            s(&shards),
            "--out",
            s(&sweep),
            "--batch-tokens",
            "256",
            "--gpu",
            "h100",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("run_all.sh") && table.contains("6ND"),
        "{table}"
    );
    // Times from the GPU's peak.
    assert!(
        table.contains("at 40% MFU of h100") && !table.contains("total -"),
        "{table}"
    );

    // The sweep's own script, with this build's train.
    let o = Command::new("sh")
        .arg(sweep.join("run_all.sh"))
        .env("TRAIN", bin("train"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("final val loss")
            .count(),
        std::fs::read_dir(sweep.join("configs")).unwrap().count(),
        "{}",
        text(&o)
    );

    let o = run(
        "plan",
        &[
            "fit",
            s(&sweep),
            "--json",
            "--flops",
            "1e10",
            "--bootstrap",
            "20",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let law = &doc["fit"]["law"];
    let value = |k: &str| law[k]["value"].as_f64().unwrap();
    for k in ["E", "A", "B", "alpha", "beta"] {
        assert!(value(k).is_finite(), "{k}: {law}");
    }
    assert!(value("alpha") > 0.0 && value("beta") > 0.0, "{law}");
    let losses: Vec<f64> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 15, "{} runs", losses.len());
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    let smallest = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        value("E") < smallest,
        "E {} vs smallest loss {smallest}",
        value("E")
    );
    let yours = &doc["allocations"][0]["yours"];
    assert!(yours["params"].as_f64().unwrap().is_finite(), "{yours}");
    assert!(sweep.join("scaling.png").is_file());
    // Every run recorded what it trained on, and the same thing.
    let fp = &doc["runs"][0]["data"];
    assert!(fp["train"].is_string(), "{fp}");
    assert!(doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| &r["data"] == fp));
}
