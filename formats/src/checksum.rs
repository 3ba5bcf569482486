//! xxh3-64 checksums of whole shard files, as recorded in `data_params.json`.

use crate::error::{FormatError, Result};
use std::io::Read;
use std::path::Path;
use xxhash_rust::xxh3::Xxh3;

/// The xxh3-64 of a file's bytes, as 16 lower-case hex digits.
pub fn file_xxh3_64(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| FormatError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format_xxh3_64(hasher.digest()))
}

/// The xxh3-64 of `bytes`, as the manifest records it.
pub fn bytes_xxh3_64(bytes: &[u8]) -> String {
    format_xxh3_64(xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Formats a 64-bit digest the way the manifest records it.
pub fn format_xxh3_64(digest: u64) -> String {
    format!("{digest:016x}")
}
