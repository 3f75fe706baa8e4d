//! Token sampler: repetition penalty, top-k, top-p, min-p, temperature, seeded draw.
//!
//! The order and the rules follow llama.cpp's default chain so that the same settings mean
//! the same thing here: top-p and min-p see the distribution at temperature 1, and the
//! temperature only shapes the final draw among the survivors.

use std::cmp::Ordering;

use super::rng::Rng;

/// Sampling settings. A value that turns a stage off: `top_k = 0`, `top_p >= 1`,
/// `min_p <= 0`, `repeat_penalty = 1` or `repeat_last_n = 0`; `temperature <= 0` is greedy.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerConfig {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults, with a fixed seed so that runs are reproducible.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplerConfig {
    /// Deterministic argmax decoding (what the golden llama.cpp outputs were made with).
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }
}

/// Picks the next token from logits. Keeps its buffers between calls, so sampling over a
/// 262k vocabulary does not allocate.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    /// Candidates as (token id, logit); starts in id order each call.
    cands: Vec<(u32, f32)>,
    /// Distinct recent tokens for the repetition penalty.
    recent: Vec<u32>,
}

/// Descending logit, ties by ascending id: deterministic, and top-k = 1 agrees with greedy.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// NaN would poison every comparison and sum; treat it as "never pick".
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        Sampler {
            rng: Rng::new(cfg.seed),
            cfg,
            cands: Vec::new(),
            recent: Vec::new(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restart the random stream from the configured seed (a new, independent request).
    pub fn reset(&mut self) {
        self.rng = Rng::new(self.cfg.seed);
    }

    /// Choose the next token. `history` holds the tokens so far (prompt and generated); only
    /// its last `repeat_last_n` entries matter, for the repetition penalty. Empty logits
    /// give token 0.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if logits.is_empty() {
            return 0;
        }
        let penalize = self.cfg.repeat_penalty != 1.0
            && self.cfg.repeat_penalty > 0.0
            && self.cfg.repeat_last_n > 0
            && !history.is_empty();
        if self.cfg.temperature <= 0.0 && !penalize {
            return argmax(logits.iter().map(|&l| clean(l)));
        }

        self.cands.clear();
        self.cands.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, clean(l))),
        );
        if penalize {
            self.apply_repeat_penalty(history);
        }
        if self.cfg.temperature <= 0.0 {
            return self.cands[argmax(self.cands.iter().map(|c| c.1)) as usize].0;
        }

        let k = self.cfg.top_k;
        if k > 0 && k < self.cands.len() {
            self.cands.select_nth_unstable_by(k - 1, by_logit_desc);
            self.cands.truncate(k);
        }
        if self.cfg.top_p < 1.0 {
            self.apply_top_p(self.cfg.top_p);
        }
        if self.cfg.min_p > 0.0 {
            self.apply_min_p(self.cfg.min_p);
        }
        self.draw(self.cfg.temperature)
    }

    /// llama.cpp's rule, once per distinct token in the window: a positive logit is divided
    /// by the penalty, a negative one multiplied, so both move toward "less likely".
    fn apply_repeat_penalty(&mut self, history: &[u32]) {
        let start = history.len().saturating_sub(self.cfg.repeat_last_n);
        self.recent.clear();
        self.recent.extend_from_slice(&history[start..]);
        self.recent.sort_unstable();
        self.recent.dedup();
        let p = self.cfg.repeat_penalty;
        for &t in &self.recent {
            // Still in id order here, so the index is the id.
            if let Some(c) = self.cands.get_mut(t as usize) {
                c.1 = if c.1 <= 0.0 { c.1 * p } else { c.1 / p };
            }
        }
    }

    /// Keep the smallest set of most likely tokens whose probability reaches `p` (the token
    /// that crosses `p` is kept). Without top-k the vocabulary is large, so instead of a full
    /// sort only a growing head is partially selected and sorted.
    fn apply_top_p(&mut self, p: f32) {
        let n = self.cands.len();
        if n <= 1 {
            return;
        }
        let max = self.cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        if max == f32::NEG_INFINITY {
            return;
        }
        let total: f64 = self.cands.iter().map(|c| ((c.1 - max) as f64).exp()).sum();
        let target = p.max(0.0) as f64 * total;
        let mut head = n.min(64);
        loop {
            if head < n {
                self.cands.select_nth_unstable_by(head - 1, by_logit_desc);
            }
            self.cands[..head].sort_unstable_by(by_logit_desc);
            let mut cum = 0.0f64;
            for i in 0..head {
                cum += ((self.cands[i].1 - max) as f64).exp();
                if cum >= target {
                    self.cands.truncate(i + 1);
                    return;
                }
            }
            if head == n {
                return; // rounding: the whole mass fell just short of target
            }
            head = n.min(head * 8);
        }
    }

    /// Drop tokens whose probability is below `min_p` times the top token's.
    fn apply_min_p(&mut self, min_p: f32) {
        let max = self.cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        if max == f32::NEG_INFINITY {
            return;
        }
        // p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p)
        let threshold = max + min_p.ln();
        self.cands.retain(|c| c.1 >= threshold);
    }

    /// Draw from softmax(logit / temperature) over the remaining candidates.
    fn draw(&mut self, temperature: f32) -> u32 {
        let max = self.cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        if max == f32::NEG_INFINITY {
            // Everything is masked: fall back to the lowest surviving id.
            return self.cands.iter().map(|c| c.0).min().unwrap_or(0);
        }
        let inv_t = 1.0 / temperature as f64;
        let weight = |l: f32| (((l - max) as f64) * inv_t).exp();
        let total: f64 = self.cands.iter().map(|c| weight(c.1)).sum();
        let mut u = self.rng.next_f64() * total;
        let mut last = self.cands[0].0;
        for c in &self.cands {
            let w = weight(c.1);
            if w > 0.0 {
                last = c.0;
                if u < w {
                    return c.0;
                }
                u -= w;
            }
        }
        last // only reached through rounding in the running subtraction
    }
}

/// Index of the largest value; ties go to the lowest index.
fn argmax(values: impl Iterator<Item = f32>) -> u32 {
    let mut best = 0u32;
    let mut best_v = f32::NEG_INFINITY;
    for (i, v) in values.enumerate() {
        if v > best_v {
            best = i as u32;
            best_v = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 1,
        }
    }

    #[test]
    fn greedy_ties_go_to_lowest_id_and_nan_is_ignored() {
        let mut s = Sampler::new(SamplerConfig::greedy());
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
        assert_eq!(s.sample(&[f32::NAN, 0.5, 0.1], &[]), 1);
        assert_eq!(s.sample(&[], &[]), 0);
    }

    #[test]
    fn top_p_head_growth_matches_full_sort() {
        // Flat-ish logits over a vocabulary much larger than the first head of 64, so the
        // partial selection has to grow several times.
        let n = 5000;
        let logits: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 * 1e-3).collect();
        let mut s = Sampler::new(cfg(1.0));
        s.cands = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        s.apply_top_p(0.9);
        let kept = s.cands.len();

        let mut sorted = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let max = sorted[0];
        let total: f64 = sorted.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let mut cum = 0.0;
        let mut expect = 0;
        for (i, &l) in sorted.iter().enumerate() {
            cum += ((l - max) as f64).exp();
            if cum >= 0.9 * total {
                expect = i + 1;
                break;
            }
        }
        assert!(
            expect > 64 * 8,
            "test should force at least two growth steps"
        );
        assert_eq!(kept, expect);
        let min_kept = s.cands.iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
        assert_eq!(min_kept, sorted[expect - 1]);
    }

    #[test]
    fn penalty_applies_once_per_distinct_token_within_window() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            repeat_last_n: 3,
            ..cfg(1.0)
        });
        s.cands = vec![(0, 4.0), (1, -1.0), (2, 4.0), (3, 1.0)];
        // Token 2 is outside the last 3; token 0 repeats but is penalised once.
        s.apply_repeat_penalty(&[2, 0, 1, 0]);
        assert_eq!(s.cands, vec![(0, 2.0), (1, -2.0), (2, 4.0), (3, 1.0)]);
    }
}
