//! Issue 17, item 1: a non-finite loss stops the run with an error naming the step, is never
//! applied and never saved; `--skip-nonfinite N` skips up to N such steps. Driven through the
//! fault hook `H5GPT_FAULT=nan-at-step:K`, which multiplies step K's loss by NaN.

use h5gpt_tests::{bin, fox_shards, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn shards(dir: &Path) -> PathBuf {
    fox_shards(dir, 400, &[])
}

fn train(shards: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(bin("train"))
        .args([
            "--shards",
            &s(shards),
            "--out",
            &s(out),
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
            "--keep-checkpoints",
            "1",
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ])
        .args(extra)
        .env("H5GPT_FAULT", "nan-at-step:3")
        .output()
        .unwrap()
}

/// The f32 tensors of a safetensors file.
fn read_safetensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let range = &info["data_offsets"];
            let (a, b) = (
                range[0].as_u64().unwrap() as usize,
                range[1].as_u64().unwrap() as usize,
            );
            let values = data[a..b]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name.clone(), values)
        })
        .collect()
}

fn logged_steps(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|row| row.get("val_loss").is_none())
        .collect()
}

#[test]
fn train_a_nan_loss_stops_the_run_naming_the_step_and_is_never_saved() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards(dir.path());
    let out = dir.path().join("run");
    let o = train(&shards, &out, &[]);
    assert!(
        !o.status.success(),
        "a NaN loss must fail the run: {}",
        text(&o)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("step 3: non-finite loss") && stderr.contains("--skip-nonfinite"),
        "{}",
        text(&o)
    );
    // Steps 0–2 were fine and logged; step 3 was never saved, and rotation (one kept) did not
    // delete the last finite checkpoint.
    let ckpts = out.join("checkpoints");
    assert!(
        ckpts.join("step-00000002/state.json").is_file(),
        "{}",
        text(&o)
    );
    assert!(!ckpts.join("step-00000004").exists(), "{}", text(&o));
    let steps: Vec<u64> = logged_steps(&out)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 1, 2]);
    for (name, values) in read_safetensors(&ckpts.join("step-00000002/model.safetensors")) {
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
}

#[test]
fn train_skip_nonfinite_skips_the_step_without_applying_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards(dir.path());
    let out = dir.path().join("run");
    let o = train(&shards, &out, &["--skip-nonfinite", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("step     3 | loss NaN")
            && stdout.contains("non-finite: skipped, not applied (1 of at most 1"),
        "{stdout}"
    );
    let rows = logged_steps(&out);
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[3]["skipped"], true, "{:?}", rows[3]);
    assert!(rows
        .iter()
        .all(|r| r["step"] == 3 || r.get("skipped").is_none()));
    // The skipped step changed nothing: AdamW counted 5 steps of the 6, and every weight is
    // finite.
    let last = out.join("checkpoints/step-00000006");
    let optimizer = read_safetensors(&last.join("optimizer.safetensors"));
    let counters: Vec<f32> = optimizer
        .iter()
        .filter(|(name, _)| name.ends_with(".step"))
        .map(|(_, v)| v[0])
        .collect();
    assert!(!counters.is_empty());
    assert!(counters.iter().all(|&c| c == 5.0), "{counters:?}");
    for (name, values) in read_safetensors(&last.join("model.safetensors")) {
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
}
