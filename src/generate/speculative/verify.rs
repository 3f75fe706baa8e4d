//! The speculative sampling acceptance rule (Leviathan et al. 2023; Chen et al. 2023).
//!
//! A token `x` drawn from the draft's distribution `q` is kept with probability
//! `min(1, p(x) / q(x))`, where `p` is the target's distribution; when it is refused, the
//! replacement is drawn from `max(0, p − q)` renormalised. The token that comes out is then
//! distributed exactly as `p`, whatever `q` is: a poor draft costs speed, never quality.
//! With greedy sampling both distributions are one-hot, so a draft is kept exactly when it
//! is the target's argmax, and the replacement is that argmax.

/// A distribution over token ids: `(token, probability)` pairs, each token once.
pub type Dist = [(u32, f64)];

/// The outcome of checking one drafted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The drafted token stands.
    Accept,
    /// The drafted token is refused; this one (from the residual distribution) replaces it.
    Replace(u32),
}

fn prob(d: &Dist, token: u32) -> f64 {
    d.iter()
        .find(|&&(t, _)| t == token)
        .map_or(0.0, |&(_, p)| p)
}

/// Check drafted token `x`, drawn from `q`, against the target's `p`. `u_accept` and
/// `u_resample` are independent uniform draws in [0, 1).
pub fn judge(p: &Dist, q: &Dist, x: u32, u_accept: f64, u_resample: f64) -> Verdict {
    let (px, qx) = (prob(p, x), prob(q, x));
    // u < p/q, written without the division (q(x) = 0 cannot happen for a drawn token, but
    // then any p(x) > 0 is kept).
    if u_accept * qx < px {
        return Verdict::Accept;
    }
    // Residual max(0, p − q): look q up by token through a sorted copy (full-vocabulary
    // distributions make a scan per token quadratic).
    let mut qs: Vec<(u32, f64)> = q.to_vec();
    qs.sort_unstable_by_key(|&(t, _)| t);
    let q_of = |t: u32| {
        qs.binary_search_by_key(&t, |&(t, _)| t)
            .map_or(0.0, |i| qs[i].1)
    };
    let residual: Vec<(u32, f64)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - q_of(t)).max(0.0)))
        .filter(|&(_, r)| r > 0.0)
        .collect();
    // Empty only through rounding (p == q up to the last bit, yet refused): p itself is then
    // the right law.
    let from = if residual.is_empty() { p } else { &residual };
    Verdict::Replace(draw(from, u_resample))
}

/// Draw from `d` (weights need not be normalised) with the uniform `u` in [0, 1).
pub fn draw(d: &Dist, u: f64) -> u32 {
    let total: f64 = d.iter().map(|&(_, w)| w).sum();
    let mut left = u * total;
    let mut last = d.first().map_or(0, |&(t, _)| t);
    for &(t, w) in d {
        if w > 0.0 {
            last = t;
            if left < w {
                return t;
            }
            left -= w;
        }
    }
    last // only reached through rounding in the running subtraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_keeps_the_argmax_and_replaces_anything_else_by_it() {
        let p = [(7, 1.0)];
        assert_eq!(judge(&p, &[(7, 1.0)], 7, 0.999, 0.5), Verdict::Accept);
        assert_eq!(judge(&p, &[(3, 1.0)], 3, 0.0, 0.999), Verdict::Replace(7));
    }

    #[test]
    fn draw_follows_cumulative_weights() {
        let d = [(4, 1.0), (9, 3.0)];
        assert_eq!(draw(&d, 0.0), 4);
        assert_eq!(draw(&d, 0.2499), 4);
        assert_eq!(draw(&d, 0.25), 9);
        assert_eq!(draw(&d, 0.9999), 9);
    }

    #[test]
    fn refusal_draws_from_the_positive_part_of_p_minus_q() {
        // p - q = (0.3, -0.3, 0): the only residual mass is on token 0.
        let p = [(0, 0.5), (1, 0.2), (2, 0.3)];
        let q = [(0, 0.2), (1, 0.5), (2, 0.3)];
        // Token 1: kept with probability 0.2 / 0.5.
        assert_eq!(judge(&p, &q, 1, 0.39, 0.7), Verdict::Accept);
        assert_eq!(judge(&p, &q, 1, 0.41, 0.7), Verdict::Replace(0));
        // Token 0 has p > q: always kept.
        assert_eq!(judge(&p, &q, 0, 0.999, 0.1), Verdict::Accept);
    }
}
