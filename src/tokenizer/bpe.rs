//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): merges ranked by their order in
//! `tokenizer.ggml.merges`, applied lowest rank first (leftmost on ties) within one word.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::byte_level::BYTE_TO_CHAR;
use super::fast_hash::FastMap;

type PairMap = FastMap<u64, (u32, u32)>;

fn key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

const NONE: u32 = u32::MAX;

/// The merge table and byte alphabet of a byte-level BPE vocabulary.
pub(crate) struct Bpe {
    /// `(left id, right id)` → `(rank, merged id)`.
    merges: PairMap,
    /// Token id of each single byte's spelling (`NONE` when the vocabulary lacks it).
    byte_ids: [u32; 256],
    /// llama3-style: a word that is itself a token skips merging.
    ignore_merges: bool,
}

impl Bpe {
    /// `merges`: the `"left right"` strings in rank order. Merges whose parts or result are not
    /// in the vocabulary can never fire from byte symbols and are dropped.
    pub(crate) fn new<'a>(
        merges: impl Iterator<Item = &'a str>,
        lookup: impl Fn(&str) -> Option<u32>,
        ignore_merges: bool,
    ) -> Bpe {
        let mut table = PairMap::default();
        let mut joined = String::new();
        for (rank, m) in merges.enumerate() {
            // The separator is the first space after the first character (a part may be " ").
            let first = m.chars().next().map_or(0, char::len_utf8);
            let Some(split) = m[first..].find(' ').map(|i| i + first) else {
                continue;
            };
            let (l, r) = (&m[..split], &m[split + 1..]);
            joined.clear();
            joined.push_str(l);
            joined.push_str(r);
            if let (Some(a), Some(b), Some(ab)) = (lookup(l), lookup(r), lookup(&joined)) {
                table.entry(key(a, b)).or_insert((rank as u32, ab));
            }
        }
        let mut byte_ids = [NONE; 256];
        let mut buf = [0u8; 4];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = lookup(BYTE_TO_CHAR[b].encode_utf8(&mut buf)).unwrap_or(NONE);
        }
        Bpe {
            merges: table,
            byte_ids,
            ignore_merges,
        }
    }

    /// Token ids for one pre-tokenized word, appended to `out`.
    pub(crate) fn encode_word(
        &self,
        word: &[u8],
        lookup: impl Fn(&str) -> Option<u32>,
        out: &mut Vec<u32>,
    ) {
        if self.ignore_merges && word.len() > 1 {
            let spelled: String = word.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect();
            if let Some(id) = lookup(&spelled) {
                out.push(id);
                return;
            }
        }
        if word.len() == 1 {
            if self.byte_ids[word[0] as usize] != NONE {
                out.push(self.byte_ids[word[0] as usize]);
            }
            return;
        }
        struct Sym {
            id: u32,
            prev: usize,
            next: usize,
        }
        let n = word.len();
        let mut syms: Vec<Sym> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Sym {
                id: self.byte_ids[b as usize],
                prev: i.wrapping_sub(1),
                next: i + 1,
            })
            .collect();
        // (rank, left index, right index, left id, right id, merged id), smallest first.
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<_>, syms: &[Sym], l: usize, r: usize| {
            if l >= n || r >= n {
                return;
            }
            let (a, b) = (syms[l].id, syms[r].id);
            if a == NONE || b == NONE {
                return;
            }
            if let Some(&(rank, ab)) = self.merges.get(&key(a, b)) {
                heap.push(Reverse((rank, l, r, a, b, ab)));
            }
        };
        for i in 1..n {
            push(&mut heap, &syms, i - 1, i);
        }
        while let Some(Reverse((_, l, r, a, b, ab))) = heap.pop() {
            // Stale when either side has merged since (dead symbols get id NONE).
            if syms[l].id != a || syms[r].id != b || syms[l].next != r {
                continue;
            }
            syms[l].id = ab;
            syms[r].id = NONE;
            let after = syms[r].next;
            syms[l].next = after;
            if after < n {
                syms[after].prev = l;
            }
            let before = syms[l].prev;
            push(&mut heap, &syms, before, l);
            push(&mut heap, &syms, l, after);
        }
        let mut i = 0;
        while i < n {
            if syms[i].id != NONE {
                out.push(syms[i].id);
            }
            i = syms[i].next;
        }
    }
}
