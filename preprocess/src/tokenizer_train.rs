//! `preprocess --train-tokenizer bpe|wordlevel`: a vocabulary trained on the input corpus with
//! the `tokenizers` crate's trainers, before the corpus is tokenized with it.
//!
//! - `bpe`: byte-level BPE as GPT-2's (its pre-tokenizer regex, no prefix space, byte-level
//!   decoder), so every text round-trips and no word is unknown.
//! - `wordlevel`: one id per whitespace/punctuation-separated word (`\w+|[^\w\s]+`), the most
//!   frequent first; words outside the vocabulary become `[UNK]`, counted in the summary.
//!
//! Both reserve [`EOS_TOKEN`] as id 0 (and word-level [`UNK_TOKEN`] as id 1). The trainers
//! order ties by the token itself, so the same corpus and settings give the same
//! `tokenizer.json` whatever the thread count or hash seeds.

use crate::input::{open_records, InputError, InputFile, Records};
use crate::tokenizer::{Eos, Tokenizer, EOS_TOKEN, UNK_TOKEN};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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
            bail!(
                "--vocab-size {} is too small for --train-tokenizer {}: at least {least}",
                self.vocab_size,
                self.kind.tokenizer_name().trim_start_matches("trained-")
            );
        }
        Ok(())
    }
}

/// The documents a tokenizer is trained on: every record of `files` that `keep` accepts, in
/// order. The first read error stops the stream and is kept in `error`.
struct Documents<'a> {
    files: &'a [InputFile],
    text_key: &'a str,
    skip_bad: bool,
    nfc: bool,
    keep: &'a (dyn Fn(usize, u64) -> bool + Sync),
    part: crate::val_split::DocPart,
    file_index: usize,
    records: Option<Records>,
    error: Arc<Mutex<Option<InputError>>>,
}

impl Iterator for Documents<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        use unicode_normalization::UnicodeNormalization;
        loop {
            if self.records.is_none() {
                let file = self.files.get(self.file_index)?;
                match open_records(file, self.text_key, Arc::new(AtomicU64::new(0))) {
                    Ok(r) => self.records = Some(r),
                    Err(e) => {
                        *self.error.lock().expect("error slot") = Some(e);
                        return None;
                    }
                }
            }
            let records = self.records.as_mut().expect("opened above");
            match records.next() {
                None => {
                    self.records = None;
                    self.file_index += 1;
                }
                Some(Ok((record, text))) => {
                    if (self.keep)(self.file_index, record) {
                        let text = self.part.apply(text);
                        if !text.is_empty() {
                            return Some(if self.nfc { text.nfc().collect() } else { text });
                        }
                    }
                }
                Some(Err(e)) if e.record_level && self.skip_bad => {}
                Some(Err(e)) => {
                    *self.error.lock().expect("error slot") = Some(e);
                    return None;
                }
            }
        }
    }
}

/// Input settings the trainer reads the corpus with (those of the tokenization pass).
pub struct CorpusSettings<'a> {
    /// JSON key / Parquet column.
    pub text_key: &'a str,
    /// Skip bad records instead of failing.
    pub skip_bad: bool,
    /// Unicode NFC before training.
    pub nfc: bool,
    /// Which documents (file index, record index) to learn from: the training split's.
    pub keep: &'a (dyn Fn(usize, u64) -> bool + Sync),
    /// The part of each document to train on (its head, for a split inside documents).
    pub part: crate::val_split::DocPart,
    /// Trainer threads (the result does not depend on them).
    pub threads: usize,
}

/// Trains a tokenizer on `files` and returns it, named after its kind.
pub fn train_tokenizer(
    spec: &TrainSpec,
    files: &[InputFile],
    corpus: &CorpusSettings<'_>,
) -> Result<Tokenizer> {
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

    let error = Arc::new(Mutex::new(None));
    let documents = Documents {
        files,
        text_key: corpus.text_key,
        skip_bad: corpus.skip_bad,
        nfc: corpus.nfc,
        keep: corpus.keep,
        part: corpus.part,
        file_index: 0,
        records: None,
        error: error.clone(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(corpus.threads.max(1))
        .build()
        .context("cannot start tokenizer-trainer threads")?;
    let trained = pool.install(|| hf.train(&mut trainer, documents).map(|_| ()));
    if let Some(e) = error.lock().expect("error slot").take() {
        bail!("{e}");
    }
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
