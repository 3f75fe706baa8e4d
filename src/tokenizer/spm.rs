//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`), as llama.cpp runs it: start from
//! UTF-8 characters and repeatedly merge the adjacent pair whose concatenation is the
//! highest-scoring vocabulary piece (leftmost on ties); characters left outside the vocabulary
//! fall back to `<0xNN>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

struct Sym {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// Encode `text` (spaces already replaced by `▁`). `lookup` finds mergeable pieces with their
/// scores; `byte_token` gives the fallback token of a byte.
pub(crate) fn encode(
    text: &str,
    lookup: impl Fn(&str) -> Option<(u32, f32)>,
    byte_token: impl Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
) {
    let mut syms: Vec<Sym> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        syms.push(Sym {
            start,
            len: c.len_utf8(),
            prev: i.wrapping_sub(1),
            next: i + 1,
        });
    }
    let n = syms.len();
    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Bigram>, syms: &[Sym], l: usize, r: usize| {
        if l >= n || r >= n {
            return;
        }
        let start = syms[l].start;
        let size = syms[l].len + syms[r].len;
        if let Some((_, score)) = lookup(&text[start..start + size]) {
            heap.push(Bigram {
                score,
                left: l,
                right: r,
                size,
            });
        }
    };
    for i in 1..n {
        try_add(&mut heap, &syms, i - 1, i);
    }
    while let Some(bg) = heap.pop() {
        let (l, r) = (bg.left, bg.right);
        if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != bg.size {
            continue;
        }
        syms[l].len += syms[r].len;
        syms[r].len = 0;
        let after = syms[r].next;
        syms[l].next = after;
        if after < n {
            syms[after].prev = l;
        }
        let before = syms[l].prev;
        try_add(&mut heap, &syms, before, l);
        try_add(&mut heap, &syms, l, after);
    }
    let mut i = 0;
    while i < n {
        let s = &syms[i];
        let piece = &text[s.start..s.start + s.len];
        match lookup(piece) {
            Some((id, _)) => out.push(id),
            None => out.extend(piece.bytes().filter_map(&byte_token)),
        }
        i = s.next;
    }
}
