//! `C = A·B + beta·C` over strided f32 views, split over rayon in fixed blocks of C.
//!
//! The split depends only on the shapes, never on the thread count, and each element of C is
//! summed in the same order whatever the block, so training stays deterministic.

use rayon::prelude::*;

/// A read-only strided matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// Row-major `rows × cols`.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        View {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn t(data: &'a [f32], cols: usize) -> Self {
        View {
            data,
            rs: 1,
            cs: cols,
        }
    }
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

struct SendPtr(*mut f32);
// SAFETY: the blocks written through copies of this pointer are disjoint.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Work below which splitting is not worth a rayon task.
const MIN_BLOCK_FLOPS: usize = 1 << 21;

/// `c (m × n, row-major) = a (m × k) · b (k × n) + beta · c`.
pub(crate) fn gemm(m: usize, k: usize, n: usize, a: View, b: View, beta: f32, c: &mut [f32]) {
    assert!(a.fits(m, k) && b.fits(k, n), "gemm operand out of bounds");
    assert_eq!(c.len(), m * n, "gemm output size");
    if m == 0 || n == 0 {
        return;
    }
    // Split the longer side of C into at most 8 blocks that each carry enough work.
    let max_blocks = (m * n * k / MIN_BLOCK_FLOPS).clamp(1, 8);
    let split_rows = m >= n;
    let side = if split_rows { m } else { n };
    let block = side.div_ceil(max_blocks).next_multiple_of(8).min(side);
    let blocks = side.div_ceil(block);
    let cp = SendPtr(c.as_mut_ptr());
    let cp = &cp;
    (0..blocks).into_par_iter().for_each(|bi| {
        let s = bi * block;
        let e = (s + block).min(side);
        let (i0, i1, j0, j1) = if split_rows {
            (s, e, 0, n)
        } else {
            (0, m, s, e)
        };
        // SAFETY: bounds were checked above; blocks of C are disjoint.
        unsafe {
            matrixmultiply::sgemm(
                i1 - i0,
                k,
                j1 - j0,
                1.0,
                a.data.as_ptr().add(i0 * a.rs),
                a.rs as isize,
                a.cs as isize,
                b.data.as_ptr().add(j0 * b.cs),
                b.rs as isize,
                b.cs as isize,
                beta,
                cp.0.add(i0 * n + j0),
                n as isize,
                1,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matches_naive_product_for_both_splits_and_transposes() {
        let mut rng = Rng::new(2);
        for &(m, k, n) in &[(300, 70, 9), (5, 130, 401), (33, 17, 29)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let bt: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
            let mut c = c0.clone();
            gemm(m, k, n, View::rows(&a, k), View::t(&bt, k), 0.5, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|l| a[i * k + l] as f64 * bt[j * k + l] as f64)
                        .sum::<f64>()
                        + 0.5 * c0[i * n + j] as f64;
                    assert!((c[i * n + j] as f64 - want).abs() < 1e-3, "({i},{j})");
                }
            }
        }
    }
}
