//! `preprocess --dedup` and `--decontaminate`, and `inspect --duplicates`, end to end: planted
//! duplicates are dropped (the first of each kept), the output does not depend on `--threads`
//! or on a kill and resume during or after the dedup pass, `--dedup off` adds nothing, and the
//! deduplicated shards verify and train.

use h5gpt_tests::small_language::corpus;
use h5gpt_tests::{bin, run, text};
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A corpus of 400 documents (three generated documents each, about 150 words) with planted
/// copies after the originals: documents 0..40 copied exactly, 40..80 with case and
/// whitespace changed, 80..120 with one word of about 150 replaced (5-gram Jaccard about
/// 0.93). Returns the JSON lines and the (original, copy) line numbers (1-based).
fn planted() -> (String, Vec<(usize, usize)>) {
    let parts = corpus(1200, 300, 7);
    let mut docs: Vec<String> = parts.chunks(3).map(|c| c.join(" ")).collect();
    let mut pairs = Vec::new();
    for i in 0..120 {
        let original = docs[i].clone();
        let copy = match i / 40 {
            0 => original,
            1 => original.to_uppercase().replace(' ', "  \t "),
            _ => {
                let mut words: Vec<&str> = original.split(' ').collect();
                let middle = words.len() / 2;
                words[middle] = "zzplanted";
                words.join(" ")
            }
        };
        docs.push(copy);
        pairs.push((i + 1, docs.len()));
    }
    let jsonl = docs
        .iter()
        .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
        .collect();
    (jsonl, pairs)
}

fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                all.push((name, std::fs::read(&p).unwrap()));
            }
        }
    }
    all.sort();
    all
}

fn preprocess(
    input: &Path,
    out: &Path,
    extra: &[&str],
    fault: Option<&str>,
) -> std::process::Output {
    let mut args = vec!["--input".to_string(), s(input), "--out".into(), s(out)];
    if !extra.contains(&"--seq-len") {
        args.extend([
            "--seq-len".into(),
            "64".into(),
            "--examples-per-shard".into(),
            "40".into(),
        ]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut cmd = Command::new(bin("preprocess"));
    cmd.args(&args);
    if let Some(f) = fault {
        cmd.env("H5GPT_FAULT", f);
    }
    cmd.output().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf, Vec<(usize, usize)>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.jsonl");
    let (jsonl, pairs) = planted();
    std::fs::write(&input, jsonl).unwrap();
    (dir, input, pairs)
}

/// Near mode drops every planted copy (exact, case/whitespace, one word changed), names the
/// kept original of each in dedup.jsonl, splits train/val on what remains, and gives the same
/// bytes at 1, 2 and 3 threads; the shards verify.
#[test]
fn near_dedup_drops_the_planted_copies_at_any_thread_count() {
    let (dir, input, pairs) = setup();
    let mut outputs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = dir.path().join(format!("out{threads}"));
        let o = preprocess(
            &input,
            &out,
            &[
                "--dedup",
                "near",
                "--dedup-threshold",
                "0.7",
                "--val-fraction",
                "0.1",
                "--threads",
                threads,
            ],
            None,
        );
        assert!(o.status.success(), "{}", text(&o));
        outputs.push((out, o));
    }
    let (out, o) = &outputs[0];
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("120 of 520 documents are duplicates (80 exact, 40 near"),
        "{stdout}"
    );
    // datasketch: MinHashLSH(threshold=0.7, num_perm=128) has b, r = 14, 9 (P(0.93) ≈ 1).
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("14 bands × 9 rows"),
        "{}",
        text(o)
    );
    for (other, _) in &outputs[1..] {
        assert!(
            files_in(out) == files_in(other),
            "{} differs from {}",
            s(other),
            s(out)
        );
    }
    // dedup.jsonl: one line per copy, naming its original, in the train/ output folder.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("train/dedup.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<(usize, usize)> = lines
        .iter()
        .map(|l| {
            (
                l["kept_line"].as_u64().unwrap() as usize,
                l["line"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(found, pairs);
    assert!(lines[..80]
        .iter()
        .all(|l| l["exact"] == true && l["jaccard"] == 1.0));
    assert!(lines[80..]
        .iter()
        .all(|l| l["exact"] == false && l["jaccard"].as_f64().unwrap() >= 0.8));
    // The manifests: settings and counts; train + val hold the 400 that remain.
    let (train, val) = (
        json(&out.join("train/data_params.json")),
        json(&out.join("val/data_params.json")),
    );
    assert_eq!(train["processing"]["dedup"]["mode"], "near");
    assert_eq!(train["post-process"]["dedup"]["documents_dropped"], 120);
    let docs = |p: &serde_json::Value| p["post-process"]["n_docs"].as_u64().unwrap();
    assert_eq!(docs(&train) + docs(&val), 400);
    for side in ["train", "val"] {
        let o = run("inspect", &[&s(&out.join(side)), "--verify"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // Run again: the output is complete, the decisions are reused, nothing changes.
    let before = files_in(out);
    let again = [
        "--dedup",
        "near",
        "--dedup-threshold",
        "0.7",
        "--val-fraction",
        "0.1",
    ];
    let o = preprocess(&input, out, &again, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(files_in(out) == before);
    // The deduplicated shards train, with validation on their val/.
    let run_dir = dir.path().join("run");
    let mut args = h5gpt_tests::tiny_train_args(out, &run_dir, 3);
    let every = args.iter().position(|a| a == "--eval-every").unwrap() + 1;
    args[every] = "3".into();
    args.extend(["--eval-batches", "1"].map(String::from));
    let o = h5gpt_tests::train(&args);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.iter().filter(|r| r["loss"].is_number()).count(), 3);
    assert!(rows.iter().any(|r| r["val_loss"].is_number()), "{metrics}");
}

/// Exact mode drops the exact and the case/whitespace copies and nothing else; --dedup off
/// adds no field and no file; --dedup-report-only writes the report and the same shards as off.
#[test]
fn exact_mode_off_and_report_only() {
    let (dir, input, _) = setup();
    let exact = dir.path().join("exact");
    let o = preprocess(&input, &exact, &["--dedup", "exact"], None);
    assert!(o.status.success(), "{}", text(&o));
    let lines = std::fs::read_to_string(exact.join("dedup.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 80, "{lines}");
    assert_eq!(
        json(&exact.join("data_params.json"))["post-process"]["n_docs"],
        440
    );

    let off = dir.path().join("off");
    let o = preprocess(&input, &off, &[], None);
    assert!(o.status.success(), "{}", text(&o));
    let params = std::fs::read_to_string(off.join("data_params.json")).unwrap();
    assert!(
        !params.contains("dedup") && !params.contains("decontaminat"),
        "{params}"
    );
    assert!(!off.join("dedup.jsonl").exists() && !off.join("dedup-state.json").exists());

    let report = dir.path().join("report");
    let flags = [
        "--dedup",
        "near",
        "--dedup-threshold",
        "0.7",
        "--dedup-report-only",
    ];
    let o = preprocess(&input, &report, &flags, None);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(report.join("dedup.jsonl"))
            .unwrap()
            .lines()
            .count(),
        120
    );
    let shards = |d: &Path| -> Vec<(String, Vec<u8>)> {
        files_in(d)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".h5"))
            .collect()
    };
    assert!(!shards(&off).is_empty() && shards(&off) == shards(&report));
}

/// A kill during the dedup pass, and one after it (after the second shard), then the same
/// command: byte-identical to an uninterrupted run; the second resume reuses the decisions.
#[test]
fn a_kill_during_or_after_the_dedup_pass_resumes_byte_identical() {
    let (dir, input, _) = setup();
    let flags = [
        "--dedup",
        "near",
        "--dedup-threshold",
        "0.7",
        "--threads",
        "2",
    ];
    let clean = dir.path().join("clean");
    let o = preprocess(&input, &clean, &flags, None);
    assert!(o.status.success(), "{}", text(&o));

    let during = dir.path().join("during");
    let o = preprocess(&input, &during, &flags, Some("abort-in-dedup:1"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aborting in the dedup pass"));
    let o = preprocess(&input, &during, &flags, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(files_in(&during) == files_in(&clean));

    let after = dir.path().join("after");
    let o = preprocess(&input, &after, &flags, Some("abort-after-shard:2"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        after.join("dedup-state.json").exists(),
        "the decisions are saved before the shards"
    );
    let o = preprocess(&input, &after, &flags, None);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("continued an interrupted run") && stdout.contains("decisions reused"),
        "{stdout}"
    );
    assert!(files_in(&after) == files_in(&clean));

    // Other dedup settings on this folder are refused, naming the saved decisions.
    let o = preprocess(&input, &after, &["--dedup", "exact"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dedup-state.json") && err.contains("--force"),
        "{err}"
    );
}

/// A bound on the index's memory that the corpus exceeds is refused, with the figure, before
/// anything is written.
#[test]
fn dedup_mem_refuses_a_corpus_too_large_for_it() {
    let (dir, input, _) = setup();
    let out = dir.path().join("out");
    let o = preprocess(
        &input,
        &out,
        &["--dedup", "near", "--dedup-mem", "10K"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--dedup-mem") && err.contains("344 bytes"),
        "{err}"
    );
    assert!(files_in(&out).is_empty());
}

/// Decontamination: a planted benchmark 13-gram is cut out of the training documents (with
/// its margins), decontamination.jsonl names them, val/ is untouched.
#[test]
fn decontamination_cuts_train_and_leaves_val() {
    let dir = tempfile::tempdir().unwrap();
    let bench: Vec<String> = (0..20).map(|i| format!("zzbench{i}")).collect();
    let items = dir.path().join("hellaswag.jsonl");
    std::fs::write(
        &items,
        format!(
            "{}\n",
            serde_json::json!({"ctx": bench[..10].join(" "), "endings": [bench.join(" "), "no"]})
        ),
    )
    .unwrap();
    // Nine generated documents each: at least about 100 words, so each half of a document
    // outlasts the 200-character margin.
    let parts = corpus(2700, 300, 3);
    let docs: Vec<String> = parts
        .chunks(9)
        .enumerate()
        .map(|(i, c)| {
            let text = c.join(" ");
            if i % 10 == 0 {
                // 13 benchmark words in the middle of every tenth document.
                let at = text.len() / 2;
                let at = text[at..].find(' ').map_or(text.len(), |k| at + k);
                format!("{} {} {}", &text[..at], bench[2..15].join(" "), &text[at..])
            } else {
                text
            }
        })
        .collect();
    let input = dir.path().join("c.jsonl");
    std::fs::write(
        &input,
        docs.iter()
            .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
            .collect::<String>(),
    )
    .unwrap();
    let plain = dir.path().join("plain");
    let o = preprocess(&input, &plain, &["--val-fraction", "0.2"], None);
    assert!(o.status.success(), "{}", text(&o));
    let clean = dir.path().join("clean");
    let o = preprocess(
        &input,
        &clean,
        &["--val-fraction", "0.2", "--decontaminate", &s(&items)],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let report: Vec<serde_json::Value> =
        std::fs::read_to_string(clean.join("train/decontamination.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let val_docs = json(&plain.join("val/data_params.json"))["post-process"]["n_docs"]
        .as_u64()
        .unwrap();
    assert!(!report.is_empty() && report.len() < 30, "{report:?}");
    assert!(report
        .iter()
        .all(|l| l["matches"][0]["ngram"] == bench[2..15].join(" ") && l["pieces"] == 2));
    let params = json(&clean.join("train/data_params.json"));
    assert_eq!(
        params["post-process"]["decontamination"]["report"]["documents_cut"],
        report.len()
    );
    // val/ is untouched: the same shards as without --decontaminate.
    let h5 = |d: &Path| -> Vec<(String, Vec<u8>)> {
        files_in(d)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".h5"))
            .collect()
    };
    assert!(h5(&plain.join("val")) == h5(&clean.join("val")));
    assert!(val_docs > 0);
    // train/ no longer holds the benchmark words, and the pieces are documents of their own.
    let shown = run(
        "inspect",
        &[&s(&clean.join("train")), "--show", "10000", "--decode"],
    );
    assert!(shown.status.success(), "{}", text(&shown));
    let decoded = String::from_utf8_lossy(&shown.stdout);
    assert!(!decoded.contains("zzbench"), "a benchmark word is left");
    let before = run(
        "inspect",
        &[&s(&plain.join("train")), "--show", "10000", "--decode"],
    );
    assert!(String::from_utf8_lossy(&before.stdout).contains("zzbench5"));
    let train_docs = |d: &Path| {
        json(&d.join("train/data_params.json"))["post-process"]["n_docs"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(train_docs(&clean), train_docs(&plain));
    let o = run("inspect", &[&s(&clean.join("train")), "--verify"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// inspect --duplicates counts the rows that repeat: a corpus written twice over (document
/// mode, one document per row) has half its rows exact duplicates.
#[test]
fn inspect_duplicates_counts_repeated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let docs = corpus(200, 300, 5);
    let input = dir.path().join("c.jsonl");
    let lines: String = docs
        .iter()
        .chain(docs.iter())
        .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("out");
    let o = preprocess(&input, &out, &["--no-pack", "--seq-len", "512"], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = run("inspect", &[&s(&out), "--duplicates", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let d = &report["duplicates"];
    let rows = d["rows"].as_u64().unwrap();
    // Each document (at most about 80 words) is one row: the second copy of every row is a
    // duplicate, the first copies are distinct.
    assert_eq!(rows, 400, "{d}");
    assert_eq!(d["exact"], 200, "{d}");
    assert_eq!(d["exact_share"], 0.5, "{d}");
}
