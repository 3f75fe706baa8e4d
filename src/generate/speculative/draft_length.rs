//! How many tokens to draft per verification, adapted to how often drafts are accepted.
//!
//! A verification costs about one target step however many drafts it checks, but every
//! drafted token costs a draft step, and a draft after the first refusal is wasted. So the
//! length grows while whole drafts are accepted and shrinks while most of a draft is refused.

#[derive(Clone, Debug)]
pub struct DraftLength {
    current: usize,
    max: usize,
}

impl DraftLength {
    /// Start at `max` (at least 1): a draft that agrees well pays off from the first token.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        DraftLength { current: max, max }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Record one verification: `accepted` of `drafted` tokens stood.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        if accepted == drafted {
            self.current = (self.current + 1).min(self.max);
        } else if 2 * accepted < drafted {
            self.current = self.current.saturating_sub(1).max(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_on_full_acceptance_shrinks_on_poor_and_stays_in_bounds() {
        let mut k = DraftLength::new(4);
        assert_eq!(k.current(), 4);
        k.update(4, 4);
        assert_eq!(k.current(), 4, "capped at max");
        k.update(4, 1);
        assert_eq!(k.current(), 3);
        k.update(3, 2);
        assert_eq!(k.current(), 3, "a majority accepted: unchanged");
        for _ in 0..10 {
            k.update(k.current(), 0);
        }
        assert_eq!(k.current(), 1, "never below one");
        k.update(1, 1);
        assert_eq!(k.current(), 2);
        k.update(0, 0);
        assert_eq!(k.current(), 2, "nothing drafted: unchanged");
    }
}
