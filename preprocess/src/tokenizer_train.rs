//! `preprocess --train-tokenizer bpe|wordlevel`: the corpus's documents streamed into
//! [`h5gpt_tokenizer::train`], before the corpus is tokenized with the trained vocabulary.

use crate::input::{open_records, InputError, InputFile, Records};
use anyhow::{bail, Result};
use h5gpt_tokenizer::tokenizer::Tokenizer;
use h5gpt_tokenizer::train::{train_on_documents, TrainSpec};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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
    let trained = train_on_documents(spec, documents, corpus.threads);
    if let Some(e) = error.lock().expect("error slot").take() {
        bail!("{e}");
    }
    trained
}
