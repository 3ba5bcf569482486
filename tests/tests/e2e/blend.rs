//! Issue 13: weighted blends, `train --shards A B --weights 0.7 0.3` / `[[blend]]`: the loader
//! feeds what the audit computes, a resume with the same weights is bit-exact, other weights
//! need `--reweight`, every set keeps its own epochs, and evaluation reports each set.

use crate::train_dist::{p, run_ranks_with};
use h5gpt_tests::{bin, run, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn preprocess(input: &Path, out: &Path, extra: &[&str]) {
    let o = run(
        "preprocess",
        &[
            &["--input", &p(input), "--out", &p(out), "--seq-len", "32"],
            extra,
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

fn train_args(out: &Path, steps: usize, blend: &[String]) -> Vec<String> {
    let mut args: Vec<String> = blend.to_vec();
    let steps = steps.to_string();
    args.extend(
        [
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
            "--warmup-steps",
            "2",
            "--save-every",
            "10",
            "--keep-checkpoints",
            "5",
            "--eval-every",
            "10",
            "--eval-batches",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

fn metrics(out: &Path) -> (BTreeMap<u64, f64>, Vec<Value>) {
    let mut losses = BTreeMap::new();
    let mut evals = Vec::new();
    for line in std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(loss) = v["loss"].as_f64() {
            losses.insert(v["step"].as_u64().unwrap(), loss);
        } else {
            evals.push(v);
        }
    }
    (losses, evals)
}

fn inspect_json(args: &[&str]) -> Value {
    let o = run("inspect", &[args, &["--json"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn state(out: &Path, step: usize) -> Value {
    let path = out.join(format!("checkpoints/step-{step:08}/state.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn blend_is_fed_as_audited_resumes_bit_exactly_and_reweights_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    // A: about 22 rows, a held-out tail for evaluation; B: one document cut into train/ and
    // val/ (about 6 + 1 rows), so B runs out and restarts several times.
    let a_text: String = (0..130)
        .map(|i| format!("alpha{} beta{} ", i % 17, i % 5))
        .collect();
    let b_text: String = (0..60).map(|i| format!("gamma{}\n", i % 7)).collect();
    std::fs::write(d("a.txt"), a_text).unwrap();
    std::fs::write(d("b.txt"), b_text).unwrap();
    preprocess(&d("a.txt"), &d("A"), &[]);
    preprocess(&d("b.txt"), &d("B"), &["--val-fraction", "0.2"]);
    let flags: Vec<String> = [
        "--shards",
        &p(&d("A")),
        &p(&d("B")),
        "--weights",
        "0.7",
        "0.3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let toml = format!(
        "[[blend]]\npath = {:?}\nweight = 0.7\n\n[[blend]]\npath = {:?}\nweight = 0.3\n",
        p(&d("A")),
        p(&d("B"))
    );
    std::fs::write(d("blend.toml"), toml).unwrap();
    let config = vec!["--config".to_string(), p(&d("blend.toml"))];

    // Straight through, the blend from a config file, recording what the loader fed.
    let straight = d("straight");
    let record = d("fed");
    std::fs::create_dir_all(&record).unwrap();
    let o = run_ranks_with(
        &train_args(&straight, 30, &config),
        1,
        &[("H5GPT_RECORD_FED", record.to_str().unwrap())],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("blend: ") && stdout.contains(" 0.700 (") && stdout.contains(" 0.300 ("),
        "{stdout}"
    );
    let fed: Vec<(u64, usize, Vec<u64>)> = std::fs::read_to_string(record.join("fed-rank0.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap())
                .collect();
            (
                v["step_start"].as_u64().unwrap(),
                v["micro"].as_u64().unwrap() as usize,
                ids,
            )
        })
        .collect();
    assert_eq!(fed.len(), 30);
    for (start, micro, ids) in &fed {
        let step = (start / 2).to_string();
        let report = inspect_json(&["--run", &p(&straight), "--step", &step]);
        let computed: Vec<u64> = report["feeds"][*micro]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        assert_eq!(&computed, ids, "step {step}");
    }
    let s = state(&straight, 30);
    assert_eq!(s["blend"]["phases"].as_array().unwrap().len(), 1, "{s}");
    // Evaluation: each set and the blend.
    let (_, evals) = metrics(&straight);
    let last = evals.last().unwrap();
    let sets = last["val_loss_sets"].as_object().unwrap();
    assert_eq!(sets.len(), 2, "{last}");
    let (a, b) = (
        sets[&p(&d("A"))].as_f64().unwrap(),
        sets[&p(&d("B"))].as_f64().unwrap(),
    );
    let blended = last["val_loss"].as_f64().unwrap();
    assert!((blended - (0.7 * a + 0.3 * b)).abs() < 1e-9, "{last}");

    // Killed in its second save (step 20), resumed from step 10 with the flags: bit-exact.
    let resumed = d("resumed");
    let args = train_args(&resumed, 30, &flags);
    let o = Command::new(bin("train"))
        .args(&args)
        .env("H5GPT_FAULT", "abort-during-save:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    run_ranks_with(&args, 1, &[]);
    assert_eq!(metrics(&straight).0, metrics(&resumed).0);
    assert_eq!(metrics(&resumed).0.len(), 30);
    let model = |out: &Path| {
        std::fs::read(out.join("checkpoints/step-00000030/model.safetensors")).unwrap()
    };
    assert!(
        model(&straight) == model(&resumed),
        "weights differ after the resume"
    );

    // Every row of each set exactly once per epoch of that set; B restarted several times.
    let report = inspect_json(&["--run", &p(&resumed), "--check-epochs"]);
    assert_eq!(report["ok"], true, "{report}");
    let sets = report["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    let reads: Vec<u64> = sets.iter().map(|s| s["reads"].as_u64().unwrap()).collect();
    assert_eq!(reads.iter().sum::<u64>(), 60);
    assert!(
        sets[1]["complete_epochs"].as_u64().unwrap() >= 2,
        "{report}"
    );

    // Other weights: refused, then accepted with --reweight from the checkpoint's position.
    let mut other = flags.clone();
    other[4] = "0.5".into();
    other[5] = "0.5".into();
    let o = Command::new(bin("train"))
        .args(train_args(&resumed, 40, &other))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--reweight"),
        "{}",
        text(&o)
    );
    let mut args = train_args(&resumed, 40, &other);
    args.push("--reweight".into());
    run_ranks_with(&args, 1, &[]);
    let phases = state(&resumed, 40)["blend"]["phases"].clone();
    assert_eq!(phases[1]["start"], 60, "{phases}");
    assert_eq!(phases[1]["weights"], serde_json::json!([0.5, 0.5]));
    let report = inspect_json(&["--run", &p(&resumed), "--check-epochs"]);
    assert_eq!(report["ok"], true, "{report}");
    let after: Vec<u64> = report["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reads"].as_u64().unwrap())
        .collect();
    assert_eq!(after[0] + after[1] - reads[0] - reads[1], 20);
    assert!(
        after[0] > reads[0] && after[1] > reads[1],
        "{after:?} after {reads:?}"
    );
}
