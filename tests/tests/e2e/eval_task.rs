//! What a run shows (issue 28): TensorBoard event files read back by the real `tensorboard`
//! package equal to `metrics.jsonl` across a kill and resume; `--eval-task` during training
//! (rows kept across the resume, the training unchanged); `eval --task` with `--checkpoint` and
//! `--hf`.

use h5gpt_tests::{bin, fox_shards, run, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A generic multiple-choice file and a LAMBADA file on the fox corpus's words.
fn task_files(dir: &Path) -> (PathBuf, PathBuf) {
    let mc = dir.join("fox_mc.jsonl");
    let mut text = String::new();
    let endings = ["fox", "dog", "brown cat", "lazy quick dog"];
    for i in 0..6 {
        let line = serde_json::json!({
            "context": "the quick brown fox jumps over the lazy dog. the quick brown",
            "choices": endings,
            "answer": i % 4,
        });
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(&mc, text).unwrap();
    let lambada = dir.join("fox_lambada.jsonl");
    std::fs::write(
        &lambada,
        "{\"text\": \"the quick brown fox jumps over the lazy dog\"}\n{\"text\": \"the lazy dog. the quick brown fox\"}\n",
    )
    .unwrap();
    (mc, lambada)
}

fn train_args(shards: &Path, out: &Path, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
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
        "--eval-every",
        "1",
        "--eval-batches",
        "1",
        "--save-every",
        "2",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend_from_slice(extra);
    args
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every scalar of the event files under `dir`, as the `tensorboard` package's
/// `EventAccumulator` reads them: tag → [(step, value)].
fn tensorboard_scalars(dir: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let python = std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let code = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;
    let o = Command::new(&python)
        .args(["-c", code, &s(dir)])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}\n---> HINT: scripts/setup.sh installs tensorboard")
        });
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// What `metrics.jsonl` says each TensorBoard tag should hold.
fn expected_scalars(rows: &[serde_json::Value]) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for row in rows {
        let step = row["step"].as_i64().unwrap();
        let mut put = |tag: String, v: &serde_json::Value| {
            if let Some(v) = v.as_f64() {
                out.entry(tag).or_default().push((step, v as f32));
            }
        };
        if let Some(task) = row["task"].as_str() {
            for (k, v) in row.as_object().unwrap() {
                if !["step", "tokens", "task", "items", "truncated"].contains(&k.as_str()) {
                    put(format!("task/{task}/{k}"), v);
                }
            }
        } else if row.get("val_loss").is_some() {
            put("val/loss".into(), &row["val_loss"]);
        } else if row.get("final_val_loss").is_some() {
            put("final/val_loss".into(), &row["final_val_loss"]);
        } else {
            put("train/loss".into(), &row["loss"]);
            put("train/lr".into(), &row["lr"]);
            put("train/grad_norm".into(), &row["norm"]);
            put("train/tok_per_s".into(), &row["tok_per_s"]);
            put("train/tokens".into(), &row["tokens"]);
        }
    }
    for points in out.values_mut() {
        points.sort_by_key(|p| p.0);
    }
    out
}

/// A run killed in its second checkpoint save (after step 4's validation and task rows were
/// flushed) and resumed from step 2: TensorBoard reads back exactly the scalars of
/// `metrics.jsonl` (nothing of the killed steps 3–4 twice), task rows included.
#[test]
fn tensorboard_reads_back_metrics_across_a_kill_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &[]);
    let (mc, lambada) = task_files(dir.path());
    let out = dir.path().join("run");
    let extra = [
        "--eval-task".to_string(),
        s(&mc),
        "--eval-task".to_string(),
        s(&lambada),
        "--eval-task-every".to_string(),
        "2".to_string(),
        "--final-eval".to_string(),
    ];
    let args = train_args(&data, &out, &extra);
    let o = Command::new(bin("train"))
        .args(&args)
        .env("H5GPT_FAULT", "abort-during-save:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let before = tensorboard_scalars(&out.join("tensorboard"));
    assert!(
        before["train/loss"].iter().any(|p| p.0 == 3),
        "the killed run flushed step 3: {before:?}"
    );
    let o = Command::new(bin("train")).args(&args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(log.contains("task fox_mc (choices): acc "), "{log}");
    let rows = metrics(&out);
    let tasks: Vec<(i64, &str)> = rows
        .iter()
        .filter_map(|r| Some((r["step"].as_i64()?, r["task"].as_str()?)))
        .collect();
    // Steps 0, 2 (kept from the killed run), 4, 6; each task once.
    let steps: Vec<i64> = tasks
        .iter()
        .filter(|t| t.1 == "fox_mc")
        .map(|t| t.0)
        .collect();
    assert_eq!(steps, [0, 2, 4, 6], "{tasks:?}");
    let expected = expected_scalars(&rows);
    let read = tensorboard_scalars(&out.join("tensorboard"));
    assert!(
        expected.contains_key("task/fox_lambada/perplexity"),
        "{expected:?}"
    );
    assert!(expected.contains_key("final/val_loss"));
    assert_eq!(read, expected);
    assert_eq!(
        std::fs::read_dir(out.join("tensorboard")).unwrap().count(),
        1,
        "one event file after the rewrite"
    );
}

/// Scoring tasks during training changes nothing of the training: the same losses, norms and
/// validation losses with and without `--eval-task`; `--tensorboard off` writes no events.
#[test]
fn eval_task_leaves_the_training_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &[]);
    let (mc, _) = task_files(dir.path());
    let losses = |out: &Path, extra: &[String]| {
        let o = run(
            "train",
            &train_args(&data, out, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert!(o.status.success(), "{}", text(&o));
        metrics(out)
            .into_iter()
            .filter(|r| r.get("task").is_none())
            .map(|r| {
                (
                    r["step"].clone(),
                    r["loss"].clone(),
                    r["norm"].clone(),
                    r["val_loss"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let plain = losses(
        &dir.path().join("plain"),
        &["--tensorboard".into(), "off".into()],
    );
    let scored = losses(
        &dir.path().join("scored"),
        &[
            "--eval-task".into(),
            s(&mc),
            "--eval-task-every".into(),
            "1".into(),
        ],
    );
    assert_eq!(plain, scored);
    assert!(!dir.path().join("plain/tensorboard").exists());
    assert!(dir.path().join("scored/tensorboard").is_dir());
}

/// `eval --task` on a checkpoint and on its Hugging Face export: the same per-item
/// log-likelihoods and accuracies; `--json`, `--per-item` and `--limit` as documented.
#[test]
fn eval_task_scores_a_checkpoint_and_its_hf_export_alike() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &[]);
    let (mc, lambada) = task_files(dir.path());
    let out = dir.path().join("run");
    let o = run(
        "train",
        &train_args(&data, &out, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let hf = dir.path().join("hf");
    let o = run("export", &["--checkpoint", &s(&out), "--hf", &s(&hf)]);
    assert!(o.status.success(), "{}", text(&o));
    for task in [&mc, &lambada] {
        let mut results = Vec::new();
        for (flag, model) in [("--checkpoint", &out), ("--hf", &hf)] {
            let per_item = dir.path().join(format!("items{}.jsonl", results.len()));
            let o = run(
                "eval",
                &[
                    flag,
                    &s(model),
                    "--task",
                    &s(task),
                    "--json",
                    "--per-item",
                    &s(&per_item),
                    "--limit",
                    "5",
                    "--device",
                    "cpu",
                ],
            );
            assert!(o.status.success(), "{}", text(&o));
            let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert!(json["items"].as_u64().unwrap() <= 5);
            let items: Vec<serde_json::Value> = std::fs::read_to_string(&per_item)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(items.len() as u64, json["items"].as_u64().unwrap());
            results.push((json, items));
        }
        let ((a, ai), (b, bi)) = (&results[0], &results[1]);
        assert_eq!(a["metrics"]["acc"]["value"], b["metrics"]["acc"]["value"]);
        for (x, y) in ai.iter().zip(bi) {
            for (p, q) in x["loglik"]
                .as_array()
                .unwrap()
                .iter()
                .zip(y["loglik"].as_array().unwrap())
            {
                let (p, q) = (p.as_f64().unwrap(), q.as_f64().unwrap());
                assert!((p - q).abs() < 1e-4, "{p} vs {q}");
            }
        }
    }
    // Usage errors: neither --shards nor --task; --task with --shards.
    let o = run("eval", &["--checkpoint", &s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(
        "eval",
        &[
            "--checkpoint",
            &s(&out),
            "--task",
            &s(&mc),
            "--shards",
            &s(&data),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
