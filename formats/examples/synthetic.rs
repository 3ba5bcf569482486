//! Writes a small self-checking synthetic shard set (token at stream position p is p).
//!
//! `cargo run --release -p h5gpt-formats --example synthetic -- OUT_DIR [EXAMPLES] [SEQ_LEN]`

use h5gpt_formats::synthetic::{write_synthetic, SyntheticSpec};
use h5gpt_formats::Compression;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or("usage: synthetic OUT_DIR [EXAMPLES] [SEQ_LEN]")?;
    let examples = args.get(1).map_or(Ok(1000), |v| v.parse())?;
    let seq_len = args.get(2).map_or(Ok(256), |v| v.parse())?;
    let params = write_synthetic(
        std::path::Path::new(dir),
        SyntheticSpec {
            examples,
            seq_len,
            examples_per_shard: 250,
            compression: Compression::None,
            partial_tokens: Some(seq_len / 2 + 1),
        },
    )?;
    println!(
        "wrote {} examples of {seq_len} tokens in {} shards to {dir}",
        params.post_process.n_examples,
        params.h5gpt.map_or(0, |s| s.shards.len())
    );
    Ok(())
}
