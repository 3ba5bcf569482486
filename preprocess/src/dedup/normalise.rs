//! The text that dedup compares: its own normalisation, independent of `--normalize`.
//!
//! The rule: Unicode NFC, then lower-cased (`char::to_lowercase`, full Unicode), then every run
//! of whitespace (`char::is_whitespace`) collapsed to one space, then trimmed at both ends.
//! Two documents are exact duplicates when these texts are equal; the words MinHash reads are
//! this text split at its spaces.

use unicode_normalization::UnicodeNormalization;

/// `text` normalised for dedup (see the module's rule).
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.nfc().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// The words of a normalised text.
pub fn words(normalised: &str) -> impl Iterator<Item = &str> {
    normalised.split(' ').filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_whitespace_and_composition_do_not_count() {
        assert_eq!(
            normalise("  Hello,\t\tWORLD \n\n again "),
            "hello, world again"
        );
        // "é" composed and decomposed (e + U+0301) normalise alike.
        assert_eq!(normalise("Caf\u{e9}"), normalise("Cafe\u{301}"));
        assert_eq!(normalise(" \n\t "), "");
        assert_eq!(words("a bb c").collect::<Vec<_>>(), ["a", "bb", "c"]);
        // Punctuation is kept: only case, whitespace and composition are normalised.
        assert_ne!(normalise("a, b"), normalise("a b"));
    }
}
