//! `preprocess` end to end: golden packing, determinism, resume after a kill, bad input.

use h5gpt_formats::verify::{verify, VerifyOptions};
use h5gpt_formats::{DataParams, ShardSet};
use h5gpt_tests::{bin, run, text};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic prose: `docs` documents of varying length, a few of them long enough to be
/// split for parallel tokenization.
fn write_corpus(path: &Path, docs: usize, long_every: usize) {
    let words = [
        "alpha", "beta", "gamma", "delta", "token", "shard", "naïve", "日本", "x=1;", "end.",
    ];
    let mut f = std::fs::File::create(path).unwrap();
    let mut state = 7u64;
    for d in 0..docs {
        let n = if long_every > 0 && d % long_every == 0 {
            40_000
        } else {
            20 + d % 50
        };
        let mut text = String::new();
        for i in 0..n {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(words[(state >> 33) as usize % words.len()]);
            text.push(if i % 9 == 8 { '\n' } else { ' ' });
        }
        writeln!(f, "{}", serde_json::json!({"text": text, "meta": {"d": d}})).unwrap();
    }
}

fn preprocess(args: &[&str]) -> std::process::Output {
    run("preprocess", args)
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

pub(crate) fn assert_same_files(a: &Path, b: &Path) {
    let (fa, fb) = (files_of(a), files_of(b));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb));
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name} differs between {a:?} and {b:?}");
    }
}

pub(crate) fn verify_ok(dir: &Path) -> ShardSet {
    let set = ShardSet::open(&[dir]).unwrap();
    let report = verify(&set, VerifyOptions::for_set(&set), &mut |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.violations);
    set
}

/// The packed token stream of a stream-packed set: the first input id, then every label
/// under mask 1 (rows overlap by one token).
pub(crate) fn token_stream(set: &ShardSet) -> Vec<u32> {
    let seq = set.seq_len();
    let rows = all_rows(set);
    let mut stream: Vec<u32> = vec![rows[0][0] as u32];
    for row in &rows {
        for j in 0..seq {
            if row[seq + j] == 1 {
                stream.push(row[2 * seq + j] as u32);
            }
        }
    }
    stream
}

pub(crate) fn all_rows(set: &ShardSet) -> Vec<Vec<i32>> {
    let seq = set.seq_len();
    set.shards()
        .iter()
        .flat_map(|sh| sh.read_examples(0, sh.n_examples()).unwrap())
        .collect::<Vec<_>>()
        .chunks(3 * seq)
        .map(|c| c.to_vec())
        .collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/golden")
        .join(name)
}

fn run_preprocess(corpus: &Path, out: &Path, settings: &[&str]) -> std::process::Output {
    let args = preprocess_args(corpus, out, settings);
    Command::new(bin("preprocess"))
        .args(&args)
        .output()
        .unwrap()
}

fn preprocess_args(corpus: &Path, out: &Path, settings: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--input".to_string(),
        s(corpus).into(),
        "--out".into(),
        s(out).into(),
    ];
    args.extend(settings.iter().map(|x| x.to_string()));
    args
}

/// Runs preprocess into `base/clean`; then into `base/killed` with the fault hook aborting after
/// shard `fault` (checking that it died before finishing), and again without it (checking that
/// it continued). Returns both output directories.
fn kill_then_resume(
    base: &Path,
    corpus: &Path,
    settings: &[&str],
    fault: usize,
) -> (PathBuf, PathBuf) {
    kill_then_resume_with(base, corpus, settings, fault, &[])
}

/// [`kill_then_resume`] with extra environment variables for every run.
fn kill_then_resume_with(
    base: &Path,
    corpus: &Path,
    settings: &[&str],
    fault: usize,
    env: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    let (clean, killed) = (base.join("clean"), base.join("killed"));
    let run_into = |out: &Path, fault: Option<usize>| {
        let mut cmd = Command::new(bin("preprocess"));
        cmd.args(preprocess_args(corpus, out, settings));
        cmd.envs(env.iter().copied());
        if let Some(n) = fault {
            cmd.env("H5GPT_FAULT", format!("abort-after-shard:{n}"));
        }
        cmd.output().unwrap()
    };
    let o = run_into(&clean, None);
    assert!(o.status.success(), "{}", text(&o));
    let o = run_into(&killed, Some(fault));
    assert!(
        !o.status.success(),
        "the fault hook must kill the first run: {}",
        text(&o)
    );
    assert!(
        !killed.join("data_params.json").exists(),
        "an unfinished run has no manifest"
    );
    let o = run_into(&killed, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("continued an interrupted run"),
        "{}",
        text(&o)
    );
    (clean, killed)
}

/// Pins our packing to Cerebras Model Zoo's LMData rule, computed independently by
/// `scripts/golden_packing.py` (Python tiktoken + numpy): every full row token for token, and
/// our extra final partial row.
#[test]
fn golden_packing_matches_the_reference_script() {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run_preprocess(&fixture("corpus.jsonl"), out.path(), &["--seq-len", "32"]);
    assert!(o.status.success(), "{}", text(&o));
    let set = verify_ok(out.path());
    let rows = all_rows(&set);
    let reference = expected["cerebras_rows"].as_array().unwrap();
    let as_vec = |v: &serde_json::Value| -> Vec<i32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect()
    };
    assert_eq!(
        rows.len(),
        reference.len() + 1,
        "full rows plus our final partial row"
    );
    for (r, (row, want)) in rows.iter().zip(reference).enumerate() {
        assert_eq!(
            row[..32],
            as_vec(&want["input_ids"])[..],
            "row {r} input_ids"
        );
        assert_eq!(row[32..64], vec![1; 32][..], "row {r} mask");
        assert_eq!(row[64..], as_vec(&want["labels"])[..], "row {r} labels");
    }
    let last = rows.last().unwrap();
    let tail = &expected["final_partial"];
    assert_eq!(last[..32], as_vec(&tail["input_ids"])[..]);
    assert_eq!(last[32..64], as_vec(&tail["attention_mask"])[..]);
    assert_eq!(last[64..], as_vec(&tail["labels"])[..]);
    let params = set.data_params().unwrap();
    assert_eq!(
        params.post_process.extra["num_stream_tokens"],
        expected["stream_tokens"]
    );
    assert_eq!(
        params.h5_dataset_stats.loss_valid_tokens + 1,
        expected["stream_tokens"].as_u64().unwrap()
    );
}

#[test]
fn output_is_byte_identical_at_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus, 60, 20); // three documents of ~300 KB get split
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for (out, threads) in [(&a, "1"), (&b, "2")] {
        let o = run_preprocess(
            &corpus,
            out,
            &[
                "--seq-len",
                "64",
                "--examples-per-shard",
                "700",
                "--threads",
                threads,
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    assert!(files_of(&a).len() >= 3, "several shards expected");
    assert_same_files(&a, &b);
    verify_ok(&a);
}

#[test]
fn killed_run_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_corpus(&corpus, 40, 15);
    let settings = ["--seq-len", "32", "--examples-per-shard", "500"];
    let (clean, killed) = kill_then_resume(dir.path(), &corpus, &settings, 2);
    assert!(killed.join("shard-000001.h5").exists());
    assert_same_files(&clean, &killed);
    // Running the same command again has nothing to do.
    let o = Command::new(bin("preprocess"))
        .args(preprocess_args(&corpus, &killed, &settings))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to do"),
        "{}",
        text(&o)
    );
    assert_same_files(&clean, &killed);
}

#[test]
fn other_settings_into_a_full_out_are_refused_and_force_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 10, 0);
    let out = dir.path().join("out");
    let o = run_preprocess(&corpus, &out, &["--seq-len", "16"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run_preprocess(&corpus, &out, &["--seq-len", "32"]);
    // A runtime refusal (the folder holds another run), not a usage error.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--force"),
        "{}",
        text(&o)
    );
    let o = run_preprocess(&corpus, &out, &["--seq-len", "32", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(verify_ok(&out).seq_len(), 32);
    // With a val split the output holds train/ and val/: --force starts over there too, and
    // rerunning the very same command with --force redoes it.
    let split = dir.path().join("split");
    for seq in ["16", "32", "32"] {
        let o = run_preprocess(
            &corpus,
            &split,
            &["--seq-len", seq, "--val-fraction", "0.3", "--force"],
        );
        assert!(o.status.success(), "--seq-len {seq}: {}", text(&o));
        assert_eq!(verify_ok(&split.join("train")).seq_len().to_string(), seq);
    }
}

fn bad_case(name: &str, bytes: &[u8], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(name);
    std::fs::write(&input, bytes).unwrap();
    let out = dir.path().join("out");
    let o = run_preprocess(&input, &out, &["--seq-len", "8"]);
    assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(expect),
        "{name}: expected {expect:?} in {stderr}"
    );
    assert!(
        stderr.contains(name),
        "{name}: the file must be named: {stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .map(|d| {
            d.map(|e| e.unwrap().file_name())
                .filter(|n| n.to_string_lossy().ends_with(".h5"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "{name}: no shard may be left: {leftovers:?}"
    );
}

#[test]
fn bad_records_are_named_by_file_and_line() {
    let good = r#"{"text": "fine words here"}"#;
    bad_case(
        "a.jsonl",
        format!("{good}\n{{\"text\": oops\n").as_bytes(),
        "a.jsonl:2: invalid JSON",
    );
    bad_case(
        "b.jsonl",
        format!("{good}\n{good}\n{{\"body\": \"x\"}}\n").as_bytes(),
        "b.jsonl:3: no `text` key",
    );
    bad_case(
        "c.jsonl",
        b"{\"text\": 42}\n",
        "c.jsonl:1: `text` is not a string (found a number)",
    );
    bad_case(
        "d.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"\xff\xfe\"}\n",
        "d.jsonl:2: invalid UTF-8",
    );
    bad_case(
        "e.txt",
        b"plain\ntext \xff here",
        "e.txt:2: invalid UTF-8 at byte 11",
    );
    let mut zst = zstd::encode_all(format!("{good}\n").repeat(2000).as_bytes(), 3).unwrap();
    zst.truncate(zst.len() / 2);
    bad_case("f.jsonl.zst", &zst, "f.jsonl.zst: read error");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("{good}\n").repeat(2000).as_bytes())
        .unwrap();
    let mut gz = gz.finish().unwrap();
    gz.truncate(gz.len() - 20);
    bad_case("g.jsonl.gz", &gz, "g.jsonl.gz: read error");
}

#[test]
fn skip_bad_records_counts_and_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    std::fs::write(&input, "{\"text\": \"one two three\"}\nnot json\n{\"text\": null}\n{\"text\": \"\"}\n{\"text\": \"four five\"}\n").unwrap();
    let out = dir.path().join("out");
    let o = run_preprocess(&input, &out, &["--seq-len", "4", "--skip-bad-records"]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("bad skipped        2"), "{stdout}");
    assert!(stdout.contains("empty skipped      1"), "{stdout}");
    assert!(stdout.contains("mixed.jsonl:2: invalid JSON"), "{stdout}");
    let params = DataParams::read_from_dir(&out).unwrap().unwrap();
    assert_eq!(params.post_process.extra["bad_records_skipped"], 2);
    assert_eq!(params.post_process.extra["empty_documents_skipped"], 1);
    assert_eq!(params.post_process.extra["n_docs"], 2);
}

fn write_parquet(path: &Path, texts: &[&str]) {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    let schema = std::sync::Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY text (UTF8); }",
        )
        .unwrap(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, Default::default()).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut column = group.next_column().unwrap().unwrap();
    let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(*t)).collect();
    column
        .typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    column.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}

/// Every input kind, directory recursion in path order, `--glob`, and the val split.
#[test]
fn all_input_kinds_in_path_order_with_a_val_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let doc = |i: usize| format!("document number {i} says hello");
    std::fs::write(root.join("a.txt"), doc(0)).unwrap();
    std::fs::write(root.join("b.py"), doc(1)).unwrap();
    let jsonl = |docs: &[usize]| {
        docs.iter()
            .map(|&i| format!("{}\n", serde_json::json!({"text": doc(i)})))
            .collect::<String>()
    };
    std::fs::write(
        root.join("c.jsonl.zst"),
        zstd::encode_all(jsonl(&[2, 3]).as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(jsonl(&[4]).as_bytes()).unwrap();
    std::fs::write(root.join("d.json.gz"), gz.finish().unwrap()).unwrap();
    write_parquet(&root.join("e.parquet"), &[&doc(5), &doc(6)]);
    std::fs::write(root.join("sub/f.jsonl"), jsonl(&[7, 8, 9])).unwrap();
    std::fs::write(root.join("skipped.md"), "not matched by the glob").unwrap();

    // All documents, in path order, each followed by EOS: decode the stream back.
    let out = dir.path().join("all");
    let o = preprocess(&[
        "--input",
        s(&root.join("a.txt")),
        s(&root.join("b.py")),
        s(&root.join("c.jsonl.zst")),
        s(&root.join("d.json.gz")),
        s(&root.join("e.parquet")),
        s(&root.join("sub")),
        "--out",
        s(&out),
        "--seq-len",
        "8",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let set = verify_ok(&out);
    let stream = token_stream(&set);
    let tok = h5gpt_tokenizer::tokenizer::Tokenizer::gpt2();
    let expected: Vec<u32> = (0..10)
        .flat_map(|i| {
            let mut t = tok.encode(&doc(i));
            t.push(50256);
            t
        })
        .collect();
    assert_eq!(stream, expected);

    // The glob keeps only matching names found in directories.
    let out = dir.path().join("globbed");
    let o = run_preprocess(&root, &out, &["--seq-len", "8", "--glob", "*.jsonl*"]);
    assert!(o.status.success(), "{}", text(&o));
    let params = DataParams::read_from_dir(&out).unwrap().unwrap();
    assert_eq!(
        params.post_process.extra["n_docs"], 5,
        "c.jsonl.zst (2) + sub/f.jsonl (3)"
    );

    // A val split: 11 documents are too few for whole documents at 0.4 (fewer than 20 / 0.4),
    // so each is cut inside; both directories complete.
    let out = dir.path().join("split");
    let o = run_preprocess(
        &root,
        &out,
        &["--seq-len", "8", "--val-fraction", "0.4", "--seed", "3"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (train, val) = (out.join("train"), out.join("val"));
    verify_ok(&train);
    verify_ok(&val);
    let docs = |d: &Path| {
        DataParams::read_from_dir(d)
            .unwrap()
            .unwrap()
            .post_process
            .extra["n_docs"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(docs(&train), 11, "10 documents plus skipped.md, each cut");
    assert!((1..=11).contains(&docs(&val)), "{}", docs(&val));
    let rule =
        |d: &Path| DataParams::read_from_dir(d).unwrap().unwrap().processing["split_rule"].clone();
    assert_eq!(rule(&train), "within-documents");
    assert_eq!(rule(&val), "within-documents");
}

#[test]
fn no_pack_writes_one_document_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("docs.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"a b\"}\n{\"text\": \"one two three four five six seven eight nine ten\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = run_preprocess(&input, &out, &["--seq-len", "6", "--no-pack"]);
    assert!(o.status.success(), "{}", text(&o));
    let set = verify_ok(&out);
    assert_eq!(
        set.data_params().unwrap().packing(),
        Some(h5gpt_formats::Packing::Document)
    );
    let rows = all_rows(&set);
    // "a b" + EOS = 3 tokens: one row with 2 positions.
    assert_eq!(rows[0][6..12], [1, 1, 0, 0, 0, 0]);
    assert_eq!(rows[0][13], 50256, "the document's EOS is its last label");
    // The second document (10 words + EOS = 11 tokens) starts a new row: 6 + 4 positions.
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2][6..12], [1, 1, 1, 1, 0, 0]);
}

/// With a val split the progress file can lag behind (the other output has rows staged), but
/// an interrupted run still resumes and ends byte-identical.
#[test]
fn killed_val_split_run_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    // 100 documents: enough for whole documents at 0.3 (20 / 0.3 ≈ 67).
    write_corpus(&corpus, 100, 0);
    let settings = [
        "--seq-len",
        "16",
        "--examples-per-shard",
        "40",
        "--val-fraction",
        "0.3",
    ];
    let (clean, killed) = kill_then_resume(dir.path(), &corpus, &settings, 3);
    assert_same_files(&clean.join("train"), &killed.join("train"));
    assert_same_files(&clean.join("val"), &killed.join("val"));
}

/// `--compression gzip` (Cerebras-style chunks) and `--normalize nfc`.
#[test]
fn gzip_shards_hold_the_same_rows_and_nfc_normalizes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    write_corpus(&corpus, 30, 0);
    let (plain, gzip) = (dir.path().join("plain"), dir.path().join("gzip"));
    for (out, compression) in [(&plain, "none"), (&gzip, "gzip")] {
        let o = run_preprocess(
            &corpus,
            out,
            &["--seq-len", "16", "--compression", compression],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let (a, b) = (verify_ok(&plain), verify_ok(&gzip));
    assert!(b
        .shards()
        .iter()
        .all(|sh| sh.access_path() == h5gpt_formats::AccessPath::Slow));
    assert_eq!(all_rows(&a), all_rows(&b));

    let input = dir.path().join("nfd.jsonl");
    std::fs::write(&input, "{\"text\": \"cafe\\u0301 cafe\\u0301\"}\n").unwrap();
    let tok = h5gpt_tokenizer::tokenizer::Tokenizer::gpt2();
    for (normalize, doc) in [("none", "cafe\u{301} cafe\u{301}"), ("nfc", "café café")] {
        let out = dir.path().join(normalize);
        let o = run_preprocess(&input, &out, &["--seq-len", "64", "--normalize", normalize]);
        assert!(o.status.success(), "{}", text(&o));
        let rows = all_rows(&verify_ok(&out));
        let mut want: Vec<i32> = tok.encode(doc).into_iter().map(|t| t as i32).collect();
        want.push(50256);
        let n = want.len() - 1;
        assert_eq!(rows[0][..n], want[..n], "{normalize}");
    }
}

/// A corpus of several files of every compressed kind, for the parallel readers: `dir/corpus/`
/// holds `a.jsonl`, `b.jsonl.zst`, `c.jsonl.gz` and `d.jsonl`.
fn write_multi_file_corpus(dir: &Path) -> PathBuf {
    let root = dir.join("corpus");
    std::fs::create_dir_all(&root).unwrap();
    for (i, name) in ["a.jsonl", "b.jsonl.zst", "c.jsonl.gz", "d.jsonl"]
        .iter()
        .enumerate()
    {
        let plain = root.join(format!("plain-{i}.jsonl"));
        write_corpus(&plain, 25 + 10 * i, if i == 1 { 12 } else { 0 });
        let bytes = std::fs::read(&plain).unwrap();
        std::fs::remove_file(&plain).unwrap();
        let bytes = if name.ends_with(".zst") {
            zstd::encode_all(&bytes[..], 3).unwrap()
        } else if name.ends_with(".gz") {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        } else {
            bytes
        };
        std::fs::write(root.join(name), bytes).unwrap();
    }
    root
}

/// Small batches and slices, so that a small corpus takes many of each and they complete
/// out of order.
const SMALL_BATCHES: (&str, &str) = ("H5GPT_PREPROCESS_BATCH", "20000:5000");

/// The output does not depend on the number of threads: several files read at once, many
/// batches, rows written by position in slices, many shards finished at once, with and
/// without a val split, and gzip shards.
#[test]
fn output_is_byte_identical_at_one_two_and_four_threads() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_multi_file_corpus(dir.path());
    let base = ["--seq-len", "32", "--examples-per-shard", "60"];
    for (name, extra) in [
        ("plain", &[][..]),
        ("val", &["--val-fraction", "0.2", "--seed", "5"][..]),
        ("gzip", &["--compression", "gzip"][..]),
    ] {
        let mut outs = Vec::new();
        for threads in ["1", "2", "4"] {
            let out = dir.path().join(format!("{name}-{threads}"));
            let mut args = preprocess_args(&corpus, &out, &base);
            args.extend(extra.iter().map(|x| x.to_string()));
            args.extend(["--threads".into(), threads.into()]);
            let o = Command::new(bin("preprocess"))
                .args(&args)
                .env(SMALL_BATCHES.0, SMALL_BATCHES.1)
                .output()
                .unwrap();
            assert!(o.status.success(), "{name} {threads}: {}", text(&o));
            outs.push(out);
        }
        let dirs: Vec<PathBuf> = if name == "val" {
            outs.iter()
                .flat_map(|o| [o.join("train"), o.join("val")])
                .collect()
        } else {
            outs.clone()
        };
        let per_run = dirs.len() / outs.len();
        for d in &dirs[..per_run] {
            let shards = verify_ok(d).shards().len();
            assert!(
                shards >= 3,
                "{name}: several shards expected in {d:?}, got {shards}"
            );
        }
        for k in 1..outs.len() {
            for j in 0..per_run {
                assert_same_files(&dirs[j], &dirs[k * per_run + j]);
            }
        }
    }
    // The stream is the documents in sorted file order, whatever reads them: the same as
    // reading the files one by one with one thread and the default batch sizes.
    let one = dir.path().join("one-by-one");
    let o = run_preprocess(&corpus, &one, &[&base[..], &["--threads", "1"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert_same_files(&one, &dir.path().join("plain-4"));
}

/// A run killed while several shards are being written at once resumes to the bytes of an
/// uninterrupted run: the progress file only names shards whose predecessors are complete.
#[test]
fn killed_parallel_run_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_multi_file_corpus(dir.path());
    for (name, extra) in [("plain", &[][..]), ("val", &["--val-fraction", "0.3"][..])] {
        let base = dir.path().join(name);
        std::fs::create_dir_all(&base).unwrap();
        let mut settings = vec![
            "--seq-len",
            "16",
            "--examples-per-shard",
            "40",
            "--threads",
            "4",
        ];
        settings.extend_from_slice(extra);
        let (clean, killed) = kill_then_resume_with(&base, &corpus, &settings, 3, &[SMALL_BATCHES]);
        // And the same bytes as one thread writes.
        let single = base.join("single");
        let mut one = settings.clone();
        one[5] = "1";
        let o = run_preprocess(&corpus, &single, &one);
        assert!(o.status.success(), "{}", text(&o));
        let subdirs: &[&str] = if name == "val" {
            &["train", "val"]
        } else {
            &[""]
        };
        for sub in subdirs {
            assert!(
                files_of(&clean.join(sub)).len() >= 4,
                "several shards expected"
            );
            assert_same_files(&clean.join(sub), &killed.join(sub));
            assert_same_files(&clean.join(sub), &single.join(sub));
        }
    }
}

/// Issue 24 item 17: `preprocess` on an empty input failed (no rows) but left its progress
/// file behind, so the output folder looked like an unfinished run. Nothing of such a run is
/// left, and the identical rerun fails the same way (not "holds an unfinished run").
#[test]
fn empty_input_leaves_no_progress_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("empty.txt");
    std::fs::write(&input, "").unwrap();
    let out = dir.path().join("out");
    for val in ["0", "0.1"] {
        for round in 0..2 {
            let o = run(
                "preprocess",
                &[
                    "--input",
                    s(&input),
                    "--out",
                    s(&out),
                    "--val-fraction",
                    val,
                ],
            );
            assert_eq!(
                o.status.code(),
                Some(1),
                "val {val} round {round}: {}",
                text(&o)
            );
            let left: Vec<String> = std::fs::read_dir(&out)
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|n| n != h5gpt_formats::lock::LOCK_FILE)
                        .collect()
                })
                .unwrap_or_default();
            assert!(left.is_empty(), "val {val} round {round}: left {left:?}");
        }
    }
}
