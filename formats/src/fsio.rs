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
/// A failed write (a full disk) removes its temporary file and leaves `path` as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_path(path);
    let mut file = File::create(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    if let Err(e) = file.write_all(bytes).and_then(|_| file.sync_all()) {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(FormatError::io(path, e));
    }
    drop(file);
    fs::rename(&tmp, path).map_err(|e| FormatError::io(path, e))?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Starts writing directory `target` crash-safely: returns its temporary sibling
/// (`.NAME.tmp`, see [`temporary_path`]), fresh and empty (what an interrupted earlier attempt
/// left there is removed). Fill it, fsync its files, then [`commit_dir`] it.
pub fn begin_dir(target: &Path) -> Result<PathBuf> {
    let tmp = temporary_path(target);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
    Ok(tmp)
}

/// Moves a finished temporary directory into place as `target`: fsync it, move an existing
/// `target` aside first (to `.NAME.old`), rename, fsync the parent, then remove the old copy.
/// A crash at any point leaves complete copies (`target`, or `.NAME.old` and `.NAME.tmp`),
/// never a half-written `target`. The files inside must already be fsynced.
pub fn commit_dir(temporary: &Path, target: &Path) -> Result<()> {
    fsync_dir(temporary)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let old = target.with_file_name(format!(".{name}.old"));
    let replacing = target.exists();
    if replacing {
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| FormatError::io(&old, e))?;
        }
        fs::rename(target, &old).map_err(|e| FormatError::io(target, e))?;
    }
    fs::rename(temporary, target).map_err(|e| FormatError::io(target, e))?;
    fsync_dir(target.parent().unwrap_or(Path::new(".")))?;
    if replacing {
        fs::remove_dir_all(&old).map_err(|e| FormatError::io(&old, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_commit_replaces_the_old_one_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("export");
        for (round, files) in [["a", "b"], ["c", "d"]].iter().enumerate() {
            let staging = begin_dir(&target).unwrap();
            assert_eq!(staging, tmp.path().join(".export.tmp"));
            assert_eq!(fs::read_dir(&staging).unwrap().count(), 0, "starts empty");
            for f in files {
                write_atomic(&staging.join(f), f.as_bytes()).unwrap();
            }
            commit_dir(&staging, &target).unwrap();
            let mut names: Vec<String> = fs::read_dir(&target)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, files.to_vec(), "round {round}");
            // Nothing staged or set aside is left beside it.
            assert_eq!(
                fs::read_dir(tmp.path()).unwrap().count(),
                1,
                "round {round}"
            );
        }
    }

    #[test]
    fn begin_dir_clears_an_interrupted_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("step-1");
        let staging = temporary_path(&target);
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("half"), b"x").unwrap();
        assert_eq!(begin_dir(&target).unwrap(), staging);
        assert!(!staging.join("half").exists());
    }
}
