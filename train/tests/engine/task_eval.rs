//! Task scoring (`eval --task`) against the reference: transformers' `GPT2LMHeadModel`, scored
//! the way lm-evaluation-harness scores (`scripts/hf_task_scores.py`), on a multiple-choice
//! file with contexts longer than the model's context, a HellaSwag file and a LAMBADA file.

use h5gpt_formats::task::Task;
use h5gpt_tokenizer::tokenizer::Tokenizer;
use h5gpt_train::hf;
use h5gpt_train::model::{Gpt, GptConfig};
use h5gpt_train::precision::Precision;
use h5gpt_train::task_eval::{score_task, ScoreOptions};
use std::path::Path;
use std::process::Command;
use tch::{nn, Device};

/// GPT-2's vocabulary (the GPT-2 tokenizer encodes the files), a context of 24 tokens (so the
/// long contexts are cut), weights scaled up so that choices differ clearly.
fn config() -> GptConfig {
    GptConfig::tiny(50257, 24)
}

fn peaky_model(seed: i64) -> (nn::VarStore, Gpt) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), config());
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let noise = var.randn_like() * if name.contains("wte") { 0.5 } else { 0.05 };
            var.copy_(&(&var + noise));
        }
    });
    (vs, model)
}

const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "a", "mat", "and", "then", "dog", "ran", "over", "hill", "to",
    "see", "what", "was", "there", "in", "green", "light", "[title]", "quickly", "Ölbaum", "naïve",
];

/// A sentence of `n` words drawn by a small LCG from `seed`.
fn sentence(seed: u64, n: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            WORDS[(x >> 33) as usize % WORDS.len()]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_tasks(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut mc = String::new();
    for i in 0..24u64 {
        // Every third context is longer than the model's 24 tokens.
        let context = sentence(i, if i % 3 == 0 { 30 } else { 6 });
        let choices: Vec<String> = (0..4)
            .map(|k| sentence(100 * i + k, 1 + k as usize))
            .collect();
        let line = serde_json::json!({"context": context, "choices": choices, "answer": i % 4});
        mc.push_str(&format!("{line}\n"));
    }
    let mut hs = String::new();
    for i in 0..8u64 {
        let (a, b) = (sentence(i + 50, 5), sentence(i + 60, 3));
        let endings: Vec<String> = (0..4)
            .map(|k| {
                format!(
                    "{} [step] {}",
                    sentence(200 * i + k, 3),
                    sentence(7 * i + k, 2)
                )
            })
            .collect();
        let line = serde_json::json!({
            "ind": i, "activity_label": "Doing things", "ctx_a": a, "ctx_b": b,
            "ctx": format!("{a} {b}"), "endings": endings, "label": (i % 4).to_string(),
        });
        hs.push_str(&format!("{line}\n"));
    }
    let mut lambada = String::new();
    for i in 0..16u64 {
        let line = serde_json::json!({"text": sentence(i + 300, 5 + (i as usize % 20))});
        lambada.push_str(&format!("{line}\n"));
    }
    let files = [
        ("mc.jsonl", mc),
        ("hellaswag.jsonl", hs),
        ("lambada.jsonl", lambada),
    ];
    files
        .into_iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

fn python() -> String {
    std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// transformers' scores of `task` with the model in `model_dir` (`scripts/hf_task_scores.py`).
/// Fails (never skips) without Python or transformers.
fn reference(model_dir: &Path, task: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/hf_task_scores.py");
    let out = task.with_extension("reference.json");
    let result = Command::new(python())
        .arg(&script)
        .arg(model_dir)
        .arg(task)
        .arg(&out)
        .args(["--batch", "5"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}\n---> HINT: scripts/setup.sh", python()));
    assert!(
        result.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn scores_match_transformers_scored_as_the_harness() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let (vs, model) = peaky_model(11);
    let dir = tmp.path().join("hf");
    let tokenizer = Tokenizer::gpt2();
    hf::export_with_tokenizer(
        &vs,
        &config(),
        &dir,
        Some(&tokenizer),
        hf::Replace::ExportsOnly,
    )
    .unwrap();
    for path in write_tasks(tmp.path()) {
        let task = Task::read(&path, None).unwrap();
        let options = ScoreOptions {
            batch_rows: 7,
            device: Device::Cpu,
            precision: Precision::Fp32,
        };
        let ours = score_task(&model, &tokenizer, &task, options, &mut |_| {}).unwrap();
        let theirs = reference(&dir, &path);
        let name = task.name.as_str();
        let lls: Vec<Vec<f64>> = serde_json::from_value(theirs["loglik"].clone()).unwrap();
        let tokens: Vec<Vec<usize>> = serde_json::from_value(theirs["tokens"].clone()).unwrap();
        assert_eq!(lls.len(), ours.per_item.len(), "{name}");
        let mut worst = 0f64;
        for (item, (ll, tok)) in ours.per_item.iter().zip(lls.iter().zip(&tokens)) {
            assert_eq!(
                &item.tokens, tok,
                "{name} item {}: continuation tokens",
                item.index
            );
            for (a, b) in item.loglik.iter().zip(ll) {
                worst = worst.max((a - b).abs());
            }
        }
        assert!(worst < 1e-4, "{name}: log-likelihoods differ by {worst}");
        let metrics = theirs["metrics"].as_object().unwrap();
        let ours_items = ours.items;
        for (metric, value) in metrics {
            let ours = ours.metrics[metric.as_str()].value;
            let value = value.as_f64().unwrap();
            if metric == "perplexity" {
                assert!(
                    (ours / value - 1.0).abs() < 1e-4,
                    "{name} {metric}: {ours} vs {value}"
                );
            } else {
                // The same items right: Python's `sum` of floats is compensated (Neumaier), so
                // the means may differ in the last bit.
                let n = ours_items as f64;
                assert_eq!((ours * n).round(), (value * n).round(), "{name} {metric}");
            }
        }
        if name == "mc" {
            // Every third context alone is longer than the model's context.
            assert!((8..24).contains(&ours.truncated), "{} cut", ours.truncated);
        }
        if name == "hellaswag" {
            assert!(ours.metrics.contains_key("nanogpt_acc_norm"));
        }
    }
}

/// Scoring in batches of any size gives the same log-likelihoods (padding is never seen).
#[test]
fn batch_size_does_not_change_scores() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let (_vs, model) = peaky_model(5);
    let tokenizer = Tokenizer::gpt2();
    let path = &write_tasks(tmp.path())[0];
    let task = Task::read(path, Some(10)).unwrap();
    let score = |rows| {
        let options = ScoreOptions {
            batch_rows: rows,
            device: Device::Cpu,
            precision: Precision::Fp32,
        };
        score_task(&model, &tokenizer, &task, options, &mut |_| {}).unwrap()
    };
    let (one, many) = (score(1), score(40));
    for (a, b) in one.per_item.iter().zip(&many.per_item) {
        for (x, y) in a.loglik.iter().zip(&b.loglik) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    assert_eq!(one.metrics["acc"], many.metrics["acc"]);
}
