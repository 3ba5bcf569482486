//! Issue 24 (reliability, second pass): the misuses an adversarial user tried, each as the
//! binary sees it: exit codes, messages, and nothing lost.

use h5gpt_tests::{fox_shards, run, text};
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tiny model trained for `steps` steps on the fox corpus: (run directory, shards).
fn tiny_run(dir: &Path, steps: &str) -> (PathBuf, PathBuf) {
    let shards = fox_shards(dir, 200, &[]);
    let out = dir.join("run");
    let o = run(
        "train",
        &[
            "--shards",
            s(&shards),
            "--out",
            s(&out),
            "--model",
            "tiny",
            "--micro-batch",
            "4",
            "--total-batch-tokens",
            "128",
            "--max-steps",
            steps,
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    (out, shards)
}

/// Items 3, 15 and 17: numbers `sample` and `eval` panicked on or accepted are usage errors
/// (exit 2) naming the flag; a resume below the checkpoint's step says the run is past it.
#[test]
fn sample_and_eval_check_their_numbers_and_a_resume_past_max_steps_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (out, shards) = tiny_run(dir.path(), "3");
    let checkpoint = s(&out);
    for (bin, args, flag) in [
        ("sample", vec!["--temperature", "nan"], "--temperature"),
        ("sample", vec!["--temperature=-1"], "--temperature"),
        ("sample", vec!["--temperature", "inf"], "--temperature"),
        ("sample", vec!["--top-k", "0"], "--top-k"),
        ("sample", vec!["--num-samples", "0"], "--num-samples"),
        (
            "eval",
            vec!["--shards", s(&shards), "--micro-batch", "0"],
            "--micro-batch",
        ),
        (
            "eval",
            vec!["--shards", s(&shards), "--max-rows", "0"],
            "--max-rows",
        ),
        (
            "sample",
            vec!["--tokenizer", "no-such-tokenizer"],
            "--tokenizer",
        ),
    ] {
        let mut all = vec!["--checkpoint", checkpoint, "--device", "cpu"];
        all.extend(&args);
        let o = run(bin, &all);
        assert_eq!(o.status.code(), Some(2), "{bin} {args:?}: {}", text(&o));
        assert!(stderr(&o).contains(flag), "{bin} {args:?}: {}", stderr(&o));
    }
    // The greedy edge (temperature 0) and a given tokenizer that is the run's still work.
    let o = run(
        "sample",
        &[
            "--checkpoint",
            checkpoint,
            "--device",
            "cpu",
            "--temperature",
            "0",
            "--max-new-tokens",
            "3",
            "--tokenizer",
            "gpt2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // Resuming with --max-steps below the checkpoint's step.
    let o = run(
        "train",
        &[
            "--out",
            s(&out),
            "--resume",
            "--max-steps",
            "2",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("already at step 3, past the 2 steps asked"),
        "{stdout}"
    );
    assert!(!stdout.contains("done: steps 3..3 of 2"), "{stdout}");
}

/// Item 3: a checkpoint that records `gpt2` for a model of a smaller vocabulary (as one
/// trained on Cerebras-written shards does) made `sample --prompt` index past the embedding
/// and panic. It is refused at start with a message; `--tokenizer FILE` gives the right one.
#[test]
fn a_tokenizer_larger_than_the_model_is_refused_and_tokenizer_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let shards = fox_shards(
        dir.path(),
        200,
        &["--train-tokenizer", "wordlevel", "--vocab-size", "64"],
    );
    let out = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--shards",
            s(&shards),
            "--out",
            s(&out),
            "--model",
            "tiny",
            "--micro-batch",
            "4",
            "--total-batch-tokens",
            "128",
            "--max-steps",
            "1",
            "--eval-every",
            "0",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // What such a checkpoint looks like: `gpt2` recorded, no tokenizer.json.
    let checkpoint = out.join("checkpoints/step-00000001");
    let state_path = checkpoint.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["tokenizer"] = "gpt2".into();
    state["eos_id"] = serde_json::Value::Null;
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let _ = std::fs::remove_file(checkpoint.join("tokenizer.json"));

    let sample = |extra: &[&str]| {
        let mut args = vec![
            "--checkpoint",
            s(&out),
            "--device",
            "cpu",
            "--prompt",
            "the quick brown fox",
            "--max-new-tokens",
            "3",
        ];
        args.extend(extra);
        run("sample", &args)
    };
    let o = sample(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`gpt2` has 50257 tokens") && err.contains("--tokenizer"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let tokenizer = shards.join("tokenizer.json");
    let o = sample(&["--tokenizer", s(&tokenizer)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("fox"),
        "{}",
        text(&o)
    );
}

/// A "billion laughs" config: nine or twelve levels of nested aliases in a few hundred bytes.
fn alias_bomb(levels: usize) -> String {
    let names: Vec<char> = ('a'..='z').take(levels).collect();
    let mut text = format!("{}: &{} [x, x, x, x, x, x, x, x, x]\n", names[0], names[0]);
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!("{}: &{} [{items}]\n", pair[1], pair[1]));
    }
    text
}

/// Items 2, 4 and 15: an alias bomb, shapes beyond the limits, a token count beyond what a
/// count holds, an unopenable path, a missing config and mismatched weights are usage errors
/// (exit 2) that say what is wrong, before anything large is built.
#[test]
fn bombs_huge_shapes_and_bad_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shards = fox_shards(dir.path(), 50, &[]);
    let mut cases: Vec<(&str, Vec<String>, &str)> = Vec::new();
    for levels in [9, 12] {
        let bomb = dir.path().join(format!("bomb{levels}.yaml"));
        std::fs::write(&bomb, alias_bomb(levels)).unwrap();
        let bomb = bomb.display().to_string();
        cases.push(("plan", vec!["--config".into(), bomb.clone()], "aliases"));
        cases.push((
            "train",
            vec![
                "--config".into(),
                bomb,
                "--shards".into(),
                s(&shards).into(),
                "--out".into(),
                s(&dir.path().join("never")).into(),
            ],
            "aliases",
        ));
    }
    let args = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    cases.extend([
        (
            "plan",
            args(&["--n-layer", "4000000000"]),
            "n_layer 4000000000",
        ),
        (
            "plan",
            args(&["--n-embd", "4000000000", "--n-head", "1"]),
            "n_embd",
        ),
        ("plan", args(&["--tokens", "1e300"]), "--tokens"),
        ("plan", args(&["--flops", "1e300"]), "--flops"),
        ("plan", args(&["--peak-tflops", "inf"]), "--peak-tflops"),
        ("plan", args(&["--ratio", "inf"]), "--ratio"),
        (
            "plan",
            args(&["--config", "/nonexistent/x.yaml"]),
            "/nonexistent/x.yaml",
        ),
        (
            "inspect",
            args(&["/nonexistent/shards"]),
            "/nonexistent/shards",
        ),
        (
            "inspect",
            args(&["--run", "/nonexistent/run", "--check-epochs"]),
            "/nonexistent/run",
        ),
        (
            "inspect",
            args(&[s(&shards), "--max-violations", "0"]),
            "--max-violations",
        ),
        (
            "train",
            args(&["--shards", s(&shards), "--config", "/nonexistent/c.toml"]),
            "/nonexistent/c.toml",
        ),
        (
            "train",
            args(&[
                "--shards",
                s(&shards),
                s(&shards),
                "--weights",
                "1",
                "2",
                "3",
            ]),
            "--weights",
        ),
    ]);
    for (bin, args, needle) in &cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(bin, &refs);
        assert_eq!(o.status.code(), Some(2), "{bin} {args:?}: {}", text(&o));
        assert!(
            stderr(&o).contains(needle),
            "{bin} {args:?}: {}",
            stderr(&o)
        );
    }
    assert!(!dir.path().join("never").exists());
}

/// Item 15: `--weights 1e308 1e308` summed to infinity and became "weight 0"; it is an even
/// blend.
#[test]
fn huge_equal_weights_are_an_even_blend() {
    let dir = tempfile::tempdir().unwrap();
    for set in ["a", "b"] {
        std::fs::create_dir(dir.path().join(set)).unwrap();
    }
    let a = fox_shards(&dir.path().join("a"), 100, &[]);
    let b = fox_shards(&dir.path().join("b"), 100, &[]);
    let out = dir.path().join("run");
    let o = run(
        "train",
        &[
            "--shards",
            s(&a),
            s(&b),
            "--weights",
            "1e308",
            "1e308",
            "--out",
            s(&out),
            "--model",
            "tiny",
            "--micro-batch",
            "4",
            "--total-batch-tokens",
            "128",
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
    assert!(!stdout.contains("weight 0 "), "{stdout}");
    assert!(stdout.contains("0.5"), "{stdout}");
}

/// Item 4: libtorch's allocation failure while the model is built (a 64 TB embedding: no
/// machine allocates it, overcommit or not) is the documented out-of-memory error, exit 1,
/// not "internal error (a bug)".
#[test]
fn a_model_too_large_to_allocate_is_out_of_memory_not_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let shards = fox_shards(dir.path(), 50, &[]);
    let o = run(
        "train",
        &[
            "--shards",
            s(&shards),
            "--out",
            s(&dir.path().join("run")),
            "--model",
            "tiny",
            "--n-layer",
            "1",
            "--n-head",
            "1",
            "--n-embd",
            "1048576",
            "--vocab-size",
            "16777216",
            "--max-steps",
            "1",
            "--device",
            "cpu",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("out of memory"), "{err}");
    assert!(
        !err.contains("internal error") && !err.contains("panicked"),
        "{err}"
    );
}
