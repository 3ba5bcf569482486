//! # h5gpt-preprocess
//!
//! The library behind the `preprocess` and `inspect` binaries.

pub mod inspect;
pub mod tokenizer;
