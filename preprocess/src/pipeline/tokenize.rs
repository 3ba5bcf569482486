//! The reader/tokenizer stage: which tokenizer a run uses (a given one, or one trained on the
//! training documents first), and the documents as read and as tokenized, in parallel.

use super::{is_dropped, is_val, PreprocessConfig, TokenizerChoice};
use crate::input::InputFile;
use crate::profile::{self, Stage};
use crate::tokenizer_train::{train_tokenizer, CorpusSettings};
use anyhow::Result;
use h5gpt_tokenizer::split::split_for_tokenization;
use h5gpt_tokenizer::tokenizer::{resolve_tokenizer_arg, Tokenizer};
use rayon::prelude::*;

/// Target bytes of one tokenization unit when a long document is split.
const SPLIT_BYTES: usize = 64 << 10;

/// The tokenizer `--tokenizer` names (`None` for `--train-tokenizer`, whose settings are
/// checked here: it is trained by [`train_or_given`] once the output directory is ready).
pub(super) fn resolve_given(config: &PreprocessConfig) -> Result<Option<Tokenizer>> {
    Ok(match &config.tokenizer {
        TokenizerChoice::Given { name, eos_token } => {
            Some(resolve_tokenizer_arg(name, eos_token.as_deref())?)
        }
        TokenizerChoice::Train(spec) => {
            spec.validate()?;
            None
        }
    })
}

/// The run's tokenizer: the `given` one, or one trained on the training documents of `files`.
pub(super) fn train_or_given(
    config: &PreprocessConfig,
    given: Option<Tokenizer>,
    files: &[InputFile],
) -> Result<Tokenizer> {
    Ok(match (given, &config.tokenizer) {
        (Some(t), _) => t,
        (None, TokenizerChoice::Train(spec)) => {
            if config.progress {
                config.notes.note(&format!(
                    "preprocess: training a {} tokenizer ({} tokens) on the training documents",
                    spec.kind.tokenizer_name(),
                    spec.vocab_size
                ));
            }
            let keep = |file: usize, record: u64| {
                !is_val(config, file, record) && !is_dropped(config, file, record)
            };
            train_tokenizer(
                spec,
                files,
                &CorpusSettings {
                    text_key: &config.text_key,
                    skip_bad: config.skip_bad_records,
                    nfc: config.normalize_nfc,
                    keep: &keep,
                    part: config.part,
                    threads: config.threads,
                },
            )?
        }
        (None, TokenizerChoice::Given { .. }) => unreachable!("given tokenizers resolve first"),
    })
}

/// A document as read.
pub struct Doc {
    /// Input file index.
    pub file_index: usize,
    /// Record index within the file.
    pub record_index: u64,
    /// Its text.
    pub text: Option<String>,
    /// The pieces of it to tokenize as documents of their own, an end-of-document token
    /// between them (byte ranges, in order; `--decontaminate`); `None`: the whole text.
    pub pieces: Option<Vec<std::ops::Range<usize>>>,
}

/// A document, tokenized.
pub struct TokenizedDoc {
    /// Input file index.
    pub file_index: usize,
    /// Record index within the file.
    pub record_index: u64,
    /// `None`: an empty document.
    pub tokens: Option<Vec<i32>>,
}

/// Tokenizes a batch in parallel, splitting long documents at safe points. A document cut into
/// pieces ([`Doc::pieces`]) comes back as its pieces' tokens with an end-of-document token
/// between each two.
pub fn tokenize_batch(tokenizer: &Tokenizer, docs: Vec<Doc>, nfc: bool) -> Vec<TokenizedDoc> {
    use unicode_normalization::UnicodeNormalization;
    let mut places = Vec::with_capacity(docs.len());
    let mut texts: Vec<Option<Vec<String>>> = Vec::with_capacity(docs.len());
    for d in docs {
        places.push((d.file_index, d.record_index));
        texts.push(d.text.map(|t| match d.pieces {
            None => vec![t],
            Some(pieces) => pieces.into_iter().map(|r| t[r].to_owned()).collect(),
        }));
    }
    let texts: Vec<Option<Vec<String>>> = if nfc {
        texts
            .into_par_iter()
            .map(|t| {
                t.map(|pieces| {
                    pieces
                        .into_iter()
                        .map(|p| profile::time(Stage::Tokenize, || p.nfc().collect()))
                        .collect()
                })
            })
            .collect()
    } else {
        texts
    };
    let units: Vec<(usize, usize, &str)> = texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
        .flat_map(|(i, pieces)| {
            pieces
                .iter()
                .enumerate()
                .map(move |(j, p)| (i, j, p.as_str()))
        })
        .flat_map(|(i, j, t)| {
            let ranges = if tokenizer.splits_documents() {
                split_for_tokenization(t, SPLIT_BYTES)
            } else {
                std::iter::once(0..t.len()).collect()
            };
            ranges.into_iter().map(move |r| (i, j, &t[r]))
        })
        .collect();
    let encoded: Vec<(usize, usize, Vec<u32>)> = units
        .par_iter()
        .with_max_len(1)
        .map(|&(i, j, text)| {
            (
                i,
                j,
                profile::time(Stage::Tokenize, || tokenizer.encode(text)),
            )
        })
        .collect();
    let eos = tokenizer.eos_id() as i32;
    let mut tokens: Vec<Vec<i32>> = vec![Vec::new(); texts.len()];
    let mut piece_of: Vec<usize> = vec![0; texts.len()];
    for (i, j, piece) in encoded {
        if j != piece_of[i] {
            // The next piece of a cut document.
            tokens[i].push(eos);
            piece_of[i] = j;
        }
        tokens[i].extend(piece.into_iter().map(|t| t as i32));
    }
    places
        .into_iter()
        .zip(texts)
        .zip(tokens)
        .map(
            |(((file_index, record_index), text), tokens)| TokenizedDoc {
                file_index,
                record_index,
                tokens: text
                    .filter(|t| t.iter().any(|p| !p.is_empty()))
                    .map(|_| tokens),
            },
        )
        .collect()
}
