//! Unicode character classes the pre-tokenizers need (`\p{L}`, `\p{N}`, `\p{P}`, `\s`).
//!
//! Own tables rather than a regex engine: the splitters below are hand-written state machines
//! that follow llama.cpp's semantics exactly and run far faster than backtracking regexes.

use super::unicode_data::CATEGORY_RANGES;

/// General-category class of a character, reduced to what pre-tokenizers distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Letter,
    Number,
    Punctuation,
    Mark,
    Symbol,
    Other,
}

pub(crate) fn class(c: char) -> Class {
    let cp = c as u32;
    let found = CATEGORY_RANGES.binary_search_by(|&(lo, hi, _)| {
        if hi < cp {
            std::cmp::Ordering::Less
        } else if lo > cp {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    match found.map(|i| CATEGORY_RANGES[i].2) {
        Ok(1) => Class::Letter,
        Ok(2) => Class::Number,
        Ok(3) => Class::Punctuation,
        Ok(4) => Class::Mark,
        Ok(5) => Class::Symbol,
        _ => Class::Other,
    }
}

/// Per-character flags, computed once per character of the text being split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub letter: bool,
    pub number: bool,
    pub punct: bool,
    pub space: bool,
}

impl Flags {
    pub(crate) fn of(c: char) -> Flags {
        if c.is_ascii() {
            return Flags {
                letter: c.is_ascii_alphabetic(),
                number: c.is_ascii_digit(),
                punct: c.is_ascii_punctuation() && !"$+<=>^`|~".contains(c),
                // White_Space in ASCII: \t \n \v \f \r and space (not 0x1C..0x1F).
                space: matches!(c, '\t' | '\n' | '\x0B' | '\x0C' | '\r' | ' '),
            };
        }
        let k = class(c);
        Flags {
            letter: k == Class::Letter,
            number: k == Class::Number,
            punct: k == Class::Punctuation,
            space: c.is_whitespace(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class('a'), Class::Letter);
        assert_eq!(class('é'), Class::Letter);
        assert_eq!(class('中'), Class::Letter);
        assert_eq!(class('٣'), Class::Number);
        assert_eq!(class('Ⅻ'), Class::Number);
        assert_eq!(class('¿'), Class::Punctuation);
        assert_eq!(class('\u{301}'), Class::Mark);
        assert_eq!(class('🤖'), Class::Symbol);
        assert_eq!(class('\u{E000}'), Class::Other);
        assert!(Flags::of('\u{3000}').space);
        assert!(!Flags::of('\x1C').space);
        assert!(Flags::of('!').punct && !Flags::of('$').punct);
    }
}
