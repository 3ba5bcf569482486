//! How `preprocess --val-fraction F` splits a corpus into `train/` and `val/`.
//!
//! With many documents, whole documents go to one side or the other (a keyed hash of the
//! document's place picks, see `pipeline`). With too few for that to come near the fraction
//! (fewer than [`MIN_DOCUMENTS_PER_FRACTION`] / F, e.g. one `tinyshakespeare.txt`), each
//! document is cut inside instead: at the newline nearest to (1 − F) of its length, the head
//! to `train/` and the tail to `val/`. That is nanoGPT's rule for a single file; it needs no
//! tokenizer (so a tokenizer trained with `--train-tokenizer` sees the heads only), and it
//! depends on the text alone, not on `--threads`.

use crate::input::{discover, open_records};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A whole-document split needs at least this many documents per unit of `--val-fraction`
/// (20 / F documents: about 20 in `val/`).
pub const MIN_DOCUMENTS_PER_FRACTION: f64 = 20.0;

/// Which split rule a run used (recorded in `data_params.json` as `split_rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitRule {
    /// Whole documents, chosen by a keyed hash.
    Documents,
    /// Each document cut at a newline: head to `train/`, tail to `val/`.
    WithinDocuments,
}

impl SplitRule {
    /// The rule for `documents` documents and `fraction` held out.
    pub fn choose(documents: u64, fraction: f64) -> SplitRule {
        if (documents as f64) < MIN_DOCUMENTS_PER_FRACTION / fraction {
            SplitRule::WithinDocuments
        } else {
            SplitRule::Documents
        }
    }

    /// The name `data_params.json` and the summary use.
    pub fn name(self) -> &'static str {
        match self {
            SplitRule::Documents => "documents",
            SplitRule::WithinDocuments => "within-documents",
        }
    }
}

/// Which part of each document a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DocPart {
    /// The whole text.
    #[default]
    Whole,
    /// The text before the cut for this fraction.
    Head(f64),
    /// The text from the cut for this fraction on.
    Tail(f64),
}

impl DocPart {
    /// Whether this is [`DocPart::Whole`].
    pub fn is_whole(&self) -> bool {
        matches!(self, DocPart::Whole)
    }

    /// This part of `text`.
    pub fn apply(self, text: String) -> String {
        match self {
            DocPart::Whole => text,
            DocPart::Head(f) => text[..cut(&text, f)].to_owned(),
            DocPart::Tail(f) => text[cut(&text, f)..].to_owned(),
        }
    }
}

/// The byte position where `text` is cut to hold out `fraction` of it: just after the
/// newline nearest to (1 − `fraction`) of its length (ties: the earlier one) among those that
/// leave both parts non-empty; without one, the character boundary at or before it.
pub fn cut(text: &str, fraction: f64) -> usize {
    let target = ((1.0 - fraction) * text.len() as f64).round() as usize;
    let target = target.min(text.len());
    let before = text[..floor_boundary(text, target)]
        .rfind('\n')
        .map(|i| i + 1);
    let after = text[floor_boundary(text, target)..]
        .find('\n')
        .map(|i| floor_boundary(text, target) + i + 1);
    // The nearest newline that leaves both parts non-empty, if there is one.
    [before, after]
        .into_iter()
        .flatten()
        .filter(|&c| c > 0 && c < text.len())
        .min_by_key(|&c| (c.abs_diff(target), c))
        .unwrap_or_else(|| floor_boundary(text, target))
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Non-empty documents in `inputs` (bad records, which the run itself reports, are not
/// counted). Reading records is cheap next to tokenizing them.
pub fn count_documents(inputs: &[PathBuf], glob: Option<&str>, text_key: &str) -> u64 {
    let Ok(files) = discover(inputs, glob) else {
        return 0;
    };
    count_file_documents(&files, text_key)
}

/// [`count_documents`] of input files found already.
pub fn count_file_documents(files: &[crate::input::InputFile], text_key: &str) -> u64 {
    let mut documents = 0;
    for file in files {
        let Ok(records) = open_records(file, text_key, Arc::new(AtomicU64::new(0))) else {
            continue;
        };
        documents += records
            .filter(|r| r.as_ref().is_ok_and(|(_, text)| !text.is_empty()))
            .count() as u64;
    }
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_the_nearest_newline() {
        let text = "aaaa\nbbbb\ncccc\ndddd\neeee\n";
        // 25 bytes; 90% is 22.5 → 23; newlines end at 5, 10, 15, 20, 25 (25 would leave
        // the tail empty).
        assert_eq!(cut(text, 0.1), 20);
        assert_eq!(cut(text, 0.2), 20);
        assert_eq!(cut(text, 0.5), 15);
        let head = DocPart::Head(0.2).apply(text.into());
        let tail = DocPart::Tail(0.2).apply(text.into());
        assert_eq!(head, "aaaa\nbbbb\ncccc\ndddd\n");
        assert_eq!(format!("{head}{tail}"), text);
    }

    #[test]
    fn without_a_newline_cuts_at_a_character_boundary() {
        let text = "ééééééééééé";
        let c = cut(text, 0.1);
        assert!(text.is_char_boundary(c) && c > 0 && c < text.len());
    }

    #[test]
    fn few_documents_split_inside() {
        assert_eq!(SplitRule::choose(1, 0.1), SplitRule::WithinDocuments);
        assert_eq!(SplitRule::choose(199, 0.1), SplitRule::WithinDocuments);
        assert_eq!(SplitRule::choose(200, 0.1), SplitRule::Documents);
        assert_eq!(SplitRule::choose(2000, 0.01), SplitRule::Documents);
    }
}
