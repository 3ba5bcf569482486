//! Format, reader, loader and verify tests on self-checking synthetic shards.

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

use h5gpt_formats::manifest::DataParams;
use h5gpt_formats::reader::ExampleMut;
use h5gpt_formats::spec::{shard_file_name, DATA_PARAMS_FILE};
use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::verify::{verify, VerifyOptions};
use h5gpt_formats::{
    AccessPath, BatchLayout, Compression, DatasetStats, FormatError, Loader, LoaderConfig,
    PositionalShard, ShardSet, ShardWriter,
};
use proptest::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

fn spec(examples: usize, seq_len: usize, per_shard: usize) -> SyntheticSpec {
    SyntheticSpec {
        examples,
        seq_len,
        examples_per_shard: per_shard,
        compression: Compression::None,
        partial_tokens: None,
    }
}

fn synthetic_set(dir: &Path, spec: SyntheticSpec) -> Arc<ShardSet> {
    write_synthetic(dir, spec).unwrap();
    Arc::new(ShardSet::open(&[dir]).unwrap())
}

fn layout(global: usize, micro: usize, world: usize, rank: usize) -> BatchLayout {
    BatchLayout {
        global_batch: global,
        micro_batch: micro,
        world_size: world,
        rank,
    }
}

fn config(layout: BatchLayout, seed: u64, start_position: u64) -> LoaderConfig {
    LoaderConfig {
        seed,
        layout,
        start_position,
        prefetch: 2,
    }
}

/// Reads `steps` optimizer steps from a loader and returns (stream position, sample id) for
/// every row, after checking each row's tokens against its sample id; plus the final position.
fn drain(
    set: &Arc<ShardSet>,
    spec: &SyntheticSpec,
    seed: u64,
    layout: BatchLayout,
    start: u64,
    steps: usize,
) -> (Vec<(u64, u64)>, u64) {
    let mut loader = Loader::new(set.clone(), config(layout, seed, start)).unwrap();
    let seq = spec.seq_len;
    let mut seen = Vec::new();
    for _ in 0..steps * layout.micro_steps() {
        let batch = loader.next_batch().unwrap();
        assert_eq!(batch.rows, layout.micro_batch);
        for row in 0..batch.rows {
            let id = batch.sample_ids[row] as usize;
            let cols = row * seq..(row + 1) * seq;
            let (ids, labels, mask) = (
                &batch.input_ids[cols.clone()],
                &batch.labels[cols.clone()],
                &batch.attention_mask[cols],
            );
            assert_eq!(
                spec.example_of(ids),
                id,
                "row tokens belong to its sample id"
            );
            for j in 0..seq {
                if mask[j] == 1 {
                    assert_eq!(ids[j] as usize, id * seq + j);
                    assert_eq!(labels[j] as usize, id * seq + j + 1);
                }
            }
            seen.push((batch.first_position + row as u64, id as u64));
        }
        loader.recycle(batch);
    }
    (seen, loader.position())
}

/// Sample ids at stream positions `0..steps·global`, gathered from all `world` ranks, after
/// checking that the ranks are disjoint and together cover every global batch.
fn global_order(
    set: &Arc<ShardSet>,
    spec: &SyntheticSpec,
    seed: u64,
    global: usize,
    micro: usize,
    world: usize,
    steps: usize,
) -> Vec<u64> {
    let mut by_position = std::collections::BTreeMap::new();
    let mut per_rank = Vec::new();
    for rank in 0..world {
        let (seen, _) = drain(
            set,
            spec,
            seed,
            layout(global, micro, world, rank),
            0,
            steps,
        );
        per_rank.push(seen.iter().map(|&(p, _)| p).collect::<HashSet<_>>());
        for (p, id) in seen {
            assert!(
                by_position.insert(p, id).is_none(),
                "position {p} served twice"
            );
        }
    }
    for a in 0..world {
        for b in a + 1..world {
            assert!(
                per_rank[a].is_disjoint(&per_rank[b]),
                "ranks {a} and {b} overlap"
            );
        }
    }
    let positions: Vec<u64> = by_position.keys().copied().collect();
    assert_eq!(
        positions,
        (0..(steps * global) as u64).collect::<Vec<_>>(),
        "ranks cover every position of each global batch"
    );
    by_position.into_values().collect()
}

fn proptest_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(), ..ProptestConfig::default() })]

    /// The loader invariants: exactly once per epoch; the same global order for W = 1, 2, 4;
    /// ranks disjoint and together the global batch; resume at any step boundary (at another
    /// world size) reproduces the uninterrupted stream; every row's tokens match its id.
    #[test]
    fn loader_invariants(
        examples in 1usize..40,
        seq_len in 1usize..6,
        per_shard in 1usize..12,
        partial in proptest::option::of(2usize..6),
        seed in any::<u64>(),
        micro in 1usize..4,
        accum in 1usize..3,
        resume_after in 0usize..4,
    ) {
        let partial = partial.filter(|&p| p <= seq_len);
        let spec = SyntheticSpec { partial_tokens: partial, ..spec(examples, seq_len, per_shard) };
        let dir = tempfile::tempdir().unwrap();
        let set = synthetic_set(dir.path(), spec);
        let n = spec.total_examples();
        prop_assert_eq!(set.len(), n);
        let global = micro * accum * 4; // divisible by W = 1, 2, 4
        let steps = (3 * n).div_ceil(global) + 1; // at least three epochs

        let order1 = global_order(&set, &spec, seed, global, micro, 1, steps);
        let order2 = global_order(&set, &spec, seed, global, micro, 2, steps);
        let order4 = global_order(&set, &spec, seed, global, micro, 4, steps);
        prop_assert_eq!(&order1, &order2);
        prop_assert_eq!(&order1, &order4);

        for epoch in order1.chunks_exact(n) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n as u64).collect::<Vec<_>>());
        }

        let resume_after = resume_after.min(steps - 1);
        let (_, position) = drain(&set, &spec, seed, layout(global, micro, 2, 0), 0, resume_after);
        prop_assert_eq!(position, (resume_after * global) as u64);
        let (rest, _) =
            drain(&set, &spec, seed, layout(global, micro, 1, 0), position, steps - resume_after);
        for (p, id) in rest {
            prop_assert_eq!(order1[p as usize], id, "position {}", p);
        }
    }
}

#[test]
fn epochs_and_seeds_reshuffle() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(100, 4, 30);
    let set = synthetic_set(dir.path(), spec);
    let a = global_order(&set, &spec, 1, 10, 5, 1, 20);
    let b = global_order(&set, &spec, 2, 10, 5, 1, 20);
    assert_ne!(
        a[..100],
        a[100..],
        "epoch 1 must not repeat epoch 0's order"
    );
    assert_ne!(
        a[..100],
        b[..100],
        "different seeds must give different orders"
    );
    assert_ne!(
        a[..100],
        (0..100).collect::<Vec<u64>>()[..],
        "epoch 0 must be shuffled"
    );
}

#[test]
fn chunked_and_contiguous_give_identical_batches() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let plain = SyntheticSpec {
        partial_tokens: Some(3),
        ..spec(37, 8, 10)
    };
    let gzip = SyntheticSpec {
        compression: Compression::Gzip,
        ..plain
    };
    let a = synthetic_set(d1.path(), plain);
    let b = synthetic_set(d2.path(), gzip);
    assert!(a
        .shards()
        .iter()
        .all(|s| s.access_path() == AccessPath::Fast));
    assert!(b
        .shards()
        .iter()
        .all(|s| s.access_path() == AccessPath::Slow));
    let take = |set: &Arc<ShardSet>| {
        let mut loader = Loader::new(set.clone(), config(layout(12, 4, 1, 0), 9, 0)).unwrap();
        (0..30)
            .map(|_| loader.next_batch().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(take(&a), take(&b));
}

#[test]
fn synthetic_sets_pass_verify_and_are_byte_identical() {
    for compression in [Compression::None, Compression::Gzip] {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s = SyntheticSpec {
            compression,
            partial_tokens: Some(2),
            ..spec(25, 16, 7)
        };
        let set = synthetic_set(d1.path(), s);
        write_synthetic(d2.path(), s).unwrap();
        let report = verify(&set, VerifyOptions::for_set(&set), &mut |_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.violations);
        assert_eq!(report.rows_checked, 26);
        assert_eq!(report.checksums_checked, 4);
        for name in ["shard-000000.h5", "shard-000003.h5", DATA_PARAMS_FILE] {
            assert_eq!(
                std::fs::read(d1.path().join(name)).unwrap(),
                std::fs::read(d2.path().join(name)).unwrap(),
                "{name} differs between two identical writes"
            );
        }
        let mut names: Vec<_> = std::fs::read_dir(d1.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "data_params.json",
                "shard-000000.h5",
                "shard-000001.h5",
                "shard-000002.h5",
                "shard-000003.h5"
            ],
            "nothing but shards and the manifest is left behind"
        );
    }
}

#[test]
fn writer_spills_to_disk_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(shard_file_name(0));
    let mut writer = ShardWriter::new(&path, 4, Compression::None);
    writer.set_spill_bytes(100); // spill after every couple of examples
    for r in 0..50i32 {
        let ids: Vec<i32> = (0..4).map(|j| r * 4 + j).collect();
        let labels: Vec<i32> = ids.iter().map(|t| t + 1).collect();
        writer.push(&ids, &[1; 4], &labels).unwrap();
    }
    let spill = dir.path().join(".shard-000000.h5.rows.tmp");
    assert!(
        spill.exists(),
        "the writer should have spilled to {spill:?}"
    );
    let written = writer.finish().unwrap();
    assert_eq!(written.entry.n_examples, 50);
    assert!(!spill.exists());
    let set = ShardSet::open(&[&path]).unwrap();
    let all = set.shards()[0].read_examples(0, 50).unwrap();
    for r in 0..50 {
        assert_eq!(all[r * 12], r as i32 * 4);
        assert_eq!(all[r * 12 + 11], r as i32 * 4 + 4);
    }
    // An unfinished writer leaves nothing behind.
    let other = dir.path().join(shard_file_name(1));
    let mut writer = ShardWriter::new(&other, 4, Compression::None);
    writer.set_spill_bytes(16);
    writer.push(&[1; 4], &[1; 4], &[1; 4]).unwrap();
    drop(writer);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// The positional writer (HDF5 lays out the metadata, the rows go in by position, in any order
/// and from several threads) must give the very bytes HDF5 writes itself, whatever the number
/// of examples (fewer than the capacity it was created for too) and seq_len.
#[test]
fn positional_shards_are_byte_identical_to_hdf5_written_ones() {
    let dir = tempfile::tempdir().unwrap();
    for (examples, seq_len, capacity) in [(1, 1, 1), (7, 5, 7), (50, 16, 64), (300, 33, 1000)] {
        let rows: Vec<Vec<i32>> = (0..examples)
            .map(|r| {
                (0..3 * seq_len)
                    .map(|j| (r * 7919 + j * 31) as i32)
                    .collect()
            })
            .collect();
        let reference = dir.path().join(format!("ref-{examples}.h5"));
        let mut writer = ShardWriter::new(&reference, seq_len, Compression::None);
        for row in &rows {
            let (ids, rest) = row.split_at(seq_len);
            let (mask, labels) = rest.split_at(seq_len);
            writer.push(ids, mask, labels).unwrap();
        }
        let want = writer.finish().unwrap();

        let path = dir.path().join(format!("pos-{examples}.h5"));
        let shard = PositionalShard::create(&path, seq_len, capacity).unwrap();
        let mut stats = DatasetStats::default();
        for row in &rows {
            stats.add_row(&row[seq_len..2 * seq_len]);
        }
        // Back to front, two threads, two examples per write.
        let pieces: Vec<(usize, Vec<i32>)> = rows
            .chunks(2)
            .enumerate()
            .map(|(i, c)| (2 * i, c.concat()))
            .rev()
            .collect();
        std::thread::scope(|scope| {
            for half in pieces.chunks(pieces.len().div_ceil(2)) {
                let shard = &shard;
                scope.spawn(move || {
                    for (first, tokens) in half {
                        shard.write_examples(*first, tokens).unwrap();
                    }
                });
            }
        });
        assert!(!path.exists(), "nothing at the final name before commit");
        let staged = shard.finish(examples, stats).unwrap();
        let got = staged.commit().unwrap();
        assert!(
            std::fs::read(&reference).unwrap() == std::fs::read(&path).unwrap(),
            "{examples} examples of seq_len {seq_len}: bytes differ"
        );
        assert_eq!(got.entry.xxh3_64, want.entry.xxh3_64);
        assert_eq!(got.entry.bytes, want.entry.bytes);
        assert_eq!(got.stats, want.stats);
    }
    // An unfinished positional shard leaves nothing behind.
    let shard = PositionalShard::create(dir.path().join("gone.h5"), 4, 10).unwrap();
    shard.write_examples(0, &[1; 12]).unwrap();
    drop(shard);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("gone"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn read_example_matches_synthetic_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let set = synthetic_set(dir.path(), spec(30, 5, 8));
    let (mut a, mut b, mut c) = (vec![0; 5], vec![0; 5], vec![0; 5]);
    for id in [0, 7, 8, 29] {
        let out = ExampleMut {
            input_ids: &mut a,
            attention_mask: &mut b,
            labels: &mut c,
        };
        set.read_example(id, out).unwrap();
        assert_eq!(a, (0..5).map(|j| (id * 5 + j) as i32).collect::<Vec<_>>());
        assert_eq!(b, vec![1; 5]);
        assert_eq!(c[4], (id * 5 + 5) as i32);
    }
}

/// A slice exposes its examples renumbered from 0, and a loader over it visits exactly those
/// rows once per epoch.
#[test]
fn slices_renumber_and_load_only_their_examples() {
    let dir = tempfile::tempdir().unwrap();
    let sp = spec(30, 5, 8);
    let set = synthetic_set(dir.path(), sp);
    let tail = Arc::new(set.slice(10..30));
    assert_eq!(tail.len(), 20);
    assert_eq!(tail.locate(0), set.locate(10));
    let nested = tail.slice(5..7);
    assert_eq!(nested.len(), 2);
    assert_eq!(nested.locate(1), set.locate(16));
    let mut loader = Loader::new(tail.clone(), config(layout(4, 2, 1, 0), 3, 0)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let batch = loader.next_batch().unwrap();
        for (row, &sample) in batch.sample_ids.iter().enumerate() {
            let ids = &batch.input_ids[row * 5..row * 5 + 5];
            assert_eq!(sp.example_of(ids), sample as usize + 10);
            seen.push(sample);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
}

// ---- corruption cases: each returns its specific error --------------------------------------

fn corrupt_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_synthetic(dir.path(), spec(20, 8, 5)).unwrap();
    dir
}

fn open_err(dir: &Path) -> FormatError {
    match ShardSet::open(&[dir]) {
        Ok(_) => panic!("opening {dir:?} should fail"),
        Err(e) => e,
    }
}

#[test]
fn truncated_shard_is_reported_not_sigbus() {
    let dir = corrupt_setup();
    let shard = dir.path().join("shard-000002.h5");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(len - 100).unwrap();
    // Without the manifest (whose byte counts would catch it first), the shard check must.
    std::fs::remove_file(dir.path().join(DATA_PARAMS_FILE)).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
    assert!(err.to_string().contains("shard-000002.h5"), "{err}");
}

#[test]
fn missing_and_extra_shards_disagree_with_manifest() {
    let dir = corrupt_setup();
    let d = dir.path();
    std::fs::rename(d.join("shard-000001.h5"), d.join("elsewhere")).unwrap();
    let err = open_err(d);
    assert!(matches!(err, FormatError::ManifestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("shard-000001.h5"), "{err}");
    std::fs::rename(d.join("elsewhere"), d.join("shard-000001.h5")).unwrap();
    std::fs::copy(d.join("shard-000001.h5"), d.join("shard-000009.h5")).unwrap();
    let err = open_err(d);
    assert!(matches!(err, FormatError::ManifestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("shard-000009.h5"), "{err}");
}

#[test]
fn replaced_shard_fails_checksum_in_verify() {
    let dir = corrupt_setup();
    let other = tempfile::tempdir().unwrap();
    // Same shape and size, other tokens.
    let mut w = ShardWriter::new(other.path().join("x.h5"), 8, Compression::None);
    for r in 0..5 {
        let ids: Vec<i32> = (0..8).map(|j| 100 + r * 8 + j).collect();
        let labels: Vec<i32> = ids.iter().map(|t| t + 1).collect();
        w.push(&ids, &[1; 8], &labels).unwrap();
    }
    w.finish().unwrap();
    std::fs::copy(
        other.path().join("x.h5"),
        dir.path().join("shard-000001.h5"),
    )
    .unwrap();
    let set = ShardSet::open(&[dir.path()]).unwrap();
    let report = verify(&set, VerifyOptions::for_set(&set), &mut |_| {}).unwrap();
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("shard-000001.h5") && t.contains("checksum")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("overlap by one token")),
        "{text:?}"
    );
}

#[test]
fn seq_len_mismatch_between_shards() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_synthetic(d1.path(), spec(4, 8, 4)).unwrap();
    write_synthetic(d2.path(), spec(4, 6, 4)).unwrap();
    let err = ShardSet::open(&[d1.path(), d2.path()]).err().unwrap();
    assert!(
        matches!(
            err,
            FormatError::SeqLenMismatch {
                found: 6,
                expected: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn manifest_seq_len_and_parse_errors() {
    let dir = corrupt_setup();
    let mut params = DataParams::read_from_dir(dir.path()).unwrap().unwrap();
    params.h5gpt.as_mut().unwrap().seq_len = 16;
    params.write_to_dir(dir.path()).unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, FormatError::ManifestMismatch { .. }), "{err}");
    std::fs::write(dir.path().join(DATA_PARAMS_FILE), b"{ not json").unwrap();
    let err = open_err(dir.path());
    assert!(matches!(err, FormatError::ManifestParse { .. }), "{err}");
}

#[test]
fn foreign_layouts_are_rejected_with_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    {
        // Wrong dataset name.
        let f = hdf5::File::create(p("a.h5")).unwrap();
        f.new_dataset::<i32>()
            .shape([2, 3, 4])
            .create("tokens")
            .unwrap();
    }
    {
        // Wrong dtype.
        let f = hdf5::File::create(p("b.h5")).unwrap();
        let ds = f
            .new_dataset::<f32>()
            .shape([2, 3, 4])
            .create("data")
            .unwrap();
        ds.write_raw(&[0f32; 24]).unwrap();
        let attr = f.new_attr::<i64>().create("n_examples").unwrap();
        attr.write_scalar(&2i64).unwrap();
    }
    {
        // Wrong rank.
        let f = hdf5::File::create(p("c.h5")).unwrap();
        let ds = f.new_dataset::<i32>().shape([2, 4]).create("data").unwrap();
        ds.write_raw(&[0i32; 8]).unwrap();
    }
    {
        // n_examples attribute disagrees.
        let f = hdf5::File::create(p("d.h5")).unwrap();
        let ds = f
            .new_dataset::<i32>()
            .shape([2, 3, 4])
            .create("data")
            .unwrap();
        ds.write_raw(&[0i32; 24]).unwrap();
        let attr = f.new_attr::<i64>().create("n_examples").unwrap();
        attr.write_scalar(&5i64).unwrap();
    }
    {
        // Missing n_examples attribute.
        let f = hdf5::File::create(p("e.h5")).unwrap();
        let ds = f
            .new_dataset::<i32>()
            .shape([2, 3, 4])
            .create("data")
            .unwrap();
        ds.write_raw(&[0i32; 24]).unwrap();
    }
    // Not HDF5 at all.
    std::fs::write(p("f.h5"), b"hello").unwrap();
    let err = |n: &str| ShardSet::open(&[p(n)]).err().unwrap();
    for name in ["a.h5", "b.h5", "c.h5", "e.h5"] {
        let e = err(name);
        assert!(matches!(e, FormatError::Layout { .. }), "{name}: {e}");
        assert!(e.to_string().contains(name), "{e}");
    }
    assert!(matches!(
        err("d.h5"),
        FormatError::NExamplesMismatch {
            attr: 5,
            rows: 2,
            ..
        }
    ));
    let e = err("f.h5");
    assert!(
        matches!(e, FormatError::Hdf5 { .. } | FormatError::Truncated { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("f.h5"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        open_err(empty.path()),
        FormatError::NoShards { .. }
    ));
}

#[test]
fn verify_names_each_broken_row_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shard-000000.h5");
    let pad = 50256;
    let mut w = ShardWriter::new(&path, 4, Compression::None);
    w.push(&[1, 2, 3, 4], &[1, 1, 1, 1], &[2, 3, 3, 5]).unwrap(); // labels[2] != ids[3]
    w.push(&[5, pad, pad, pad], &[1, 0, 1, 0], &[6, pad, pad, pad])
        .unwrap(); // mask not a prefix
    w.push(&[7, 8, 9, pad], &[1, 1, 1, 0], &[8, 9, 10, 3])
        .unwrap(); // masked label not pad
    w.push(&[60000, 1, 2, 3], &[1, 1, 1, 1], &[1, 2, 3, 4])
        .unwrap(); // id outside vocab
    w.finish().unwrap();
    let set = ShardSet::open(&[&path]).unwrap();
    let opts = VerifyOptions {
        vocab_size: 50257,
        pad_id: pad as u32,
        packing: None,
        max_violations: 100,
        checksums: false,
    };
    let report = verify(&set, opts, &mut |_| {}).unwrap();
    let got: Vec<(usize, Option<usize>)> = report
        .violations
        .iter()
        .map(|v| (v.row, v.column))
        .collect();
    for expected in [(0, Some(2)), (1, Some(2)), (2, Some(3)), (3, Some(0))] {
        assert!(
            got.contains(&expected),
            "{expected:?} in {:?}",
            report.violations
        );
    }
    assert_eq!(report.violation_count, 4, "{:?}", report.violations);
}

#[test]
fn stream_verify_flags_a_partial_row_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = h5gpt_formats::ShardSetWriter::new(dir.path(), 3, Compression::None, 10).unwrap();
    let pad = 99;
    w.push(&[1, 2, 3], &[1, 1, 1], &[2, 3, 4]).unwrap();
    w.push(&[4, 5, pad], &[1, 1, 0], &[5, 6, pad]).unwrap(); // partial, but not last
    w.push(&[6, 7, 8], &[1, 1, 1], &[7, 8, 9]).unwrap();
    w.finish().unwrap();
    let set = ShardSet::open(&[dir.path()]).unwrap();
    let opts = VerifyOptions {
        vocab_size: 100,
        pad_id: pad as u32,
        packing: Some(h5gpt_formats::Packing::Stream),
        max_violations: 10,
        checksums: false,
    };
    let report = verify(&set, opts, &mut |_| {}).unwrap();
    assert_eq!(report.violation_count, 1, "{:?}", report.violations);
    assert_eq!(report.violations[0].row, 1);
    assert!(report.violations[0].what.contains("partial row"));
}

#[test]
fn loader_rejects_layouts_that_do_not_divide() {
    let dir = tempfile::tempdir().unwrap();
    let set = synthetic_set(dir.path(), spec(10, 4, 10));
    for l in [
        layout(10, 3, 1, 0),
        layout(10, 5, 4, 0),
        layout(8, 2, 2, 2),
        layout(0, 1, 1, 0),
    ] {
        let err = Loader::new(set.clone(), config(l, 0, 0)).err();
        assert!(matches!(err, Some(FormatError::Config(_))), "{l:?}");
    }
}

#[test]
fn directories_of_different_tokenizers_are_refused() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, vocab) in [(d1.path(), None), (d2.path(), Some(303))] {
        let mut params = write_synthetic(dir, spec(4, 8, 4)).unwrap();
        let ours = params.h5gpt.as_mut().unwrap();
        ours.tokenizer = "trained-wordlevel".into();
        if let Some(vocab) = vocab {
            params.post_process.vocab_size = Some(vocab);
        }
        params.write_to_dir(dir).unwrap();
    }
    // Same tokenizer: one set.
    assert!(ShardSet::open(&[d1.path(), d1.path()]).is_ok());
    let err = ShardSet::open(&[d1.path(), d2.path()]).err().unwrap();
    assert!(
        matches!(&err, FormatError::TokenizerMismatch { path, .. } if path == d2.path()),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("trained-wordlevel") && msg.contains("303"),
        "{msg}"
    );
}
