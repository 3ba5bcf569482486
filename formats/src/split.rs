//! The train/val directory rule, the one place every binary reads it from.
//!
//! `preprocess --val-fraction F --out OUT` writes the training rows into `OUT/train/` and the
//! evaluation rows into `OUT/val/`; without a split it writes the shards into `OUT` itself.
//! A directory is therefore read as a split when it has a `train/` subdirectory (`val/` is
//! optional), and as a plain shard directory otherwise.

use std::path::{Path, PathBuf};

/// Subdirectory of a split's training rows.
pub const TRAIN_DIR: &str = "train";
/// Subdirectory of a split's evaluation rows.
pub const VAL_DIR: &str = "val";

/// The `train/` and `val/` directories a split of `root` is written to (whether or not they
/// exist yet).
pub fn split_paths(root: &Path) -> [PathBuf; 2] {
    [root.join(TRAIN_DIR), root.join(VAL_DIR)]
}

/// Where the rows of a shard directory given on the command line are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitDirs {
    /// The training rows: `root/train` for a split, `root` itself otherwise.
    pub train: PathBuf,
    /// The evaluation rows: `root/val`, when `root` is a split that has one.
    pub val: Option<PathBuf>,
    /// Whether `root` is a split (has a `train/` subdirectory).
    pub is_split: bool,
}

impl SplitDirs {
    /// Reads the layout of `root` from the file system (see the module documentation).
    pub fn of(root: &Path) -> SplitDirs {
        let [train, val] = split_paths(root);
        if train.is_dir() {
            SplitDirs {
                train,
                val: val.is_dir().then_some(val),
                is_split: true,
            }
        } else {
            SplitDirs {
                train: root.to_path_buf(),
                val: None,
                is_split: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_split_and_split_without_val() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(
            SplitDirs::of(root),
            SplitDirs {
                train: root.to_path_buf(),
                val: None,
                is_split: false
            }
        );
        // A val/ alone does not make a split: its rows are not training rows.
        std::fs::create_dir(root.join(VAL_DIR)).unwrap();
        assert!(!SplitDirs::of(root).is_split);
        std::fs::create_dir(root.join(TRAIN_DIR)).unwrap();
        assert_eq!(
            SplitDirs::of(root),
            SplitDirs {
                train: root.join("train"),
                val: Some(root.join("val")),
                is_split: true
            }
        );
        std::fs::remove_dir(root.join(VAL_DIR)).unwrap();
        let dirs = SplitDirs::of(root);
        assert_eq!((dirs.train, dirs.val), (root.join("train"), None));
    }
}
