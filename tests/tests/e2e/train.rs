//! `preprocess` → `train` → `sample` → `eval` end to end: a kill in the middle of a checkpoint
//! save, SIGTERM, `--resume`, `--config` files.

use h5gpt_tests::{bin, run, text};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

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
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|row| row.get("loss").is_some())
        .map(|row| row["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (0..6).collect::<Vec<_>>());
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A small generated corpus of a few dozen words in jsonl, preprocessed into `dir/shards`.
fn small_shards(dir: &Path, seq_len: usize) -> std::path::PathBuf {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "big", "red", "house",
        "in", "sun", "light", "of", "morning", "bird", "sang",
    ];
    let mut state = 42u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut jsonl = String::new();
    for _ in 0..300 {
        let n = 20 + next() % 40;
        let doc: Vec<&str> = (0..n).map(|_| words[next() % words.len()]).collect();
        jsonl.push_str(&format!("{{\"text\": \"{}.\"}}\n", doc.join(" ")));
    }
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(&corpus, jsonl).unwrap();
    let shards = dir.join("shards");
    let o = run(
        "preprocess",
        &[
            "--input",
            &s(&corpus),
            "--out",
            &s(&shards),
            "--seq-len",
            &seq_len.to_string(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    shards
}

fn metric_rows(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// preprocess → train → sample → eval, as the README walks through it: `h5gpt train` (through
/// `h5gpt-torch`), a console line every `--log-every` steps, and `h5gpt eval` typed into bash.
#[test]
fn preprocess_train_sample_eval() {
    let dir = tempfile::tempdir().unwrap();
    let shards = small_shards(dir.path(), 32);
    let out = dir.path().join("run");
    let o = run(
        "h5gpt",
        &[
            "train",
            "--log-every",
            "10",
            "--shards",
            &s(&shards),
            "--out",
            &s(&out),
            "--model",
            "tiny",
            "--micro-batch",
            "8",
            "--total-batch-tokens",
            "256",
            "--max-steps",
            "40",
            "--lr",
            "3e-3",
            "--eval-every",
            "20",
            "--eval-batches",
            "2",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = metric_rows(&out);
    let train_loss: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    let val_loss: Vec<f64> = rows.iter().filter_map(|r| r["val_loss"].as_f64()).collect();
    assert_eq!(train_loss.len(), 40);
    assert_eq!(val_loss.len(), 3, "at 0, 20 and 40 steps");
    let step_lines: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" | loss "))
        .filter_map(|l| l.strip_prefix("step "))
        .map(|l| l.split('|').next().unwrap().trim())
        .collect();
    assert_eq!(step_lines, ["0", "10", "20", "30", "39"], "{}", text(&o));
    assert!(val_loss[2] < val_loss[0] - 1.0, "{val_loss:?}");
    for f in [
        "config.toml",
        "loss.png",
        "checkpoints/step-00000040/state.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    let o = run(
        "sample",
        &[
            "--checkpoint",
            &s(&out),
            "--prompt",
            "the cat",
            "--max-new-tokens",
            "12",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sampled = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(sampled.starts_with("the cat"), "{sampled}");
    assert!(sampled.trim().len() > "the cat".len(), "{sampled}");
    // Greedy decoding is deterministic whatever the seed.
    let greedy = |seed: &str| {
        let o = run(
            "sample",
            &[
                "--checkpoint",
                &s(&out),
                "--prompt",
                "the",
                "--max-new-tokens",
                "8",
                "--top-k",
                "1",
                "--seed",
                seed,
                "--device",
                "cpu",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(greedy("1"), greedy("2"));

    // As the README writes it, in bash (where a bare `eval` is the shell's builtin).
    let bin_dir = bin("h5gpt").parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "h5gpt eval --checkpoint '{}' --shards '{}' --json --device cpu",
            s(&out),
            s(&shards)
        ))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let loss = result["loss"].as_f64().unwrap();
    assert!(
        loss < val_loss[0] - 1.0,
        "eval loss {loss} vs initial {val_loss:?}"
    );
    let ppl = result["perplexity"].as_f64().unwrap();
    assert!((ppl - loss.exp()).abs() < 1e-6 * ppl);

    // Export to Hugging Face's layout, then start a new run from it: its first validation
    // (same held-out rows) sees the trained model's final validation loss.
    let hf = dir.path().join("hf");
    let o = run("export", &["--checkpoint", &s(&out), "--hf", &s(&hf)]);
    assert!(o.status.success(), "{}", text(&o));
    let from_hf = dir.path().join("from-hf");
    let o = run(
        "train",
        &[
            "--shards",
            &s(&shards),
            "--out",
            &s(&from_hf),
            "--init-from-hf",
            &s(&hf),
            "--micro-batch",
            "8",
            "--total-batch-tokens",
            "256",
            "--max-steps",
            "1",
            "--eval-every",
            "1",
            "--eval-batches",
            "2",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let first = metric_rows(&from_hf)[0]["val_loss"].as_f64().unwrap();
    assert!(
        (first - val_loss[2]).abs() < 1e-4,
        "{first} vs {}",
        val_loss[2]
    );
}

/// SIGTERM saves a checkpoint and exits cleanly; `--resume` continues from it.
#[test]
fn sigterm_checkpoints_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let shards = small_shards(dir.path(), 32);
    let out = dir.path().join("run");
    let mut child = Command::new(bin("train"))
        .args([
            "--shards",
            &s(&shards),
            "--out",
            &s(&out),
            "--model",
            "tiny",
            "--micro-batch",
            "4",
            "--total-batch-tokens",
            "128",
            "--max-steps",
            "100000",
            "--save-every",
            "100000",
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let started = line.starts_with("step     2 |");
        seen.push(line);
        if started {
            let kill = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("stopped by a signal")),
        "{seen:#?}"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(out.join("checkpoints"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path()
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(step >= 3, "{state}");

    let target = (step + 2).to_string();
    let o = run(
        "train",
        &["--out", &s(&out), "--resume", "--max-steps", &target],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("(step {step})")),
        "resumed where the signal stopped it: {stdout}"
    );
    assert!(out
        .join(format!("checkpoints/step-{:08}/state.json", step + 2))
        .is_file());
}

/// A --config file sets options, flags override it, the run records the resolved options, and
/// a misspelled key is refused with the file named.
#[test]
fn config_files_flags_and_resolved_config() {
    let dir = tempfile::tempdir().unwrap();
    let shards = small_shards(dir.path(), 32);
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "shards = {:?}\nmodel = \"tiny\"\nn_layer = 1\nlr = 0.002\nmax_steps = 5\nmicro_batch = 4\ntotal_batch_tokens = 128\neval_every = 0\ndevice = \"cpu\"\n",
            s(&shards)
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--config",
            &s(&config),
            "--out",
            &s(&out),
            "--max-steps",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = metric_rows(&out);
    assert_eq!(rows.len(), 2, "the flag beats the file");
    assert_eq!(
        rows[1]["lr"].as_f64(),
        Some(0.002 * 2.0 / 10.0),
        "warm-up of 10"
    );
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for line in ["n_layer = 1", "lr = 0.002", "max_steps = 2", "n_ctx = 32"] {
        assert!(resolved.contains(line), "{line} in {resolved}");
    }
    // The resolved file reproduces the run.
    let again = dir.path().join("again");
    let o = run(
        "train",
        &[
            "--config",
            &s(&out.join("config.toml")),
            "--out",
            &s(&again),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let losses = |rows: Vec<serde_json::Value>| {
        rows.iter()
            .map(|r| r["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(metric_rows(&again)), losses(rows));

    std::fs::write(&config, "shards = \"x\"\nlearning_rate = 0.1\n").unwrap();
    let o = run("train", &["--config", &s(&config)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("run.toml") && err.contains("learning_rate"),
        "{err}"
    );
}

/// Without --model, the model is sized to the data (Chinchilla's 20 tokens per parameter): a
/// small corpus gets the family's smallest shape, and the run records `model = "auto"`.
#[test]
fn the_default_model_is_sized_to_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let shards = small_shards(dir.path(), 32);
    let out = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--shards",
            &s(&shards),
            "--out",
            &s(&out),
            "--max-steps",
            "1",
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("model auto: sized for --max-steps 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("chose d_model 64, 1 layer, 1 head"),
        "{stdout}"
    );
    let resolved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for line in [
        "model = \"auto\"",
        "n_layer = 1",
        "n_embd = 64",
        "n_ctx = 32",
    ] {
        assert!(resolved.contains(line), "{line} in {resolved}");
    }
}
