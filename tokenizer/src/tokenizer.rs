//! The tokenizers h5gpt reads and writes shards with: the tiktoken family (`gpt2` = GPT-2's
//! `r50k_base`, `cl100k_base`, `o200k_base`, from tiktoken-rs' bundled vocabularies) and any
//! Hugging Face `tokenizer.json` (the `tokenizers` crate), including the ones `preprocess
//! --train-tokenizer` trains. Nothing is downloaded.
//!
//! A shard directory names its tokenizer in `data_params.json` and, for a `tokenizer.json` one,
//! carries the file beside the shards ([`TOKENIZER_FILE`]) with its checksum in the manifest;
//! [`Tokenizer::for_shard_dir`] loads it back.

use h5gpt_formats::manifest::{DataParams, TokenizerFile};
use h5gpt_formats::spec::{GPT2_EOS_ID, GPT2_VOCAB_SIZE, MAX_VOCAB_SIZE};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tiktoken_rs::CoreBPE;

/// File name of a `tokenizer.json` kept beside the shards (and in checkpoints).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The end-of-document token h5gpt reserves in the tokenizers it trains (GPT-2's spelling).
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// The unknown-word token of trained word-level tokenizers.
pub const UNK_TOKEN: &str = "[UNK]";
/// End-of-document spellings looked for in a given `tokenizer.json`, in this order.
const EOS_CANDIDATES: [&str; 6] = [
    EOS_TOKEN,
    "</s>",
    "<|end_of_text|>",
    "<eos>",
    "[EOS]",
    "<|im_end|>",
];

/// A tiktoken encoding h5gpt ships (tiktoken-rs' bundled vocabularies).
pub struct TiktokenEncoding {
    /// Name `--tokenizer` accepts and `data_params.json` records.
    pub name: &'static str,
    /// tiktoken-rs' encoder.
    pub bpe: fn() -> &'static CoreBPE,
    /// Ordinary tokens are the ids `0..ordinary` (the line count of tiktoken-rs' `.tiktoken`
    /// file; ranks are contiguous from 0).
    pub ordinary: u32,
    /// `<|endoftext|>` (from tiktoken-rs' `openai_public.rs`).
    pub eos: u32,
    /// Vocabulary size: one past the last special token.
    pub vocab_size: u32,
    /// tiktoken's pre-tokenizer regex, as the Oniguruma of Python `tokenizers` reads it (for
    /// the `tokenizer.json` an export writes; our encoding uses tiktoken-rs itself).
    pub pattern: &'static str,
}

/// The tiktoken encodings `--tokenizer` accepts by name.
pub const TIKTOKEN_ENCODINGS: [TiktokenEncoding; 3] = [
    TiktokenEncoding {
        name: "gpt2",
        bpe: tiktoken_rs::r50k_base_singleton,
        ordinary: 50_256,
        eos: GPT2_EOS_ID,
        vocab_size: GPT2_VOCAB_SIZE,
        // tiktoken's r50k_base pattern, verbatim.
        pattern: r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s",
    },
    TiktokenEncoding {
        name: "cl100k_base",
        bpe: tiktoken_rs::cl100k_base_singleton,
        ordinary: 100_256,
        eos: 100_257,
        // Specials up to <|endofprompt|> = 100276.
        vocab_size: 100_277,
        // tiktoken's cl100k_base pattern, except `\p{N}{1,3}+` → `\p{N}{1,3}`: Oniguruma (Ruby
        // syntax) reads `{1,3}+` as "one or more runs of 1 to 3", i.e. `\p{N}+`, not as
        // possessive; with nothing after it in its branch, possessive and greedy `{1,3}`
        // match the same.
        pattern: r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s",
    },
    TiktokenEncoding {
        name: "o200k_base",
        bpe: tiktoken_rs::o200k_base_singleton,
        ordinary: 199_998,
        eos: 199_999,
        // <|endofprompt|> = 200018 is the last id.
        vocab_size: 200_019,
        // tiktoken's o200k_base pattern, verbatim (no possessive quantifiers).
        pattern: tiktoken_rs::O200K_BASE_PAT_STR,
    },
];

/// The shipped tiktoken encoding called `name`.
pub fn tiktoken_encoding(name: &str) -> Option<&'static TiktokenEncoding> {
    TIKTOKEN_ENCODINGS.iter().find(|e| e.name == name)
}

/// Why a tokenizer cannot be had.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A `tokenizer.json` that cannot be read or parsed.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// No end-of-document token could be found.
    #[error(
        "{path}: no end-of-document token (looked for {candidates}); name one with --eos-token"
    )]
    NoEos {
        /// The file.
        path: PathBuf,
        /// The spellings looked for.
        candidates: String,
    },
    /// The manifest names a tokenizer we do not know.
    #[error(
        "{dir}: data_params.json names tokenizer `{name}`, which h5gpt cannot encode or decode"
    )]
    Unknown {
        /// The shard directory.
        dir: PathBuf,
        /// The name.
        name: String,
    },
    /// `tokenizer.json` beside the shards is missing or not the one the manifest records.
    #[error("{path}: {what}\n---> HINT: the shard directory's tokenizer.json must be the one preprocess wrote; re-run preprocess or restore it")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

enum Backend {
    /// GPT-2: tiktoken's ids, computed by the faster [`Gpt2Bpe`](crate::gpt2_bpe::Gpt2Bpe).
    Gpt2(&'static CoreBPE),
    /// Another tiktoken encoding.
    Tiktoken(&'static CoreBPE),
    /// A Hugging Face tokenizer, with its `tokenizer.json` bytes.
    HuggingFace {
        tokenizer: Box<tokenizers::Tokenizer>,
        json: Vec<u8>,
    },
}

/// How a `tokenizer.json`'s end-of-document token is chosen.
#[derive(Debug, Clone, Copy)]
pub enum Eos<'a> {
    /// The first of the usual spellings (`<|endoftext|>`, `</s>`, …) the tokenizer knows.
    Detect,
    /// This token (`--eos-token`).
    Token(&'a str),
    /// This id (recorded in a manifest or checkpoint).
    Id(u32),
}

/// A tokenizer with its special ids.
pub struct Tokenizer {
    name: String,
    backend: Backend,
    eos_id: u32,
    vocab_size: u32,
    unk_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("name", &self.name)
            .field("eos_id", &self.eos_id)
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

impl Tokenizer {
    /// GPT-2's BPE (`r50k_base`), EOS = `<|endoftext|>` = 50256.
    pub fn gpt2() -> Tokenizer {
        Tokenizer::tiktoken("gpt2").expect("gpt2 is a shipped encoding")
    }

    /// A tiktoken encoding by name (one of [`TIKTOKEN_ENCODINGS`], or `r50k_base` for
    /// `gpt2`); `None` for other names.
    pub fn tiktoken(name: &str) -> Option<Tokenizer> {
        let encoding = tiktoken_encoding(if name == "r50k_base" { "gpt2" } else { name })?;
        let bpe = (encoding.bpe)();
        Some(Tokenizer {
            name: encoding.name.into(),
            // GPT-2 has its faster encoder.
            backend: if encoding.name == "gpt2" {
                Backend::Gpt2(bpe)
            } else {
                Backend::Tiktoken(bpe)
            },
            eos_id: encoding.eos,
            vocab_size: encoding.vocab_size,
            unk_id: None,
        })
    }

    /// A Hugging Face tokenizer from the bytes of its `tokenizer.json` (`path` names it in
    /// errors), recorded under `name`, with its end-of-document token chosen by `eos`.
    pub fn from_json(
        name: &str,
        json: Vec<u8>,
        eos: Eos<'_>,
        path: &Path,
    ) -> Result<Tokenizer, TokenizerError> {
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(&json).map_err(|e| TokenizerError::File {
                path: path.into(),
                what: format!("not a Hugging Face tokenizer.json: {e}"),
            })?;
        let eos_id = match eos {
            Eos::Id(id) => id,
            Eos::Token(token) => {
                tokenizer
                    .token_to_id(token)
                    .ok_or_else(|| TokenizerError::File {
                        path: path.into(),
                        what: format!("--eos-token {token:?} is not in its vocabulary"),
                    })?
            }
            Eos::Detect => EOS_CANDIDATES
                .iter()
                .find_map(|t| tokenizer.token_to_id(t))
                .ok_or_else(|| TokenizerError::NoEos {
                    path: path.into(),
                    candidates: EOS_CANDIDATES.join(" "),
                })?,
        };
        let vocab = tokenizer.get_vocab(true);
        if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id >= MAX_VOCAB_SIZE {
                return Err(TokenizerError::File {
                    path: path.into(),
                    what: format!(
                        "token {token:?} has id {id}, beyond the largest vocabulary h5gpt reads \
                         ({MAX_VOCAB_SIZE} tokens, ids 0..{}; shard ids are int32)",
                        MAX_VOCAB_SIZE - 1
                    ),
                });
            }
        }
        let vocab_size = vocab.values().max().map_or(0, |&m| m + 1);
        let unk_id = tokenizer.token_to_id(UNK_TOKEN);
        Ok(Tokenizer {
            name: name.into(),
            backend: Backend::HuggingFace {
                tokenizer: Box::new(tokenizer),
                json,
            },
            eos_id,
            vocab_size,
            unk_id,
        })
    }

    /// A Hugging Face `tokenizer.json` file (`--tokenizer FILE`).
    pub fn from_file(path: &Path, eos_token: Option<&str>) -> Result<Tokenizer, TokenizerError> {
        let json = read_file(path)?;
        let eos = eos_token.map_or(Eos::Detect, Eos::Token);
        Tokenizer::from_json(FILE_TOKENIZER, json, eos, path)
    }

    /// The tokenizer the shard directory `dir` (with its manifest `params`) was written with:
    /// a tiktoken name, or the `tokenizer.json` beside the shards, checked against the
    /// checksum the manifest records. Foreign (Cerebras) manifests and bare shards are GPT-2.
    pub fn for_shard_dir(
        dir: &Path,
        params: Option<&DataParams>,
    ) -> Result<Tokenizer, TokenizerError> {
        let Some(section) = params.and_then(|p| p.h5gpt.as_ref()) else {
            return Ok(Tokenizer::gpt2());
        };
        match &section.tokenizer_file {
            None => {
                Tokenizer::tiktoken(&section.tokenizer).ok_or_else(|| TokenizerError::Unknown {
                    dir: dir.into(),
                    name: section.tokenizer.clone(),
                })
            }
            Some(file) => {
                let path = dir.join(&file.file);
                let json = std::fs::read(&path).map_err(|e| TokenizerError::Mismatch {
                    path: path.clone(),
                    what: format!("cannot read the shards' tokenizer: {e}"),
                })?;
                let found = h5gpt_formats::checksum::bytes_xxh3_64(&json);
                if found != file.xxh3_64 {
                    return Err(TokenizerError::Mismatch {
                        path,
                        what: format!(
                            "checksum {found}, but data_params.json records {}",
                            file.xxh3_64
                        ),
                    });
                }
                let eos = params
                    .and_then(|p| p.post_process.eos_id)
                    .map_or(Eos::Detect, Eos::Id);
                Tokenizer::from_json(&section.tokenizer, json, eos, &path)
            }
        }
    }

    /// A tokenizer saved under `name` with an optional `tokenizer.json` (checkpoints keep
    /// both): tiktoken names need no file.
    pub fn load(
        name: &str,
        json_path: Option<&Path>,
        eos_id: Option<u32>,
    ) -> Result<Tokenizer, TokenizerError> {
        if let Some(path) = json_path {
            let json = read_file(path)?;
            let eos = eos_id.map_or(Eos::Detect, Eos::Id);
            return Tokenizer::from_json(name, json, eos, path);
        }
        Tokenizer::tiktoken(name).ok_or_else(|| TokenizerError::Unknown {
            dir: PathBuf::from("."),
            name: name.into(),
        })
    }

    /// Name recorded in `data_params.json`: a tiktoken name, `trained-bpe`,
    /// `trained-wordlevel`, or `tokenizer.json` for a file given with `--tokenizer`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// End-of-document id (also the pad id).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size: every id is below it.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// The unknown-word id, for word-level tokenizers.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// The `tokenizer.json` bytes, for tokenizers that are not tiktoken's.
    pub fn json(&self) -> Option<&[u8]> {
        match &self.backend {
            Backend::HuggingFace { json, .. } => Some(json),
            _ => None,
        }
    }

    /// What the manifest records of the `tokenizer.json` file, if there is one.
    pub fn file_entry(&self) -> Option<TokenizerFile> {
        self.json().map(|json| TokenizerFile {
            file: TOKENIZER_FILE.into(),
            xxh3_64: h5gpt_formats::checksum::bytes_xxh3_64(json),
        })
    }

    /// Whether a long document may be cut at [`split_for_tokenization`]'s points and its pieces
    /// encoded apart with the same result: proven for GPT-2's pre-tokenizer only.
    ///
    /// [`split_for_tokenization`]: crate::split::split_for_tokenization
    pub fn splits_documents(&self) -> bool {
        matches!(self.backend, Backend::Gpt2(_))
    }

    /// Ordinary encoding: special-token text inside `text` is plain text for the tiktoken
    /// encodings (tiktoken's `encode_ordinary`); a Hugging Face tokenizer matches its added
    /// tokens as `transformers` does.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match &self.backend {
            Backend::Gpt2(_) => crate::gpt2_bpe::Gpt2Bpe::get().encode_ordinary(text),
            Backend::Tiktoken(bpe) => bpe.encode_ordinary(text),
            Backend::HuggingFace { tokenizer, .. } => tokenizer
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default(),
        }
    }

    /// Decodes ids to text; bytes that do not form UTF-8 become U+FFFD, ids outside the
    /// vocabulary `⟨id⟩`.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Gpt2(bpe) | Backend::Tiktoken(bpe) => {
                let mut bytes = Vec::new();
                for &id in ids {
                    match bpe.decode_bytes(&[id]) {
                        Ok(b) => bytes.extend_from_slice(&b),
                        Err(_) => bytes.extend_from_slice(format!("⟨{id}⟩").as_bytes()),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Backend::HuggingFace { tokenizer, .. } => {
                // Runs of known ids go through the decoder together (byte-level pieces only
                // form characters together); unknown ids are shown in place.
                let mut out = String::new();
                let mut run = Vec::new();
                let flush = |run: &mut Vec<u32>, out: &mut String| {
                    if !run.is_empty() {
                        if !out.is_empty()
                            && !out.ends_with(' ')
                            && tokenizer.get_decoder().is_none()
                        {
                            out.push(' ');
                        }
                        out.push_str(&tokenizer.decode(run, false).unwrap_or_default());
                        run.clear();
                    }
                };
                for &id in ids {
                    if tokenizer.id_to_token(id).is_some() {
                        run.push(id);
                    } else {
                        flush(&mut run, &mut out);
                        out.push_str(&format!("⟨{id}⟩"));
                    }
                }
                flush(&mut run, &mut out);
                out
            }
        }
    }
}

/// The bytes of a `tokenizer.json` file.
fn read_file(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|e| TokenizerError::File {
        path: path.into(),
        what: format!("cannot read: {e}"),
    })
}

/// The name a `--tokenizer FILE` tokenizer is recorded under.
pub const FILE_TOKENIZER: &str = "tokenizer.json";

/// What `--tokenizer` names: a tiktoken encoding or a `tokenizer.json` file.
pub fn resolve_tokenizer_arg(
    arg: &str,
    eos_token: Option<&str>,
) -> Result<Tokenizer, TokenizerError> {
    if let Some(t) = Tokenizer::tiktoken(arg) {
        if eos_token.is_some() {
            return Err(TokenizerError::File {
                path: arg.into(),
                what: "--eos-token applies to tokenizer.json files only".into(),
            });
        }
        return Ok(t);
    }
    let path = Path::new(arg);
    if !path.exists() {
        return Err(TokenizerError::File {
            path: path.into(),
            what: format!(
                "no such file, and not a built-in tokenizer (one of {})",
                TIKTOKEN_ENCODINGS.map(|e| e.name).join(", ")
            ),
        });
    }
    Tokenizer::from_file(path, eos_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_encodings_match_tiktoken_rs_and_record_their_sizes() {
        let text = "Hello world! Ünïcödé 12345 — 日本語 🙂\n\n  don't";
        for (name, bpe) in [
            ("cl100k_base", tiktoken_rs::cl100k_base_singleton()),
            ("o200k_base", tiktoken_rs::o200k_base_singleton()),
        ] {
            let t = Tokenizer::tiktoken(name).unwrap();
            assert_eq!(t.encode(text), bpe.encode_ordinary(text), "{name}");
            assert_eq!(t.decode_lossy(&t.encode(text)), text);
            // The end-of-text id decodes to its spelling, and nothing decodes at vocab_size.
            assert_eq!(
                bpe.decode_bytes(&[t.eos_id()]).unwrap(),
                EOS_TOKEN.as_bytes(),
                "{name}"
            );
            assert!(bpe.decode_bytes(&[t.vocab_size() - 1]).is_ok(), "{name}");
            assert!(bpe.decode_bytes(&[t.vocab_size()]).is_err(), "{name}");
        }
        assert!(Tokenizer::tiktoken("p50k_base").is_none());
    }

    /// A word-level tokenizer.json with `[UNK]`, `hello`, `</s>` and `big` at id `big_id`.
    fn word_level_with_id(big_id: u32) -> Vec<u8> {
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {
                "type": "WordLevel",
                "vocab": {"[UNK]": 0, "hello": 1, "</s>": 2, "big": big_id},
                "unk_token": "[UNK]"
            }
        });
        serde_json::to_vec(&json).unwrap()
    }

    /// Issue 24 item 5: an id of 3,000,000,000 was accepted and `vocab_size 3000000001`
    /// written into the manifest, although shard ids are int32.
    #[test]
    fn ids_beyond_the_vocabulary_limit_are_refused_when_read() {
        let path = Path::new("big/tokenizer.json");
        for id in [3_000_000_000, i32::MAX as u32, MAX_VOCAB_SIZE] {
            let err = Tokenizer::from_json("t", word_level_with_id(id), Eos::Detect, path)
                .err()
                .unwrap_or_else(|| panic!("id {id} accepted"))
                .to_string();
            assert!(
                err.contains("big/tokenizer.json")
                    && err.contains(&format!("id {id}"))
                    && err.contains("16777216"),
                "{err}"
            );
        }
        let ok = Tokenizer::from_json(
            "t",
            word_level_with_id(MAX_VOCAB_SIZE - 1),
            Eos::Detect,
            path,
        )
        .unwrap();
        assert_eq!(ok.vocab_size(), MAX_VOCAB_SIZE);
    }

    #[test]
    fn unknown_name_that_is_not_a_file_says_so() {
        let e = resolve_tokenizer_arg("no-such-tokenizer", None).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("no-such-tokenizer") && msg.contains("cl100k_base"),
            "{msg}"
        );
    }
}
