//! The main job's measures (`scripts/check_main_job.py`, run by `scripts/quickstart.sh`): the
//! final validation loss against the unigram entropy of the validation tokens, and the share of
//! sampled words that occur in the training text. The runs are written by hand (a metrics file
//! with a chosen loss, a sample with chosen words), so each measure has one right answer.

use crate::preprocess::{all_rows, s};
use h5gpt_formats::ShardSet;
use h5gpt_tests::small_language;
use h5gpt_tests::{run, text};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DOCS: usize = 400;
const WORDS: usize = 120;
const SEED: u64 = 3;

/// Entropy (nats) of the frequencies of the tokens the loss counts in `rows`: every label
/// under attention mask 1.
fn unigram_entropy(rows: &[Vec<i32>], seq: usize) -> f64 {
    let mut counts: HashMap<i32, u64> = HashMap::new();
    for row in rows {
        for j in 0..seq {
            if row[seq + j] == 1 {
                *counts.entry(row[2 * seq + j]).or_default() += 1;
            }
        }
    }
    let n = counts.values().sum::<u64>() as f64;
    counts
        .values()
        .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
        .sum()
}

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_main_job.py")
}

/// Runs the check script; it must succeed (it warns, never fails, on a missed target).
fn check(shards: &Path, run_dir: &Path, sample: &Path, prompt: &str) -> String {
    let python = std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(&python)
        .arg(check_script())
        .args(["--shards", s(shards), "--run", s(run_dir), "--sample", s(sample)])
        .args(["--prompt", prompt, "--margin", "0.5", "--coverage", "0.8"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}\n---> HINT: run scripts/setup.sh, then source scripts/env.sh")
        });
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// The "below" figure the script prints: entropy minus loss.
fn printed_margin(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains("unigram entropy"))
        .expect(out);
    let before = line.split(" below").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().expect(out)
}

fn write_metrics(run_dir: &Path, val_loss: f64) {
    std::fs::create_dir_all(run_dir).unwrap();
    let rows = [
        serde_json::json!({"step": 0, "tokens": 0, "val_loss": 9.0}),
        serde_json::json!({"step": 9, "tokens": 320, "loss": 4.0, "lr": 1e-3, "norm": 1.0, "dt_ms": 10.0, "tok_per_s": 3.2e4}),
        serde_json::json!({"step": 10, "tokens": 320, "val_loss": val_loss}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(run_dir.join("metrics.jsonl"), text).unwrap();
}

#[test]
fn check_main_job_measures_val_loss_against_the_unigram_entropy_and_sampled_words() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, small_language::jsonl(DOCS, WORDS, SEED)).unwrap();
    let lexicon = small_language::lexicon(WORDS, SEED);
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
            "0.1",
            "--train-tokenizer",
            "bpe",
            "--vocab-size",
            "300",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let val = ShardSet::open(&[shards.join("val")]).unwrap();
    let entropy = unigram_entropy(&all_rows(&val), val.seq_len());
    assert!(entropy > 1.0, "{entropy}");

    // Four words of the language, one that is not, and a last word the token budget cut
    // (not counted); a second sample adds one more known word. The prompt is not counted.
    let sample = dir.path().join("sample.txt");
    let prompt = "zzyzx";
    std::fs::write(
        &sample,
        format!(
            "{prompt} {} {}. {} qqqxq {}. {}\n---------------\n{prompt} {}.\n",
            lexicon[0],
            lexicon[1],
            lexicon[2],
            lexicon[3],
            &lexicon[4][..1],
            lexicon[5]
        ),
    )
    .unwrap();

    // A loss 0.7 below the entropy passes a 0.5 margin; 0.3 below warns, and exits 0.
    let run_dir = dir.path().join("run");
    write_metrics(&run_dir, entropy - 0.7);
    let out = check(&shards, &run_dir, &sample, prompt);
    assert!((printed_margin(&out) - 0.7).abs() < 1e-3, "{out}");
    assert!(out.contains("5 of 6 sampled words (83%)"), "{out}");
    assert!(out.contains("not in it: qqqxq"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");

    write_metrics(&run_dir, entropy - 0.3);
    let out = check(&shards, &run_dir, &sample, prompt);
    assert!((printed_margin(&out) - 0.3).abs() < 1e-3, "{out}");
    assert!(out.contains("NOT REACHED"), "{out}");
    assert!(out.contains("WARNING"), "{out}");

    // A run that evaluates only the first rows of val/ (eval_batches × micro_batch) is
    // measured on those rows.
    let first = unigram_entropy(&all_rows(&val)[..2], val.seq_len());
    assert!((first - entropy).abs() > 0.05, "{first} {entropy}");
    std::fs::write(
        run_dir.join("config.toml"),
        "micro_batch = 2\neval_batches = 1\n",
    )
    .unwrap();
    write_metrics(&run_dir, first - 0.6);
    let out = check(&shards, &run_dir, &sample, prompt);
    assert!((printed_margin(&out) - 0.6).abs() < 1e-3, "{out}");
}

#[test]
fn check_main_job_takes_the_rows_train_held_out_of_a_plain_shard_directory() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(&corpus, small_language::jsonl(DOCS, WORDS, SEED)).unwrap();
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
            "--train-tokenizer",
            "bpe",
            "--vocab-size",
            "300",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let set = ShardSet::open(&[&shards]).unwrap();
    let rows = all_rows(&set);
    let held = 7;
    let entropy = unigram_entropy(&rows[rows.len() - held..], set.seq_len());
    let all = unigram_entropy(&rows, set.seq_len());
    assert!(
        (entropy - all).abs() > 0.05,
        "held-out rows must differ from the whole set"
    );

    let run_dir = dir.path().join("run");
    write_metrics(&run_dir, entropy - 1.0);
    let ckpt = run_dir.join("checkpoints/step-00000010");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("state.json"), format!("{{\"held_out\": {held}}}")).unwrap();
    let sample = dir.path().join("sample.txt");
    std::fs::write(&sample, "\n").unwrap();
    let out = check(&shards, &run_dir, &sample, "");
    assert!((printed_margin(&out) - 1.0).abs() < 1e-3, "{out}");
    // No words at all is no evidence: a warning.
    assert!(out.contains("0 of 0 sampled words"), "{out}");
    assert!(out.contains("WARNING"), "{out}");
}
