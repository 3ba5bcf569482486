//! `inspect` end to end.

use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::{Compression, ShardSetWriter};
use h5gpt_tests::{run, text};

fn synthetic(dir: &std::path::Path, compression: Compression) {
    write_synthetic(
        dir,
        SyntheticSpec {
            examples: 30,
            seq_len: 16,
            examples_per_shard: 8,
            compression,
            partial_tokens: Some(5),
        },
    )
    .unwrap();
}

#[test]
fn inspect_summarizes_and_verifies_synthetic_shards() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), Compression::None);
    let d = dir.path().to_str().unwrap();
    let out = run("inspect", &[d, "--verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rows              31"), "{stdout}");
    assert!(stdout.contains("seq_len           16"), "{stdout}");
    assert!(stdout.contains("4 fast (mmap), 0 slow (hdf5)"), "{stdout}");
    assert!(
        stdout.contains("verify: OK (31 rows, 4 checksums)"),
        "{stdout}"
    );

    let out = run("inspect", &[d, "--json", "--verify", "--show", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["rows"], 31);
    // 30 full rows of 16 plus a partial row with 4 positions.
    assert_eq!(json["summary"]["stats"]["loss_valid_tokens"], 30 * 16 + 4);
    assert_eq!(json["verify"]["ok"], true);
    assert_eq!(json["rows"][1]["input_ids"][0], 16);
}

#[test]
fn inspect_reads_cerebras_style_gzip_shards_on_the_slow_path() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), Compression::Gzip);
    let out = run("inspect", &[dir.path().to_str().unwrap(), "--verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("0 fast (mmap), 4 slow (hdf5)"), "{stdout}");
}

#[test]
fn inspect_verify_fails_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let pad = 50256;
    let mut w = ShardSetWriter::new(dir.path(), 4, Compression::None, 2).unwrap();
    w.push(&[1, 2, 3, 4], &[1; 4], &[2, 3, 4, 5]).unwrap();
    w.push(&[5, 6, 7, 8], &[1; 4], &[6, 7, 9, 9]).unwrap(); // labels[2] != input_ids[3]
    w.push(&[9, pad, pad, pad], &[1, 0, 0, 0], &[10, pad, pad, pad])
        .unwrap();
    w.finish().unwrap();
    let out = run("inspect", &[dir.path().to_str().unwrap(), "--verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The broken row, and the manifest this bare directory lacks.
    assert!(stdout.contains("verify: FAILED, 2 violations"), "{stdout}");
    assert!(stdout.contains("data_params.json: missing"), "{stdout}");
    assert!(
        stdout.contains("shard-000000.h5: row 1, column 2"),
        "{stdout}"
    );
}

#[test]
fn inspect_decodes_gpt2_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pad = 50256;
    // GPT-2 BPE: "Hello" = 15496, " world" = 995, "!" = 0.
    let mut w = ShardSetWriter::new(dir.path(), 4, Compression::None, 10).unwrap();
    w.push(&[15496, 995, 0, pad], &[1, 1, 1, 0], &[995, 0, pad, pad])
        .unwrap();
    w.finish().unwrap();
    let out = run(
        "inspect",
        &[dir.path().to_str().unwrap(), "--show", "1", "--decode"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello world!"), "{stdout}");
}

#[test]
fn inspect_reports_a_truncated_shard_by_name() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), Compression::None);
    let shard = dir.path().join("shard-000001.h5");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(1000).unwrap();
    let out = run("inspect", &[dir.path().to_str().unwrap()]);
    // Corrupt data is a runtime failure (1), not a usage error (2).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shard-000001.h5"), "{stderr}");
    assert!(stderr.contains("HINT"), "{stderr}");
}

/// Shards written by h5py exactly as Cerebras Model Zoo writes them
/// (`scripts/make_cerebras_fixture.py`), with Cerebras' own `data_params.json`.
#[test]
fn inspect_and_the_loader_read_cerebras_written_shards() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cerebras");
    let out = run("inspect", &[dir.to_str().unwrap(), "--verify", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["rows"], 9);
    assert_eq!(json["summary"]["slow_path_shards"], 2);
    assert_eq!(
        json["summary"]["stats"]["loss_valid_tokens"],
        9 * 16,
        "counted, not taken from the foreign manifest"
    );
    assert_eq!(json["verify"]["ok"], true);

    let set = std::sync::Arc::new(h5gpt_formats::ShardSet::open(&[&dir]).unwrap());
    let rows = |shard: usize| {
        set.shards()[shard]
            .read_examples(0, set.shards()[shard].n_examples())
            .unwrap()
    };
    let all: Vec<i32> = rows(0).into_iter().chain(rows(1)).collect();
    let layout = h5gpt_formats::BatchLayout {
        global_batch: 3,
        micro_batch: 3,
        world_size: 1,
        rank: 0,
    };
    let config = h5gpt_formats::LoaderConfig {
        seed: 5,
        layout,
        start_position: 0,
        prefetch: 1,
    };
    let mut loader = h5gpt_formats::Loader::new(set.clone(), config).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let batch = loader.next_batch().unwrap();
        for (r, &id) in batch.sample_ids.iter().enumerate() {
            let id = id as usize;
            assert_eq!(
                batch.input_ids[r * 16..(r + 1) * 16],
                all[id * 48..id * 48 + 16]
            );
            assert_eq!(
                batch.labels[r * 16..(r + 1) * 16],
                all[id * 48 + 32..id * 48 + 48]
            );
            seen.push(id);
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..9).collect::<Vec<_>>(),
        "one epoch visits every row once"
    );
}

/// Regression (flaky CI): HDF5's file lock outlived our close when a child process spawned
/// meanwhile inherited the descriptor, and opening the shard then failed with "unable to lock
/// file, errno = 11". Readers and writers now open without HDF5 file locking.
#[test]
fn shards_open_while_a_child_holds_an_inherited_hdf5_lock() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), Compression::None);
    let shard = dir.path().join("shard-000000.h5");
    let locked = hdf5::File::open_rw(&shard).unwrap(); // default: takes HDF5's file lock
    let mut child = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    drop(locked);
    let opened = h5gpt_formats::ShardSet::open(&[dir.path()]);
    let out = run("inspect", &[dir.path().to_str().unwrap()]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(opened.is_ok(), "{:?}", opened.err().map(|e| e.to_string()));
    assert!(out.status.success(), "{}", text(&out));
}
