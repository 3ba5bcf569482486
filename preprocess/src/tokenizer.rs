//! The tokenizers h5gpt ships: GPT-2's byte-level BPE (`r50k_base`), from tiktoken-rs'
//! bundled vocabulary (no network).

use h5gpt_formats::manifest::DataParams;
use h5gpt_formats::spec::{GPT2_EOS_ID, GPT2_VOCAB_SIZE};
use tiktoken_rs::CoreBPE;

/// A tokenizer with its special ids.
pub struct Tokenizer {
    name: &'static str,
    bpe: &'static CoreBPE,
    eos_id: u32,
    vocab_size: u32,
}

impl Tokenizer {
    /// GPT-2's BPE (`r50k_base`), EOS = `<|endoftext|>` = 50256.
    pub fn gpt2() -> Tokenizer {
        Tokenizer {
            name: "gpt2",
            bpe: tiktoken_rs::r50k_base_singleton(),
            eos_id: GPT2_EOS_ID,
            vocab_size: GPT2_VOCAB_SIZE,
        }
    }

    /// The tokenizer a shard directory was written with: ours say so in `data_params.json`;
    /// foreign (Cerebras) manifests and bare shards are taken as GPT-2. `None` when the
    /// manifest names a tokenizer we cannot decode (e.g. `synthetic`).
    pub fn for_data_params(params: Option<&DataParams>) -> Option<Tokenizer> {
        match params
            .and_then(|p| p.h5gpt.as_ref())
            .map(|s| s.tokenizer.as_str())
        {
            None | Some("gpt2") => Some(Tokenizer::gpt2()),
            Some(_) => None,
        }
    }

    /// Name recorded in `data_params.json`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// End-of-document id (also the pad id).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size: every id is below it.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Ordinary encoding: special-token text inside `text` is encoded as plain text.
    /// Exactly tiktoken's `encode_ordinary`, computed by [`Gpt2Bpe`](crate::gpt2_bpe::Gpt2Bpe).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        crate::gpt2_bpe::Gpt2Bpe::get().encode_ordinary(text)
    }

    /// Decodes ids to text; bytes that do not form UTF-8 become U+FFFD, unknown ids `⟨id⟩`.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            match self.bpe.decode_bytes(&[id]) {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(_) => bytes.extend_from_slice(format!("⟨{id}⟩").as_bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
