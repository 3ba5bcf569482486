//! `plan sweep` and `plan fit` without training: sweeps planned on synthetic shards (their
//! configs read back as `train` options), and fits of runs written by hand (a `state.json` per
//! run with a loss from a known law), with the clear errors.

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

use h5gpt_core::config::GptConfig;
use h5gpt_core::plan::fit::Law;
use h5gpt_core::plan::sweep::{design, write, RunSettings, SweepSpec};
use h5gpt_formats::run::{CheckpointState, DataFingerprint, FinalEval, STATE_VERSION};
use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::Compression;
use std::path::Path;
use std::process::{Command, Output};

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_h5gpt"))
        .arg("plan")
        .args(args)
        .output()
        .expect("plan runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A law of the size of tiny models: what the fabricated runs' losses follow.
const TRUTH: Law = Law {
    e: 1.8,
    a: 60.0,
    b: 400.0,
    alpha: 0.4,
    beta: 0.35,
};

fn fingerprint(train: &str) -> DataFingerprint {
    DataFingerprint {
        tokenizer: "gpt2".into(),
        seq_len: 64,
        train: train.into(),
        val: Some("val".into()),
    }
}

/// Writes `run/checkpoints/step-N/state.json` as `train` would after `steps` steps.
fn fake_run(
    run: &Path,
    model: GptConfig,
    steps: usize,
    global_batch: usize,
    loss: Option<f64>,
    data: DataFingerprint,
) {
    let dir = run.join("checkpoints").join(format!("step-{steps:08}"));
    std::fs::create_dir_all(&dir).unwrap();
    let state = CheckpointState {
        step: steps,
        position: (steps * global_batch) as u64,
        seed: 1337,
        global_batch,
        seq_len: 64,
        held_out: 0,
        model,
        tokenizer: "gpt2".into(),
        eos_id: Some(50256),
        blend: None,
        version: STATE_VERSION,
        files: Default::default(),
        data: Some(data),
        final_eval: loss.map(|loss| FinalEval {
            step: steps,
            loss,
            rows: 100,
            tokens: 6400,
        }),
    };
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
}

fn spec(budgets: Vec<f64>) -> SweepSpec {
    SweepSpec {
        budgets,
        models_per_budget: 5,
        spread: 16.0,
        centre_ratio: 20.0,
        seq_len: 64,
        vocab_size: 512,
        batch_rows: 16,
        corpus_tokens: 1 << 40,
        max_epochs: 1.0,
    }
}

/// A sweep folder whose runs are "trained": each has a final loss from [`TRUTH`] times a
/// little deterministic noise.
fn fake_sweep(out: &Path, budgets: Vec<f64>) -> usize {
    let s = spec(budgets);
    let runs = design(&s).unwrap();
    let settings = RunSettings {
        shards: out.join("shards"),
        ..RunSettings::default()
    };
    let manifest = write(out, &s, &settings, runs, "test").unwrap();
    for (i, r) in manifest.runs.iter().enumerate() {
        let noise = 1.0 + 0.002 * ((i as f64 * 2.3).sin());
        let loss = TRUTH.loss(r.params as f64, r.tokens) * noise;
        fake_run(
            &r.out,
            r.model,
            r.steps,
            16,
            Some(loss),
            fingerprint("aaaa"),
        );
    }
    manifest.runs.len()
}

#[test]
fn fit_of_a_sweep_recovers_the_law_and_draws_scaling_png() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    let n = fake_sweep(&sweep, vec![1e13, 4e13, 1.6e14]);
    assert!(n >= 15, "{n} runs");
    let s = sweep.to_str().unwrap();
    let o = plan(&[
        "fit",
        s,
        "--json",
        "--flops",
        "1e15",
        "--predict",
        "--model",
        "gpt2-medium",
        "--tokens",
        "9e9",
        "--bootstrap",
        "40",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let law = &doc["fit"]["law"];
    let alpha = law["alpha"]["value"].as_f64().unwrap();
    let beta = law["beta"]["value"].as_f64().unwrap();
    let e = law["E"]["value"].as_f64().unwrap();
    assert!((alpha - TRUTH.alpha).abs() < 0.1, "{law}");
    assert!((beta - TRUTH.beta).abs() < 0.1, "{law}");
    assert!((e - TRUTH.e).abs() < 0.2, "{law}");
    let interval = &law["alpha"]["interval"];
    assert!(interval["lo"].as_f64().unwrap() <= interval["hi"].as_f64().unwrap());
    assert_eq!(doc["runs"].as_array().unwrap().len(), n);
    // Approach 2: a minimum per budget, and N_opt growing with C.
    let minima = doc["approach2"]["minima"].as_array().unwrap();
    assert_eq!(minima.len(), 3);
    assert!(
        doc["approach2"]["params"]["exponent"].as_f64().unwrap() > 0.0,
        "{}",
        doc["approach2"]
    );
    // Allocation beside the published fits, and the prediction.
    let a = &doc["allocations"][0];
    assert_eq!(a["given"], "flops");
    for key in ["yours", "chinchilla", "epoch"] {
        let al = &a[key];
        let c = 6.0 * al["params"].as_f64().unwrap() * al["tokens"].as_f64().unwrap();
        assert!((c / 1e15 - 1.0).abs() < 1e-6, "{key}: {al}");
    }
    let p = &doc["prediction"];
    assert_eq!(p["model"], "gpt2-medium");
    let predicted = p["yours"]["value"].as_f64().unwrap();
    assert!(
        (predicted - TRUTH.loss(p["params_non_embedding"].as_f64().unwrap(), 9e9)).abs() < 0.1,
        "{p}"
    );
    assert!(sweep.join("scaling.png").is_file());
    // The text report says the same.
    let o = plan(&["fit", s, "--bootstrap", "10", "--no-plot"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Approach 3") && out.contains("Approach 2") && out.contains("N_opt ∝ C^"),
        "{out}"
    );
}

#[test]
fn fit_asks_for_fifteen_runs_and_says_where_to_add_them() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    let n = fake_sweep(&sweep, vec![1e13, 4e13]);
    assert!(n < 15);
    let o = plan(&["fit", sweep.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{n} runs")) && err.contains("at least 15"),
        "{err}"
    );
    // One line per missing run, each with its C, N and D.
    assert_eq!(
        err.matches("non-embedding parameters, D ≈").count(),
        15 - n,
        "{err}"
    );
}

#[test]
fn fit_refuses_runs_of_different_data_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    fake_sweep(&sweep, vec![1e13, 4e13, 1.6e14]);
    let other = dir.path().join("other-run");
    fake_run(
        &other,
        GptConfig::tiny(512, 64),
        10,
        16,
        Some(3.0),
        fingerprint("bbbb"),
    );
    let o = plan(&["fit", sweep.to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different data"), "{err}");
    assert!(
        err.contains("other-run") && err.contains("aaaa vs bbbb"),
        "{err}"
    );
}

#[test]
fn fit_refuses_runs_without_a_final_validation_loss_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    fake_sweep(&sweep, vec![1e13, 4e13, 1.6e14]);
    let unfinished = dir.path().join("unfinished");
    fake_run(
        &unfinished,
        GptConfig::tiny(512, 64),
        10,
        16,
        None,
        fingerprint("aaaa"),
    );
    let o = plan(&["fit", sweep.to_str().unwrap(), unfinished.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("without a final validation loss") && err.contains("unfinished"),
        "{err}"
    );
    assert!(err.contains("--final-eval"), "{err}");
    // Not a run at all.
    let o = plan(&["fit", dir.path().to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a run folder"),
        "{}",
        text(&o)
    );
}

/// Synthetic shards with train/ and val/: `rows` training rows of 64 tokens.
fn split_shards(dir: &Path, rows: usize) {
    for (sub, n) in [("train", rows), ("val", 32)] {
        let spec = SyntheticSpec {
            examples: n,
            seq_len: 64,
            examples_per_shard: 4096,
            compression: Compression::None,
            partial_tokens: None,
        };
        write_synthetic(&dir.join(sub), spec).unwrap();
    }
}

/// The sweep's CLI: one global batch, μP's base width the narrowest model's, a config and a
/// script line per run. (That `train` reads the configs as written: the trainer's engine test
/// `sweep_configs`.)
#[test]
fn sweep_writes_a_config_and_a_script_line_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    split_shards(&shards, 4000);
    let out = dir.path().join("sweep");
    let o = plan(&[
        "sweep",
        "--flops",
        "1e12,3e12",
        "--shards",
        shards.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--time-steps",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = doc["runs"].as_array().unwrap();
    assert!(runs.len() >= 6, "{} runs", runs.len());
    let script = std::fs::read_to_string(out.join("run_all.sh")).unwrap();
    assert_eq!(script.matches("--config").count(), runs.len());
    let widths: Vec<u64> = runs
        .iter()
        .map(|r| r["model"]["n_embd"].as_u64().unwrap())
        .collect();
    assert_eq!(widths.iter().min(), doc["mup_base_width"].as_u64().as_ref());
    // 4000 rows: 32 rows per step would leave an epoch 125 steps; train keeps it.
    assert_eq!(doc["batch_rows"], 32);
    for run in runs {
        let config = std::fs::read_to_string(run["config"].as_str().unwrap()).unwrap();
        assert!(
            config.contains("final_eval = true") && config.contains("mup = true"),
            "{config}"
        );
        assert!(config.contains("total_batch_tokens = 2048"), "{config}");
    }
}

#[test]
fn sweep_refuses_to_repeat_data_and_needs_a_val_split() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    split_shards(&shards, 400);
    let o = plan(&[
        "sweep",
        "--flops",
        "1e12,1e14",
        "--shards",
        shards.to_str().unwrap(),
        "--out",
        dir.path().join("sweep").to_str().unwrap(),
        "--time-steps",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("repeat data") && err.contains("--max-epochs 1"),
        "{err}"
    );
    assert!(err.contains("the sweep needs"), "{err}");
    assert!(
        !dir.path().join("sweep").exists(),
        "a refused sweep writes nothing"
    );
    let plain = dir.path().join("plain");
    write_synthetic(
        &plain,
        SyntheticSpec {
            examples: 100,
            seq_len: 64,
            examples_per_shard: 100,
            compression: Compression::None,
            partial_tokens: None,
        },
    )
    .unwrap();
    let o = plan(&[
        "sweep",
        "--flops",
        "1e11",
        "--shards",
        plain.to_str().unwrap(),
        "--time-steps",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("train/ and val/"),
        "{}",
        text(&o)
    );
}
