//! The reader/tokenizer stage: which tokenizer a run uses (a given one, or one trained on the
//! training documents first), and the documents as read and as tokenized, in parallel.

use super::{is_val, PreprocessConfig, TokenizerChoice};
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
                eprintln!(
                    "preprocess: training a {} tokenizer ({} tokens) on the training documents",
                    spec.kind.tokenizer_name(),
                    spec.vocab_size
                );
            }
            let keep = |file: usize, record: u64| !is_val(config, file, record);
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

/// Tokenizes a batch in parallel, splitting long documents at safe points.
pub fn tokenize_batch(tokenizer: &Tokenizer, docs: Vec<Doc>, nfc: bool) -> Vec<TokenizedDoc> {
    use unicode_normalization::UnicodeNormalization;
    let (places, texts): (Vec<(usize, u64)>, Vec<Option<String>>) = docs
        .into_iter()
        .map(|d| ((d.file_index, d.record_index), d.text))
        .unzip();
    let texts: Vec<Option<String>> = if nfc {
        texts
            .into_par_iter()
            .map(|t| t.map(|t| profile::time(Stage::Tokenize, || t.nfc().collect())))
            .collect()
    } else {
        texts
    };
    let units: Vec<(usize, &str)> = texts
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.as_deref().map(|t| (i, t)))
        .flat_map(|(i, t)| {
            let pieces = if tokenizer.splits_documents() {
                split_for_tokenization(t, SPLIT_BYTES)
            } else {
                std::iter::once(0..t.len()).collect()
            };
            pieces.into_iter().map(move |r| (i, &t[r]))
        })
        .collect();
    let encoded: Vec<(usize, Vec<u32>)> = units
        .par_iter()
        .with_max_len(1)
        .map(|&(i, text)| (i, profile::time(Stage::Tokenize, || tokenizer.encode(text))))
        .collect();
    let mut tokens: Vec<Vec<i32>> = vec![Vec::new(); texts.len()];
    for (i, piece) in encoded {
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
                tokens: text.filter(|t| !t.is_empty()).map(|_| tokens),
            },
        )
        .collect()
}
