//! The text that dedup compares: its own normalisation, independent of `--normalize`.
//!
//! The rule: Unicode NFC, then lower-cased (`char::to_lowercase`, full Unicode), then every run
//! of whitespace (`char::is_whitespace`) collapsed to one space, then trimmed at both ends.
//! Two documents are exact duplicates when these texts are equal; the words MinHash reads are
//! this text split at its spaces.

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// `text` normalised for dedup (see the module's rule). Text that Unicode's quick check finds
/// in NFC already (nearly all text) skips the composition, and ASCII bytes skip the Unicode
/// tables: the same result, several times faster than composing and lower-casing every char.
pub fn normalise(text: &str) -> String {
    let mut out = Collapsed::with_capacity(text.len());
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii() {
                out.push_ascii(bytes[i]);
                i += 1;
            } else {
                let c = text[i..].chars().next().expect("a char starts here");
                out.push_lowercased(c);
                i += c.len_utf8();
            }
        }
    } else {
        for c in text.nfc() {
            out.push_lowercased(c);
        }
    }
    out.text
}

/// Lower-cased text with whitespace runs collapsed to one space and trimmed, built char by char.
struct Collapsed {
    text: String,
    /// A whitespace run is pending (written before the next non-space char, if any).
    space: bool,
}

impl Collapsed {
    fn with_capacity(bytes: usize) -> Collapsed {
        Collapsed {
            text: String::with_capacity(bytes),
            space: false,
        }
    }

    /// An ASCII byte: `char::is_whitespace`'s ASCII members are 9–13 and the space.
    fn push_ascii(&mut self, b: u8) {
        if matches!(b, b'\t'..=b'\r' | b' ') {
            self.space = !self.text.is_empty();
        } else {
            self.push_visible(b.to_ascii_lowercase() as char);
        }
    }

    /// Any char, lower-cased (`char::to_lowercase`: one char may become several).
    fn push_lowercased(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = !self.text.is_empty();
        } else {
            for lower in c.to_lowercase() {
                self.push_visible(lower);
            }
        }
    }

    fn push_visible(&mut self, c: char) {
        if self.space {
            self.text.push(' ');
            self.space = false;
        }
        self.text.push(c);
    }
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

    /// The rule as the module states it, char by char through the Unicode tables.
    fn by_the_rule(text: &str) -> String {
        let mut out = String::new();
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

    #[test]
    fn the_fast_paths_follow_the_rule() {
        for text in [
            "Plain ASCII,\x0b with\x0cevery\r\nASCII space\t ",
            "\u{1c}\u{1f} not whitespace in Unicode",
            "Ünïcödé ÀÉÎ İstanbul ΣΑΣ straße ǅ \u{2003}em\u{a0}nbsp\u{3000}",
            "decomposed e\u{301} and A\u{30a}, NFC needed",
            "",
            "   ",
        ] {
            assert_eq!(normalise(text), by_the_rule(text), "{text:?}");
        }
    }
}
