//! Matrix-vector and matrix-matrix products over quantised weights, parallel over row chunks.

use std::cell::RefCell;

use rayon::prelude::*;

use super::dot::check_pair;
use super::{dot_kernel, DotKernel, QMatrix, QuantizedVec};

/// Weight bytes below which a product runs on the calling thread (rayon's fork/join costs a
/// few microseconds, comparable to streaming this much memory).
const SERIAL_BYTES: usize = 128 * 1024;
/// Minimum weight bytes per rayon task, so each task does real work.
const MIN_TASK_BYTES: usize = 32 * 1024;

thread_local! {
    static XQ: RefCell<QuantizedVec> = RefCell::new(QuantizedVec::new(super::GgmlType::F32, &[]));
    static XS: RefCell<Vec<QuantizedVec>> = const { RefCell::new(Vec::new()) };
    static TMP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static XD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn kernel(w: &QMatrix) -> DotKernel {
    dot_kernel(w.ty).unwrap_or_else(|| panic!("no dot kernel for {}", w.ty))
}

/// Rows per task: about four tasks per thread, but at least `MIN_TASK_BYTES` of weights.
fn rows_per_task(rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_count = rows.div_ceil(4 * threads);
    let by_bytes = MIN_TASK_BYTES.div_ceil(row_bytes.max(1));
    by_count.max(by_bytes).max(1)
}

fn serial(w: &QMatrix, n_rows: usize) -> bool {
    n_rows * w.row_bytes() < SERIAL_BYTES || rayon::current_num_threads() <= 1
}

/// y = W x. Quantises `x` once into a per-thread buffer (no allocation after the first call).
pub fn matvec(w: &QMatrix, x: &[f32], y: &mut [f32]) {
    XQ.with(|cell| match cell.try_borrow_mut() {
        Ok(mut q) => {
            q.set(w.ty, x);
            matvec_q(w, &q, y);
        }
        // Re-entered on this thread (a nested rayon job): use a fresh buffer.
        Err(_) => matvec_q(w, &QuantizedVec::new(w.ty, x), y),
    })
}

/// y = W x for an already prepared `x`.
pub fn matvec_q(w: &QMatrix, x: &QuantizedVec, y: &mut [f32]) {
    assert_eq!(y.len(), w.rows, "matvec output length");
    assert_eq!(w.data.len(), w.rows * w.row_bytes(), "matrix data length");
    check_pair(w.ty, w.row_bytes(), x);
    let k = kernel(w);
    let rb = w.row_bytes();
    if serial(w, w.rows) {
        for (r, y) in y.iter_mut().enumerate() {
            *y = k.dot(w.row(r), x);
        }
        return;
    }
    let chunk = rows_per_task(w.rows, rb);
    y.par_chunks_mut(chunk)
        .zip(w.data.par_chunks(chunk * rb))
        .for_each(|(y, data)| {
            for (y, row) in y.iter_mut().zip(data.chunks_exact(rb)) {
                *y = k.dot(row, x);
            }
        });
}

/// y[i] = W.row(rows[i]) · x, for the sparse FFN (only predicted-active neurons).
pub fn gather_matvec(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) {
    assert_eq!(y.len(), rows.len(), "gather_matvec output length");
    check_pair(w.ty, w.row_bytes(), x);
    assert!(
        rows.iter().all(|&r| (r as usize) < w.rows),
        "gather_matvec row index out of range"
    );
    let k = kernel(w);
    if serial(w, rows.len()) {
        for (y, &r) in y.iter_mut().zip(rows) {
            *y = k.dot(w.row(r as usize), x);
        }
        return;
    }
    let chunk = rows_per_task(rows.len(), w.row_bytes());
    y.par_chunks_mut(chunk)
        .zip(rows.par_chunks(chunk))
        .for_each(|(y, rows)| {
            for (y, &r) in y.iter_mut().zip(rows) {
                *y = k.dot(w.row(r as usize), x);
            }
        });
}

/// Prefill product: `xs` holds n = xs.len() / cols inputs (row-major n × cols), `ys` receives
/// n × rows (`ys[b * rows + r]`). All inputs are quantised once; each weight row is then
/// read from memory once and reused for every input while it sits in L1.
/// Groups of four inputs go through the four-input kernels, which perform for each input
/// exactly the floating-point operations of the single-input kernel `matvec` uses, in the
/// same order: results are bit-identical however tokens are batched (a batched prompt gives
/// the logits of decoding it token by token; SmolLM2's massive activations would amplify any
/// last-bit difference to ~0.2 logit).
pub fn matmul(w: &QMatrix, xs: &[f32], ys: &mut [f32]) {
    let cols = w.cols;
    assert!(
        cols > 0 && xs.len().is_multiple_of(cols),
        "matmul input length"
    );
    let n = xs.len() / cols;
    assert_eq!(ys.len(), n * w.rows, "matmul output length");
    if n == 0 {
        return;
    }
    if n == 1 {
        return matvec(w, xs, ys);
    }
    let mut qs = XS.with(|c| c.take());
    let mut tmp = TMP.with(|c| c.take());
    for (i, x) in xs.chunks_exact(cols).enumerate() {
        match qs.get_mut(i) {
            Some(q) => q.set(w.ty, x),
            None => qs.push(QuantizedVec::new(w.ty, x)),
        }
    }
    let xq = &qs[..n];
    check_pair(w.ty, w.row_bytes(), &xq[0]);
    let k = kernel(w);
    let rb = w.row_bytes();
    tmp.clear();
    tmp.resize(w.rows * n, 0.0);
    #[cfg(target_arch = "x86_64")]
    let k4 = super::avx2::kernel4(w.ty);
    #[cfg(not(target_arch = "x86_64"))]
    let k4: Option<fn(&[u8], [&[u8]; 4], &mut [f32; 4])> = None;
    #[cfg(target_arch = "x86_64")]
    let k4f = super::avx2::kernel4_float(w.ty);
    #[cfg(not(target_arch = "x86_64"))]
    let k4f: Option<fn(&[u8], [&[f32]; 4], &mut [f32; 4])> = None;
    // Q4_0 / Q5_0 / Q8_0: the inputs' block scales converted to f32 once for all rows.
    let mut xd = XD.with(|c| c.take());
    xd.clear();
    #[cfg(target_arch = "x86_64")]
    let k4s = super::avx2::kernel4_scaled(w.ty);
    #[cfg(not(target_arch = "x86_64"))]
    let k4s: Option<fn(&[u8], [&[u8]; 4], [&[f32]; 4], &mut [f32; 4])> = None;
    #[cfg(target_arch = "x86_64")]
    let k8s = super::avx2::kernel8_scaled(w.ty);
    #[cfg(not(target_arch = "x86_64"))]
    let k8s: Option<fn(&[u8], [&[u8]; 8], [&[f32]; 8], &mut [f32; 8])> = None;
    let mut nbx = 0;
    #[cfg(target_arch = "x86_64")]
    if k4s.is_some() {
        for x in xq {
            super::avx2::q8_0_scales(x.bytes(), &mut xd);
        }
        nbx = xd.len() / n;
    }
    let xd_ref = &xd;
    // tmp is rows × n: each task owns a contiguous run of whole rows.
    let body = |t: &mut [f32], data: &[u8]| {
        for (t, row) in t.chunks_exact_mut(n).zip(data.chunks_exact(rb)) {
            let mut done = 0;
            if let (Some(k8s), Some(_)) = (k8s, k4s) {
                for ((t, x), d) in t
                    .chunks_exact_mut(8)
                    .zip(xq.chunks_exact(8))
                    .zip(xd_ref.chunks_exact(8 * nbx))
                {
                    let xs = std::array::from_fn(|j| x[j].bytes());
                    let ds = std::array::from_fn(|j| &d[j * nbx..(j + 1) * nbx]);
                    k8s(row, xs, ds, t.try_into().expect("eight outputs"));
                    done += 8;
                }
            }
            if let Some(k4s) = k4s {
                for ((t, x), d) in t[done..]
                    .chunks_exact_mut(4)
                    .zip(xq[done..].chunks_exact(4))
                    .zip(xd_ref[done * nbx..].chunks_exact(4 * nbx))
                {
                    let xs = [x[0].bytes(), x[1].bytes(), x[2].bytes(), x[3].bytes()];
                    let (d01, d23) = d.split_at(2 * nbx);
                    let (d0, d1) = d01.split_at(nbx);
                    let (d2, d3) = d23.split_at(nbx);
                    k4s(
                        row,
                        xs,
                        [d0, d1, d2, d3],
                        t.try_into().expect("four outputs"),
                    );
                    done += 4;
                }
            } else if let Some(k4) = k4 {
                for (t, x) in t.chunks_exact_mut(4).zip(xq.chunks_exact(4)) {
                    let xs = [x[0].bytes(), x[1].bytes(), x[2].bytes(), x[3].bytes()];
                    k4(row, xs, t.try_into().expect("four outputs"));
                    done += 4;
                }
            } else if let Some(k4f) = k4f {
                for (t, x) in t.chunks_exact_mut(4).zip(xq.chunks_exact(4)) {
                    let xs = [x[0].floats(), x[1].floats(), x[2].floats(), x[3].floats()];
                    k4f(row, xs, t.try_into().expect("four outputs"));
                    done += 4;
                }
            }
            for (t, x) in t[done..].iter_mut().zip(&xq[done..]) {
                *t = k.dot(row, x);
            }
        }
    };
    if w.rows * rb * n < SERIAL_BYTES || rayon::current_num_threads() <= 1 {
        body(&mut tmp, w.data);
    } else {
        let chunk = rows_per_task(w.rows, rb);
        tmp.par_chunks_mut(chunk * n)
            .zip(w.data.par_chunks(chunk * rb))
            .for_each(|(t, d)| body(t, d));
    }
    // Transpose rows × n into n × rows in blocks of 16 rows: each output row then receives a
    // whole cache line at a time (element by element, a power-of-two stride of rows × 4
    // bytes lands every store in the same L1 set).
    const TB: usize = 16;
    for (r0, block) in tmp.chunks(TB * n).enumerate() {
        let r0 = r0 * TB;
        let nr = block.len() / n;
        for (b, y) in ys.chunks_exact_mut(w.rows).enumerate() {
            for (r, y) in y[r0..r0 + nr].iter_mut().enumerate() {
                *y = block[r * n + b];
            }
        }
    }
    XS.with(|c| c.replace(qs));
    TMP.with(|c| c.replace(tmp));
    XD.with(|c| c.replace(xd));
}
