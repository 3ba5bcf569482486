//! Splitting long documents for parallel tokenization without changing the result.
//!
//! GPT-2's pre-tokenizer cuts text into pieces with a regular expression (no look-behind; its
//! only look-ahead is `\s+(?!\S)`) and BPE never merges across pieces. Position `i` is a safe cut
//! when `text[i-1]` is `'\n'` and both `text[i-2]` and `text[i]` are not whitespace: in the
//! whole text the `'\n'` is then a piece of its own (the character before it cannot absorb it,
//! and `\s+(?!\S)` cannot match before a non-space), the next piece starts at `i`, and the
//! prefix alone ends in the same lone `'\n'` piece. So `encode(a + b) == encode(a) + encode(b)`.
//! A property test checks this against whole-document encoding.

/// Byte ranges covering `text`, each about `target` bytes or more, cut only at safe positions.
pub fn split_for_tokenization(text: &str, target: usize) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut start = 0;
    while text.len() - start > target.saturating_mul(2) {
        let mut cut = None;
        let mut i = start + target;
        while i < bytes.len() {
            match memchr_newline(&bytes[i..]) {
                Some(offset) => {
                    let nl = i + offset;
                    if is_safe_cut(text, nl + 1) {
                        cut = Some(nl + 1);
                        break;
                    }
                    i = nl + 1;
                }
                None => break,
            }
        }
        match cut {
            Some(c) if text.len() - c > 0 => {
                ranges.push(start..c);
                start = c;
            }
            _ => break,
        }
    }
    ranges.push(start..text.len());
    ranges
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Whether the byte position `i` (just after a `'\n'`) is a safe cut.
pub fn is_safe_cut(text: &str, i: usize) -> bool {
    if i < 2 || i >= text.len() || text.as_bytes()[i - 1] != b'\n' {
        return false;
    }
    let before = text[..i - 1].chars().next_back();
    let after = text[i..].chars().next();
    matches!((before, after), (Some(b), Some(a)) if !b.is_whitespace() && !a.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;
    use proptest::prelude::*;

    fn encode_split(t: &Tokenizer, text: &str, target: usize) -> Vec<u32> {
        split_for_tokenization(text, target)
            .into_iter()
            .flat_map(|r| t.encode(&text[r]))
            .collect()
    }

    proptest! {
        /// Splitting never changes the tokens: checked against whole-document encoding on text
        /// built from the characters that matter to the pre-tokenizer.
        #[test]
        fn split_encoding_equals_whole_encoding(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("\n"), Just("\n\n"), Just(" "), Just("  "), Just("\r\n"), Just("\t"),
                    Just("word"), Just("Hello"), Just("'s"), Just("'ll"), Just("123"), Just("."),
                    Just("!?"), Just("é"), Just("日本"), Just("\u{a0}"), Just("\u{2028}"), Just("<|endoftext|>"),
                ],
                0..200,
            ),
            target in 1usize..40,
        ) {
            let text: String = parts.concat();
            let whole = tiktoken_rs::r50k_base_singleton().encode_ordinary(&text);
            prop_assert_eq!(encode_split(&Tokenizer::gpt2(), &text, target), whole);
        }
    }

    #[test]
    fn long_documents_do_get_split() {
        let text = "line one\nline two\n".repeat(1000);
        let ranges = split_for_tokenization(&text, 100);
        assert!(ranges.len() > 50, "{}", ranges.len());
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, text.len());
        let t = Tokenizer::gpt2();
        assert_eq!(encode_split(&t, &text, 100), t.encode(&text));
    }

    #[test]
    fn cut_rules() {
        assert!(is_safe_cut("a\nb", 2));
        assert!(!is_safe_cut("a \nb", 3), "whitespace before the newline");
        assert!(!is_safe_cut("a\n b", 2), "whitespace after the newline");
        assert!(!is_safe_cut("a\r\nb", 3), "CR before the newline");
        assert!(!is_safe_cut("ab", 1));
    }
}
