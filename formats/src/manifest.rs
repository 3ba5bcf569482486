//! `data_params.json`: the authoritative description of a shard directory.
//!
//! A superset of the file Cerebras Model Zoo writes: its sections `setup`, `processing`,
//! `dataset`, `post-process` and `h5_dataset_stats`, plus our own `h5gpt` section (format
//! version, tokenizer, packing, and every shard with its example count and xxh3-64 checksum).
//! Nothing in it depends on time, host, thread count or absolute paths, so the same inputs and
//! settings give the same bytes.

use crate::error::{FormatError, Result};
use crate::fsio::write_atomic;
use crate::spec::{Compression, Packing, DATA_PARAMS_FILE};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DataParams {
    /// How the run was invoked (inputs as given, output directory as given).
    #[serde(default)]
    pub setup: Map<String, Value>,
    /// Tokenizer and packing settings (Cerebras' names where they exist).
    #[serde(default)]
    pub processing: Map<String, Value>,
    /// Dataset-level settings (Cerebras' names where they exist).
    #[serde(default)]
    pub dataset: Map<String, Value>,
    /// Counts after processing.
    #[serde(rename = "post-process", default)]
    pub post_process: PostProcess,
    /// Token statistics over all shards.
    #[serde(default)]
    pub h5_dataset_stats: DatasetStats,
    /// Our own section; absent from foreign (e.g. Cerebras-written) manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5gpt: Option<H5gptSection>,
}

/// Cerebras' `post-process` section: the fields readers rely on, plus any others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PostProcess {
    /// Total examples (rows) over all shards.
    #[serde(default)]
    pub n_examples: u64,
    /// End-of-document token id.
    #[serde(default)]
    pub eos_id: Option<u32>,
    /// Padding token id (equals `eos_id` for GPT-2).
    #[serde(default)]
    pub pad_id: Option<u32>,
    /// Tokenizer vocabulary size: every id is below it.
    #[serde(default)]
    pub vocab_size: Option<u32>,
    /// Anything else (document counts, bytes, skips…), kept in sorted order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token statistics over all shards (Cerebras' `h5_dataset_stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DatasetStats {
    /// Rows over all shards.
    #[serde(default)]
    pub num_sequences: u64,
    /// `num_sequences × seq_len`: every stored input position, padding included.
    #[serde(default)]
    pub num_tokens: u64,
    /// Input positions that hold a real token (attention mask 1).
    #[serde(default)]
    pub non_pad_tokens: u64,
    /// Positions whose label counts in the loss (sum of the attention mask).
    #[serde(default)]
    pub loss_valid_tokens: u64,
}

impl DatasetStats {
    /// Adds another set of counts.
    pub fn add(&mut self, other: &DatasetStats) {
        self.num_sequences += other.num_sequences;
        self.num_tokens += other.num_tokens;
        self.non_pad_tokens += other.non_pad_tokens;
        self.loss_valid_tokens += other.loss_valid_tokens;
    }

    /// The tokens a model trains on: loss-counted tokens when recorded, else real (non-pad)
    /// tokens, else every stored position (foreign manifests may count only some of these).
    pub fn training_tokens(&self) -> u64 {
        [self.loss_valid_tokens, self.non_pad_tokens, self.num_tokens]
            .into_iter()
            .find(|&t| t > 0)
            .unwrap_or(0)
    }

    /// Counts one example given its attention mask.
    pub fn add_row(&mut self, attention_mask: &[i32]) {
        let valid = attention_mask.iter().filter(|&&m| m != 0).count() as u64;
        self.num_sequences += 1;
        self.num_tokens += attention_mask.len() as u64;
        self.non_pad_tokens += valid;
        self.loss_valid_tokens += valid;
    }
}

/// Our section of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5gptSection {
    /// [`crate::spec::FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Tokenizer name (`gpt2`, `cl100k_base`, `o200k_base`, `trained-bpe`,
    /// `trained-wordlevel`, `tokenizer.json`, or `synthetic` for generated test data).
    pub tokenizer: String,
    /// The `tokenizer.json` kept beside the shards, for tokenizers that are not tiktoken's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_file: Option<TokenizerFile>,
    /// How rows were cut from the token stream.
    pub packing: Packing,
    /// Tokens per row.
    pub seq_len: usize,
    /// On-disk layout of the dataset.
    pub compression: Compression,
    /// Every shard, in order.
    pub shards: Vec<ShardEntry>,
}

/// A tokenizer file kept beside the shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerFile {
    /// File name, relative to the manifest's directory.
    pub file: String,
    /// xxh3-64 of the file, 16 hex digits.
    pub xxh3_64: String,
}

/// Which tokenizer wrote a shard directory: two directories can be read together only when
/// these are equal.
///
/// Equality is by content ([`TokenizerIdentity::key`]): the checksum of `tokenizer.json` for
/// file tokenizers, the encoding's name for the built-in tiktoken ones. The name of a file
/// tokenizer (`trained-bpe`, `tokenizer.json`, …) is only a label for messages.
#[derive(Debug, Clone)]
pub struct TokenizerIdentity {
    /// Tokenizer name.
    pub name: String,
    /// Vocabulary size.
    pub vocab_size: Option<u32>,
    /// End-of-document id.
    pub eos_id: Option<u32>,
    /// Checksum of its `tokenizer.json`, if it has one.
    pub file_xxh3_64: Option<String>,
}

impl TokenizerIdentity {
    /// What identifies the tokenizer: `xxh3:<checksum of tokenizer.json>` for a file tokenizer,
    /// its name otherwise.
    pub fn key(&self) -> String {
        tokenizer_key(&self.name, self.file_xxh3_64.as_deref())
    }
}

/// The content identity of a tokenizer named `name` with a `tokenizer.json` of checksum
/// `file_xxh3_64` (see [`TokenizerIdentity::key`]).
pub fn tokenizer_key(name: &str, file_xxh3_64: Option<&str>) -> String {
    match file_xxh3_64 {
        Some(sum) => format!("xxh3:{sum}"),
        None => name.to_owned(),
    }
}

impl PartialEq for TokenizerIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
            && self.vocab_size == other.vocab_size
            && self.eos_id == other.eos_id
    }
}

impl Eq for TokenizerIdentity {}

impl std::fmt::Display for TokenizerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.name)?;
        if let Some(v) = self.vocab_size {
            write!(f, " ({v} tokens")?;
            if let Some(sum) = &self.file_xxh3_64 {
                write!(f, ", tokenizer.json {sum}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// Checks that shard directories (each with its manifest, when it has one) were written with
/// one tokenizer; directories without a manifest say nothing and pass.
pub fn check_same_tokenizer<'a>(
    dirs: impl IntoIterator<Item = (&'a Path, Option<&'a DataParams>)>,
) -> Result<()> {
    let mut first: Option<(&Path, TokenizerIdentity)> = None;
    for (dir, params) in dirs {
        let Some(params) = params else { continue };
        let found = params.tokenizer_identity();
        match &first {
            None => first = Some((dir, found)),
            Some((first_dir, expected)) if *expected != found => {
                return Err(FormatError::TokenizerMismatch {
                    path: dir.into(),
                    found: found.to_string(),
                    expected: expected.to_string(),
                    first: first_dir.to_path_buf(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One shard as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name, relative to the manifest's directory.
    pub file: String,
    /// Examples (rows) in the shard.
    pub n_examples: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// xxh3-64 of the whole file, 16 hex digits.
    pub xxh3_64: String,
}

impl DataParams {
    /// Reads `dir/data_params.json`; `Ok(None)` when there is none. A manifest of a newer
    /// `format_version` than [`crate::spec::FORMAT_VERSION`] is refused
    /// ([`FormatError::NewerFormat`]): its shards may mean something this reader would
    /// misread. (Fields added later are additive and keep the version: unknown ones are
    /// ignored.)
    pub fn read_from_dir(dir: &Path) -> Result<Option<DataParams>> {
        let path = dir.join(DATA_PARAMS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let params: DataParams = serde_json::from_slice(&bytes).map_err(|source| {
                    FormatError::ManifestParse {
                        path: path.clone(),
                        source,
                    }
                })?;
                match params.h5gpt.as_ref().map(|s| s.format_version) {
                    Some(found) if found > crate::spec::FORMAT_VERSION => {
                        Err(FormatError::NewerFormat {
                            path,
                            found,
                            supported: crate::spec::FORMAT_VERSION,
                        })
                    }
                    _ => Ok(Some(params)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FormatError::io(path, e)),
        }
    }

    /// The exact bytes [`DataParams::write_to_dir`] writes: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("manifest serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Writes `dir/data_params.json` atomically.
    pub fn write_to_dir(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(DATA_PARAMS_FILE), &self.to_bytes())
    }

    /// The `seq_len` the manifest promises, from our section or Cerebras' `max_seq_length`.
    pub fn seq_len(&self) -> Option<usize> {
        if let Some(ours) = &self.h5gpt {
            return Some(ours.seq_len);
        }
        ["processing", "dataset"].iter().find_map(|section| {
            let map = if *section == "processing" {
                &self.processing
            } else {
                &self.dataset
            };
            map.get("max_seq_length")
                .and_then(Value::as_u64)
                .map(|v| v as usize)
        })
    }

    /// The tokenizer the manifest names: ours say so; foreign (Cerebras) manifests are GPT-2's
    /// unless they record another vocabulary size.
    /// Generated test data (`synthetic`) has no tokenizer: its sets all match.
    pub fn tokenizer_identity(&self) -> TokenizerIdentity {
        match &self.h5gpt {
            Some(s) if s.tokenizer == crate::synthetic::SYNTHETIC_TOKENIZER => TokenizerIdentity {
                name: s.tokenizer.clone(),
                vocab_size: None,
                eos_id: None,
                file_xxh3_64: None,
            },
            Some(s) => TokenizerIdentity {
                name: s.tokenizer.clone(),
                vocab_size: self.post_process.vocab_size,
                eos_id: self.post_process.eos_id,
                file_xxh3_64: s.tokenizer_file.as_ref().map(|f| f.xxh3_64.clone()),
            },
            None => TokenizerIdentity {
                name: "gpt2".into(),
                vocab_size: self.post_process.vocab_size,
                eos_id: self.post_process.eos_id,
                file_xxh3_64: None,
            },
        }
    }

    /// The packing the manifest declares; foreign manifests say nothing, which means the row
    /// invariants only.
    pub fn packing(&self) -> Option<Packing> {
        self.h5gpt.as_ref().map(|s| s.packing)
    }
}

/// The facts every manifest states, whoever writes it.
#[derive(Debug, Clone)]
pub struct ManifestCore {
    /// Tokenizer name.
    pub tokenizer: String,
    /// Its `tokenizer.json` beside the shards, if it has one.
    pub tokenizer_file: Option<TokenizerFile>,
    /// Packing of the rows.
    pub packing: Packing,
    /// Tokens per row.
    pub seq_len: usize,
    /// On-disk layout.
    pub compression: Compression,
    /// End-of-document id.
    pub eos_id: u32,
    /// Padding id.
    pub pad_id: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
    /// Totals over the shards.
    pub stats: DatasetStats,
}

impl DataParams {
    /// A manifest with the Cerebras-compatible counts and our section filled from `core`;
    /// `setup`, `processing` and `dataset` start with the fields Cerebras readers look at.
    pub fn from_core(core: ManifestCore) -> DataParams {
        let mut processing = Map::new();
        processing.insert("max_seq_length".into(), core.seq_len.into());
        processing.insert("eos_id".into(), core.eos_id.into());
        processing.insert("pad_id".into(), core.pad_id.into());
        processing.insert(
            "pack_sequences".into(),
            (core.packing == Packing::Stream).into(),
        );
        let mut dataset = Map::new();
        dataset.insert("input_ids_dtype".into(), "int32".into());
        dataset.insert("input_mask_dtype".into(), "int32".into());
        dataset.insert("inverted_mask".into(), false.into());
        dataset.insert("max_seq_length".into(), core.seq_len.into());
        let mut setup = Map::new();
        setup.insert("mode".into(), "lm".into());
        DataParams {
            setup,
            processing,
            dataset,
            post_process: PostProcess {
                n_examples: core.stats.num_sequences,
                eos_id: Some(core.eos_id),
                pad_id: Some(core.pad_id),
                vocab_size: Some(core.vocab_size),
                extra: Map::new(),
            },
            h5_dataset_stats: core.stats,
            h5gpt: Some(H5gptSection {
                format_version: crate::spec::FORMAT_VERSION,
                tokenizer: core.tokenizer,
                tokenizer_file: core.tokenizer_file,
                packing: core.packing,
                seq_len: core.seq_len,
                compression: core.compression,
                shards: core.shards,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, sum: Option<&str>) -> TokenizerIdentity {
        TokenizerIdentity {
            name: name.into(),
            vocab_size: Some(1024),
            eos_id: Some(0),
            file_xxh3_64: sum.map(str::to_owned),
        }
    }

    /// Issue 13: shards preprocessed with `--tokenizer b/tokenizer.json` (label
    /// `tokenizer.json`) and the shards that trained it (label `trained-bpe`) are one tokenizer.
    #[test]
    fn identity_is_the_content_not_the_label() {
        let sum = "0123456789abcdef";
        assert_eq!(
            identity("trained-bpe", Some(sum)),
            identity("tokenizer.json", Some(sum))
        );
        assert_ne!(
            identity("trained-bpe", Some(sum)),
            identity("trained-bpe", Some("fedcba9876543210"))
        );
        assert_eq!(identity("gpt2", None), identity("gpt2", None));
        assert_ne!(identity("gpt2", None), identity("cl100k_base", None));
        assert_ne!(identity("gpt2", None), identity("gpt2", Some(sum)));
    }
}
