//! Matrix-vector and matrix-matrix products over quantised weights, parallel over row chunks.

use super::qvec::QuantizedVec;
use super::{vec_dot, vec_dot_x4, QMatrix};
use rayon::prelude::*;
use std::cell::RefCell;

/// Below this many weight bytes a product runs on the calling thread: waking the pool costs more.
const SERIAL_BYTES: usize = 96 * 1024;
/// Each parallel task reads at least this many weight bytes, so scheduling stays negligible.
const MIN_TASK_BYTES: usize = 32 * 1024;

/// Rows per parallel task for a matrix, or `None` to run serially.
fn rows_per_task(w: &QMatrix) -> Option<usize> {
    let rb = w.row_bytes().max(1);
    if w.data.len() < SERIAL_BYTES || rayon::current_num_threads() <= 1 {
        return None;
    }
    let by_bytes = MIN_TASK_BYTES.div_ceil(rb);
    let by_count = w.rows.div_ceil(rayon::current_num_threads() * 8);
    Some(by_bytes.max(by_count).max(1))
}

thread_local! {
    static SCRATCH: RefCell<Option<QuantizedVec>> = const { RefCell::new(None) };
}

/// y = W x. Quantises x once (into a per-thread reused buffer), then as `matvec_q`.
/// The buffer is taken out of its slot while in use: rayon may run another `matvec` on this
/// thread while we wait for our tasks, and that one then simply allocates its own.
pub fn matvec(w: &QMatrix, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), w.cols, "matvec: x length");
    let mut qv = match SCRATCH.with(|s| s.borrow_mut().take()) {
        Some(mut v) => {
            v.set(w.ty, x);
            v
        }
        None => QuantizedVec::new(w.ty, x),
    };
    matvec_q(w, &qv, y);
    qv.len = 0;
    SCRATCH.with(|s| *s.borrow_mut() = Some(qv));
}

/// y = W x with x already prepared for `w.ty`; allocates nothing.
pub fn matvec_q(w: &QMatrix, x: &QuantizedVec, y: &mut [f32]) {
    assert_eq!(x.len(), w.cols, "matvec_q: x length");
    assert_eq!(y.len(), w.rows, "matvec_q: y length");
    let rb = w.row_bytes();
    let run = |r0: usize, ys: &mut [f32]| {
        for (k, y) in ys.iter_mut().enumerate() {
            let r = r0 + k;
            *y = vec_dot(w.ty, &w.data[r * rb..(r + 1) * rb], x);
        }
    };
    match rows_per_task(w) {
        None => run(0, y),
        Some(chunk) => y
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(c, ys)| run(c * chunk, ys)),
    }
}

/// y[i] = W.row(rows[i]) · x: only the selected rows are read (sparse FFN).
pub fn gather_matvec(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) {
    assert_eq!(x.len(), w.cols, "gather_matvec: x length");
    assert_eq!(y.len(), rows.len(), "gather_matvec: y length");
    let rb = w.row_bytes();
    let run = |idx: &[u32], ys: &mut [f32]| {
        for (&r, y) in idx.iter().zip(ys.iter_mut()) {
            let r = r as usize;
            assert!(r < w.rows, "gather_matvec: row {r} out of {}", w.rows);
            *y = vec_dot(w.ty, &w.data[r * rb..(r + 1) * rb], x);
        }
    };
    let bytes = rows.len() * rb;
    if bytes < SERIAL_BYTES || rayon::current_num_threads() <= 1 {
        run(rows, y);
    } else {
        let chunk = MIN_TASK_BYTES
            .div_ceil(rb.max(1))
            .max(rows.len().div_ceil(rayon::current_num_threads() * 8));
        y.par_chunks_mut(chunk)
            .zip(rows.par_chunks(chunk))
            .for_each(|(ys, idx)| run(idx, ys));
    }
}

/// Rows of weights processed together against every input: at most this many, and at most
/// `MATMUL_TILE_BYTES` of weights, so the tile stays in L1 while all inputs stream past and
/// each weight row is loaded from memory once per call.
const MATMUL_ROW_TILE: usize = 16;
const MATMUL_TILE_BYTES: usize = 16 * 1024;

/// Prefill product: `xs` is n×cols row-major, `ys` becomes n×rows (`ys[b*rows + r]`).
pub fn matmul(w: &QMatrix, xs: &[f32], ys: &mut [f32]) {
    let cols = w.cols;
    assert!(
        cols > 0 && xs.len().is_multiple_of(cols),
        "matmul: xs length"
    );
    let n = xs.len() / cols;
    assert_eq!(ys.len(), n * w.rows, "matmul: ys length");
    if n == 0 {
        return;
    }
    if n == 1 {
        return matvec(w, xs, ys);
    }
    let qx: Vec<QuantizedVec> = xs
        .par_chunks(cols)
        .map(|x| QuantizedVec::new(w.ty, x))
        .collect();
    // Computed transposed (rows × n) so parallel tasks own disjoint output, then transposed back.
    let mut yt = vec![0.0f32; w.rows * n];
    let rb = w.row_bytes();
    let tile = (MATMUL_TILE_BYTES / rb.max(1)).clamp(1, MATMUL_ROW_TILE);
    let run = |r0: usize, out: &mut [f32]| {
        let nr = out.len() / n;
        for t0 in (0..nr).step_by(tile) {
            let t1 = (t0 + tile).min(nr);
            let mut b = 0;
            while b + 4 <= n {
                let xs = [&qx[b], &qx[b + 1], &qx[b + 2], &qx[b + 3]];
                for t in t0..t1 {
                    let r = r0 + t;
                    let v = vec_dot_x4(w.ty, &w.data[r * rb..(r + 1) * rb], xs);
                    out[t * n + b..t * n + b + 4].copy_from_slice(&v);
                }
                b += 4;
            }
            for (b, x) in qx.iter().enumerate().skip(b) {
                for t in t0..t1 {
                    let r = r0 + t;
                    out[t * n + b] = vec_dot(w.ty, &w.data[r * rb..(r + 1) * rb], x);
                }
            }
        }
    };
    let chunk_rows = if w.data.len() * n < SERIAL_BYTES || rayon::current_num_threads() <= 1 {
        w.rows
    } else {
        MATMUL_ROW_TILE.max(w.rows.div_ceil(rayon::current_num_threads() * 8))
    };
    yt.par_chunks_mut(chunk_rows * n)
        .enumerate()
        .for_each(|(c, out)| run(c * chunk_rows, out));
    for r in 0..w.rows {
        for b in 0..n {
            ys[b * w.rows + r] = yt[r * n + b];
        }
    }
}
