//! Splitting special tokens (control, user-defined, unknown) out of text before the
//! tokenizer proper sees it.
//!
//! llama.cpp takes the special tokens longest first and, for each, cuts every occurrence out of
//! the text that is still unsplit, leftmost first. The same result comes from finding every
//! occurrence once with a trie, then accepting occurrences in that priority order unless they
//! overlap one already accepted, which is much faster with thousands of special tokens.

use std::collections::BTreeMap;

/// A piece of input: plain text to tokenize, or a special token already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[derive(Default)]
struct Node {
    children: Vec<(u8, u32)>,
    /// `(id, parse_only)`: parse-only tokens (control, unknown) split only when asked to.
    token: Option<(u32, bool)>,
}

/// A byte trie over the special tokens' texts.
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
}

impl SpecialMatcher {
    /// `tokens`: `(id, text, parse_only)`; empty texts are ignored.
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = (u32, &'a str, bool)>) -> Self {
        let mut nodes = vec![Node::default()];
        for (id, text, parse_only) in tokens {
            if text.is_empty() {
                continue;
            }
            let mut n = 0usize;
            for &b in text.as_bytes() {
                n = match nodes[n].children.binary_search_by_key(&b, |&(k, _)| k) {
                    Ok(i) => nodes[n].children[i].1 as usize,
                    Err(i) => {
                        let new = nodes.len();
                        nodes[n].children.insert(i, (b, new as u32));
                        nodes.push(Node::default());
                        new
                    }
                };
            }
            // The first id wins for duplicate texts.
            nodes[n].token.get_or_insert((id, parse_only));
        }
        SpecialMatcher { nodes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// Split `text` into fragments. Without `parse_special` only user-defined tokens split.
    pub(crate) fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        if self.is_empty() {
            return vec![Fragment::Text(text)];
        }
        let bytes = text.as_bytes();
        // Every occurrence: (len, id, start).
        let mut found: Vec<(usize, u32, usize)> = Vec::new();
        for start in 0..bytes.len() {
            let mut n = 0usize;
            for (i, &b) in bytes[start..].iter().enumerate() {
                match self.nodes[n].children.binary_search_by_key(&b, |&(k, _)| k) {
                    Ok(c) => n = self.nodes[n].children[c].1 as usize,
                    Err(_) => break,
                }
                if let Some((id, parse_only)) = self.nodes[n].token {
                    if parse_special || !parse_only {
                        found.push((i + 1, id, start));
                    }
                }
            }
        }
        // Longest token first, ties by id, then leftmost.
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut taken: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        for (len, id, start) in found {
            let end = start + len;
            let clash_before = taken
                .range(..end)
                .next_back()
                .is_some_and(|(&s, &(e, _))| s < end && e > start);
            if !clash_before {
                taken.insert(start, (end, id));
            }
        }
        let mut out = Vec::with_capacity(taken.len() * 2 + 1);
        let mut pos = 0;
        for (start, (end, id)) in taken {
            if start > pos {
                out.push(Fragment::Text(&text[pos..start]));
            }
            out.push(Fragment::Token(id));
            pos = end;
        }
        if pos < text.len() {
            out.push(Fragment::Text(&text[pos..]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> SpecialMatcher {
        SpecialMatcher::new([
            (1, "<s>", true),
            (2, "<s>x", true),
            (3, "  ", false),
            (4, "   ", false),
        ])
    }

    #[test]
    fn longest_first_and_user_defined_always() {
        use Fragment::*;
        assert_eq!(
            m().partition("a<s>x<s>b", true),
            [Text("a"), Token(2), Token(1), Text("b")]
        );
        assert_eq!(m().partition("a<s>b", false), [Text("a<s>b")]);
        // Five spaces: the 3-space token first (leftmost), then the 2-space one.
        assert_eq!(
            m().partition("x     y", false),
            [Text("x"), Token(4), Token(3), Text("y")]
        );
        assert_eq!(m().partition("", true), []);
    }

    /// llama.cpp's procedure, written naively: for each token (longest first, then by id), cut
    /// every leftmost occurrence out of each remaining text fragment.
    fn reference<'a>(tokens: &[(u32, &str)], text: &'a str) -> Vec<Fragment<'a>> {
        let mut order: Vec<&(u32, &str)> = tokens.iter().collect();
        order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut frags = vec![Fragment::Text(text)];
        for &&(id, tok) in &order {
            let mut next = Vec::new();
            for f in frags {
                let Fragment::Text(mut t) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(i) = t.find(tok) {
                    if i > 0 {
                        next.push(Fragment::Text(&t[..i]));
                    }
                    next.push(Fragment::Token(id));
                    t = &t[i + tok.len()..];
                }
                if !t.is_empty() {
                    next.push(Fragment::Text(t));
                }
            }
            frags = next;
        }
        frags
    }

    #[test]
    fn agrees_with_fragment_splitting() {
        let tokens = [
            (7, "ab"),
            (3, "ba"),
            (5, "aba"),
            (9, "b"),
            (4, "bab"),
            (2, "aa"),
        ];
        let m = SpecialMatcher::new(tokens.iter().map(|&(id, t)| (id, t, false)));
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let text: String = (0..len)
                .map(|i| ['a', 'b', 'c'][((state >> (5 + 2 * i)) % 3) as usize])
                .collect();
            assert_eq!(
                m.partition(&text, true),
                reference(&tokens, &text),
                "{text:?}"
            );
        }
    }
}
