//! Tokenizer training (`preprocess --train-tokenizer bpe|wordlevel`): a vocabulary learned from
//! a stream of documents with the `tokenizers` crate's trainers.
//!
//! - `bpe`: byte-level BPE as GPT-2's (its pre-tokenizer regex, no prefix space, byte-level
//!   decoder), so every text round-trips and no word is unknown.
//! - `wordlevel`: one id per whitespace/punctuation-separated word (`\w+|[^\w\s]+`), the most
//!   frequent first; words outside the vocabulary become `[UNK]`, counted in the summary.
//!
//! Both reserve [`EOS_TOKEN`] as id 0 (and word-level [`UNK_TOKEN`] as id 1). The trainers
//! order ties by the token itself, so the same corpus and settings give the same
//! `tokenizer.json` whatever the thread count or hash seeds.

use crate::tokenizer::{Eos, Tokenizer, EOS_TOKEN, UNK_TOKEN};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, DecoderWrapper};

/// Which trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainKind {
    /// Byte-level BPE (GPT-2's scheme): lossless, no unknown words.
    Bpe,
    /// One token per word, `[UNK]` for the rest: for small corpora with a small lexicon.
    Wordlevel,
}

impl TrainKind {
    /// The tokenizer name recorded in `data_params.json`.
    pub fn tokenizer_name(self) -> &'static str {
        match self {
            TrainKind::Bpe => "trained-bpe",
            TrainKind::Wordlevel => "trained-wordlevel",
        }
    }
}

/// What to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrainSpec {
    /// Trainer.
    pub kind: TrainKind,
    /// Vocabulary size, special tokens included.
    pub vocab_size: u32,
    /// Minimum count of a word (word-level) or of a pair to merge (BPE).
    pub min_frequency: u64,
}

impl TrainSpec {
    /// Checks the sizes the trainers need.
    pub fn validate(&self) -> Result<()> {
        let least = match self.kind {
            // 256 byte symbols and the end-of-document token.
            TrainKind::Bpe => 257,
            TrainKind::Wordlevel => 3,
        };
        if self.vocab_size < least {
            bail!(h5gpt_formats::exit::UsageError::new(format!(
                "--vocab-size {} is too small for --train-tokenizer {}: at least {least}",
                self.vocab_size,
                self.kind.tokenizer_name().trim_start_matches("trained-")
            )));
        }
        Ok(())
    }
}

/// Trains a tokenizer on `documents` with `threads` trainer threads (the result does not depend
/// on them) and returns it, named after its kind.
pub fn train_on_documents<I>(spec: &TrainSpec, documents: I, threads: usize) -> Result<Tokenizer>
where
    I: Iterator<Item = String> + Send,
{
    spec.validate()?;
    let eos = AddedToken::from(EOS_TOKEN, true);
    let vocab_size = spec.vocab_size as usize;
    let (model, pre_tokenizer, decoder, mut trainer) = match spec.kind {
        TrainKind::Bpe => (
            ModelWrapper::BPE(BPE::default()),
            PreTokenizerWrapper::ByteLevel(ByteLevel::default().add_prefix_space(false)),
            Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())),
            TrainerWrapper::BpeTrainer(
                BpeTrainerBuilder::new()
                    .vocab_size(vocab_size)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(vec![eos])
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build(),
            ),
        ),
        TrainKind::Wordlevel => (
            ModelWrapper::WordLevel(
                WordLevel::builder()
                    .unk_token(UNK_TOKEN.into())
                    .build()
                    .map_err(|e| anyhow::anyhow!("word-level model: {e}"))?,
            ),
            PreTokenizerWrapper::Whitespace(Whitespace {}),
            None,
            TrainerWrapper::WordLevelTrainer(
                WordLevelTrainer::builder()
                    .vocab_size(vocab_size)
                    .min_frequency(spec.min_frequency)
                    .special_tokens(vec![eos, AddedToken::from(UNK_TOKEN, true)])
                    .show_progress(false)
                    .build()
                    .map_err(|e| anyhow::anyhow!("word-level trainer: {e}"))?,
            ),
        ),
    };
    let mut hf = tokenizers::Tokenizer::new(model);
    hf.with_pre_tokenizer(Some(pre_tokenizer));
    hf.with_decoder(decoder);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .context("cannot start tokenizer-trainer threads")?;
    let trained = pool.install(|| hf.train(&mut trainer, documents).map(|_| ()));
    trained.map_err(|e| anyhow::anyhow!("training the tokenizer failed: {e}"))?;
    let json = hf
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("cannot serialize the trained tokenizer: {e}"))?;
    let tokenizer = Tokenizer::from_json(
        spec.kind.tokenizer_name(),
        json.into_bytes(),
        Eos::Token(EOS_TOKEN),
        Path::new("(trained tokenizer)"),
    )?;
    Ok(tokenizer)
}
