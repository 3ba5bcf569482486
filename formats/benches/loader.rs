//! Loader throughput against `memcpy` on the same machine, in one run.
//!
//! Writes ≥ 1 GiB of synthetic shards (seq_len 2048) into `$H5GPT_BENCH_DIR` (default: a
//! temporary directory), reads them once so they sit in the page cache, then measures:
//! - loader: output bytes/s of batches of 8 × 2048 rows drawn at random (the sample stream),
//!   all three buffers counted, through the prefetching background thread;
//! - memcpy: bytes/s copying the same number of bytes in blocks of one batch's size from random
//!   offsets of a 1 GiB in-memory buffer.
//!
//! Prints both and their ratio (median of 5 runs each). `H5GPT_BENCH_GIB` sets the data size.

use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::{BatchLayout, Compression, Loader, LoaderConfig, ShardSet};
use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

const SEQ: usize = 2048;
const BATCH: usize = 8;
const EXAMPLE_BYTES: usize = 3 * SEQ * 4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

// A benchmark script reads top to bottom: write, warm, measure, compare.
#[allow(clippy::too_many_lines)]
fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: skip work then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gib: f64 = std::env::var("H5GPT_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let tmp;
    let dir = match std::env::var_os("H5GPT_BENCH_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let examples = ((gib * (1u64 << 30) as f64) as usize).div_ceil(EXAMPLE_BYTES);
    if h5gpt_formats::DataParams::read_from_dir(&dir)
        .ok()
        .flatten()
        .map(|p| p.post_process.n_examples as usize)
        != Some(examples)
    {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!(
            "writing {examples} examples ({gib} GiB) to {}",
            dir.display()
        );
        let t = Instant::now();
        write_synthetic(
            &dir,
            SyntheticSpec {
                examples,
                seq_len: SEQ,
                examples_per_shard: 10_000,
                compression: Compression::None,
                partial_tokens: None,
            },
        )
        .expect("write shards");
        eprintln!("  written in {:.1}s", t.elapsed().as_secs_f64());
    }
    // Pull every shard into the page cache.
    let mut buf = vec![0u8; 1 << 20];
    for f in h5gpt_formats::reader::list_shard_files(&dir).unwrap() {
        let mut file = std::fs::File::open(f).unwrap();
        while file.read(&mut buf).unwrap() > 0 {}
    }
    let set = Arc::new(ShardSet::open(&[&dir]).expect("open shards"));
    let batches = examples / BATCH; // about one epoch
    let batch_bytes = (BATCH * EXAMPLE_BYTES) as u64;
    let total = batches as u64 * batch_bytes;

    let mut loader_rates = Vec::new();
    for run in 0..5u64 {
        let layout = BatchLayout {
            global_batch: BATCH,
            micro_batch: BATCH,
            world_size: 1,
            rank: 0,
        };
        let config = LoaderConfig {
            seed: run,
            layout,
            start_position: 0,
            prefetch: 4,
        };
        let mut loader = Loader::new(set.clone(), config).unwrap();
        let t = Instant::now();
        for _ in 0..batches {
            let batch = loader.next_batch().unwrap();
            black_box(&batch.input_ids);
            loader.recycle(batch);
        }
        loader_rates.push(total as f64 / t.elapsed().as_secs_f64());
    }

    let source = vec![1u8; 1 << 30];
    let mut dest = vec![0u8; batch_bytes as usize];
    let mut memcpy_rates = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..batches {
            state = h5gpt_formats::permutation::mix64(state);
            let span = source.len() - dest.len();
            let offset = (state as usize % span) & !63;
            let len = dest.len();
            dest.copy_from_slice(&source[offset..offset + len]);
            black_box(&dest);
        }
        memcpy_rates.push(total as f64 / t.elapsed().as_secs_f64());
    }
    let (l, m) = (median(loader_rates), median(memcpy_rates));
    println!(
        "loader: {:.2} GB/s   memcpy: {:.2} GB/s   ratio loader/memcpy: {:.2}   ({} batches of {}x{} rows, {:.2} GB per run, median of 5)",
        l / 1e9,
        m / 1e9,
        l / m,
        batches,
        BATCH,
        SEQ,
        total as f64 / 1e9
    );
}
