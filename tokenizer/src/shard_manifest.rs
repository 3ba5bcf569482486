//! The one check of a shard directory's manifest that `train` and `inspect --verify` both run:
//! the fields a run depends on (tokenizer label, `tokenizer.json` checksum, vocabulary size,
//! end-of-document and pad ids) agree with each other and with the tokenizer they name.
//! (A newer `format_version` is refused when the manifest is read,
//! [`DataParams::read_from_dir`](h5gpt_formats::DataParams::read_from_dir).)

use crate::tokenizer::{Tokenizer, TokenizerError, FILE_TOKENIZER, TIKTOKEN_ENCODINGS};
use h5gpt_formats::manifest::DataParams;
use h5gpt_formats::spec::DATA_PARAMS_FILE;
use h5gpt_formats::synthetic::SYNTHETIC_TOKENIZER;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The labels a file tokenizer (one with a `tokenizer.json` beside the shards) is recorded
/// under: `--tokenizer FILE`, and the two kinds `--train-tokenizer` trains.
pub const FILE_TOKENIZER_LABELS: [&str; 3] = [FILE_TOKENIZER, "trained-bpe", "trained-wordlevel"];

/// Why a shard directory's manifest cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A field disagrees with another, or with the tokenizer it names.
    #[error("{path}: {what}\n---> HINT: data_params.json must be the one preprocess wrote (it was edited, or belongs to other shards); restore it or re-run preprocess")]
    Field {
        /// The manifest.
        path: PathBuf,
        /// What disagrees.
        what: String,
    },
    /// The tokenizer it names cannot be had (its `tokenizer.json` is missing, or not the one
    /// the manifest records).
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Checks the manifest `params` of shard directory `dir` and returns its tokenizer (`None`
/// for generated test data, `synthetic`, and for foreign manifests without our section, which
/// record nothing of ours to check). Checked: the label is one h5gpt writes (a tiktoken name
/// without a `tokenizer.json`, or a file label with one); the `tokenizer.json` beside the
/// shards has the recorded checksum; `vocab_size`, `eos_id` and `pad_id` are the tokenizer's
/// (pad = EOS, as preprocess writes); the copies in `processing` agree with `post-process`.
pub fn verify_shard_manifest(
    dir: &Path,
    params: &DataParams,
) -> Result<Option<Tokenizer>, ManifestError> {
    let Some(section) = &params.h5gpt else {
        return Ok(None);
    };
    let path = dir.join(DATA_PARAMS_FILE);
    let bad = |what: String| ManifestError::Field {
        path: path.clone(),
        what,
    };
    let post = &params.post_process;
    for (field, value) in [("eos_id", post.eos_id), ("pad_id", post.pad_id)] {
        if let Some(copy) = params.processing.get(field) {
            if copy.as_u64() != value.map(u64::from) {
                return Err(bad(format!(
                    "processing.{field} is {copy} but post-process.{field} is {}",
                    value.map_or(Value::Null, Value::from)
                )));
            }
        }
    }
    let name = section.tokenizer.as_str();
    if name == SYNTHETIC_TOKENIZER && section.tokenizer_file.is_none() {
        return Ok(None);
    }
    let tokenizer = match &section.tokenizer_file {
        None => Tokenizer::tiktoken(name).ok_or_else(|| {
            bad(format!(
                "tokenizer `{name}` without a tokenizer.json: not one h5gpt writes (a tiktoken encoding: {}; or `{SYNTHETIC_TOKENIZER}`)",
                TIKTOKEN_ENCODINGS.map(|e| e.name).join(", ")
            ))
        })?,
        Some(_) if !FILE_TOKENIZER_LABELS.contains(&name) => {
            return Err(bad(format!(
                "tokenizer `{name}` with a tokenizer.json: not a label h5gpt writes for one ({})",
                FILE_TOKENIZER_LABELS.join(", ")
            )))
        }
        Some(_) => Tokenizer::for_shard_dir(dir, Some(params))?,
    };
    let expected = [
        ("vocab_size", post.vocab_size, tokenizer.vocab_size()),
        ("eos_id", post.eos_id, tokenizer.eos_id()),
        ("pad_id", post.pad_id, tokenizer.eos_id()),
    ];
    for (field, recorded, right) in expected {
        if recorded != Some(right) {
            return Err(bad(format!(
                "post-process.{field} is {} but tokenizer `{name}` has {right}",
                recorded.map_or("missing".to_string(), |v| v.to_string())
            )));
        }
    }
    if tokenizer.eos_id() >= tokenizer.vocab_size() {
        return Err(bad(format!(
            "eos_id {} is outside the vocabulary of {} tokens",
            tokenizer.eos_id(),
            tokenizer.vocab_size()
        )));
    }
    Ok(Some(tokenizer))
}
