//! The Hugging Face tokenizer files (`h5gpt_tokenizer::hf_files`) loaded by `transformers`
//! (`AutoTokenizer.from_pretrained`) give tiktoken-rs' `encode_ordinary` ids on varied text and
//! decode back to it; the same through the Rust `tokenizers` crate; a given tokenizer.json is
//! copied unchanged. Fails (never skips) without Python or transformers.

// Test scenarios read top to bottom: a long one is clearer whole than cut into steps.
#![allow(clippy::too_many_lines)]

use h5gpt_tokenizer::hf_files::write_hf_tokenizer_files;
use std::path::Path;
use std::process::Command;
use tiktoken_rs::CoreBPE;

/// The Python that has transformers: `$H5GPT_PYTHON`, else `python3` on PATH
/// (scripts/env.sh puts the venv's first).
fn python() -> String {
    std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into())
}

const HINT: &str = "---> HINT: run scripts/setup.sh (installs transformers into .venv), then \
                    `source scripts/env.sh`, or point H5GPT_PYTHON at a Python that has \
                    transformers";

/// Loads each directory with `AutoTokenizer.from_pretrained` and reports, per directory, the
/// class, the eos token and id, the ids of every text (default `encode`, as a user calls it)
/// and their decoding.
const LOAD_AND_ENCODE: &str = r#"
import json, sys
from transformers import AutoTokenizer
texts = json.load(open(sys.argv[1], encoding="utf-8"))
out = {}
for d in sys.argv[3:]:
    tok = AutoTokenizer.from_pretrained(d)
    ids = [tok.encode(t) for t in texts]
    out[d] = {
        "class": type(tok).__name__,
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
        "eos_encoded": tok.encode(tok.eos_token),
        "ids": ids,
        "decoded": [tok.decode(i) for i in ids],
    }
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"#;

/// What `transformers` made of one directory.
#[derive(serde::Deserialize)]
struct Loaded {
    class: String,
    eos_token: String,
    eos_token_id: u32,
    eos_encoded: Vec<u32>,
    ids: Vec<Vec<u32>>,
    decoded: Vec<String>,
}

/// Runs [`LOAD_AND_ENCODE`] on `dirs` with `texts`; one `Loaded` per directory, in order.
fn transformers_encode(dirs: &[&Path], texts: &[String], scratch: &Path) -> Vec<Loaded> {
    let texts_path = scratch.join("texts.json");
    let out_path = scratch.join("encoded.json");
    std::fs::write(&texts_path, serde_json::to_vec(texts).unwrap()).unwrap();
    let result = Command::new(python())
        .arg("-c")
        .arg(LOAD_AND_ENCODE)
        .arg(&texts_path)
        .arg(&out_path)
        .args(dirs)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}\n{HINT}", python()));
    assert!(
        result.status.success(),
        "{} (transformers AutoTokenizer) failed ({}):\n{}\n{HINT}",
        python(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let mut out: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    dirs.iter()
        .map(|d| serde_json::from_value(out.remove(d.to_str().unwrap()).unwrap()).unwrap())
        .collect()
}

/// Text that exercises every branch of the pre-tokenizer regexes: ASCII, accents, CJK, emoji
/// (with joiners and modifiers), numbers, whitespace runs of every kind, newlines, contractions
/// in both cases, code; then pseudo-random mixtures of those pieces and characters.
fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "Hello, world! The quick brown fox jumps over the lazy dog.\n",
        "Accents: café, naïve, Ångström, façade, Œuvre, İstanbul, straße, ǅemal, e\u{301}.",
        "CJK: 日本語のテキスト、中文文本，한국어 텍스트。",
        "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 ❤️ 🇫🇷",
        "Numbers: 12345 1234567 3.14159 1,000,000 2024-06-01 ١٢٣٤٥ ²³ Ⅻ",
        "Whitespace:   three,\ttab,\u{a0}nbsp,\u{3000}ideographic   \n\n\n  trailing   ",
        "Contractions: don't I'll we've they're she's I'M YOU'RE It'S 'ſ 'd'",
        "code:\n    fn main() {\n        println!(\"{}\", x /* y */);\n    }\r\n",
        "URL https://example.com/a/b?c=d&e=f#g and mail a.b@c.org\n\n",
        "a\r\n\r\nb \n \n c\t\n\t",
        " leading space",
        "   ",
        "\n",
        "x",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let pieces: Vec<&str> = vec![
        "don't",
        "I'll",
        "we've",
        "THEY'RE",
        "She's",
        "hello",
        "World",
        "12345",
        "3.14",
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "   \n\n",
        "\u{a0}",
        "\u{3000}",
        "é",
        "ß",
        "日本",
        "中文",
        "한국어",
        "привет",
        "😀",
        "👍🏽",
        "…",
        "—",
        "'",
        "\"",
        ".",
        ",",
        "!?",
        "/",
        "#",
        "$",
        "(",
        ")",
        "{",
        "}",
        "_",
        "-",
        "ـ",
        "١٢٣",
        "ﬁ",
        "\u{301}",
        "A",
        "z",
        "0",
        "9",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64; // xorshift64, fixed seed
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..300 {
        let len = 1 + next(40);
        texts.push((0..len).map(|_| pieces[next(pieces.len())]).collect());
    }
    texts
}

/// The first text whose ids differ, for a readable failure.
fn assert_same_ids(what: &str, texts: &[String], got: &[Vec<u32>], want: &[Vec<u32>]) {
    assert_eq!(got.len(), want.len());
    for ((text, g), w) in texts.iter().zip(got).zip(want) {
        assert_eq!(g, w, "{what}: ids differ from tiktoken's on {text:?}");
    }
}

/// Writes the files for the tiktoken encoding `name`, checks them through the Rust
/// `tokenizers` crate and through `transformers`, and returns the written names. With
/// `slow_files`, also loads a copy without tokenizer.json (GPT-2's vocab.json + merges.txt
/// alone, as an older export or a hand copy would have them), which must give the same ids.
fn check_builtin(name: &str, bpe: &CoreBPE, eos: u32, slow_files: &[&str]) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let written = write_hf_tokenizer_files(name, None, eos, &dir).unwrap();
    for file in &written {
        assert!(
            dir.join(file).is_file(),
            "{name}: {file} listed, not written"
        );
    }
    let texts = texts();
    let want: Vec<Vec<u32>> = texts.iter().map(|t| bpe.encode_ordinary(t)).collect();

    // The Rust tokenizers crate (fancy-regex) on the same tokenizer.json.
    let rust = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let got: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| rust.encode(t.as_str(), false).unwrap().get_ids().to_vec())
        .collect();
    assert_same_ids(&format!("{name} (Rust tokenizers)"), &texts, &got, &want);

    // transformers (Python tokenizers, Oniguruma regex).
    let slow = tmp.path().join("slow");
    let mut dirs = vec![dir.as_path()];
    if !slow_files.is_empty() {
        std::fs::create_dir(&slow).unwrap();
        for file in slow_files {
            std::fs::copy(dir.join(file), slow.join(file)).unwrap();
        }
        dirs.push(&slow);
    }
    let loaded = transformers_encode(&dirs, &texts, tmp.path());
    check_loaded(name, &loaded[0], &texts, &want, eos);
    if let Some(loaded) = loaded.get(1) {
        check_loaded(
            &format!("{name} without tokenizer.json"),
            loaded,
            &texts,
            &want,
            eos,
        );
    }
    if name == "gpt2" {
        for loaded in &loaded {
            assert!(
                loaded.class.starts_with("GPT2Tokenizer"),
                "{}",
                loaded.class
            );
        }
    }
    written
}

fn check_loaded(what: &str, loaded: &Loaded, texts: &[String], want: &[Vec<u32>], eos: u32) {
    assert_same_ids(&format!("{what} (transformers)"), texts, &loaded.ids, want);
    for (text, decoded) in texts.iter().zip(&loaded.decoded) {
        assert_eq!(decoded, text, "{what}: decode(encode(text)) != text");
    }
    assert_eq!(loaded.eos_token, "<|endoftext|>", "{what}");
    assert_eq!(loaded.eos_token_id, eos, "{what}");
    assert_eq!(
        loaded.eos_encoded,
        [eos],
        "{what}: the eos text is the special token"
    );
}

#[test]
fn gpt2_files_match_tiktoken_in_transformers() {
    let bpe = tiktoken_rs::r50k_base_singleton();
    let slow_files = [
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ];
    let written = check_builtin("gpt2", bpe, 50256, &slow_files);
    assert_eq!(
        written,
        [
            "vocab.json",
            "merges.txt",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json"
        ]
    );
}

#[test]
fn cl100k_files_match_tiktoken_in_transformers() {
    let written = check_builtin(
        "cl100k_base",
        tiktoken_rs::cl100k_base_singleton(),
        100257,
        &[],
    );
    assert_eq!(written, ["tokenizer.json", "tokenizer_config.json"]);
}

#[test]
fn o200k_files_match_tiktoken_in_transformers() {
    let written = check_builtin(
        "o200k_base",
        tiktoken_rs::o200k_base_singleton(),
        199999,
        &[],
    );
    assert_eq!(written, ["tokenizer.json", "tokenizer_config.json"]);
}

/// A small word-level tokenizer.json: `</s>` (id 3) an added special token, `<eos>` (id 4)
/// only in the model's vocabulary.
fn word_level_json() -> Vec<u8> {
    use tokenizers::models::wordlevel::WordLevel;
    let vocab: tokenizers::models::bpe::Vocab = [
        ("[UNK]", 0),
        ("hello", 1),
        ("world", 2),
        ("</s>", 3),
        ("<eos>", 4),
    ]
    .into_iter()
    .map(|(t, id)| (t.to_string(), id))
    .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::whitespace::WhitespaceSplit,
    ));
    tokenizer
        .add_special_tokens([tokenizers::AddedToken::from("</s>", true)])
        .unwrap();
    tokenizer.to_string(true).unwrap().into_bytes()
}

#[test]
fn foreign_tokenizer_json_is_copied_unchanged() {
    let json = word_level_json();
    let tmp = tempfile::tempdir().unwrap();
    let added = tmp.path().join("added");
    let in_vocab = tmp.path().join("in_vocab");
    for (dir, eos_id, eos) in [(&added, 3, "</s>"), (&in_vocab, 4, "<eos>")] {
        let written = write_hf_tokenizer_files("my-word-level", Some(&json), eos_id, dir).unwrap();
        assert_eq!(written, ["tokenizer.json", "tokenizer_config.json"]);
        assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), json);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("tokenizer_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["eos_token"], eos);
        assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    }

    let texts = vec!["hello world </s>".to_string(), "world hello".to_string()];
    let loaded = transformers_encode(&[&added, &in_vocab], &texts, tmp.path());
    assert_eq!(loaded[0].ids, [vec![1, 2, 3], vec![2, 1]]);
    assert_eq!(
        (loaded[0].eos_token.as_str(), loaded[0].eos_token_id),
        ("</s>", 3)
    );
    assert_eq!(
        (loaded[1].eos_token.as_str(), loaded[1].eos_token_id),
        ("<eos>", 4)
    );

    let err = write_hf_tokenizer_files("my-word-level", Some(&json), 5, &added).unwrap_err();
    assert!(err.to_string().contains("end-of-text id 5"), "{err}");
}
