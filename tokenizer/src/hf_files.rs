//! The tokenizer files Hugging Face `transformers` loads next to an exported model
//! (`AutoTokenizer.from_pretrained(dir)`), written offline from the tokenizer the data was
//! tokenized with.
//!
//! - `gpt2` (tiktoken's `r50k_base`): GPT-2's own `vocab.json` and `merges.txt` (byte-identical
//!   merges to OpenAI's `vocab.bpe`), a `tokenizer.json` (fast tokenizer) built from them,
//!   `tokenizer_config.json` (`GPT2Tokenizer`) and `special_tokens_map.json`.
//! - `cl100k_base`, `o200k_base`: a `tokenizer.json` (byte-level BPE, tiktoken's pre-tokenizer
//!   regex) and `tokenizer_config.json` (`PreTrainedTokenizerFast`).
//! - any other name: the given `tokenizer.json`, copied unchanged, and a
//!   `tokenizer_config.json` naming its end-of-text token.
//!
//! tiktoken stores ranks, not merges. The merge that made the token of rank `r` is recovered by
//! byte-pair merging the token's bytes with the ranks below `r` only: that stops at exactly two
//! parts, the merge `a b` (the reverse of tiktoken's `data_gym` conversion). Applied in rank
//! order, these merges give tiktoken's ids; the tests compare `transformers` with tiktoken-rs.

use crate::tokenizer::{tiktoken_encoding, TiktokenEncoding, EOS_TOKEN, TOKENIZER_FILE};
use h5gpt_formats::fsio::write_atomic;
use h5gpt_formats::FormatError;
use rustc_hash::FxHashMap;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// What can go wrong writing the tokenizer files.
#[derive(Debug, thiserror::Error)]
pub enum HfFilesError {
    /// The tokenizer is not one of tiktoken's and no `tokenizer.json` was given.
    #[error(
        "tokenizer `{name}` is not built in (gpt2, cl100k_base, o200k_base), so its \
         tokenizer.json is needed to write the Hugging Face tokenizer files, and none was given"
    )]
    MissingTokenizerJson {
        /// Tokenizer name from `data_params.json`.
        name: String,
    },
    /// The given `tokenizer.json` is not JSON.
    #[error("tokenizer.json of tokenizer `{name}` is not valid JSON: {source}")]
    InvalidTokenizerJson {
        /// Tokenizer name from `data_params.json`.
        name: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The given `tokenizer.json` has no token with the end-of-text id.
    #[error(
        "tokenizer.json of tokenizer `{name}` has no token with the end-of-text id {eos_id} \
         (looked in `added_tokens` and `model.vocab`): is it the tokenizer the data was \
         tokenized with?"
    )]
    EosNotFound {
        /// Tokenizer name from `data_params.json`.
        name: String,
        /// The end-of-text id asked for.
        eos_id: u32,
    },
    /// The end-of-text id is not the built-in tokenizer's `<|endoftext|>`.
    #[error(
        "end-of-text id {eos_id} is not `<|endoftext|>` of tokenizer `{name}` (that is \
         {expected}): data_params.json and its tokenizer disagree"
    )]
    EosMismatch {
        /// Tokenizer name from `data_params.json`.
        name: String,
        /// The end-of-text id asked for.
        eos_id: u32,
        /// The tokenizer's `<|endoftext|>` id.
        expected: u32,
    },
    /// A token of a tiktoken encoding cannot be written as one merge of two lower-ranked tokens.
    #[error(
        "merges.txt/tokenizer.json of tokenizer `{name}`: token {id} cannot be rebuilt by one \
         merge (byte-pair merging its bytes with lower ranks leaves {parts} parts, not 2)"
    )]
    Unmergeable {
        /// Tokenizer name.
        name: String,
        /// The token's id (its rank).
        id: u32,
        /// How many parts byte-pair merging left.
        parts: usize,
    },
    /// The `tokenizers` crate refused the vocabulary, merges or pre-tokenizer regex.
    #[error("tokenizer.json of tokenizer `{name}`: cannot build it: {message}")]
    Build {
        /// Tokenizer name.
        name: String,
        /// The `tokenizers` error.
        message: String,
    },
    /// Creating the directory or writing a file failed (the error names the path).
    #[error(transparent)]
    Write(#[from] FormatError),
}

/// Writes the tokenizer files `transformers` loads (`AutoTokenizer.from_pretrained(dir)`) into
/// `dir` and returns the file names written.
///
/// `name` is the tokenizer name recorded in data_params.json: `gpt2` (tiktoken-rs r50k_base),
/// `cl100k_base`, `o200k_base`, or anything else, in which case `tokenizer_json` (the bytes of a
/// Hugging Face tokenizer.json) must be Some. `eos_id` is the end-of-text id. Each file is
/// written atomically; `dir` is created if missing.
pub fn write_hf_tokenizer_files(
    name: &str,
    tokenizer_json: Option<&[u8]>,
    eos_id: u32,
    dir: &Path,
) -> Result<Vec<String>, HfFilesError> {
    let files = match tiktoken_encoding(name) {
        Some(builtin) => {
            if eos_id != builtin.eos {
                return Err(HfFilesError::EosMismatch {
                    name: name.into(),
                    eos_id,
                    expected: builtin.eos,
                });
            }
            builtin_files(builtin)?
        }
        None => {
            let json = tokenizer_json
                .ok_or_else(|| HfFilesError::MissingTokenizerJson { name: name.into() })?;
            foreign_files(name, json, eos_id)?
        }
    };
    std::fs::create_dir_all(dir).map_err(|e| FormatError::io(dir, e))?;
    for (file, bytes) in &files {
        write_atomic(&dir.join(file), bytes)?;
    }
    Ok(files
        .into_iter()
        .map(|(file, _)| file.to_string())
        .collect())
}

/// GPT-2's byte-to-unicode table: printable Latin-1 bytes map to themselves, the other 68 to
/// U+0100.. in byte order (so that every byte is a visible character).
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        *slot = if printable(b as u8) {
            char::from(b as u8)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143 are chars")
        };
    }
    table
}

/// `bytes` in the byte-level alphabet.
fn byte_level(bytes: &[u8], table: &[char; 256]) -> String {
    bytes.iter().map(|&b| table[b as usize]).collect()
}

/// The ordinary tokens of a tiktoken encoding and the merges that rebuild them.
struct Vocab {
    /// `(id, token in the byte-level alphabet)`, ids ascending.
    tokens: Vec<(u32, String)>,
    /// `(a, b)` in rank order of the token `ab` they make.
    merges: Vec<(String, String)>,
}

/// The vocabulary of `builtin`, with merges reconstructed from the ranks (see the module doc).
/// Ids below `ordinary` that do not decode are skipped (none do in tiktoken-rs 0.12).
fn vocab(builtin: &TiktokenEncoding) -> Result<Vocab, HfFilesError> {
    let bpe = (builtin.bpe)();
    let bytes: Vec<(u32, Vec<u8>)> = (0..builtin.ordinary)
        .filter_map(|id| bpe.decode_bytes(&[id]).ok().map(|b| (id, b)))
        .collect();
    let ranks: FxHashMap<Vec<u8>, u32> = bytes.iter().map(|(id, b)| (b.clone(), *id)).collect();
    let table = byte_chars();
    let mut merges = Vec::with_capacity(bytes.len());
    for (id, token) in &bytes {
        if token.len() < 2 {
            continue;
        }
        match merge_parts(token, *id, &ranks) {
            Ok((a, b)) => merges.push((byte_level(a, &table), byte_level(b, &table))),
            Err(parts) => {
                return Err(HfFilesError::Unmergeable {
                    name: builtin.name.into(),
                    id: *id,
                    parts,
                })
            }
        }
    }
    let tokens = bytes
        .iter()
        .map(|(id, b)| (*id, byte_level(b, &table)))
        .collect();
    Ok(Vocab { tokens, merges })
}

/// The two parts the token `token` of rank `rank` was merged from: byte-pair merging of its
/// bytes (lowest rank first, leftmost on ties, as tiktoken) with the ranks below `rank` only.
/// `Err(parts)` when that does not end in exactly two parts.
fn merge_parts<'a>(
    token: &'a [u8],
    rank: u32,
    ranks: &FxHashMap<Vec<u8>, u32>,
) -> Result<(&'a [u8], &'a [u8]), usize> {
    // Part i is token[bounds[i]..bounds[i + 1]].
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len() - 2 {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]]) {
                if r < rank && best.is_none_or(|(b, _)| r < b) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    match bounds[..] {
        [0, mid, _] => Ok((&token[..mid], &token[mid..])),
        _ => Err(bounds.len() - 1),
    }
}

/// The files for a tiktoken encoding.
fn builtin_files(builtin: &TiktokenEncoding) -> Result<Vec<(&'static str, Vec<u8>)>, HfFilesError> {
    let vocab = vocab(builtin)?;
    let mut files = Vec::new();
    if builtin.name == "gpt2" {
        files.push(("vocab.json", vocab_json(&vocab, builtin.eos)));
        files.push(("merges.txt", merges_txt(&vocab)));
    }
    files.push((TOKENIZER_FILE, tokenizer_json(builtin, vocab)?));
    let config = if builtin.name == "gpt2" {
        serde_json::json!({
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": EOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
            "model_max_length": 1024,
            "add_prefix_space": false,
            "clean_up_tokenization_spaces": false,
        })
    } else {
        fast_config(EOS_TOKEN)
    };
    files.push(("tokenizer_config.json", pretty(&config)));
    if builtin.name == "gpt2" {
        let special = serde_json::json!({
            "bos_token": EOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "unk_token": EOS_TOKEN,
        });
        files.push(("special_tokens_map.json", pretty(&special)));
    }
    Ok(files)
}

/// GPT-2's `vocab.json`: byte-level token → id in id order, `<|endoftext|>` last.
fn vocab_json(vocab: &Vocab, eos: u32) -> Vec<u8> {
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let entries: Vec<String> = vocab
        .tokens
        .iter()
        .map(|(id, token)| (id, token.as_str()))
        .chain([(&eos, EOS_TOKEN)])
        .map(|(id, token)| format!("{}:{id}", quoted(token)))
        .collect();
    format!("{{{}}}", entries.join(",")).into_bytes()
}

/// GPT-2's `merges.txt`: `#version: 0.2`, then one `a b` per line in rank order.
fn merges_txt(vocab: &Vocab) -> Vec<u8> {
    let mut text = String::from("#version: 0.2\n");
    for (a, b) in &vocab.merges {
        text.push_str(a);
        text.push(' ');
        text.push_str(b);
        text.push('\n');
    }
    text.into_bytes()
}

/// A fast-tokenizer `tokenizer.json`: byte-level BPE over the pieces of tiktoken's regex, with
/// `<|endoftext|>` an added special token. `ignore_merges` makes a piece that is a token one id
/// without merging, as tiktoken does.
fn tokenizer_json(builtin: &TiktokenEncoding, vocab: Vocab) -> Result<Vec<u8>, HfFilesError> {
    let build = |e: tokenizers::Error| HfFilesError::Build {
        name: builtin.name.into(),
        message: e.to_string(),
    };
    // `<|endoftext|>` is in the model's vocabulary too (as in GPT-2's tokenizer.json), so that
    // the added token takes its id rather than the next free one.
    let ids: tokenizers::models::bpe::Vocab = vocab
        .tokens
        .into_iter()
        .map(|(id, token)| (token, id))
        .chain([(EOS_TOKEN.to_string(), builtin.eos)])
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(ids, vocab.merges)
        .ignore_merges(true)
        .build()
        .map_err(build)?;
    let split = Split::new(
        SplitPattern::Regex(builtin.pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(build)?;
    // add_prefix_space false, trim_offsets true, use_regex false: the Split above cut the pieces.
    let bytes = ByteLevel::new(false, true, false);
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(Sequence::new(vec![split.into(), bytes.into()])))
        .with_decoder(Some(ByteLevel::default()));
    tokenizer
        .add_special_tokens([AddedToken::from(EOS_TOKEN, true)])
        .map_err(build)?;
    let added = tokenizer.token_to_id(EOS_TOKEN);
    if added != Some(builtin.eos) {
        return Err(HfFilesError::Build {
            name: builtin.name.into(),
            message: format!("{EOS_TOKEN} got id {added:?}, not {}", builtin.eos),
        });
    }
    Ok(tokenizer.to_string(false).map_err(build)?.into_bytes())
}

/// `tokenizer_config.json` for a `tokenizer.json`-only tokenizer.
fn fast_config(eos_token: &str) -> serde_json::Value {
    serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos_token,
        "clean_up_tokenization_spaces": false,
    })
}

/// Pretty JSON with a final newline.
fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("a JSON value serializes");
    bytes.push(b'\n');
    bytes
}

/// The files for a tokenizer given by its `tokenizer.json`.
fn foreign_files(
    name: &str,
    json: &[u8],
    eos_id: u32,
) -> Result<Vec<(&'static str, Vec<u8>)>, HfFilesError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|source| HfFilesError::InvalidTokenizerJson {
            name: name.into(),
            source,
        })?;
    let eos = token_of_id(&value, eos_id).ok_or_else(|| HfFilesError::EosNotFound {
        name: name.into(),
        eos_id,
    })?;
    Ok(vec![
        (TOKENIZER_FILE, json.to_vec()),
        ("tokenizer_config.json", pretty(&fast_config(&eos))),
    ])
}

/// The token string of `id` in a parsed `tokenizer.json`: from `added_tokens`, else from
/// `model.vocab` (an object token → id for BPE/WordPiece/WordLevel, a list of
/// `[token, score]` indexed by id for Unigram).
fn token_of_id(json: &serde_json::Value, id: u32) -> Option<String> {
    let id = u64::from(id);
    let added = json["added_tokens"].as_array().and_then(|tokens| {
        tokens
            .iter()
            .find(|t| t["id"].as_u64() == Some(id))
            .and_then(|t| t["content"].as_str())
    });
    let vocab = &json["model"]["vocab"];
    let in_model = || match vocab {
        serde_json::Value::Object(map) => map
            .iter()
            .find(|(_, v)| v.as_u64() == Some(id))
            .map(|(k, _)| k.as_str()),
        serde_json::Value::Array(list) => usize::try_from(id)
            .ok()
            .and_then(|i| list.get(i))
            .and_then(|entry| entry[0].as_str()),
        _ => None,
    };
    added.or_else(in_model).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    fn builtin(name: &str) -> &'static TiktokenEncoding {
        tiktoken_encoding(name).unwrap()
    }

    #[test]
    fn byte_chars_is_gpt2_bytes_to_unicode() {
        let table = byte_chars();
        assert_eq!(table[b'!' as usize], '!');
        assert_eq!(table[0], 'Ā'); // U+0100
        assert_eq!(table[b' ' as usize], 'Ġ'); // U+0120
        assert_eq!(table[b'\n' as usize], 'Ċ'); // U+010A
        assert_eq!(table[0xAD], 'Ń'); // U+0143, the last one
        let mut sorted = table.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "the table must be a bijection");
    }

    #[test]
    fn gpt2_vocab_and_merges_are_gpt2s() {
        let files = builtin_files(builtin("gpt2")).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "vocab.json",
                "merges.txt",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json"
            ]
        );
        let vocab: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&files[0].1).unwrap();
        assert_eq!(vocab.len(), 50257);
        for (token, id) in [
            ("!", 0),
            ("Ā", 188),
            ("Ġthe", 262),
            ("Ġt", 256),
            ("<|endoftext|>", 50256),
        ] {
            assert_eq!(vocab[token], id, "{token}");
        }
        let merges = std::str::from_utf8(&files[1].1).unwrap();
        let lines: Vec<&str> = merges.lines().collect();
        assert_eq!(lines[0], "#version: 0.2");
        assert_eq!(lines.len() - 1, 50000);
        assert_eq!(&lines[1..4], ["Ġ t", "Ġ a", "h e"]);
        // Byte-identical to OpenAI's GPT-2 `vocab.bpe` (shipped as tiktoken-rs-0.12.1/assets/
        // vocab.bpe; `cmp` with our merges.txt: identical), whose xxh3-64 is pinned here.
        // vocab.json, parsed, equals GPT-2's `encoder.json` (assets/encoder.json), checked with
        // `json.load(a) == json.load(b)` in Python.
        assert_eq!(
            xxh3_64(merges.as_bytes()),
            16258279301553006112,
            "merges.txt differs from GPT-2's"
        );
    }

    /// Byte-pair encoding with merges in the `tokenizers` way: repeatedly merge the adjacent
    /// pair with the lowest merge index (leftmost on ties), then map the parts to ids.
    fn merges_bpe(
        bytes: &[u8],
        merge_rank: &FxHashMap<(String, String), usize>,
        table: &[char; 256],
    ) -> Vec<String> {
        let mut parts: Vec<String> = bytes.iter().map(|&b| table[b as usize].into()).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1))
                .filter_map(|i| {
                    merge_rank
                        .get(&(parts[i].clone(), parts[i + 1].clone()))
                        .map(|&r| (r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].push_str(&right);
        }
        parts
    }

    /// The reconstructed merges, applied by [`merges_bpe`], split every token and every pair of
    /// neighbouring tokens exactly as tiktoken's rank-based byte-pair merging does.
    fn check_merges_reproduce_tiktoken(name: &str, stride: usize, merges: usize) {
        let b = builtin(name);
        let bpe = (b.bpe)();
        let vocab = vocab(b).unwrap();
        assert_eq!(
            vocab.tokens.len(),
            b.ordinary as usize,
            "{name}: every id decodes"
        );
        // One merge per token longer than a byte: all but the 256 single bytes.
        assert_eq!(vocab.merges.len(), merges, "{name}");
        let table = byte_chars();
        let merge_rank: FxHashMap<(String, String), usize> = vocab
            .merges
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let ranks: FxHashMap<Vec<u8>, u32> = (0..b.ordinary)
            .map(|id| (bpe.decode_bytes(&[id]).unwrap(), id))
            .collect();
        let mut checked = 0;
        for id in (0..b.ordinary).step_by(stride) {
            let mut piece = bpe.decode_bytes(&[id]).unwrap();
            for piece in [piece.clone(), {
                piece.extend(bpe.decode_bytes(&[(id + 1) % b.ordinary]).unwrap());
                piece
            }] {
                if piece.len() < 2 {
                    continue;
                }
                let want: Vec<String> = tiktoken_rs::byte_pair_split(&piece, &ranks)
                    .into_iter()
                    .map(|p| byte_level(p, &table))
                    .collect();
                assert_eq!(
                    merges_bpe(&piece, &merge_rank, &table),
                    want,
                    "{name} id {id}"
                );
                checked += 1;
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn gpt2_merges_reproduce_tiktoken() {
        check_merges_reproduce_tiktoken("gpt2", 1, 50000);
    }

    #[test]
    fn cl100k_merges_reproduce_tiktoken() {
        check_merges_reproduce_tiktoken("cl100k_base", 7, 100000);
    }

    #[test]
    fn o200k_merges_reproduce_tiktoken() {
        check_merges_reproduce_tiktoken("o200k_base", 13, 199742);
    }

    #[test]
    fn merge_parts_reports_parts() {
        let ranks: FxHashMap<Vec<u8>, u32> = [
            (b"a".to_vec(), 0),
            (b"b".to_vec(), 1),
            (b"ab".to_vec(), 2),
            (b"abab".to_vec(), 3),
            (b"aba".to_vec(), 5),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            merge_parts(b"abab", 3, &ranks),
            Ok((&b"ab"[..], &b"ab"[..]))
        );
        // "aba" (rank 5) cannot use itself: a b a → ab a.
        assert_eq!(merge_parts(b"aba", 5, &ranks), Ok((&b"ab"[..], &b"a"[..])));
        // With only ranks below 2, "abab" stays a b a b.
        assert_eq!(merge_parts(b"abab", 2, &ranks), Err(4));
    }

    #[test]
    fn eos_must_match_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_hf_tokenizer_files("cl100k_base", None, 50256, dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                HfFilesError::EosMismatch {
                    eos_id: 50256,
                    expected: 100257,
                    ..
                }
            ),
            "{err}"
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn foreign_needs_its_tokenizer_json() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_hf_tokenizer_files("mine", None, 0, dir.path()).unwrap_err();
        assert!(matches!(err, HfFilesError::MissingTokenizerJson { .. }));
        assert!(err.to_string().contains("`mine`"), "{err}");
        let err = write_hf_tokenizer_files("mine", Some(b"{nope"), 0, dir.path()).unwrap_err();
        assert!(matches!(err, HfFilesError::InvalidTokenizerJson { .. }));
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn eos_token_lookup() {
        let json = serde_json::json!({
            "added_tokens": [{"id": 5, "content": "</s>"}],
            "model": {"vocab": {"a": 0, "b": 1, "<eos>": 2}},
        });
        assert_eq!(token_of_id(&json, 5).as_deref(), Some("</s>"));
        assert_eq!(token_of_id(&json, 2).as_deref(), Some("<eos>"));
        assert_eq!(token_of_id(&json, 3), None);
        // Unigram: a list of [token, score] indexed by id.
        let unigram = serde_json::json!({
            "added_tokens": [],
            "model": {"vocab": [["<unk>", 0.0], ["</s>", 0.0], ["x", -1.5]]},
        });
        assert_eq!(token_of_id(&unigram, 1).as_deref(), Some("</s>"));
        assert_eq!(token_of_id(&unigram, 3), None);
        let err = foreign_files("mine", json.to_string().as_bytes(), 9).unwrap_err();
        assert!(
            matches!(err, HfFilesError::EosNotFound { eos_id: 9, .. }),
            "{err}"
        );
    }
}
