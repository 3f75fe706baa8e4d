//! Streaming stop strings.
//!
//! Text arrives a token at a time, and a stop string can be split over several tokens, so
//! text that might be the start of a stop string is held back until it is decided. The
//! result equals cutting the whole text at the earliest stop string, whatever the pieces.

/// Streaming stop-string matcher: feed decoded text pieces; returns text safe to emit now
/// (holding back any suffix that could start a stop string), and whether a stop string was
/// hit (text before it is emitted, the stop string itself is not).
#[derive(Clone, Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would stop before any text).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been hit; from then on nothing more is emitted.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Add a piece of text. Returns the text that can be emitted now and whether a stop
    /// string was hit.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending.push_str(piece);
        let hit = self.earliest_match();
        let hold = self.earliest_open_prefix();
        match (hit, hold) {
            // A stop string that started earlier may still complete: wait for it.
            (Some(m), Some(h)) if h < m => (self.take_until(h), false),
            (Some(m), _) => {
                let out = self.pending[..m].to_string();
                self.pending.clear();
                self.stopped = true;
                (out, true)
            }
            (None, Some(h)) => (self.take_until(h), false),
            (None, None) => (std::mem::take(&mut self.pending), false),
        }
    }

    /// End of text: release what was held back. A stop string that is complete in the held
    /// text still cuts it.
    pub fn flush(&mut self) -> String {
        if self.stopped {
            self.pending.clear();
            return String::new();
        }
        if let Some(m) = self.earliest_match() {
            self.pending.truncate(m);
            self.stopped = true;
        }
        std::mem::take(&mut self.pending)
    }

    /// Remove and return `pending[..at]`.
    fn take_until(&mut self, at: usize) -> String {
        let rest = self.pending.split_off(at);
        std::mem::replace(&mut self.pending, rest)
    }

    /// Byte offset of the earliest complete stop string in `pending`.
    fn earliest_match(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
    }

    /// Smallest offset whose suffix of `pending` is a proper prefix of some stop string,
    /// i.e. where a stop string may begin but needs more text.
    fn earliest_open_prefix(&self) -> Option<usize> {
        let longest = self.stops.iter().map(|s| s.len()).max()?;
        let from = self.pending.len().saturating_sub(longest - 1);
        self.pending
            .char_indices()
            .map(|(i, _)| i)
            .filter(|&i| i >= from)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_incomplete_stop_wins_over_later_complete_one() {
        // Whole text "abcd": "abcd" starts before "c", so nothing may be emitted.
        let mut m = StopMatcher::new(vec!["abcd".into(), "c".into()]);
        assert_eq!(m.push("abc"), (String::new(), false));
        assert_eq!(m.push("d"), (String::new(), true));

        // Whole text "abcx": "abcd" fails, "c" cuts after "ab".
        let mut m = StopMatcher::new(vec!["abcd".into(), "c".into()]);
        assert_eq!(m.push("abc"), (String::new(), false));
        assert_eq!(m.push("x"), ("ab".to_string(), true));
    }

    #[test]
    fn flush_cuts_at_a_complete_stop_in_held_text() {
        let mut m = StopMatcher::new(vec!["abcd".into(), "c".into()]);
        assert_eq!(m.push("xabc"), ("x".to_string(), false));
        assert_eq!(m.flush(), "ab");
        assert!(m.stopped());
    }

    /// Feed `pieces` one by one, then flush; returns everything emitted and whether a stop
    /// string was hit.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (emit, hit) = m.push(p);
            out.push_str(&emit);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, m.stopped())
    }

    #[test]
    fn stop_split_across_many_pieces() {
        let mut m = StopMatcher::new(vec!["<|im_end|>".into()]);
        assert_eq!(
            m.push("Paris is the capital"),
            ("Paris is the capital".into(), false)
        );
        assert_eq!(m.push(".<"), (".".into(), false));
        for p in ["|", "im", "_", "end"] {
            assert_eq!(m.push(p), (String::new(), false), "piece {p:?}");
        }
        assert_eq!(m.push("|>\nmore"), (String::new(), true));
        assert_eq!(m.push("after"), (String::new(), true));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn partial_match_that_fails_is_released() {
        let mut m = StopMatcher::new(vec!["###".into()]);
        assert_eq!(m.push("a #"), ("a ".into(), false));
        assert_eq!(m.push("#"), (String::new(), false));
        assert_eq!(m.push("!"), ("##!".into(), false));
        // Held text at the end is released by flush.
        assert_eq!(m.push("b##"), ("b".into(), false));
        assert_eq!(m.flush(), "##");
        assert!(!m.stopped());
    }

    #[test]
    fn multiple_stop_strings_earliest_wins() {
        assert_eq!(
            run(&["User:", "\n\n"], &["Hi", "\n", "\nUser:"]),
            ("Hi".into(), true)
        );
        assert_eq!(
            run(&["User:", "\n\n"], &["Hi\nUs", "er: x\n\n"]),
            ("Hi\n".into(), true)
        );
        assert_eq!(
            run(&["User:", "END"], &["no stop here"]),
            ("no stop here".into(), false)
        );
    }

    #[test]
    fn unicode_pieces_and_stops() {
        // Stop made of multi-byte characters, split between pieces at character boundaries.
        assert_eq!(
            run(&["終わり"], &["こんにちは", "終", "わ", "り", "!"]),
            ("こんにちは".into(), true)
        );
        // Shares its first character with the text but diverges: everything is released.
        assert_eq!(
            run(&["éclair"], &["caf", "é", "é", "t"]),
            ("caféét".into(), false)
        );
        let mut m = StopMatcher::new(vec!["🙂🙃".into()]);
        assert_eq!(m.push("ok 🙂"), ("ok ".into(), false));
        assert_eq!(m.push("🙂"), ("🙂".into(), false));
        assert_eq!(m.push("🙃 rest"), (String::new(), true));
    }

    #[test]
    fn no_stops_passes_text_through_and_empty_stop_is_ignored() {
        let mut m = StopMatcher::new(vec![String::new()]);
        assert_eq!(m.push("abc"), ("abc".into(), false));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn any_split_of_the_text_gives_the_same_result() {
        let text = "one <stop two <st<stop>";
        let stops = ["<stop>", "two <s!"];
        // Cutting the whole text at the earliest stop string.
        let expect = ("one <stop two <st".to_string(), true);
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let pieces = [&text[..a], &text[a..b], &text[b..]];
                assert_eq!(run(&stops, &pieces), expect, "split {a} {b}");
            }
        }
    }
}
