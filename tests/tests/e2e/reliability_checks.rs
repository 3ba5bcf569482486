//! Checks that could be fooled, paths, locks and full disks (issue 24, items 6–13, 16, 18):
//! each test pins a way a user could make a run read, skip or lose something without a word.

use h5gpt_formats::lock::LOCK_FILE;
use h5gpt_tests::{bin, fox_shards, run, text, tiny_train_args as train_args, train};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn preprocess(args: &[&str]) -> Output {
    run("preprocess", args)
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("data_params.json")).unwrap()).unwrap()
}

/// Item 6: a shard changed with its mtime set back (`touch -r`) is hashed again: the cache
/// keys on the ctime as well.
#[test]
fn a_shard_changed_with_its_mtime_restored_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &["--examples-per-shard", "64"]);
    let o = train(&train_args(&data, &dir.path().join("run"), 1));
    assert!(o.status.success(), "{}", text(&o));
    let shard = data.join("shard-000000.h5");
    let mtime = std::fs::metadata(&shard).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = train(&train_args(&data, &dir.path().join("run2"), 1));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("shard-000000.h5") && stderr(&o).contains("checksum"),
        "{}",
        text(&o)
    );
}

/// Items 7 and 8: one check of the manifest, run by `train` and `inspect --verify` alike: an
/// edited tokenizer label, an edited `eos_id` (one copy, or both), a newer `format_version`.
#[test]
fn an_edited_manifest_is_refused_by_train_and_inspect_alike() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &["--examples-per-shard", "64"]);
    let path = data.join("data_params.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&original).unwrap();
        f(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "label",
            Box::new(|v| v["h5gpt"]["tokenizer"] = "cl100k_base".into()),
            "vocab_size is 50257 but tokenizer `cl100k_base` has 100277",
        ),
        (
            "unknown label",
            Box::new(|v| v["h5gpt"]["tokenizer"] = "my-bpe".into()),
            "tokenizer `my-bpe` without a tokenizer.json",
        ),
        (
            "eos, one copy",
            Box::new(|v| v["post-process"]["eos_id"] = 50255.into()),
            "processing.eos_id is 50256 but post-process.eos_id is 50255",
        ),
        (
            "eos, both copies",
            Box::new(|v| {
                v["post-process"]["eos_id"] = 50255.into();
                v["processing"]["eos_id"] = 50255.into();
            }),
            "post-process.eos_id is 50255 but tokenizer `gpt2` has 50256",
        ),
        (
            "format_version",
            Box::new(|v| v["h5gpt"]["format_version"] = 99.into()),
            "format_version 99: written by a newer h5gpt",
        ),
    ];
    for (name, f, expected) in &cases {
        edit(f.as_ref());
        let o = train(&train_args(&data, &dir.path().join("run"), 1));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(stderr(&o).contains(expected), "{name}: {}", text(&o));
        assert!(
            !dir.path().join("run").join("checkpoints").exists(),
            "{name}"
        );
        let o = run("inspect", &[&s(&data), "--verify"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(text(&o).contains(expected), "{name}: {}", text(&o));
    }
    // A field added by later work is additive: read, and ignored.
    edit(&|v| v["post-process"]["dedup_documents_removed"] = 3.into());
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Item 7: `inspect --verify` refuses a `tokenizer.json` whose checksum disagrees with the
/// manifest, as `train` does.
#[test]
fn inspect_verify_refuses_a_tampered_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(300),
    )
    .unwrap();
    let data = dir.path().join("shards");
    let o = preprocess(&[
        "--input",
        &s(&corpus),
        "--out",
        &s(&data),
        "--seq-len",
        "32",
        "--train-tokenizer",
        "wordlevel",
        "--vocab-size",
        "64",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
    let tok = data.join("tokenizer.json");
    let mut json = std::fs::read(&tok).unwrap();
    json.extend_from_slice(b"\n");
    std::fs::write(&tok, json).unwrap();
    let o = run("inspect", &[&s(&data), "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("tokenizer.json") && text(&o).contains("data_params.json records"),
        "{}",
        text(&o)
    );
    let mut args = train_args(&data, &dir.path().join("run"), 1);
    args.extend(["--vocab-size".into(), "64".into()]);
    let o = train(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("data_params.json records"),
        "{}",
        text(&o)
    );
}

/// Item 9: a resume that would read other data (another `--shuffle`, other `--shards`) is
/// refused naming the difference; `--allow-data-change` goes on and is recorded.
#[test]
fn a_resume_on_other_data_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    let a = fox_shards(&dir.path().join("a"), 300, &[]);
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_corpus = b_dir.join("corpus.txt");
    std::fs::write(
        &b_corpus,
        "a slow red hen walks under the busy bridge. ".repeat(300),
    )
    .unwrap();
    let b = b_dir.join("shards");
    let o = preprocess(&["--input", &s(&b_corpus), "--out", &s(&b), "--seq-len", "32"]);
    assert!(o.status.success(), "{}", text(&o));

    let out = dir.path().join("run");
    let o = train(&train_args(&a, &out, 2));
    assert!(o.status.success(), "{}", text(&o));

    let mut unshuffled = train_args(&a, &out, 4);
    unshuffled.extend(["--shuffle".into(), "false".into()]);
    let o = train(&unshuffled);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("--shuffle true then, --shuffle false now")
            && stderr(&o).contains("--allow-data-change"),
        "{}",
        text(&o)
    );

    let o = train(&train_args(&b, &out, 4));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("other training data") && err.contains(&s(&a)) && err.contains(&s(&b)),
        "{}",
        text(&o)
    );
    assert_eq!(
        h5gpt_formats::run::read_segments(&out).unwrap().len(),
        1,
        "a refused resume records nothing"
    );

    let mut allowed = train_args(&b, &out, 4);
    allowed.push("--allow-data-change".into());
    let o = train(&allowed);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--allow-data-change: resuming on changed data"),
        "{}",
        text(&o)
    );
    let segments = h5gpt_formats::run::read_segments(&out).unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0].data_change, None);
    let change = segments[1].data_change.as_deref().unwrap();
    assert!(change.contains("other training data"), "{change}");

    // The same data again: a plain resume.
    let o = train(&train_args(&b, &out, 6));
    assert!(o.status.success(), "{}", text(&o));
}

/// Item 10: a rerun into a complete output notices an input edited in place (same size, new
/// mtime) instead of saying "nothing to do".
#[test]
fn a_complete_run_is_rechecked_against_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(100),
    )
    .unwrap();
    let out = dir.path().join("out");
    let args = ["--input", &s(&corpus), "--out", &s(&out), "--seq-len", "32"];
    let o = preprocess(&args);
    assert!(o.status.success(), "{}", text(&o));
    let o = preprocess(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));

    std::fs::write(
        &corpus,
        "the quick brown cat jumps over the lazy dog. ".repeat(100),
    )
    .unwrap();
    let o = preprocess(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains(&s(&corpus)) && stderr(&o).contains("changed since the run"),
        "{}",
        text(&o)
    );
    let o = preprocess(&[&args[..], &["--force"]].concat());
    assert!(o.status.success(), "{}", text(&o));
}

/// Items 11 and 12: `--out` inside an `--input` directory is left out of the walk (and said),
/// so the rerun is complete, `--force` redoes the same rows; run identity does not depend on
/// how the paths are spelled.
#[test]
fn an_output_inside_the_input_and_paths_spelled_differently_are_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let corp = dir.path().join("corp");
    std::fs::create_dir_all(&corp).unwrap();
    std::fs::write(
        corp.join("a.txt"),
        "the quick brown fox jumps over the lazy dog. ".repeat(100),
    )
    .unwrap();
    let out = corp.join("shards");
    let args = ["--input", &s(&corp), "--out", &s(&out), "--seq-len", "32"];
    let o = preprocess(&args);
    assert!(o.status.success(), "{}", text(&o));
    let first = manifest(&out);
    let o = preprocess(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));
    assert!(
        stderr(&o).contains("skipped") && stderr(&o).contains("the output folder (--out)"),
        "{}",
        text(&o)
    );
    let o = preprocess(&[&args[..], &["--force"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        manifest(&out)["h5gpt"],
        first["h5gpt"],
        "--force redoes the same shards"
    );

    // `./corp` and `corp/`, `./corp/shards` and `corp/shards`: the same run.
    let o = Command::new(bin("preprocess"))
        .current_dir(dir.path())
        .args([
            "--input",
            "./corp/",
            "--out",
            "corp/./shards",
            "--seq-len",
            "32",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));
}

/// Item 12: with a trained tokenizer and a split inside documents, `val/` records the
/// tokenizer by content and by a path relative to it, so a copied output is the same run.
#[test]
fn a_copied_output_with_a_trained_tokenizer_is_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog.\n".repeat(100),
    )
    .unwrap();
    let out = dir.path().join("out");
    let args = |out: &Path| {
        [
            "--input",
            &s(&corpus),
            "--out",
            &s(out),
            "--seq-len",
            "16",
            "--val-fraction",
            "0.1",
            "--train-tokenizer",
            "wordlevel",
            "--vocab-size",
            "64",
        ]
        .map(String::from)
    };
    let o = Command::new(bin("preprocess"))
        .args(args(&out))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let val = manifest(&out.join("val"));
    assert_eq!(val["processing"]["tokenizer"], "../train/tokenizer.json");
    // The inputs are recorded as given (outside the output folder); nothing of the output
    // folder's own path is, so a copy or a move of it is the same run.
    assert!(
        !val.to_string().contains(&s(&out)),
        "no path into the output folder: {val}"
    );

    let copy = dir.path().join("copy");
    let status = Command::new("cp")
        .args(["-a", &s(&out), &s(&copy)])
        .status()
        .unwrap();
    assert!(status.success());
    let o = Command::new(bin("preprocess"))
        .args(args(&copy))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));
}

/// Item 13: links to directories are followed (a loop is walked once), a file reached by two
/// paths is read once, and what was skipped is reported with the reason.
#[test]
fn symlinks_in_input_directories_are_followed_once_and_skips_reported() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let corp = dir.path().join("corp");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(corp.join("sub")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let doc = |words: &str| format!("{words} ").repeat(50);
    std::fs::write(corp.join("a.txt"), doc("alpha beta")).unwrap();
    std::fs::write(corp.join("sub/b.txt"), doc("gamma delta")).unwrap();
    std::fs::write(elsewhere.join("c.txt"), doc("epsilon zeta")).unwrap();
    symlink(&elsewhere, corp.join("linked")).unwrap(); // a directory: followed
    symlink(&corp, corp.join("sub/loop")).unwrap(); // a loop: walked once
    symlink(corp.join("a.txt"), corp.join("z-same.txt")).unwrap(); // a.txt again: read once
    symlink(dir.path().join("gone"), corp.join("dangling")).unwrap();
    let out = dir.path().join("out");
    let o = preprocess(&["--input", &s(&corp), "--out", &s(&out), "--seq-len", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    let m = manifest(&out);
    let files: Vec<String> = m["setup"]["input_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        files,
        [
            s(&corp.join("a.txt")),
            s(&corp.join("linked/c.txt")),
            s(&corp.join("sub/b.txt"))
        ],
        "{}",
        text(&o)
    );
    let err = stderr(&o);
    for (entry, why) in [
        ("sub/loop", "walked once"),
        ("z-same.txt", "read once"),
        ("dangling", "symbolic link that leads nowhere"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains("skipped") && l.contains(entry) && l.contains(why)),
            "{entry}: {err}"
        );
    }
}

/// Item 16: the flock is the truth: a lock file naming a live, unrelated process (pid 1), an
/// empty one and a garbled one are stale when no process holds their flock; taken over, and
/// said.
#[test]
fn stale_lock_files_are_taken_over_whatever_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(50),
    )
    .unwrap();
    let host = h5gpt_formats::lock::hostname();
    let pid1 = format!(r#"{{"pid":1,"host":"{host}","started":1,"command":"preprocess"}}"#);
    for (i, content) in [pid1.as_str(), "", "}{ garbled"].iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        std::fs::create_dir_all(&out).unwrap();
        let lock = out.join(LOCK_FILE);
        std::fs::write(&lock, content).unwrap();
        // Made a minute ago (a lock file made this very moment may be one being created).
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&lock)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let o = preprocess(&["--input", &s(&corpus), "--out", &s(&out), "--seq-len", "32"]);
        assert!(o.status.success(), "{content:?}: {}", text(&o));
        assert!(
            stderr(&o).contains("took over the lock left by")
                && stderr(&o).contains("no process holds its flock"),
            "{content:?}: {}",
            text(&o)
        );
        assert!(!lock.exists(), "released at the end");
    }
}

/// Runs `program` with `args` under a file-size limit of `limit` bytes (RLIMIT_FSIZE, as
/// `ulimit -f` sets), SIGXFSZ ignored, so a write past it fails with EFBIG, as on a full disk.
fn with_file_size_limit(program: &Path, args: &[String], limit: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (setrlimit, signal) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// Every `*.h5` under `dir` (recursively).
fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(shard_files(&path));
        } else if path.extension().is_some_and(|e| e == "h5") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Item 18: a full disk (here: the file-size limit, EFBIG) while writing a shard, or a
/// manifest that cannot be written, exits 1 naming the file, leaves no partial file under a
/// final name, and the rerun with room finishes the same output as a run that never failed.
#[test]
fn a_full_disk_while_preprocessing_exits_1_and_the_rerun_continues() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the quick brown fox jumps over the lazy dog. ".repeat(3000),
    )
    .unwrap();
    let reference = dir.path().join("reference");
    let args = |out: &Path| -> Vec<String> {
        [
            "--input",
            &s(&corpus),
            "--out",
            &s(out),
            "--seq-len",
            "32",
            "--examples-per-shard",
            "200",
        ]
        .map(String::from)
        .to_vec()
    };
    let o = Command::new(bin("preprocess"))
        .args(args(&reference))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let expected = manifest(&reference)["h5gpt"].clone();
    let shard_bytes = expected["shards"][0]["bytes"].as_u64().unwrap();

    // A shard that does not fit: exit 1 naming it, no partial shard under a final name.
    let out = dir.path().join("out");
    let limit = shard_bytes / 2;
    let o = with_file_size_limit(&bin("preprocess"), &args(&out), limit);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains(&s(&out)), "names the path: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    assert!(shard_files(&out).is_empty(), "{:?}", shard_files(&out));
    assert!(!out.join("data_params.json").exists());

    // The manifest cannot be written (a folder where its temporary file goes): exit 1 naming
    // it, the shards in place, no data_params.json.
    let blocker = out.join(".data_params.json.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let o = Command::new(bin("preprocess"))
        .args(args(&out))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(stderr(&o).contains(&s(&blocker)), "{}", text(&o));
    assert!(!out.join("data_params.json").exists());
    assert_eq!(
        shard_files(&out).len(),
        expected["shards"].as_array().unwrap().len()
    );

    // Room again: the rerun continues and ends with the output of a run that never failed.
    std::fs::remove_dir(&blocker).unwrap();
    let o = Command::new(bin("preprocess"))
        .args(args(&out))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(manifest(&out)["h5gpt"], expected);
    let o = run("inspect", &[&s(&out), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Item 18: a full disk while writing a checkpoint exits 1 naming it, leaves no checkpoint
/// under its final name, and the rerun with room resumes from the last complete one.
#[test]
fn a_full_disk_while_saving_a_checkpoint_exits_1_and_the_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = fox_shards(dir.path(), 300, &[]);
    let out = dir.path().join("run");
    let o = train(&train_args(&data, &out, 2));
    assert!(o.status.success(), "{}", text(&o));
    let ckpt = out.join("checkpoints").join("step-00000002");
    let model_bytes = std::fs::metadata(ckpt.join("model.safetensors"))
        .unwrap()
        .len();

    let o = with_file_size_limit(&bin("train"), &train_args(&data, &out, 4), model_bytes / 2);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("step-00000004"),
        "names the checkpoint: {}",
        text(&o)
    );
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{}",
        text(&o)
    );
    assert!(!out.join("checkpoints").join("step-00000004").exists());
    assert!(
        ckpt.join("state.json").is_file(),
        "the older checkpoint is intact"
    );

    let o = train(&train_args(&data, &out, 4));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("step-00000002") || text(&o).contains("resum"),
        "{}",
        text(&o)
    );
    assert!(out
        .join("checkpoints")
        .join("step-00000004")
        .join("state.json")
        .is_file());
}
