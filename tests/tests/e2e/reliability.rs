//! Runs that must never end "successfully" on garbage, nor die on a typo (issue 17): bad
//! numeric options (exit 2, a sentence naming the option), run-folder locks between two real
//! processes, shard verification before step 0, ids in the vocabulary's padding, manifests
//! that verify nothing, and preprocess's smaller traps.

use h5gpt_formats::lock::LOCK_FILE;
use h5gpt_tests::{bin, fox_shards, run, text, tiny_train_args as train_args, train};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small GPT-2 corpus preprocessed into `dir/shards` (rows of 32 tokens, 2 shards).
fn shards(dir: &Path) -> PathBuf {
    fox_shards(dir, 300, &["--examples-per-shard", "64"])
}

/// Every numeric option of `train` and `preprocess` with a bad value: exit code 2 and a
/// message naming the option, before anything is written; a value from a `--config` file gets
/// the same message as the flag.
#[test]
fn bad_numeric_options_exit_2_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let missing = dir.path().join("no-shards");
    #[rustfmt::skip]
    let train_cases: &[(&str, &str, &[&str])] = &[
        ("--n-layer", "0", &[]),
        ("--n-head", "0", &[]),
        ("--n-embd", "0", &[]),
        ("--n-ctx", "0", &[]),
        ("--vocab-size", "0", &[]),
        ("--micro-batch", "0", &["--max-steps", "5"]),
        ("--total-batch-tokens", "0", &[]),
        ("--max-steps", "0", &[]),
        ("--save-every", "0", &[]),
        ("--keep-checkpoints", "0", &[]),
        ("--eval-batches", "0", &[]),
        ("--threads", "0", &[]),
        ("--ratio", "-3", &[]),
        ("--lr", "-1", &[]),
        ("--lr", "nan", &[]),
        ("--lr", "inf", &[]),
        ("--min-lr-ratio", "1.5", &[]),
        ("--dropout", "1", &[]),
        ("--warmup-tokens", "-5", &[]),
        ("--max-tokens", "0", &[]),
        ("--epochs", "nan", &[]),
        ("--peak-flops", "-1", &[]),
        ("--dist-timeout", "0", &[]),
        ("--mup-base-width", "0", &["--mup"]),
        ("--mup-embed-mult", "nan", &["--mup"]),
        ("--mup-init-std", "-1", &["--mup"]),
        ("--seed", "-1", &[]),
        ("--warmup-steps", "many", &[]),
        ("--eval-every", "-2", &[]),
        ("--n-head", "5", &["--n-embd", "32"]),
    ];
    for (flag, value, extra) in train_cases {
        let mut args = vec![
            format!("{flag}={value}"),
            "--shards".into(),
            s(&missing),
            "--out".into(),
            s(&out),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let o = train(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "train {flag}={value}: {}",
            text(&o)
        );
        assert!(
            stderr(&o).contains(flag),
            "train {flag}={value}: {}",
            text(&o)
        );
        assert!(!out.exists(), "train {flag}={value} must write nothing");
    }
    // The same values from a --config file: the same message.
    for (key, toml_value, flag, value) in [
        ("lr", "-1.0", "--lr", "-1"),
        ("micro_batch", "0", "--micro-batch", "0"),
        ("threads", "0", "--threads", "0"),
        ("dropout", "1.0", "--dropout", "1"),
        ("min_lr_ratio", "nan", "--min-lr-ratio", "nan"),
    ] {
        let config = dir.path().join("run.toml");
        std::fs::write(
            &config,
            format!(
                "shards = {:?}\nout = {:?}\n{key} = {toml_value}\n",
                s(&missing),
                s(&out)
            ),
        )
        .unwrap();
        let from_file = train(&["--config".into(), s(&config)]);
        let from_flag = train(&[
            format!("{flag}={value}"),
            "--shards".into(),
            s(&missing),
            "--out".into(),
            s(&out),
        ]);
        assert_eq!(
            from_file.status.code(),
            Some(2),
            "{key}: {}",
            text(&from_file)
        );
        assert_eq!(stderr(&from_file), stderr(&from_flag), "{key}");
    }

    let corpus = dir.path().join("c.txt");
    std::fs::write(&corpus, "a few words of text. ".repeat(20)).unwrap();
    #[rustfmt::skip]
    let preprocess_cases: &[(&str, &str, &[&str])] = &[
        ("--seq-len", "0", &[]),
        ("--seq-len", "99999999999", &[]),
        ("--examples-per-shard", "0", &[]),
        ("--threads", "0", &[]),
        ("--val-fraction", "1", &[]),
        ("--val-fraction", "-0.1", &[]),
        ("--val-fraction", "nan", &[]),
        ("--seed", "x", &[]),
        ("--vocab-size", "10", &["--train-tokenizer", "bpe"]),
        ("--min-frequency", "0", &["--train-tokenizer", "wordlevel", "--vocab-size", "50"]),
    ];
    for (flag, value, extra) in preprocess_cases {
        let mut args = vec![
            format!("{flag}={value}"),
            "--input".into(),
            s(&corpus),
            "--out".into(),
            s(&out),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let o = Command::new(bin("preprocess"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "preprocess {flag}={value}: {}",
            text(&o)
        );
        assert!(
            stderr(&o).contains(flag),
            "preprocess {flag}={value}: {}",
            text(&o)
        );
        assert!(
            !out.exists(),
            "preprocess {flag}={value} must write nothing"
        );
    }
}

/// `--shards` naming a directory that does not exist says so, once (also with --model); a run
/// that fails to start leaves no `config.toml` (nor a folder) behind in a fresh --out.
#[test]
fn missing_shards_are_named_and_a_failed_start_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let missing = dir.path().join("nonexistent");
    for model in [None, Some("tiny")] {
        let mut args = vec!["--shards".into(), s(&missing), "--out".into(), s(&out)];
        if let Some(m) = model {
            args.extend(["--model".into(), m.into()]);
        }
        let o = train(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = stderr(&o);
        assert!(err.contains("no such directory"), "{err}");
        assert!(!err.contains("data_params.json"), "{err}");
        assert_eq!(err.matches(&s(&missing)).count(), 1, "said once: {err}");
    }
    // Rows of 32 tokens do not fit a context of 8: a runtime failure after the lock is taken.
    let data = shards(dir.path());
    let mut args = train_args(&data, &out, 2);
    args.extend(["--n-ctx".into(), "8".into()]);
    let o = train(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("context"), "{}", text(&o));
    assert!(
        !out.join("config.toml").exists(),
        "no config.toml after a failed start"
    );
    assert!(!out.exists(), "a fresh --out is not left behind");
}

/// Ids 50257–50303 sit in the padding rows of GPT-2's 50304-row embedding: no tokenizer
/// writes them, so the run stops naming the row instead of training on them.
#[test]
fn ids_in_the_vocabulary_padding_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    // Valid-looking corruption: an id in the padding, at position 3 of every row.
    for shard in ["shard-000000.h5", "shard-000001.h5"] {
        let file = hdf5::File::open_rw(data.join(shard)).unwrap();
        let ds = file.dataset("data").unwrap();
        let mut all: Vec<i32> = ds.read_raw().unwrap();
        for example in all.chunks_mut(3 * 32) {
            example[3] = 50_300;
        }
        ds.write_raw(&all).unwrap();
    }
    let out = dir.path().join("run");
    let mut args = train_args(&data, &out, 3);
    // The checksum no longer matches; this test is about the ids.
    args.push("--no-verify".into());
    let o = train(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("50300") && err.contains("vocabulary of 50257"),
        "{err}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verify: off"),
        "--no-verify says so: {}",
        text(&o)
    );
}

/// Every shard's checksum is checked before step 0, verified shards are cached beside them,
/// `--verify full` rehashes, and corruption or a changed manifest checksum stops the run.
#[test]
fn shards_are_verified_before_step_0_with_a_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let out = dir.path().join("run");
    let o = train(&train_args(&data, &out, 1));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains("2 shards, checksums OK | 0 unchanged"),
        "{stdout}"
    );
    assert!(data.join(".h5gpt-verified.json").is_file());

    let o = train(&train_args(&data, &dir.path().join("run2"), 1));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains("2 unchanged since verified, 0.0 MB hashed"),
        "{stdout}"
    );
    let mut full = train_args(&data, &dir.path().join("run3"), 1);
    full.extend(["--verify".into(), "full".into()]);
    let o = train(&full);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("0 unchanged since verified"),
        "{}",
        text(&o)
    );

    // A checksum changed in data_params.json (the shards untouched) is noticed, cache or not.
    let manifest = data.join("data_params.json");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let params: h5gpt_formats::DataParams = serde_json::from_str(&original).unwrap();
    let sum = &params.h5gpt.as_ref().unwrap().shards[1].xxh3_64;
    std::fs::write(
        &manifest,
        original.replace(sum.as_str(), "0123456789abcdef"),
    )
    .unwrap();
    let o = train(&train_args(&data, &dir.path().join("run4"), 1));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("shard-000001.h5"), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("step     0"));
    std::fs::write(&manifest, &original).unwrap();

    // In-place corruption of a shard (same size): caught before step 0.
    let shard = data.join("shard-000000.h5");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let o = train(&train_args(&data, &dir.path().join("run5"), 1));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("shard-000000.h5") && err.contains("checksum"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("step     0"));
}

/// Waits until `path` exists.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two real processes, one folder: the second refuses at once naming the holder; once the
/// holder is killed, its lock is stale and taken over (the log says so); another host's lock
/// is never taken over. For `train --out` and `preprocess --out` alike.
#[test]
fn a_second_writer_of_a_run_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let out = dir.path().join("run");
    let corpus = dir.path().join("corpus.txt");
    let pre_out = dir.path().join("pre");
    let cases: [(&str, Vec<String>, &Path); 2] = [
        ("train", train_args(&data, &out, 1), &out),
        (
            "preprocess",
            [
                "--input",
                &s(&corpus),
                "--out",
                &s(&pre_out),
                "--seq-len",
                "16",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
            &pre_out,
        ),
    ];
    for (name, args, folder) in cases {
        let mut holder = Command::new(bin(name))
            .args(&args)
            .env("H5GPT_FAULT", "hold-lock:60")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lock = folder.join(LOCK_FILE);
        wait_for(&lock);
        let started = Instant::now();
        let o = Command::new(bin(name)).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains("in use by") && err.contains(&format!("pid {}", holder.id())),
            "{name}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: refused at once"
        );
        let recorded = std::fs::read_to_string(&lock).unwrap();

        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(lock.exists(), "a killed holder leaves its lock");
        let o = Command::new(bin(name)).args(&args).output().unwrap();
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert!(
            text(&o).contains("took over the lock"),
            "{name}: the log says so: {}",
            text(&o)
        );
        assert!(!lock.exists(), "{name}: released at the end");

        let mut foreign: serde_json::Value = serde_json::from_str(&recorded).unwrap();
        foreign["host"] = "elsewhere.invalid".into();
        std::fs::write(&lock, foreign.to_string()).unwrap();
        let o = Command::new(bin(name)).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains("elsewhere.invalid")
                && err.contains(&format!("remove {}", lock.display())),
            "{name}: {err}"
        );
        std::fs::remove_file(&lock).unwrap();
    }
}

/// A restart from scratch after a kill before the first checkpoint writes the step-0
/// validation row once.
#[test]
fn a_restart_before_the_first_checkpoint_keeps_one_step_0_validation() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let out = dir.path().join("run");
    let mut args = train_args(&data, &out, 2);
    let at = args.iter().position(|a| a == "--eval-every").unwrap();
    args[at + 1] = "1".into();
    args.extend(["--eval-batches".into(), "1".into()]);
    let o = Command::new(bin("train"))
        .args(&args)
        .env("H5GPT_FAULT", "abort-during-save:1")
        .output()
        .unwrap();
    assert!(
        text(&o).contains("aborting in the middle of checkpoint save 1"),
        "{}",
        text(&o)
    );
    let o = train(&args);
    assert!(o.status.success(), "{}", text(&o));
    let step0_vals = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("val_loss").is_some() && r["step"] == 0)
        .count();
    assert_eq!(step0_vals, 1);
}

/// `inspect --verify` on a directory whose manifest is missing or unrelated JSON fails,
/// naming what is missing; a Cerebras-written manifest (no checksums) passes and says so.
#[test]
fn inspect_verify_needs_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let manifest = data.join("data_params.json");
    let original = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("data_params.json: missing"),
        "{}",
        text(&o)
    );
    std::fs::write(&manifest, r#"{"name": "something else", "version": 3}"#).unwrap();
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not a shard manifest"), "{}", text(&o));
    std::fs::write(&manifest, original).unwrap();
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));

    let cerebras = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cerebras");
    let o = run("inspect", &[&s(&cerebras), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no checksums to check"), "{}", text(&o));
}

/// After a failed preprocess, the hint's `--skip-bad-records` continues into the same --out;
/// a `.txt` of invalid UTF-8 says its only document was bad; `--force` into a folder that
/// held a split removes the split's folders.
#[test]
fn preprocess_skip_bad_records_and_force_leave_no_traps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.jsonl");
    let mut lines = String::new();
    for i in 0..400 {
        lines.push_str(&format!(
            "{{\"text\": \"document number {i} has words\"}}\n"
        ));
    }
    lines.push_str("{\"text\": broken\n");
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--input", &s(&input), "--out", &s(&out), "--seq-len", "8"]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let o = Command::new(bin("preprocess"))
        .args(args(&["--examples-per-shard", "50"]))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("--skip-bad-records"), "{}", text(&o));
    let o = Command::new(bin("preprocess"))
        .args(args(&["--examples-per-shard", "50", "--skip-bad-records"]))
        .output()
        .unwrap();
    assert!(o.status.success(), "the hint's command works: {}", text(&o));

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"caf\xe9 au lait\n").unwrap();
    let o = run(
        "preprocess",
        &[
            "--input",
            &s(&bad),
            "--out",
            &s(&dir.path().join("bad")),
            "--skip-bad-records",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains("were bad and skipped"), "{}", text(&o));

    let split = dir.path().join("split");
    let o = run(
        "preprocess",
        &[
            "--input",
            &s(&input),
            "--out",
            &s(&split),
            "--seq-len",
            "8",
            "--val-fraction",
            "0.2",
            "--skip-bad-records",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        "preprocess",
        &[
            "--input",
            &s(&input),
            "--out",
            &s(&split),
            "--seq-len",
            "8",
            "--skip-bad-records",
            "--force",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!split.join("train").exists() && !split.join("val").exists());
    assert!(split.join("data_params.json").is_file());
}

/// A document with a run longer than one pre-tokenizer piece may be (1 MiB without whitespace:
/// byte-pair encoding it would take about 60 bytes per byte) is a bad record naming its file
/// and line, not gigabytes of memory; `--skip-bad-records` skips it and keeps the others.
#[test]
fn a_document_without_whitespace_beyond_the_piece_limit_is_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.jsonl");
    let blob = "A".repeat((1 << 20) + 1);
    let lines = format!(
        "{{\"text\": \"a first document\"}}\n{{\"text\": \"x {blob} y\"}}\n{{\"text\": \"a last one\"}}\n"
    );
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out");
    let args = |extra: &str| {
        let mut a = vec!["--input".to_string(), s(&input), "--out".into(), s(&out)];
        a.extend(["--seq-len".into(), "8".into()]);
        if !extra.is_empty() {
            a.push(extra.into());
        }
        a
    };
    let o = Command::new(bin("preprocess"))
        .args(args(""))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("c.jsonl:2"), "names the file and line: {err}");
    assert!(err.contains("1048577 bytes without whitespace"), "{err}");
    assert!(err.contains("--skip-bad-records"), "{err}");
    let o = Command::new(bin("preprocess"))
        .args(args("--skip-bad-records"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let params: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("data_params.json")).unwrap()).unwrap();
    let stream = params["post-process"]["num_stream_tokens"].as_u64();
    assert!(
        stream.is_some_and(|t| t < 20),
        "only the two short documents: {params}"
    );
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                s(&p).rsplit('/').next().unwrap().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

/// Interrupt preprocess, edit the input in place (same size), rerun: the resume re-hashes the
/// input it had read and refuses, naming the file, instead of splicing old and new shards;
/// `--force` starts over and ends as a clean run of the new text does.
#[test]
fn an_input_edited_before_a_resume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.jsonl");
    let corpus = |word: &str| -> String {
        (0..300)
            .map(|i| format!("{{\"text\": \"document {i:04} {word} with a few words in it\"}}\n"))
            .collect()
    };
    std::fs::write(&input, corpus("alpha")).unwrap();
    let out = dir.path().join("out");
    let args = |out: &Path| -> Vec<String> {
        [
            "--input",
            &s(&input),
            "--out",
            &s(out),
            "--seq-len",
            "8",
            "--examples-per-shard",
            "20",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let o = Command::new(bin("preprocess"))
        .args(args(&out))
        .env("H5GPT_FAULT", "abort-after-shard:2")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    std::fs::write(&input, corpus("gamma")).unwrap();
    let o = Command::new(bin("preprocess"))
        .args(args(&out))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("c.jsonl") && err.contains("--force"), "{err}");
    assert!(!out.join("data_params.json").exists(), "nothing finished");

    let mut forced = args(&out);
    forced.push("--force".into());
    let o = Command::new(bin("preprocess"))
        .args(&forced)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let clean = dir.path().join("clean");
    let o = Command::new(bin("preprocess"))
        .args(args(&clean))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files_in(&out), files_in(&clean));
}

/// A truncated or corrupted newest checkpoint is skipped, saying which and why, and the run
/// resumes from the newest one that loads and verifies; a checkpoint written before
/// `state.json` had a version still loads; when none loads, a clear error.
#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = shards(dir.path());
    let out = dir.path().join("run");
    let args = |steps: usize| {
        let mut a = train_args(&data, &out, steps);
        a.extend(["--save-every", "2", "--keep-checkpoints", "3"].map(String::from));
        a
    };
    let o = train(&args(4));
    assert!(o.status.success(), "{}", text(&o));
    let ckpt = |step: usize| out.join(format!("checkpoints/step-{step:08}"));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt(4).join("state.json")).unwrap()).unwrap();
    assert_eq!(state["version"], h5gpt_formats::run::STATE_VERSION);
    assert!(state["files"]["model.safetensors"].is_string(), "{state}");

    // Truncated: the header promises more than the file has.
    let model = ckpt(4).join("model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Step 2 as written before state.json had `version` and `files`.
    let v0 = ckpt(2).join("state.json");
    let mut old: serde_json::Value = serde_json::from_slice(&std::fs::read(&v0).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("version");
    old.as_object_mut().unwrap().remove("files");
    std::fs::write(&v0, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let o = train(&args(6));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains(&format!(
            "skipped checkpoint {}: model.safetensors",
            ckpt(4).display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("resuming from") && stdout.contains("(step 2)"),
        "{stdout}"
    );

    // Corrupted in place, same size: the checksum in state.json tells.
    let optimizer = ckpt(6).join("optimizer.safetensors");
    let mut bytes = std::fs::read(&optimizer).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&optimizer, &bytes).unwrap();
    let o = train(&args(8));
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains("optimizer.safetensors: checksum"),
        "{stdout}"
    );
    assert!(stdout.contains("(step 4)"), "{stdout}");

    // None usable: an error with a hint, not a raw safetensors message.
    for entry in std::fs::read_dir(out.join("checkpoints")).unwrap() {
        let model = entry.unwrap().path().join("model.safetensors");
        std::fs::write(&model, b"garbage").unwrap();
    }
    let o = train(&args(10));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("no checkpoint loads and verifies") && err.contains("HINT"),
        "{err}"
    );
}
