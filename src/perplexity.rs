//! Perplexity over non-overlapping windows, and agreement with a reference run (the dense
//! model) on the same text: the quality side of every sparsity figure.

use serde::Serialize;

/// Running totals over scored positions. Every position of a window except its first is
/// scored (the first has no context inside the window).
#[derive(Default)]
pub struct Scorer {
    nll: f64,
    ref_nll: f64,
    scored: usize,
    windows: usize,
    agree: usize,
    kl: f64,
    compared: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub windows: usize,
    pub tokens_scored: usize,
    pub perplexity: f64,
    /// Set when a reference run was compared.
    pub reference: Option<Comparison>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub reference_perplexity: f64,
    /// Relative perplexity rise over the reference (0.05 = 5%).
    pub perplexity_rise: f64,
    /// Fraction of positions where both runs have the same argmax.
    pub top1_agreement: f64,
    /// Mean KL(reference ‖ this run) in nats per position.
    pub mean_kl: f64,
}

/// `log Σ exp(x)` and the log-probabilities of `row`, numerically stable.
fn log_softmax(row: &[f32], out: &mut Vec<f64>) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let lse = max
        + row
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    out.clear();
    out.extend(row.iter().map(|&v| v as f64 - lse));
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

impl Scorer {
    /// Add one window: `logits` has a row of `vocab` values per token of `tokens`; row i
    /// predicts token i+1. `reference` (same shape) is the run to compare against.
    pub fn add_window(&mut self, tokens: &[u32], logits: &[f32], reference: Option<&[f32]>) {
        let vocab = logits.len() / tokens.len().max(1);
        assert_eq!(vocab * tokens.len(), logits.len(), "logits shape");
        let mut lp = Vec::new();
        let mut lq = Vec::new();
        for i in 0..tokens.len().saturating_sub(1) {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let target = tokens[i + 1] as usize;
            log_softmax(row, &mut lp);
            self.nll -= lp[target];
            self.scored += 1;
            if let Some(r) = reference {
                let rrow = &r[i * vocab..(i + 1) * vocab];
                log_softmax(rrow, &mut lq);
                self.ref_nll -= lq[target];
                self.agree += usize::from(argmax(row) == argmax(rrow));
                self.kl += lq
                    .iter()
                    .zip(&lp)
                    .map(|(&q, &p)| q.exp() * (q - p))
                    .sum::<f64>();
                self.compared += 1;
            }
        }
        self.windows += 1;
    }

    pub fn report(&self) -> Report {
        let n = self.scored.max(1) as f64;
        let ppl = (self.nll / n).exp();
        let reference = (self.compared > 0).then(|| {
            let c = self.compared as f64;
            let rppl = (self.ref_nll / c).exp();
            Comparison {
                reference_perplexity: rppl,
                perplexity_rise: ppl / rppl - 1.0,
                top1_agreement: self.agree as f64 / c,
                mean_kl: self.kl / c,
            }
        });
        Report {
            windows: self.windows,
            tokens_scored: self.scored,
            perplexity: ppl,
            reference,
        }
    }
}

/// Split a token stream into non-overlapping windows of `ctx` tokens (the last may be
/// shorter; windows of fewer than two tokens score nothing and are dropped).
pub fn windows(tokens: &[u32], ctx: usize) -> impl Iterator<Item = &[u32]> {
    tokens.chunks(ctx.max(2)).filter(|w| w.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform logits over V tokens give perplexity V; identical runs agree fully, KL 0.
    #[test]
    fn uniform_and_identical() {
        let v = 7;
        let tokens = [1u32, 3, 5, 2];
        let logits = vec![0.25f32; v * tokens.len()];
        let mut s = Scorer::default();
        s.add_window(&tokens, &logits, Some(&logits));
        let r = s.report();
        assert!((r.perplexity - v as f64).abs() < 1e-9);
        assert_eq!(r.tokens_scored, 3);
        let c = r.reference.unwrap();
        assert_eq!(c.top1_agreement, 1.0);
        assert!(c.mean_kl.abs() < 1e-12);
        assert!(c.perplexity_rise.abs() < 1e-12);
    }

    /// Against a hand computation on two-token vocabularies.
    #[test]
    fn matches_hand_computation() {
        // Row 0 predicts token 1 with logits [0, ln 3] -> p(1) = 3/4.
        let tokens = [0u32, 1];
        let logits = [0.0f32, 3f32.ln(), 9.0, 9.0];
        let reference = [0.0f32, 0.0, 0.0, 0.0];
        let mut s = Scorer::default();
        s.add_window(&tokens, &logits, Some(&reference));
        let r = s.report();
        assert!((r.perplexity - 4.0 / 3.0).abs() < 1e-6);
        let c = r.reference.unwrap();
        assert!((c.reference_perplexity - 2.0).abs() < 1e-6);
        // argmax: run 1, reference 0 (ties go to the first).
        assert_eq!(c.top1_agreement, 0.0);
        // KL(q‖p) with q = (1/2, 1/2), p = (1/4, 3/4).
        let want = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((c.mean_kl - want).abs() < 1e-6);
    }

    #[test]
    fn windows_do_not_overlap() {
        let t: Vec<u32> = (0..10).collect();
        let w: Vec<&[u32]> = windows(&t, 4).collect();
        assert_eq!(w, vec![&t[0..4], &t[4..8], &t[8..10]]);
        let w: Vec<&[u32]> = windows(&t[..9], 4).collect();
        assert_eq!(w.len(), 2, "a one-token tail scores nothing");
    }
}
