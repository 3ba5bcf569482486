//! Issue 13: `--val-fraction` with too few documents for a whole-document split cuts each
//! document at a newline (nanoGPT's rule for tinyshakespeare): head to `train/`, tail to
//! `val/`.

use crate::preprocess::{assert_same_files, s, token_stream, verify_ok};
use h5gpt_formats::DataParams;
use h5gpt_tests::{run, text};
use h5gpt_tokenizer::tokenizer::Tokenizer;
use std::path::Path;

/// A play-like text of `lines` lines.
fn play(lines: usize) -> String {
    let names = ["FIRST CITIZEN", "MENENIUS", "MARCIUS", "COMINIUS"];
    let words = [
        "speak", "hear", "the", "people", "corn", "rome", "noble", "good", "friends",
    ];
    let mut out = String::new();
    let mut state = 11u64;
    for i in 0..lines {
        if i % 5 == 0 {
            out.push_str(names[(i / 5) % names.len()]);
            out.push_str(":\n");
            continue;
        }
        for w in 0..6 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if w > 0 {
                out.push(' ');
            }
            out.push_str(words[(state >> 33) as usize % words.len()]);
        }
        out.push_str(".\n");
    }
    out
}

fn params(dir: &Path) -> DataParams {
    DataParams::read_from_dir(dir).unwrap().unwrap()
}

#[test]
fn one_document_splits_inside_by_position_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.txt");
    let body = play(400);
    std::fs::write(&input, &body).unwrap();
    let outs: Vec<_> = ["1", "2"]
        .iter()
        .map(|threads| {
            let out = dir.path().join(format!("ts-{threads}"));
            let o = run(
                "preprocess",
                &[
                    "--input",
                    s(&input),
                    "--out",
                    s(&out),
                    "--seq-len",
                    "32",
                    "--val-fraction",
                    "0.1",
                    "--threads",
                    threads,
                ],
            );
            assert!(o.status.success(), "{}", text(&o));
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(stdout.contains("inside documents"), "{stdout}");
            out
        })
        .collect();
    for part in ["train", "val"] {
        assert_same_files(&outs[0].join(part), &outs[1].join(part));
    }
    let (train, val) = (outs[0].join("train"), outs[0].join("val"));
    for d in [&train, &val] {
        let p = params(d);
        assert_eq!(p.processing["split_rule"], "within-documents");
        assert_eq!(p.processing["val_fraction"], 0.1);
        assert_eq!(p.post_process.extra["n_docs"], 1);
    }
    assert_eq!(params(&train).setup["split"], "train");
    assert_eq!(params(&val).setup["split"], "val");
    // Head + tail is the text, cut at a newline near 90%.
    let gpt2 = Tokenizer::gpt2();
    let decode = |d: &Path| {
        let mut ids = token_stream(&verify_ok(d));
        assert_eq!(ids.pop(), Some(gpt2.eos_id()), "ends with EOS");
        gpt2.decode_lossy(&ids)
    };
    let (head, tail) = (decode(&train), decode(&val));
    assert_eq!(format!("{head}{tail}"), body);
    assert!(head.ends_with('\n'));
    let at = head.len() as f64 / body.len() as f64;
    assert!((0.88..0.92).contains(&at), "cut at {at}");
}

/// A tokenizer trained on the heads only tokenizes the tails; `train` reads both sides as
/// one tokenizer.
#[test]
fn one_document_with_a_trained_tokenizer_trains_on_the_head_and_evaluates_on_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tiny.txt");
    std::fs::write(&input, play(400)).unwrap();
    let out = dir.path().join("ts");
    let o = run(
        "preprocess",
        &[
            "--input",
            s(&input),
            "--out",
            s(&out),
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
    let (train, val) = (params(&out.join("train")), params(&out.join("val")));
    assert_eq!(train.tokenizer_identity(), val.tokenizer_identity());
    let o = run(
        "train",
        &[
            "--shards",
            s(&out),
            "--out",
            s(&dir.path().join("run")),
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--micro-batch",
            "2",
            "--total-batch-tokens",
            "64",
            "--eval-every",
            "2",
            "--eval-batches",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("val loss"),
        "{}",
        text(&o)
    );
}

/// Where no split is possible the error says what happened, not "the input is empty".
#[test]
fn a_document_too_short_to_split_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("short.txt");
    std::fs::write(&input, "hello").unwrap();
    let o = run(
        "preprocess",
        &[
            "--input",
            s(&input),
            "--out",
            s(&dir.path().join("o")),
            "--seq-len",
            "8",
            "--val-fraction",
            "0.1",
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("too short to cut inside"), "{err}");
    assert!(!err.contains("input is empty"), "{err}");
}

/// Issue 24 item 17: a within-document cut at the only newline gave 5 train tokens against
/// 501 val tokens at `--val-fraction 0.1`, without a word. The realised fraction outside
/// [F/2, 2F] is now a warning; one near F is not.
#[test]
fn a_realised_val_fraction_far_from_the_asked_one_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let lopsided = dir.path().join("lopsided.txt");
    std::fs::write(&lopsided, format!("hello\n{}", "word ".repeat(500))).unwrap();
    let even = dir.path().join("even.txt");
    std::fs::write(&even, play(400)).unwrap();
    for (input, warned) in [(&lopsided, true), (&even, false)] {
        let o = run(
            "preprocess",
            &[
                "--input",
                s(input),
                "--out",
                s(&dir.path().join(format!("out-{warned}"))),
                "--seq-len",
                "4",
                "--val-fraction",
                "0.1",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.contains("warning: --val-fraction 0.1: val/ got"),
            warned,
            "{err}"
        );
    }
}
