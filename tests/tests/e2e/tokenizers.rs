//! Tokenizers beyond GPT-2 end to end: a trained word-level vocabulary on a generated small
//! language (preprocess → auto-sized train → sample), trained byte-level BPE (round trip,
//! thread-count determinism), the tiktoken family (ids equal tiktoken-rs'), and refusing to
//! mix tokenizers.

use crate::preprocess::{assert_same_files, s, token_stream, verify_ok};
use h5gpt_formats::{DataParams, ShardSet};
use h5gpt_tests::small_language;
use h5gpt_tests::{run, text};
use h5gpt_tokenizer::tokenizer::{Tokenizer, TOKENIZER_FILE};
use std::collections::{HashMap, HashSet};
use std::path::Path;

const DOCS: usize = 2000;
const WORDS: usize = 300;
const SEED: u64 = 7;

fn write_small_language(path: &Path) -> Vec<String> {
    std::fs::write(path, small_language::jsonl(DOCS, WORDS, SEED)).unwrap();
    small_language::corpus(DOCS, WORDS, SEED)
}

fn preprocess_ok(args: &[&str]) {
    let o = run("preprocess", args);
    assert!(o.status.success(), "{}", text(&o));
}

fn params(dir: &Path) -> DataParams {
    DataParams::read_from_dir(dir).unwrap().unwrap()
}

/// Unigram entropy (nats) of the tokens a model predicts: every label under mask 1.
fn unigram_entropy(set: &ShardSet) -> f64 {
    let stream = token_stream(set);
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for &t in &stream[1..] {
        *counts.entry(t).or_default() += 1;
    }
    let n = (stream.len() - 1) as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

fn last_val_loss(run_dir: &Path) -> f64 {
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    metrics
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("val_loss").and_then(serde_json::Value::as_f64))
        .expect("a validation loss in metrics.jsonl")
}

/// `train` prints "| N.NNM parameters (…" on its first line.
fn parameters_millions(train_stdout: &str) -> f64 {
    let at = train_stdout
        .find("M parameters")
        .expect("a parameter count");
    let head = &train_stdout[..at];
    let start = head.rfind(' ').unwrap() + 1;
    head[start..].parse().unwrap()
}

#[test]
fn wordlevel_small_language_trains_an_auto_sized_model_that_beats_the_unigram_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = write_small_language(&corpus);
    let shards = dir.path().join("shards");
    let o = run(
        "preprocess",
        &[
            "--input",
            s(&corpus),
            "--out",
            s(&shards),
            "--seq-len",
            "64",
            "--val-fraction",
            "0.05",
            "--train-tokenizer",
            "wordlevel",
            "--vocab-size",
            "512",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("trained-wordlevel") && summary.contains("unknown words"),
        "{summary}"
    );

    // The shard directories carry the tokenizer, and every id is below 512.
    let train_dir = shards.join("train");
    let p = params(&train_dir);
    let section = p.h5gpt.as_ref().unwrap();
    assert_eq!(section.tokenizer, "trained-wordlevel");
    let vocab = p.post_process.vocab_size.unwrap();
    assert!(vocab <= 512, "vocab {vocab}");
    assert_eq!(p.post_process.eos_id, Some(0));
    assert_eq!(p.post_process.pad_id, Some(0));
    let file = section.tokenizer_file.as_ref().unwrap();
    assert_eq!(file.file, TOKENIZER_FILE);
    for split in ["train", "val"] {
        let bytes = std::fs::read(shards.join(split).join(TOKENIZER_FILE)).unwrap();
        assert_eq!(
            h5gpt_formats::checksum::bytes_xxh3_64(&bytes),
            file.xxh3_64,
            "{split}"
        );
    }
    let set = verify_ok(&train_dir);
    let stream = token_stream(&set);
    assert!(stream.iter().all(|&t| t < vocab), "an id ≥ {vocab}");
    // Every word of the lexicon occurs often: no unknown words.
    assert_eq!(p.post_process.extra["unknown_tokens"], 0);
    let entropy = unigram_entropy(&set);

    // inspect decodes rows into words of the language.
    let lexicon: HashSet<String> = small_language::lexicon(WORDS, SEED).into_iter().collect();
    let o = run("inspect", &[s(&train_dir), "--decode", "--show", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown
            .split_whitespace()
            .filter(|w| lexicon.contains(*w))
            .count()
            >= 20,
        "{shown}"
    );

    // plan counts parameters with the shards' vocabulary.
    let o = run("plan", &["--shards", s(&shards)]);
    assert!(o.status.success(), "{}", text(&o));
    let planned = String::from_utf8_lossy(&o.stdout);
    assert!(
        planned.contains("tokenizer `trained-wordlevel`")
            && planned.contains(&format!("with the {vocab}-row embedding")),
        "{planned}"
    );

    // train: the model is auto-sized for the trained vocabulary.
    let run_dir = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--shards",
            s(&shards),
            "--out",
            s(&run_dir),
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--eval-every",
            "100",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = text(&o);
    assert!(stdout.contains("model auto"), "{stdout}");
    let millions = parameters_millions(&stdout);
    assert!(millions < 0.2, "{millions}M parameters: {stdout}");
    let loss = last_val_loss(&run_dir);
    assert!(
        loss < entropy - 0.5,
        "validation loss {loss} is not well below the unigram entropy {entropy}"
    );

    // sample: the prompt is encoded and the continuation decoded with the run's tokenizer.
    let prompt = docs[0].split(' ').next().unwrap().to_string();
    let o = run(
        "sample",
        &[
            "--checkpoint",
            s(&run_dir),
            "--prompt",
            &prompt,
            "--max-new-tokens",
            "40",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sampled = String::from_utf8_lossy(&o.stdout);
    let words: Vec<&str> = sampled
        .split_whitespace()
        .filter(|w| *w != "." && *w != "<|endoftext|>")
        .collect();
    assert!(words.len() >= 20, "{sampled}");
    let known = words.iter().filter(|w| lexicon.contains(**w)).count();
    assert_eq!(known, words.len(), "words outside the language: {sampled}");
    assert!(sampled.starts_with(&prompt), "{sampled}");

    // export --hf writes the trained tokenizer; transformers encodes as we do.
    let hf = dir.path().join("hf");
    let o = run("export", &["--checkpoint", s(&run_dir), "--hf", s(&hf)]);
    assert!(o.status.success(), "{}", text(&o));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["eos_token_id"], 0);
    assert_eq!(config["vocab_size"], vocab);
    let ours = Tokenizer::for_shard_dir(&train_dir, Some(&p)).unwrap();
    let theirs = transformers_ids(&hf, &docs[1]);
    assert_eq!(theirs, ours.encode(&docs[1]));
}

/// The ids `transformers.AutoTokenizer.from_pretrained(dir)` gives `input`, after checking that
/// `GPT2LMHeadModel` loads the directory too.
fn transformers_ids(dir: &Path, input: &str) -> Vec<u32> {
    let python = std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys
from transformers import AutoTokenizer, GPT2LMHeadModel
GPT2LMHeadModel.from_pretrained(sys.argv[1])
tok = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps(tok.encode(sys.argv[2], add_special_tokens=False)))
"#;
    let o = std::process::Command::new(&python)
        .args(["-c", script, s(dir), input])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}\n---> HINT: run scripts/setup.sh, then source scripts/env.sh"));
    assert!(
        o.status.success(),
        "{}\n---> HINT: run scripts/setup.sh (installs transformers), then source scripts/env.sh",
        text(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn trained_bpe_round_trips_and_is_identical_at_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let mut docs = write_small_language(&corpus);
    // Text the lexicon never saw: BPE still encodes it, byte by byte if need be.
    let extra = "Zürich 2024: naïve café — 東京 🙂\n\ttabs  and  spaces";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&corpus)
        .and_then(|mut f| {
            use std::io::Write;
            writeln!(f, "{}", serde_json::json!({ "text": extra }))
        })
        .unwrap();
    docs.push(extra.to_string());
    let outs: Vec<_> = ["1", "2"]
        .iter()
        .map(|threads| {
            let out = dir.path().join(format!("shards-{threads}"));
            preprocess_ok(&[
                "--input",
                s(&corpus),
                "--out",
                s(&out),
                "--seq-len",
                "32",
                "--train-tokenizer",
                "bpe",
                "--vocab-size",
                "600",
                "--threads",
                threads,
            ]);
            out
        })
        .collect();
    assert_same_files(&outs[0], &outs[1]);

    let p = params(&outs[0]);
    assert_eq!(p.h5gpt.as_ref().unwrap().tokenizer, "trained-bpe");
    let vocab = p.post_process.vocab_size.unwrap();
    assert!((258..=600).contains(&vocab), "vocab {vocab}");
    let tokenizer = Tokenizer::for_shard_dir(&outs[0], Some(&p)).unwrap();
    assert_eq!(tokenizer.eos_id(), 0);
    // Merges were learned: the corpus takes fewer tokens than bytes.
    let bytes: usize = docs.iter().map(String::len).sum();
    let mut expected = Vec::new();
    for doc in &docs {
        let ids = tokenizer.encode(doc);
        assert_eq!(tokenizer.decode_lossy(&ids), *doc, "round trip");
        expected.extend(ids);
        expected.push(tokenizer.eos_id());
    }
    assert!(expected.len() * 2 < bytes, "{} tokens", expected.len());
    // The shards hold exactly that stream.
    let set = verify_ok(&outs[0]);
    assert_eq!(token_stream(&set), expected);
}

#[test]
fn tiktoken_family_ids_equal_tiktoken_rs_and_a_run_starts() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let docs = [
        "Hello world! Ünïcödé 12345 — 日本語 🙂",
        "  don't stop\n\nbelieving <|endoftext|> is plain text here",
        "def f(x):\n    return x ** 2  # squares\n",
    ];
    let body: String = docs
        .iter()
        .cycle()
        .take(60)
        .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
        .collect();
    std::fs::write(&corpus, body).unwrap();
    for (name, bpe, vocab, eos) in [
        (
            "cl100k_base",
            tiktoken_rs::cl100k_base_singleton(),
            100_277,
            100_257,
        ),
        (
            "o200k_base",
            tiktoken_rs::o200k_base_singleton(),
            200_019,
            199_999,
        ),
    ] {
        let out = dir.path().join(name);
        preprocess_ok(&[
            "--input",
            s(&corpus),
            "--out",
            s(&out),
            "--seq-len",
            "16",
            "--tokenizer",
            name,
        ]);
        let p = params(&out);
        assert_eq!(p.h5gpt.as_ref().unwrap().tokenizer, name);
        assert!(p.h5gpt.as_ref().unwrap().tokenizer_file.is_none());
        assert_eq!(p.post_process.vocab_size, Some(vocab), "{name}");
        assert_eq!(p.post_process.eos_id, Some(eos), "{name}");
        let expected: Vec<u32> = docs
            .iter()
            .cycle()
            .take(60)
            .flat_map(|d| {
                let mut ids = bpe.encode_ordinary(d);
                ids.push(eos);
                ids
            })
            .collect();
        assert_eq!(token_stream(&verify_ok(&out)), expected, "{name}");

        let run_dir = dir.path().join(format!("run-{name}"));
        let o = run(
            "train",
            &[
                "--shards",
                s(&out),
                "--out",
                s(&run_dir),
                "--model",
                "tiny",
                "--device",
                "cpu",
                "--max-steps",
                "2",
                "--micro-batch",
                "4",
                "--total-batch-tokens",
                "64",
            ],
        );
        assert!(o.status.success(), "{name}: {}", text(&o));
        let state: serde_json::Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("checkpoints/step-00000002/state.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(state["tokenizer"], name);
        assert_eq!(state["model"]["vocab_size"], vocab);
    }
}

#[test]
fn mixing_tokenizers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_small_language(&corpus);
    let gpt2 = dir.path().join("gpt2");
    let words = dir.path().join("words");
    let words2 = dir.path().join("words-other");
    preprocess_ok(&["--input", s(&corpus), "--out", s(&gpt2), "--seq-len", "32"]);
    for (out, size) in [(&words, "512"), (&words2, "100")] {
        preprocess_ok(&[
            "--input",
            s(&corpus),
            "--out",
            s(out),
            "--seq-len",
            "32",
            "--train-tokenizer",
            "wordlevel",
            "--vocab-size",
            size,
        ]);
    }
    // Another tokenizer, and the same kind of tokenizer with another vocabulary.
    for other in [&words, &words2] {
        let base = if other == &words { &gpt2 } else { &words };
        let o = run(
            "train",
            &[
                "--shards",
                s(base),
                s(other),
                "--out",
                s(&dir.path().join("run")),
                "--model",
                "tiny",
                "--device",
                "cpu",
                "--max-steps",
                "1",
            ],
        );
        assert!(!o.status.success(), "mixing must fail: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("tokenized with") && err.contains(s(other)),
            "{err}"
        );
    }
    // The same tokenizer twice is one set.
    let o = run(
        "train",
        &[
            "--shards",
            s(&words),
            s(&words),
            "--out",
            s(&dir.path().join("run-twice")),
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--max-steps",
            "1",
            "--micro-batch",
            "2",
            "--total-batch-tokens",
            "64",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // eval refuses shards of another tokenizer than the checkpoint's.
    let o = run(
        "eval",
        &[
            "--checkpoint",
            s(&dir.path().join("run-twice")),
            "--shards",
            s(&gpt2),
            "--device",
            "cpu",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("trained on `trained-wordlevel` tokens"),
        "{}",
        text(&o)
    );
}

/// Issue 13: a tokenizer is its content, not its label. A model trained on shards with a
/// trained BPE (label `trained-bpe`) evaluates and keeps training on new text preprocessed
/// with that very `tokenizer.json` (label `tokenizer.json`); a resume on another tokenizer is
/// refused, and a resume keeps the checkpoint's tokenizer record.
#[test]
fn shards_of_a_runs_own_tokenizer_file_evaluate_train_together_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("train.jsonl"), small_language::jsonl(300, WORDS, SEED)).unwrap();
    std::fs::write(p("held.jsonl"), small_language::jsonl(100, WORDS, SEED + 1)).unwrap();
    let seq = ["--seq-len", "32"];
    let bpe = ["--train-tokenizer", "bpe", "--vocab-size", "400"];
    preprocess_ok(
        &[
            &["--input", s(&p("train.jsonl")), "--out", s(&p("b"))],
            &seq[..],
            &bpe,
        ]
        .concat(),
    );
    let tokenizer_json = p("b").join(TOKENIZER_FILE);
    assert!(tokenizer_json.is_file(), "b/{TOKENIZER_FILE}");
    preprocess_ok(
        &[
            &["--input", s(&p("held.jsonl")), "--out", s(&p("bh"))],
            &seq[..],
            &["--tokenizer", s(&tokenizer_json)],
        ]
        .concat(),
    );
    // Another tokenizer of the same kind and size: other content.
    preprocess_ok(
        &[
            &["--input", s(&p("held.jsonl")), "--out", s(&p("other"))],
            &seq[..],
            &bpe,
        ]
        .concat(),
    );
    assert_eq!(params(&p("bh")).h5gpt.unwrap().tokenizer, "tokenizer.json");
    let train_with = |shards: &[&Path], out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec!["--shards"];
        args.extend(shards.iter().map(|d| s(d)));
        args.extend(extra);
        args.extend([
            "--out",
            s(out),
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--max-steps",
            steps,
            "--save-every",
            "2",
            "--micro-batch",
            "2",
            "--total-batch-tokens",
            "64",
        ]);
        run("train", &args)
    };
    let train = |shards: &[&Path], out: &Path, steps: &str| train_with(shards, out, steps, &[]);
    let o = train(&[&p("b")], &p("rb"), "2");
    assert!(o.status.success(), "{}", text(&o));
    // eval on the held-out text.
    let o = run(
        "eval",
        &[
            "--checkpoint",
            s(&p("rb")),
            "--shards",
            s(&p("bh")),
            "--device",
            "cpu",
        ],
    );
    assert!(
        o.status.success(),
        "eval must accept its own tokenizer: {}",
        text(&o)
    );
    // train on both directories as one set.
    let o = train(&[&p("b"), &p("bh")], &p("rboth"), "1");
    assert!(
        o.status.success(),
        "one tokenizer, two labels: {}",
        text(&o)
    );
    // A resume on other content is refused (before the fix, resume did not check at all).
    let o = train(&[&p("other")], &p("rb"), "4");
    assert!(
        !o.status.success(),
        "resume on another tokenizer: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tokenized with") && err.contains("other"),
        "{err}"
    );
    let o = run(
        "eval",
        &[
            "--checkpoint",
            s(&p("rb")),
            "--shards",
            s(&p("other")),
            "--device",
            "cpu",
        ],
    );
    // A refusal while running: exit 1 (2 is for usage errors).
    assert_eq!(
        o.status.code(),
        Some(1),
        "eval on another tokenizer: {}",
        text(&o)
    );
    // A resume on the new text is other training data: refused unless allowed (issue 24,
    // item 9); allowed, it continues and keeps the run's tokenizer record.
    let o = train(&[&p("bh")], &p("rb"), "4");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--allow-data-change"),
        "{}",
        text(&o)
    );
    let o = train_with(&[&p("bh")], &p("rb"), "4", &["--allow-data-change"]);
    assert!(o.status.success(), "{}", text(&o));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p("rb").join("checkpoints/step-00000004/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["tokenizer"], "trained-bpe");
    assert_eq!(
        std::fs::read(
            p("rb")
                .join("checkpoints/step-00000004")
                .join(TOKENIZER_FILE)
        )
        .unwrap(),
        std::fs::read(&tokenizer_json).unwrap()
    );
}
