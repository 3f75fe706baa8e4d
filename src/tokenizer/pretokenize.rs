//! Pre-tokenizers for byte-level BPE: split text into words before merging, as selected by
//! `tokenizer.ggml.pre`.
//!
//! Each pre-tokenizer is a pipeline of stages, as in llama.cpp: every stage splits each piece
//! produced by the previous one, keeping the text between its matches as pieces too. The GPT-2
//! and Llama-3 stages are hand-written matchers with the exact semantics of their regexes:
//!
//! * GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! * Llama-3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//!   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+` (Qwen2 is the same with `\p{N}`).

use super::error::TokenizerError;
use super::unicode::Flags;

/// One splitting stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// `\p{N}`: every number character on its own.
    EachDigit,
    /// `\p{N}+`.
    DigitRuns,
    /// `[0-9][0-9][0-9]`.
    AsciiDigitTriples,
    /// `[\p{P}\$\+<=>\^~\|]+`.
    PunctRuns,
    Gpt2,
    /// The Llama-3 pattern; the number decides how many digits a number group may hold.
    Llama3 {
        max_digits: usize,
    },
}

/// A pre-tokenizer: the stages applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PreTokenizer {
    stages: Vec<Stage>,
}

/// What a pre-tokenizer name implies besides the split (llama.cpp's per-type defaults).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PreDefaults {
    /// Use a whole word's token when the word is in the vocabulary, skipping merges.
    pub ignore_merges: bool,
    pub add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None` means "default").
    pub(crate) fn from_name(
        name: Option<&str>,
    ) -> Result<(PreTokenizer, PreDefaults), TokenizerError> {
        use Stage::*;
        let mut defaults = PreDefaults::default();
        let stages = match name.unwrap_or("default") {
            "default" => vec![PunctRuns, Gpt2, DigitRuns, AsciiDigitTriples],
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => {
                defaults.ignore_merges = true;
                defaults.add_bos = true;
                vec![Llama3 { max_digits: 3 }]
            }
            "dbrx" | "smaug-bpe" | "chatglm-bpe" => vec![Llama3 { max_digits: 3 }],
            "qwen2" | "megrez" | "stablelm2" => vec![Llama3 { max_digits: 1 }],
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => vec![EachDigit, Gpt2],
            "gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "roberta-bpe" | "jina-es"
            | "jina-de" | "jina-v1-en" | "jina-v2-es" | "jina-v2-de" | "jina-v2-code"
            | "gigachat" | "exaone4" => vec![Gpt2],
            other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
        };
        Ok((PreTokenizer { stages }, defaults))
    }

    /// Split `text` into words, appended to `out` as byte ranges of `text`.
    pub(crate) fn split(&self, text: &str, out: &mut Vec<std::ops::Range<usize>>) {
        if text.is_empty() {
            return;
        }
        let chars: Vec<char> = text.chars().collect();
        let flags: Vec<Flags> = chars.iter().map(|&c| Flags::of(c)).collect();
        // Pieces are char-index ranges until the end.
        let mut pieces = vec![(0usize, chars.len())];
        let mut next = Vec::new();
        for stage in &self.stages {
            next.clear();
            let text = Text {
                chars: &chars,
                flags: &flags,
            };
            for &(ini, end) in &pieces {
                let mut cuts = Cuts {
                    prev: ini,
                    out: &mut next,
                };
                match *stage {
                    Stage::EachDigit => runs(&text, ini, end, &mut cuts, |f, _| f.number, 1),
                    Stage::DigitRuns => runs(&text, ini, end, &mut cuts, |f, _| f.number, 0),
                    Stage::AsciiDigitTriples => {
                        runs(&text, ini, end, &mut cuts, |_, c| c.is_ascii_digit(), 3)
                    }
                    Stage::PunctRuns => runs(
                        &text,
                        ini,
                        end,
                        &mut cuts,
                        |f, c| f.punct || "$+<=>^~|".contains(c),
                        0,
                    ),
                    Stage::Gpt2 => gpt2(&text, ini, end, &mut cuts),
                    Stage::Llama3 { max_digits } => llama3(&text, ini, end, max_digits, &mut cuts),
                }
                cuts.cut(end);
            }
            std::mem::swap(&mut pieces, &mut next);
        }
        // Char indices to byte offsets.
        let mut byte_at = Vec::with_capacity(chars.len() + 1);
        let mut b = 0;
        for &c in &chars {
            byte_at.push(b);
            b += c.len_utf8();
        }
        byte_at.push(b);
        out.extend(pieces.iter().map(|&(s, e)| byte_at[s]..byte_at[e]));
    }
}

struct Text<'a> {
    chars: &'a [char],
    flags: &'a [Flags],
}

/// Collects the pieces of one input piece: each cut ends the current piece.
struct Cuts<'a> {
    prev: usize,
    out: &'a mut Vec<(usize, usize)>,
}

impl Cuts<'_> {
    fn cut(&mut self, end: usize) {
        if end > self.prev {
            self.out.push((self.prev, end));
        }
        self.prev = end;
    }
}

/// Runs of characters matching `pred` become pieces, cut into chunks of exactly `chunk`
/// characters (0 = unlimited); as with a regex like `[0-9]{3}`, a short tail stays unmatched.
fn runs(
    t: &Text,
    ini: usize,
    end: usize,
    cuts: &mut Cuts,
    pred: impl Fn(Flags, char) -> bool,
    chunk: usize,
) {
    let mut pos = ini;
    while pos < end {
        if !pred(t.flags[pos], t.chars[pos]) {
            pos += 1;
            continue;
        }
        let mut stop = pos;
        while stop < end && pred(t.flags[stop], t.chars[stop]) {
            stop += 1;
        }
        if chunk == 0 {
            cuts.cut(pos);
            cuts.cut(stop);
        } else {
            let mut s = pos;
            while s < stop {
                let e = (s + chunk).min(stop);
                if e - s < chunk {
                    break;
                }
                cuts.cut(s);
                cuts.cut(e);
                s = e;
            }
        }
        pos = stop;
    }
}

/// Flags at `pos`, or `None` outside the piece (lookahead never crosses a piece boundary).
#[inline]
fn at(t: &Text, pos: usize, end: usize) -> Option<Flags> {
    (pos < end).then(|| t.flags[pos])
}

fn is_word_other(f: Option<Flags>) -> bool {
    matches!(f, Some(f) if !(f.space || f.letter || f.number))
}

/// Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) starting at `pos`.
fn contraction(t: &Text, pos: usize, end: usize, fold_case: bool) -> Option<usize> {
    if t.chars[pos] != '\'' || pos + 1 >= end {
        return None;
    }
    let lower = |c: char| if fold_case { c.to_ascii_lowercase() } else { c };
    let c1 = lower(t.chars[pos + 1]);
    if matches!(c1, 's' | 't' | 'm' | 'd') {
        return Some(2);
    }
    if pos + 2 < end {
        let c2 = lower(t.chars[pos + 2]);
        if matches!((c1, c2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return Some(3);
        }
    }
    None
}

fn gpt2(t: &Text, ini: usize, end: usize, cuts: &mut Cuts) {
    let mut pos = ini;
    while pos < end {
        if let Some(n) = contraction(t, pos, end, false) {
            pos += n;
            cuts.cut(pos);
            continue;
        }
        let c = t.chars[pos];
        let lead = usize::from(c == ' ');
        let f2 = if c == ' ' {
            at(t, pos + 1, end)
        } else {
            Some(t.flags[pos])
        };
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
        let class: Option<fn(Option<Flags>) -> bool> = match f2 {
            Some(f) if f.letter => Some(|f| matches!(f, Some(f) if f.letter)),
            Some(f) if f.number => Some(|f| matches!(f, Some(f) if f.number)),
            f if is_word_other(f) => Some(is_word_other),
            _ => None,
        };
        if let Some(class) = class {
            pos += lead;
            while class(at(t, pos, end)) {
                pos += 1;
            }
            cuts.cut(pos);
            continue;
        }
        pos = whitespace(t, pos, end, false, cuts);
    }
}

fn llama3(t: &Text, ini: usize, end: usize, max_digits: usize, cuts: &mut Cuts) {
    let mut pos = ini;
    while pos < end {
        if let Some(n) = contraction(t, pos, end, true) {
            pos += n;
            cuts.cut(pos);
            continue;
        }
        let c = t.chars[pos];
        let f = t.flags[pos];
        let letter = |p| matches!(at(t, p, end), Some(f) if f.letter);
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(c == '\r' || c == '\n' || f.number) && (f.letter || letter(pos + 1)) {
            pos += 1;
            while letter(pos) {
                pos += 1;
            }
            cuts.cut(pos);
            continue;
        }
        // `\p{N}{1,max}`
        if f.number {
            let mut group = pos;
            while matches!(at(t, pos, end), Some(f) if f.number) {
                pos += 1;
                if pos - group >= max_digits {
                    cuts.cut(pos);
                    group = pos;
                }
            }
            cuts.cut(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let f2 = if c == ' ' {
            at(t, pos + 1, end)
        } else {
            Some(f)
        };
        if !matches!(f2, Some(f) if f.space || f.letter || f.number) {
            pos += usize::from(c == ' ');
            while is_word_other(at(t, pos, end)) {
                pos += 1;
            }
            while pos < end && matches!(t.chars[pos], '\r' | '\n') {
                pos += 1;
            }
            cuts.cut(pos);
            continue;
        }
        pos = whitespace(t, pos, end, true, cuts);
    }
}

/// The whitespace alternatives shared by both patterns: `\s*[\r\n]+` (Llama-3 only),
/// `\s+(?!\S)` and `\s+`; a character matching nothing becomes a piece of its own.
fn whitespace(t: &Text, pos: usize, end: usize, newlines: bool, cuts: &mut Cuts) -> usize {
    let mut n = 0;
    let mut last_newline = None;
    while matches!(at(t, pos + n, end), Some(f) if f.space) {
        if newlines && matches!(t.chars[pos + n], '\r' | '\n') {
            last_newline = Some(pos + n + 1);
        }
        n += 1;
    }
    let stop = if let Some(nl) = last_newline {
        nl
    } else if n > 1 && pos + n < end {
        pos + n - 1
    } else if n > 0 {
        pos + n
    } else {
        pos + 1
    };
    cuts.cut(stop);
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let (p, _) = PreTokenizer::from_name(Some(pre)).unwrap();
        let mut out = Vec::new();
        p.split(text, &mut out);
        out.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn gpt2_words() {
        assert_eq!(
            words("gpt2", "Hello world's  end!!  \n"),
            ["Hello", " world", "'s", " ", " end", "!!", "  \n"]
        );
        assert_eq!(words("gpt2", "a 123 b"), ["a", " 123", " b"]);
    }

    #[test]
    fn smollm_splits_digits() {
        assert_eq!(words("smollm", "x 12,3"), ["x", " ", "1", "2", ",", "3"]);
    }

    #[test]
    fn llama3_groups_digits_and_newlines() {
        assert_eq!(
            words("llama3", "I'M 12345\n\n  ok"),
            ["I", "'M", " ", "123", "45", "\n\n", " ", " ok"]
        );
        assert_eq!(words("qwen2", "a 12"), ["a", " ", "1", "2"]);
        assert_eq!(words("qwen2", "\ttabs\nx"), ["\ttabs", "\n", "x"]);
        assert_eq!(words("qwen2", " 🤖!\n"), [" 🤖!\n"]);
    }

    #[test]
    fn default_pipeline() {
        assert_eq!(words("default", "x=12345;"), ["x", "=", "123", "45", ";"]);
    }

    #[test]
    fn unknown_pre_is_an_error() {
        assert!(PreTokenizer::from_name(Some("nope")).is_err());
    }

    /// Pieces of a regex split: every match plus the gaps between matches.
    fn regex_pieces(re: &fancy_regex::Regex, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut pos = 0;
        for m in re.find_iter(text) {
            let m = m.unwrap();
            if m.start() > pos {
                out.push(text[pos..m.start()].to_string());
            }
            out.push(m.as_str().to_string());
            pos = m.end();
        }
        if pos < text.len() {
            out.push(text[pos..].to_string());
        }
        out
    }

    /// Deterministic pseudo-random strings over characters that exercise every branch.
    fn samples() -> Vec<String> {
        let alphabet: Vec<char> = "aZé\u{301}中ß 10271٣Ⅻ.,!'sStTdDmMlLrReEvV\t\n\r\u{a0}\u{3000}\u{2028}🤖$+<|_-\u{1c}\u{e000}"
            .chars()
            .collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..3000)
            .map(|_| {
                let len = (next() % 14) as usize;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// The hand-written matchers agree with the regexes they implement (Rust's regex engine
    /// has its own Unicode tables, so this also cross-checks ours).
    #[test]
    fn matchers_agree_with_regexes() {
        let gpt2 = fancy_regex::Regex::new(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        )
        .unwrap();
        let llama3 = |digits: &str| {
            fancy_regex::Regex::new(&format!(
                r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{{L}}\p{{N}}]?\p{{L}}+|\p{{N}}{digits}| ?[^\s\p{{L}}\p{{N}}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
            ))
            .unwrap()
        };
        let re = |r: &str| fancy_regex::Regex::new(r).unwrap();
        // Pipelines: each regex splits the pieces of the previous one.
        let cases = [
            ("gpt2", vec![gpt2.clone()]),
            ("llama3", vec![llama3("{1,3}")]),
            ("qwen2", vec![llama3("")]),
            ("smollm", vec![re(r"\p{N}"), gpt2.clone()]),
            (
                "default",
                vec![
                    re(r"[\p{P}\$\+<=>\^~\|]+"),
                    gpt2,
                    re(r"\p{N}+"),
                    re(r"[0-9][0-9][0-9]"),
                ],
            ),
        ];
        for text in samples() {
            for (name, stages) in &cases {
                let mut want = vec![text.clone()];
                for stage in stages {
                    want = want.iter().flat_map(|p| regex_pieces(stage, p)).collect();
                }
                assert_eq!(words(name, &text), want, "{name}: {text:?}");
            }
        }
    }
}
