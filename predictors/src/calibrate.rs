//! Threshold calibration: the largest uniform logit threshold that still keeps the target recall.

/// Given the logits of the positive (fired) labels, returns the threshold `t` such that
/// predicting `logit > t` catches at least `target` of them, as sparsely as possible; `None` when
/// there are no positives.
///
/// `t` lies halfway between the positive logit that must still pass and the next lower one, so a
/// held-out row slightly below the boundary is not lost.
pub(crate) fn recall_threshold(pos: &mut [f32], target: f32) -> Option<f32> {
    let p = pos.len();
    if p == 0 {
        return None;
    }
    let need = ((target as f64 * p as f64).ceil() as usize).clamp(1, p);
    // The `need`-th largest positive logit must stay above t.
    let (below, &mut keep, _) = pos.select_nth_unstable_by(p - need, f32::total_cmp);
    let next_lower = below.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Some(if next_lower.is_finite() && next_lower < keep {
        0.5 * (next_lower + keep)
    } else {
        // No lower positive (or a tie): step just below the kept one.
        keep - keep.abs().max(1e-3) * 1e-3
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn threshold_is_the_largest_that_meets_recall() {
        let mut rng = Rng::new(6);
        let n = 5000;
        let labels: Vec<bool> = (0..n).map(|_| rng.uniform() < 0.1).collect();
        let logits: Vec<f32> = labels
            .iter()
            .map(|&y| rng.normal() as f32 + if y { 2.0 } else { -1.0 })
            .collect();
        for target in [0.5, 0.9, 0.95, 1.0] {
            let mut pos: Vec<f32> = (0..n).filter(|&i| labels[i]).map(|i| logits[i]).collect();
            let t = recall_threshold(&mut pos, target).unwrap();
            let recall_at = |t: f32| {
                let tp = (0..n).filter(|&i| labels[i] && logits[i] > t).count();
                tp as f32 / labels.iter().filter(|&&y| y).count() as f32
            };
            assert!(
                recall_at(t) >= target,
                "target {target}: recall {}",
                recall_at(t)
            );
            // The next positive logit above t, used as threshold, would lose the target.
            let next = (0..n)
                .filter(|&i| labels[i] && logits[i] > t)
                .map(|i| logits[i])
                .fold(f32::INFINITY, f32::min);
            assert!(recall_at(next) < target);
        }
        assert_eq!(recall_threshold(&mut [], 0.95), None);
    }
}
