//! Crash-safe file helpers: write to a temporary name, fsync, rename, fsync the directory.

use crate::error::{FormatError, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being written: `.NAME.tmp` in the same directory.
/// It never ends in `.h5`, so a half-written shard is never mistaken for a complete one.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// fsyncs a file by path.
pub fn fsync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| FormatError::io(path, e))
}

/// fsyncs a directory, so that a rename inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| FormatError::io(dir, e))
}

/// Moves a finished temporary file into place: fsync it, rename it, fsync the directory.
pub fn commit_file(temporary: &Path, target: &Path) -> Result<()> {
    fsync_file(temporary)?;
    fs::rename(temporary, target).map_err(|e| FormatError::io(target, e))?;
    fsync_dir(target.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_path(path);
    let mut file = File::create(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| FormatError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}
