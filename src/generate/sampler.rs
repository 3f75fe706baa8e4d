//! Token sampler: repetition penalty, top-k, top-p, min-p, temperature, seeded draw.
//!
//! The order and the rules follow llama.cpp's default chain so that the same settings mean
//! the same thing here: top-p and min-p see the distribution at temperature 1, and the
//! temperature only shapes the final draw among the survivors.

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
    /// Surviving candidates as packed sort keys (see [`pack`]): plain integer compares keep
    /// selection and sorting over the whole vocabulary cheap.
    cands: Vec<u64>,
    /// Logits after the repetition penalty (only used when the penalty is on).
    penalized: Vec<f32>,
    /// Distinct recent tokens for the repetition penalty.
    recent: Vec<u32>,
}

impl std::fmt::Debug for Sampler {
    /// The buffers are vocabulary-sized scratch space; only the settings are worth showing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Pack (id, logit) into one integer that sorts ascending by descending logit, ties by
/// ascending id: `!(order-preserving logit bits << 32 | !id)`. Ties by id keep the result
/// deterministic and make top-k = 1 agree with greedy.
fn pack(id: u32, logit: f32) -> u64 {
    let b = logit.to_bits();
    let ord = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    !((u64::from(ord) << 32) | u64::from(!id))
}

fn unpack_id(k: u64) -> u32 {
    k as u32 // !(!id) after the outer negation
}

fn unpack_logit(k: u64) -> f32 {
    let ord = !((k >> 32) as u32);
    f32::from_bits(if ord & 0x8000_0000 != 0 {
        ord & 0x7FFF_FFFF
    } else {
        !ord
    })
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
            penalized: Vec::new(),
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
        let penalize = self.penalizes(history);
        let mut work = std::mem::take(&mut self.penalized);
        let src = if penalize {
            work.clear();
            work.extend(logits.iter().map(|&l| clean(l)));
            self.apply_repeat_penalty(&mut work, history);
            &work[..]
        } else {
            logits
        };
        let token = self.pick(src);
        self.penalized = work;
        token
    }

    /// The distribution [`Sampler::sample`] draws from for these logits and history: the
    /// surviving tokens with their probabilities (summing to 1), most likely first. Greedy
    /// gives the argmax with probability 1. Speculative decoding compares the draft's and the
    /// target's distributions through this, so both see the same penalty, filters and
    /// temperature as plain sampling.
    pub fn distribution(&mut self, logits: &[f32], history: &[u32]) -> Vec<(u32, f64)> {
        if logits.is_empty() {
            return vec![(0, 1.0)];
        }
        let mut work = std::mem::take(&mut self.penalized);
        let src = if self.penalizes(history) {
            work.clear();
            work.extend(logits.iter().map(|&l| clean(l)));
            self.apply_repeat_penalty(&mut work, history);
            &work[..]
        } else {
            logits
        };
        let dist = if self.cfg.temperature <= 0.0 {
            vec![(argmax(src.iter().map(|&l| clean(l))), 1.0)]
        } else {
            self.filter(src);
            self.cands.sort_unstable();
            let best = unpack_logit(self.cands[0]);
            if best == f32::NEG_INFINITY {
                vec![(unpack_id(self.cands[0]), 1.0)]
            } else {
                let inv_t = 1.0 / self.cfg.temperature as f64;
                let mut d: Vec<(u32, f64)> = self
                    .cands
                    .iter()
                    .map(|&c| {
                        (
                            unpack_id(c),
                            (((unpack_logit(c) - best) as f64) * inv_t).exp(),
                        )
                    })
                    .filter(|&(_, w)| w > 0.0)
                    .collect();
                let total: f64 = d.iter().map(|&(_, w)| w).sum();
                d.iter_mut().for_each(|(_, w)| *w /= total);
                d
            }
        };
        self.penalized = work;
        dist
    }

    /// A uniform draw in [0, 1) from the sampler's seeded stream (speculative acceptance).
    pub fn uniform(&mut self) -> f64 {
        self.rng.next_f64()
    }

    fn penalizes(&self, history: &[u32]) -> bool {
        self.cfg.repeat_penalty != 1.0
            && self.cfg.repeat_penalty > 0.0
            && self.cfg.repeat_last_n > 0
            && !history.is_empty()
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature <= 0.0 {
            return argmax(logits.iter().map(|&l| clean(l)));
        }
        self.filter(logits);
        self.draw(self.cfg.temperature)
    }

    /// Top-k, top-p and min-p: leave the surviving candidates in `cands`.
    fn filter(&mut self, logits: &[f32]) {
        let k = self.cfg.top_k;
        if k > 0 && k < logits.len() {
            self.select_top_k(logits, k);
        } else {
            self.cands.clear();
            self.cands.extend(
                logits
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| pack(i as u32, clean(l))),
            );
        }
        if self.cfg.top_p < 1.0 {
            self.apply_top_p(self.cfg.top_p);
        }
        if self.cfg.min_p > 0.0 {
            self.apply_min_p(self.cfg.min_p);
        }
    }

    /// llama.cpp's rule, once per distinct token in the window: a positive logit is divided
    /// by the penalty, a negative one multiplied, so both move toward "less likely".
    fn apply_repeat_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let start = history.len().saturating_sub(self.cfg.repeat_last_n);
        self.recent.clear();
        self.recent.extend_from_slice(&history[start..]);
        self.recent.sort_unstable();
        self.recent.dedup();
        let p = self.cfg.repeat_penalty;
        for &t in &self.recent {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l <= 0.0 { *l * p } else { *l / p };
            }
        }
    }

    /// The `k` best tokens, in one pass: candidates better than the current k-th best are
    /// buffered, and the buffer is cut back to `k` whenever it fills up, which raises the
    /// bar. Almost every token costs one comparison.
    fn select_top_k(&mut self, logits: &[f32], k: usize) {
        let cap = (2 * k).max(1024);
        self.cands.clear();
        let mut bar = u64::MAX; // keys >= bar cannot make the top k
        for (i, &l) in logits.iter().enumerate() {
            let key = pack(i as u32, clean(l));
            if key < bar {
                self.cands.push(key);
                if self.cands.len() >= cap {
                    self.cands.select_nth_unstable(k - 1);
                    self.cands.truncate(k);
                    bar = self.cands[k - 1];
                }
            }
        }
        if self.cands.len() > k {
            self.cands.select_nth_unstable(k - 1);
            self.cands.truncate(k);
        }
    }

    /// Keep the smallest set of most likely tokens whose probability reaches `p` (the token
    /// that crosses `p` is kept). Without top-k the candidates are the whole vocabulary, so
    /// instead of sorting it the tokens are bucketed by logit: whole buckets are kept until
    /// the one where the mass crosses `p`, and only that bucket is sorted.
    fn apply_top_p(&mut self, p: f32) {
        const BUCKETS: usize = 1024;
        let n = self.cands.len();
        if n <= 1 {
            return;
        }
        let max = self.max_logit();
        if max == f32::NEG_INFINITY {
            return;
        }
        let min = self
            .cands
            .iter()
            .map(|&c| unpack_logit(c))
            .fold(max, f32::min);
        let weight = |l: f32| ((l - max) as f64).exp();
        // Bucket 0 holds the highest logits; the mapping is monotone, so every token of a
        // bucket beats every token of a later one.
        let scale = if max - min > 0.0 && (max - min).is_finite() {
            (BUCKETS - 1) as f32 / (max - min)
        } else {
            0.0 // all equal, or -inf present: buckets 0 and BUCKETS - 1 only
        };
        let bucket = |l: f32| {
            if l == f32::NEG_INFINITY {
                BUCKETS - 1
            } else {
                (((max - l) * scale) as usize).min(BUCKETS - 1)
            }
        };
        let mut mass = [0.0f64; BUCKETS];
        for &c in &self.cands {
            let l = unpack_logit(c);
            mass[bucket(l)] += weight(l);
        }
        let target = p.max(0.0) as f64 * mass.iter().sum::<f64>();
        let mut before = 0.0;
        let mut cross = BUCKETS - 1;
        for (b, &m) in mass.iter().enumerate() {
            if before + m >= target {
                cross = b;
                break;
            }
            before += m;
        }
        // Order: buckets before `cross`, then `cross` itself, then the dropped rest.
        let mut front = 0;
        for i in 0..n {
            if bucket(unpack_logit(self.cands[i])) < cross {
                self.cands.swap(i, front);
                front += 1;
            }
        }
        let mut mid = front;
        for i in front..n {
            if bucket(unpack_logit(self.cands[i])) == cross {
                self.cands.swap(i, mid);
                mid += 1;
            }
        }
        self.cands[front..mid].sort_unstable();
        let mut cum = before;
        for i in front..mid {
            cum += weight(unpack_logit(self.cands[i]));
            if cum >= target {
                self.cands.truncate(i + 1);
                return;
            }
        }
        self.cands.truncate(mid); // rounding: keep the whole crossing bucket
    }

    /// Drop tokens whose probability is below `min_p` times the top token's.
    fn apply_min_p(&mut self, min_p: f32) {
        let max = self.max_logit();
        if max == f32::NEG_INFINITY {
            return;
        }
        // p_i >= min_p * p_max  <=>  l_i >= l_max + ln(min_p)
        let threshold = max + min_p.ln();
        self.cands.retain(|&c| unpack_logit(c) >= threshold);
    }

    fn max_logit(&self) -> f32 {
        // The smallest key holds the largest logit.
        self.cands
            .iter()
            .min()
            .map_or(f32::NEG_INFINITY, |&k| unpack_logit(k))
    }

    /// Draw from softmax(logit / temperature) over the remaining candidates.
    fn draw(&mut self, temperature: f32) -> u32 {
        let Some(&best) = self.cands.iter().min() else {
            return 0;
        };
        let max = unpack_logit(best);
        if max == f32::NEG_INFINITY {
            // Everything is masked: take the lowest id, like greedy does.
            return unpack_id(best);
        }
        let inv_t = 1.0 / temperature as f64;
        let weight = |l: f32| (((l - max) as f64) * inv_t).exp();
        let total: f64 = self.cands.iter().map(|&c| weight(unpack_logit(c))).sum();
        let mut u = self.rng.next_f64() * total;
        let mut last = unpack_id(best);
        for &c in &self.cands {
            let w = weight(unpack_logit(c));
            if w > 0.0 {
                last = unpack_id(c);
                if u < w {
                    return last;
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
    fn packed_keys_round_trip_and_order() {
        let vals = [
            f32::NEG_INFINITY,
            -3.5,
            -0.0,
            0.0,
            1e-30,
            2.25,
            f32::INFINITY,
        ];
        for (i, &v) in vals.iter().enumerate() {
            let k = pack(i as u32 * 1000, v);
            assert_eq!(unpack_id(k), i as u32 * 1000);
            assert_eq!(unpack_logit(k).to_bits(), v.to_bits());
        }
        // Higher logit sorts first; equal logits by lower id.
        assert!(pack(5, 2.0) < pack(0, 1.0));
        assert!(pack(0, -1.0) < pack(1, -2.0));
        assert!(pack(3, 1.0) < pack(4, 1.0));
    }

    #[test]
    fn top_k_selection_matches_full_sort() {
        let n = 20_000;
        let logits: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 0.01).collect();
        let mut s = Sampler::new(cfg(1.0));
        for k in [1, 7, 40, 600, 5000] {
            s.select_top_k(&logits, k);
            let mut got = s.cands.clone();
            got.sort_unstable();
            let mut all: Vec<u64> = (0..n).map(|i| pack(i as u32, logits[i])).collect();
            all.sort_unstable();
            assert_eq!(got, all[..k], "k = {k}");
        }
    }

    /// Reference top-p: full sort, keep until the cumulative mass reaches p.
    fn top_p_reference(logits: &[f32], p: f64) -> Vec<u64> {
        let mut all: Vec<u64> = (0..logits.len())
            .map(|i| pack(i as u32, logits[i]))
            .collect();
        all.sort_unstable();
        let max = unpack_logit(all[0]);
        let w = |k: u64| ((unpack_logit(k) - max) as f64).exp();
        let total: f64 = all.iter().map(|&k| w(k)).sum();
        let mut cum = 0.0;
        for i in 0..all.len() {
            cum += w(all[i]);
            if cum >= p * total {
                all.truncate(i + 1);
                break;
            }
        }
        all
    }

    #[test]
    fn top_p_bucketing_matches_full_sort() {
        let n = 5000;
        // Flat with many equal logits; peaked; with masked (-inf) tokens; all equal.
        let flat: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 * 1e-3).collect();
        let peaked: Vec<f32> = (0..n)
            .map(|i| ((i * 31) % 97) as f32 * 0.3 - 20.0)
            .collect();
        let mut masked = peaked.clone();
        for i in (0..n).step_by(3) {
            masked[i] = f32::NEG_INFINITY;
        }
        let equal = vec![0.5f32; 300];
        let mut s = Sampler::new(cfg(1.0));
        for (name, logits) in [
            ("flat", &flat),
            ("peaked", &peaked),
            ("masked", &masked),
            ("equal", &equal),
        ] {
            for p in [0.0f32, 0.1, 0.5, 0.9, 0.95, 0.999] {
                s.cands = (0..logits.len())
                    .map(|i| pack(i as u32, logits[i]))
                    .collect();
                s.apply_top_p(p);
                let mut got = s.cands.clone();
                got.sort_unstable();
                assert_eq!(got, top_p_reference(logits, p as f64), "{name} p={p}");
            }
        }
    }

    #[test]
    fn penalty_applies_once_per_distinct_token_within_window() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            repeat_last_n: 3,
            ..cfg(1.0)
        });
        let mut l = vec![4.0, -1.0, 4.0, 1.0];
        // Token 2 is outside the last 3; token 0 repeats but is penalised once; id 9 is
        // outside the vocabulary.
        s.apply_repeat_penalty(&mut l, &[2, 0, 1, 0, 9]);
        assert_eq!(l, vec![2.0, -2.0, 4.0, 1.0]);
    }
}
