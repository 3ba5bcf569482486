//! A faster GPT-2 (`r50k_base`) encoder that gives exactly tiktoken's `encode_ordinary` ids.
//!
//! tiktoken cuts text into pieces with the regular expression
//! `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s` (run by
//! fancy-regex because of the look-ahead), then byte-pair-merges each piece. This module scans
//! the same pieces by hand — the character classes come from `regex-syntax`, the tables the
//! regex itself uses — and keeps a per-thread cache of each piece's ids (words repeat); a piece
//! not seen before is encoded by tiktoken-rs itself (a piece on its own pre-tokenizes to that
//! same single piece). Property tests compare it with tiktoken-rs on arbitrary Unicode.

use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

/// Sorted, disjoint code-point ranges of one class.
struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    fn parse(pattern: &str) -> Ranges {
        let hir = regex_syntax::Parser::new()
            .parse(pattern)
            .expect("valid class");
        match hir.kind() {
            regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) => Ranges(
                class
                    .ranges()
                    .iter()
                    .map(|r| (r.start() as u32, r.end() as u32))
                    .collect(),
            ),
            other => panic!("{pattern} is not a Unicode class: {other:?}"),
        }
    }

    fn contains(&self, c: char) -> bool {
        let c = c as u32;
        self.0
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

struct Classes {
    ascii: [Class; 128],
    letter: Ranges,
    number: Ranges,
    space: Ranges,
}

impl Classes {
    fn new() -> Classes {
        let (letter, number, space) = (
            Ranges::parse(r"\p{L}"),
            Ranges::parse(r"\p{N}"),
            Ranges::parse(r"\s"),
        );
        let mut ascii = [Class::Other; 128];
        for (b, slot) in ascii.iter_mut().enumerate() {
            *slot = Self::slow(&letter, &number, &space, b as u8 as char);
        }
        Classes {
            ascii,
            letter,
            number,
            space,
        }
    }

    fn slow(letter: &Ranges, number: &Ranges, space: &Ranges, c: char) -> Class {
        if letter.contains(c) {
            Class::Letter
        } else if number.contains(c) {
            Class::Number
        } else if space.contains(c) {
            Class::Space
        } else {
            Class::Other
        }
    }

    #[inline]
    fn of(&self, c: char) -> Class {
        if (c as u32) < 128 {
            self.ascii[c as usize]
        } else {
            Self::slow(&self.letter, &self.number, &self.space, c)
        }
    }
}

/// The encoder: the pre-tokenizer's character classes.
pub struct Gpt2Bpe {
    classes: Classes,
}

/// Pieces longer than this are not cached.
const CACHE_PIECE_BYTES: usize = 32;
/// Cached pieces per thread before the cache is cleared.
const CACHE_ENTRIES: usize = 1 << 18;

impl Gpt2Bpe {
    /// The process-wide encoder.
    pub fn get() -> &'static Gpt2Bpe {
        static ENCODER: OnceLock<Gpt2Bpe> = OnceLock::new();
        ENCODER.get_or_init(|| Gpt2Bpe {
            classes: Classes::new(),
        })
    }

    /// End of the piece that starts at byte `i`.
    fn piece_end(&self, text: &str, i: usize) -> usize {
        let rest = &text[i..];
        let mut chars = rest.char_indices();
        let (_, c) = chars.next().expect("i < len");
        let class_run = |from: usize, class: Class| -> usize {
            let mut end = from;
            for (k, ch) in text[from..].char_indices() {
                if self.classes.of(ch) != class {
                    return from + k;
                }
                end = from + k + ch.len_utf8();
            }
            end
        };
        // '(?:[sdmt]|ll|ve|re)
        if c == '\'' {
            let tail = &rest.as_bytes()[1..];
            if tail.first().is_some_and(|b| b"sdmt".contains(b)) {
                return i + 2;
            }
            if tail.starts_with(b"ll") || tail.starts_with(b"ve") || tail.starts_with(b"re") {
                return i + 3;
            }
        }
        let class = self.classes.of(c);
        //  ?\p{L}++ |  ?\p{N}++ |  ?[^\s\p{L}\p{N}]++  (with the optional leading space)
        if c == ' ' {
            if let Some((k, next)) = chars.next() {
                let next_class = self.classes.of(next);
                if next_class != Class::Space {
                    return class_run(i + k, next_class);
                }
            }
        }
        if class != Class::Space {
            return class_run(i, class);
        }
        // Whitespace: \s++$ | \s+(?!\S) | \s
        let mut last_start = i;
        let mut end = i + c.len_utf8();
        for (k, ch) in rest.char_indices().skip(1) {
            if self.classes.of(ch) != Class::Space {
                // Followed by a non-space: leave the last whitespace character for the next
                // piece, unless the run is a single character.
                return if last_start > i { last_start } else { end };
            }
            last_start = i + k;
            end = i + k + ch.len_utf8();
        }
        end // the run reaches the end of the text
    }

    fn encode_piece(piece: &str, out: &mut Vec<u32>) {
        out.extend(tiktoken_rs::r50k_base_singleton().encode_ordinary(piece));
    }

    /// Exactly `r50k_base().encode_ordinary(text)`.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        thread_local! {
            static CACHE: RefCell<FxHashMap<Vec<u8>, Vec<u32>>> = RefCell::new(FxHashMap::default());
        }
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let mut i = 0;
            while i < text.len() {
                let end = self.piece_end(text, i);
                let piece = &text[i..end];
                if piece.len() <= CACHE_PIECE_BYTES {
                    if let Some(ids) = cache.get(piece.as_bytes()) {
                        out.extend_from_slice(ids);
                    } else {
                        let start = out.len();
                        Self::encode_piece(piece, &mut out);
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(piece.as_bytes().to_vec(), out[start..].to_vec());
                    }
                } else {
                    Self::encode_piece(piece, &mut out);
                }
                i = end;
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(text: &str) -> Vec<u32> {
        tiktoken_rs::r50k_base_singleton().encode_ordinary(text)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Arbitrary Unicode strings.
        #[test]
        fn equals_tiktoken_on_any_text(text in any::<String>()) {
            prop_assert_eq!(Gpt2Bpe::get().encode_ordinary(&text), reference(&text));
        }

        /// Text made of the characters the pre-tokenizer distinguishes.
        #[test]
        fn equals_tiktoken_on_tricky_text(parts in proptest::collection::vec(
            prop_oneof![
                Just(" "), Just("  "), Just("\n"), Just("\r\n"), Just("\t"), Just("\u{a0}"), Just("\u{3000}"),
                Just("'s"), Just("'S"), Just("'ll"), Just("'ve"), Just("'re"), Just("'d"), Just("'m"), Just("'t"), Just("'x"), Just("'"),
                Just("word"), Just("Über"), Just("日本語"), Just("٣"), Just("Ⅻ"), Just("½"), Just("42"),
                Just("."), Just("?!"), Just("🙂"), Just("\u{301}"), Just("<|endoftext|>"), Just("\u{0}"),
            ],
            0..60,
        )) {
            let text: String = parts.concat();
            prop_assert_eq!(Gpt2Bpe::get().encode_ordinary(&text), reference(&text));
        }
    }

    #[test]
    fn whitespace_runs_follow_the_lookahead_rule() {
        for text in [
            "a  b",
            "a \n b",
            "a\n\nb",
            "  ",
            "a  ",
            " \t x",
            "x\u{a0} y",
            "end \n",
        ] {
            assert_eq!(
                Gpt2Bpe::get().encode_ordinary(text),
                reference(text),
                "{text:?}"
            );
        }
    }
}
