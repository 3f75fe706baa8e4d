//! The synthetic model's tokenizer: a SentencePiece-style (`tokenizer.ggml.model = "llama"`)
//! vocabulary of control tokens, 256 byte-fallback tokens, single characters, and pieces
//! merged by a small byte-pair training run over [`SAMPLE_TEXT`], padded to the requested size
//! with unused tokens. Any text round-trips through it (unknown characters fall back to
//! bytes); English text gets realistic multi-character pieces.

use std::collections::HashMap;

use super::corpus::SAMPLE_TEXT;
use crate::tokenizer::token_type;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// Ids of the control tokens, as in llama's own vocabulary.
pub const UNK_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;

pub struct Vocab {
    pub pieces: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

/// Tokens every vocabulary has before the learned pieces: control tokens, bytes, characters.
fn base_pieces() -> Vocab {
    let mut v = Vocab {
        pieces: Vec::new(),
        scores: Vec::new(),
        types: Vec::new(),
    };
    let push = |v: &mut Vocab, p: String, score: f32, ty: u8| {
        v.pieces.push(p);
        v.scores.push(score);
        v.types.push(i32::from(ty));
    };
    push(&mut v, "<unk>".into(), 0.0, token_type::UNKNOWN);
    push(&mut v, "<s>".into(), 0.0, token_type::CONTROL);
    push(&mut v, "</s>".into(), 0.0, token_type::CONTROL);
    for b in 0..=255u8 {
        push(&mut v, format!("<0x{b:02X}>"), 0.0, token_type::BYTE);
    }
    let mut chars: Vec<char> = (' '..='~').filter(|&c| c != ' ').collect();
    chars.push(SPACE);
    for c in SAMPLE_TEXT.chars() {
        if !c.is_whitespace() && !chars.contains(&c) {
            chars.push(c);
        }
    }
    for c in chars {
        push(&mut v, c.to_string(), -1e6, token_type::NORMAL);
    }
    v
}

/// Merged pieces, most frequent pair first, learned from `text` split into `▁`-prefixed words.
fn learn_merges(text: &str, max: usize) -> Vec<String> {
    let mut words: HashMap<String, usize> = HashMap::new();
    for w in text.split_whitespace() {
        *words.entry(format!("{SPACE}{w}")).or_default() += 1;
    }
    // Sorted so that ties are broken the same way on every run.
    let mut words: Vec<(Vec<String>, usize)> = {
        let mut ws: Vec<_> = words.into_iter().collect();
        ws.sort();
        ws.into_iter()
            .map(|(w, n)| (w.chars().map(String::from).collect(), n))
            .collect()
    };
    let mut merges = Vec::new();
    while merges.len() < max {
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (syms, n) in &words {
            for pair in syms.windows(2) {
                *counts.entry((&pair[0], &pair[1])).or_default() += n;
            }
        }
        let best = counts
            .into_iter()
            .filter(|&(_, n)| n >= 2)
            .max_by(|(a, na), (b, nb)| na.cmp(nb).then_with(|| b.cmp(a)));
        let Some(((l, r), _)) = best else { break };
        let (l, r) = (l.to_string(), r.to_string());
        let merged = format!("{l}{r}");
        for (syms, _) in &mut words {
            let mut i = 0;
            while i + 1 < syms.len() {
                if syms[i] == l && syms[i + 1] == r {
                    syms[i] = merged.clone();
                    syms.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(merged);
    }
    merges
}

/// Smallest vocabulary size [`build`] accepts: the base pieces without any merges.
pub fn min_size() -> usize {
    base_pieces().pieces.len()
}

/// A vocabulary of exactly `size` tokens (at least [`min_size`]).
pub fn build(size: usize) -> Vocab {
    let mut v = base_pieces();
    let room = size.saturating_sub(v.pieces.len());
    for (i, m) in learn_merges(SAMPLE_TEXT, room).into_iter().enumerate() {
        if v.pieces.contains(&m) {
            continue;
        }
        v.pieces.push(m);
        // Earlier merges win: SentencePiece merges the highest-scoring pair first.
        v.scores.push(-(i as f32));
        v.types.push(i32::from(token_type::NORMAL));
    }
    let mut n = 0;
    while v.pieces.len() < size {
        v.pieces.push(format!("<unused{n}>"));
        v.scores.push(-1e9);
        v.types.push(i32::from(token_type::UNUSED));
        n += 1;
    }
    v.pieces.truncate(size);
    v.scores.truncate(size);
    v.types.truncate(size);
    v
}
