//! # h5gpt-tokenizer
//!
//! Text to token ids and back, with no tensors: the tiktoken encodings (GPT-2's BPE through a
//! faster exact scanner), Hugging Face `tokenizer.json` vocabularies, trained BPE and word-level
//! vocabularies, the safe cut points that let long documents be tokenized in pieces, and the
//! Hugging Face tokenizer files an exported model ships with. `preprocess` and `train` both read
//! it.

pub mod gpt2_bpe;
pub mod hf_files;
pub mod shard_manifest;
pub mod split;
pub mod tokenizer;
pub mod train;
