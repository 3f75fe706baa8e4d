//! A small, fast, seedable random source. Synthetic weights need billions of draws; the
//! stream of each tensor row is derived from (seed, tensor, row) alone, so rows can be made
//! in any order on any number of threads and the file is still identical for a seed.

/// SplitMix64's output function: a bijective 64-bit mix with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed of the independent stream number `(a, b)` of a generator seeded with `seed`.
pub fn stream_seed(seed: u64, a: u64, b: u64) -> u64 {
    let golden = 0x9e37_79b9_7f4a_7c15u64;
    mix64(
        mix64(seed.wrapping_add(golden))
            ^ mix64(a.wrapping_mul(golden) ^ 0x5555)
            ^ mix64(
                b.wrapping_add(0x1234_5678)
                    .wrapping_mul(golden)
                    .rotate_left(17),
            ),
    )
}

/// wyrand: one 64×64→128 multiply per draw, passes BigCrush, and is plenty for weights.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// 4 · 65536 / √12: the standard deviation of a sum of four uniform 16-bit integers.
const SUM4_STD: f32 = 37_837.23;
/// The mean of that sum.
const SUM4_MEAN: f32 = 131_070.0;

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: mix64(seed) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform integer in `0..n` (n > 0); the modulo bias is negligible for the sizes used.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// An approximately standard normal draw: the centred sum of four uniform 16-bit lanes of
    /// one random word (Irwin–Hall, bounded at ±3.46σ). Weights only need a bell shape with
    /// unit variance; sums over many weights are Gaussian by the central limit theorem.
    pub fn normal(&mut self) -> f32 {
        let x = self.next_u64();
        let s = (x & 0xffff) + ((x >> 16) & 0xffff) + ((x >> 32) & 0xffff) + (x >> 48);
        (s as f32 - SUM4_MEAN) * (1.0 / SUM4_STD)
    }

    /// Fill `out` with [`Rng::normal`] draws times `scale`.
    pub fn fill_normal(&mut self, out: &mut [f32], scale: f32) {
        for v in out {
            *v = self.normal() * scale;
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| f64::from(r.normal())).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
        // Tail mass beyond 2σ: 4.55% for a Gaussian, 4.25% for Irwin–Hall(4).
        let tail = xs.iter().filter(|x| x.abs() > 2.0).count() as f64 / n as f64;
        assert!((0.03..0.05).contains(&tail), "tail {tail}");
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = {
            let mut r = Rng::new(stream_seed(1, 2, 3));
            (0..4).map(|_| r.next_u64()).collect()
        };
        let again: Vec<u64> = {
            let mut r = Rng::new(stream_seed(1, 2, 3));
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, again);
        for (s, x, y) in [(2, 2, 3), (1, 3, 3), (1, 2, 4), (1, 3, 2)] {
            let mut r = Rng::new(stream_seed(s, x, y));
            assert_ne!(r.next_u64(), a[0], "stream ({s},{x},{y})");
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(3).permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
