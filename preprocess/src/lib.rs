//! # h5gpt-preprocess
//!
//! The library behind `h5gpt preprocess` and `h5gpt inspect` (and the `preprocess` binary): input reading, tokenization
//! (the tiktoken family and Hugging Face tokenizers, trained or given), packing into rows,
//! and the resumable sharding pipeline.

pub mod cli;
pub mod decontaminate;
pub mod dedup;
pub mod input;
pub mod inspect;
pub mod packer;
pub mod parquet_input;
pub mod pipeline;
pub mod profile;
pub mod run_inspect;
pub mod schedule;
pub mod tokenizer_train;
pub mod val_split;
