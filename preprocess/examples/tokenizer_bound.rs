//! The tokenizer bound for `scripts/bench-preprocess.sh`: `r50k_base().encode_ordinary` over
//! every document of the inputs, whole documents, on one core, nothing else timed.
//!
//! `cargo run --release -p h5gpt-preprocess --example tokenizer_bound -- INPUT… [--runs N]`
//! prints one line per run: `bound_seconds <s> text_bytes <n> tokens <n>`.

use h5gpt_preprocess::input::{discover, open_records};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut inputs = Vec::new();
    let mut runs = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().ok_or("--runs N")?.parse()?;
        } else {
            inputs.push(PathBuf::from(a));
        }
    }
    let mut docs = Vec::new();
    for file in discover(&inputs, None)? {
        for record in open_records(&file, "text", Arc::new(AtomicU64::new(0)))? {
            docs.push(record?.1);
        }
    }
    let bytes: usize = docs.iter().map(String::len).sum();
    let bpe = tiktoken_rs::r50k_base()?;
    for _ in 0..runs {
        let t = Instant::now();
        let tokens: usize = docs.iter().map(|d| bpe.encode_ordinary(d).len()).sum();
        println!(
            "bound_seconds {:.4} text_bytes {bytes} tokens {tokens}",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
