//! Matrix-vector and matrix-matrix products over quantised weights, parallel over row chunks.

use std::cell::RefCell;

use super::dot::check_pair;
use super::{dot_kernel, DotKernel, QMatrix, QuantizedVec};

/// Weight bytes below which a product runs on the calling thread (starting a parallel section
/// costs a few microseconds, comparable to streaming this much memory).
const SERIAL_BYTES: usize = 128 * 1024;
/// Minimum weight bytes per parallel task, so each task does real work.
const MIN_TASK_BYTES: usize = 32 * 1024;
/// Weight bytes up to which a product is one task per thread rather than four. Each task
/// starts a new stream (the hardware prefetcher ramps up again, new DRAM pages open); four
/// per thread keep the threads even when one is held up, which pays on large matrices. On an
/// attention projection of a 1B-class model (2-3.5 MB a layer) one task per thread made the
/// q/k/v and output sections 3-7% faster on the 2-vCPU VM (timing counters, four pairs).
const ONE_TASK_PER_THREAD_BYTES: usize = 4 << 20;
/// Weight bytes of the row tiles `matmul` runs every input through before moving on: well
/// inside a core's L2 (1-2 MiB on current x86) beside the inputs of one kernel call.
const TILE_BYTES: usize = 256 * 1024;

thread_local! {
    static XQ: RefCell<QuantizedVec> = RefCell::new(QuantizedVec::new(super::GgmlType::F32, &[]));
    static XS: RefCell<Vec<QuantizedVec>> = const { RefCell::new(Vec::new()) };
    static TMP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static XD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn kernel(w: &QMatrix) -> DotKernel {
    dot_kernel(w.ty).unwrap_or_else(|| panic!("no dot kernel for {}", w.ty))
}

/// Rows per task of a matrix-vector product streaming `rows` rows: one task per thread up to
/// `ONE_TASK_PER_THREAD_BYTES` of weights, else four.
fn stream_rows_per_task(rows: usize, row_bytes: usize) -> usize {
    let per_thread = if rows * row_bytes <= ONE_TASK_PER_THREAD_BYTES {
        1
    } else {
        4
    };
    rows_per_task(rows, row_bytes, per_thread)
}

/// Rows per task: about `per_thread` tasks per thread, but at least `MIN_TASK_BYTES` of
/// weights.
fn rows_per_task(rows: usize, row_bytes: usize, per_thread: usize) -> usize {
    let threads = crate::parallel::threads();
    let by_count = rows.div_ceil(per_thread * threads);
    let by_bytes = MIN_TASK_BYTES.div_ceil(row_bytes.max(1));
    by_count.max(by_bytes).max(1)
}

fn serial(w: &QMatrix, n_rows: usize) -> bool {
    n_rows * w.row_bytes() < SERIAL_BYTES || crate::parallel::threads() <= 1
}

/// y = W x. Quantises `x` once into a per-thread buffer (no allocation after the first call).
pub fn matvec(w: &QMatrix, x: &[f32], y: &mut [f32]) {
    XQ.with(|cell| match cell.try_borrow_mut() {
        Ok(mut q) => {
            q.set(w.ty, x);
            matvec_q(w, &q, y);
        }
        // Re-entered on this thread (a nested parallel task): use a fresh buffer.
        Err(_) => matvec_q(w, &QuantizedVec::new(w.ty, x), y),
    })
}

/// y = W x for an already prepared `x`.
pub fn matvec_q(w: &QMatrix, x: &QuantizedVec, y: &mut [f32]) {
    assert_eq!(y.len(), w.rows, "matvec output length");
    assert_eq!(w.data.len(), w.rows * w.row_bytes(), "matrix data length");
    check_pair(w.ty, w.row_bytes(), x);
    let rb = w.row_bytes();
    let rows = |y: &mut [f32], data: &[u8]| stream_rows(w, x, y, data);
    if serial(w, w.rows) {
        return rows(y, w.data);
    }
    let chunk = stream_rows_per_task(w.rows, rb);
    crate::parallel::for_chunks_mut(y, chunk, |i, y| {
        let start = i * chunk * rb;
        rows(y, &w.data[start..start + y.len() * rb])
    });
}

/// `y = rows · x` for consecutive rows `data` of `w`'s type and width, on the calling thread.
///
/// Where there is a four-row kernel for the format ([`contiguous_rows4`]), rows go four at a
/// time through it, each group prefetching a later one as it goes; the others (and the last
/// rows) one at a time, each asking for the bytes [`STREAM_PREFETCH_BYTES`] further on: the
/// hardware prefetcher alone kept a 2-core VM's Q4_0 matvec at 8 GB/s, stalled on the weight
/// loads, a third of its read bandwidth.
fn stream_rows(w: &QMatrix, x: &QuantizedVec, y: &mut [f32], data: &[u8]) {
    let (k, rb) = (kernel(w), w.row_bytes());
    let done = match contiguous_rows4(w) {
        Some(k4) => contiguous_groups4(k4, rb, x, y, data),
        None => 0,
    };
    for (i, (y, row)) in y
        .iter_mut()
        .zip(data.chunks_exact(rb))
        .enumerate()
        .skip(done)
    {
        prefetch_ahead(data, i * rb, rb);
        *y = k.dot(row, x);
    }
}

/// The most matrices [`matvec_many`] takes.
pub const MATVEC_MANY_MAX: usize = 4;

/// `ys[i] = ws[i] x` for matrices of one type and width (attention's q, k and v), as one
/// parallel section: `x` is quantised once, and the row chunks of all the matrices are tasks
/// of the same section, so the threads synchronise once rather than once per matrix and none
/// waits at the end of a small matrix. Each output gets the bits `matvec` gives it.
pub fn matvec_many(ws: &[QMatrix], x: &[f32], ys: &mut [&mut [f32]]) {
    assert!(
        !ws.is_empty() && ws.len() <= MATVEC_MANY_MAX && ws.len() == ys.len(),
        "matvec_many takes 1 to {MATVEC_MANY_MAX} matrices and as many outputs"
    );
    let (ty, cols) = (ws[0].ty, ws[0].cols);
    assert!(
        ws.iter().all(|w| w.ty == ty && w.cols == cols),
        "matvec_many matrices differ in type or width"
    );
    XQ.with(|cell| match cell.try_borrow_mut() {
        Ok(mut q) => {
            q.set(ty, x);
            matvec_many_q(ws, &q, ys);
        }
        Err(_) => matvec_many_q(ws, &QuantizedVec::new(ty, x), ys),
    })
}

fn matvec_many_q(ws: &[QMatrix], x: &QuantizedVec, ys: &mut [&mut [f32]]) {
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert_eq!(y.len(), w.rows, "matvec output length");
        assert_eq!(w.data.len(), w.rows * w.row_bytes(), "matrix data length");
        check_pair(w.ty, w.row_bytes(), x);
    }
    let rb = ws[0].row_bytes();
    let total: usize = ws.iter().map(|w| w.rows).sum();
    if total * rb < SERIAL_BYTES || crate::parallel::threads() <= 1 {
        for (w, y) in ws.iter().zip(ys.iter_mut()) {
            stream_rows(w, x, y, w.data);
        }
        return;
    }
    let chunk = stream_rows_per_task(total, rb);
    let mut tasks = [0usize; MATVEC_MANY_MAX];
    let mut outs = [(0usize, 0usize); MATVEC_MANY_MAX];
    for (i, (w, y)) in ws.iter().zip(ys.iter_mut()).enumerate() {
        tasks[i] = w.rows.div_ceil(chunk);
        outs[i] = (y.as_mut_ptr() as usize, y.len());
    }
    let n_tasks: usize = tasks.iter().sum();
    crate::parallel::for_each(n_tasks, |mut t| {
        let mut m = 0;
        while t >= tasks[m] {
            t -= tasks[m];
            m += 1;
        }
        let w = &ws[m];
        let (r0, r1) = (t * chunk, ((t + 1) * chunk).min(w.rows));
        // SAFETY: `outs[m]` is `ys[m]`, borrowed mutably for this call; the tasks of matrix
        // `m` write the disjoint row ranges `r0..r1` of it, each exactly once.
        let y = unsafe { std::slice::from_raw_parts_mut((outs[m].0 as *mut f32).add(r0), r1 - r0) };
        debug_assert!(r1 <= outs[m].1);
        stream_rows(w, x, y, &w.data[r0 * rb..r1 * rb]);
    });
}

/// A four-row kernel (`avx2_rows::DotRows4`): rows, input, outputs, the rows to prefetch.
type Rows4 = fn([&[u8]; 4], &[u8], &mut [f32; 4], [&[u8]; 4]);

/// The four-row kernel `matvec_q` runs contiguous rows through, for the formats where it
/// measured faster there than the single-row kernel with its prefetch (`cargo bench --bench
/// matvec`, weights from DRAM, 2 threads: Q4_0 and Q4_1 2048×8192 1.7-1.8×, the smaller
/// shapes 1.05-1.3×; Q8_0 went either way, so it stays on the single-row path).
#[cfg(target_arch = "x86_64")]
fn contiguous_rows4(w: &QMatrix) -> Option<Rows4> {
    match w.ty {
        super::GgmlType::Q4_0 | super::GgmlType::Q4_1 => super::avx2_rows::kernel_rows4(w.ty),
        _ => None,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn contiguous_rows4(_: &QMatrix) -> Option<Rows4> {
    None
}

/// The leading whole groups of four of the contiguous rows `data` through `k4`, each group
/// prefetching the one about [`STREAM_PREFETCH_BYTES`] further on; returns how many rows
/// it did.
fn contiguous_groups4(k4: Rows4, rb: usize, x: &QuantizedVec, y: &mut [f32], data: &[u8]) -> usize {
    let groups = (y.len() / 4).min(data.len() / (4 * rb));
    if groups == 0 {
        return 0;
    }
    let group = |g: usize| -> [&[u8]; 4] {
        std::array::from_fn(|j| &data[(4 * g + j) * rb..(4 * g + j + 1) * rb])
    };
    let ahead = STREAM_PREFETCH_BYTES.div_ceil(4 * rb);
    // The groups the first ones would have asked for.
    prefetch(&data[(4 * rb).min(data.len())..((1 + ahead) * 4 * rb).min(data.len())]);
    for (g, y) in y.chunks_exact_mut(4).take(groups).enumerate() {
        let next = group((g + ahead).min(groups - 1));
        k4(group(g), x.bytes(), y.try_into().unwrap(), next);
    }
    4 * groups
}

/// y[i] = W.row(rows[i]) · x, for the sparse FFN (only predicted-active neurons).
pub fn gather_matvec(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) {
    check_gather(w, rows, x, y);
    let k = kernel(w);
    if serial(w, rows.len()) {
        gather_rows(w, k, rows, x, y);
        return;
    }
    let chunk = rows_per_task(rows.len(), w.row_bytes(), 4);
    crate::parallel::for_chunks_mut(y, chunk, |i, y| {
        let rows = &rows[i * chunk..i * chunk + y.len()];
        gather_rows(w, k, rows, x, y)
    });
}

/// [`gather_matvec`] on the calling thread alone, for callers that already give each thread
/// its own share of the rows (the sparse FFN's one parallel section per layer).
pub fn gather_matvec_serial(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) {
    check_gather(w, rows, x, y);
    gather_rows(w, kernel(w), rows, x, y);
}

fn check_gather(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &[f32]) {
    assert_eq!(y.len(), rows.len(), "gather_matvec output length");
    check_pair(w.ty, w.row_bytes(), x);
    assert!(
        rows.iter().all(|&r| (r as usize) < w.rows),
        "gather_matvec row index out of range"
    );
}

/// How far ahead of the row being dotted `matvec_q` prefetches, in bytes. On the 2-core VM
/// (`cargo bench --bench matvec`, DRAM-resident weights) 1, 2 and 4 KiB all gave Q4_0 1.6-2.2x,
/// Q5_0/Q6_K ~1.6x, Q4_1 1.3-1.6x, Q8_0 1.2-1.4x and F16 1.15x over no software prefetch.
const STREAM_PREFETCH_BYTES: usize = 2048;

/// Prefetch the `len` bytes of the stream `data` that lie [`STREAM_PREFETCH_BYTES`] past
/// `at` (whatever of them is inside `data`), for a loop now reading `data` at `at`.
#[inline(always)]
fn prefetch_ahead(data: &[u8], at: usize, len: usize) {
    let ahead = (at + STREAM_PREFETCH_BYTES).min(data.len());
    prefetch(&data[ahead..(ahead + len).min(data.len())]);
}

/// How many rows ahead `gather_rows` prefetches.
const PREFETCH_ROWS: usize = 4;

/// The rows of one gather task. Each row is a short run (~1 KiB) at a scattered address, too
/// short for the hardware prefetcher to pick up before it ends, so the rows a little ahead are
/// requested explicitly while the current one is computed.
fn gather_rows(w: &QMatrix, k: DotKernel, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) {
    let row = |r: u32| w.row(r as usize);
    for &r in rows.iter().take(PREFETCH_ROWS) {
        prefetch(row(r));
    }
    let done = gather_rows4(w, rows, x, y);
    for (i, (y, &r)) in y.iter_mut().zip(rows).enumerate().skip(done) {
        if let Some(&ahead) = rows.get(i + PREFETCH_ROWS) {
            prefetch(row(ahead));
        }
        *y = k.dot(row(r), x);
    }
}

/// The leading whole groups of four rows through the four-row kernel, where this CPU has one
/// for the weight type, each group prefetching the rows of the next as it goes; returns how
/// many rows it did.
#[cfg(target_arch = "x86_64")]
fn gather_rows4(w: &QMatrix, rows: &[u32], x: &QuantizedVec, y: &mut [f32]) -> usize {
    let Some(k4) = super::avx2_rows::kernel_rows4(w.ty) else {
        return 0;
    };
    let groups = rows.len() / 4;
    let group =
        |g: usize| -> [&[u8]; 4] { std::array::from_fn(|j| w.row(rows[4 * g + j] as usize)) };
    for (g, y) in y.chunks_exact_mut(4).take(groups).enumerate() {
        k4(
            group(g),
            x.bytes(),
            y.try_into().unwrap(),
            group((g + 1).min(groups - 1)),
        );
    }
    4 * groups
}

#[cfg(not(target_arch = "x86_64"))]
fn gather_rows4(_: &QMatrix, _: &[u32], _: &QuantizedVec, _: &mut [f32]) -> usize {
    0
}

/// Ask for every cache line of `v` to be brought into L2 (a hint: no effect on results).
/// L2, not L1: a gather has far more lines in flight than L1 can track, and on this
/// hardware L1-targeted prefetches of scattered rows gained little while L2 ones doubled
/// the gather's throughput (`benches/sparse_ffn.rs`).
#[inline(always)]
pub(crate) fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = v.as_ptr() as *const i8;
        for off in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: prefetch never faults, and the address is inside `v`.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                _mm_prefetch::<_MM_HINT_T1>(p.add(off))
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Prefill product: `xs` holds n = xs.len() / cols inputs (row-major n × cols), `ys` receives
/// n × rows (`ys[b * rows + r]`). All inputs are quantised once; each tile of weight rows is
/// then read from memory once and reused for every input while it sits in L2.
/// Groups of eight or four inputs go through the multi-input kernels, which perform for each input
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
    // Float weights: a rest of two or three inputs goes through one kernel, not one by one.
    #[cfg(target_arch = "x86_64")]
    let kff = super::avx2::kernel_few_float(w.ty);
    #[cfg(not(target_arch = "x86_64"))]
    let kff: Option<fn(&[u8], &[&[f32]], &mut [f32])> = None;
    let mut nbx = 0;
    #[cfg(target_arch = "x86_64")]
    if k4s.is_some() {
        for x in xq {
            super::avx2::q8_0_scales(x.bytes(), &mut xd);
        }
        nbx = xd.len() / n;
    }
    let xd_ref = &xd;
    // The inputs in groups for the widest kernel that applies: eights, then fours, then ones.
    let mut groups = Vec::with_capacity(n);
    let mut s = 0;
    if k8s.is_some() && k4s.is_some() {
        while s + 8 <= n {
            groups.push((s, 8));
            s += 8;
        }
    }
    if k4s.is_some() || k4.is_some() || k4f.is_some() {
        while s + 4 <= n {
            groups.push((s, 4));
            s += 4;
        }
    }
    if kff.is_some() && (2..=3).contains(&(n - s)) {
        groups.push((s, n - s));
        s = n;
    }
    groups.extend((s..n).map(|s| (s, 1)));
    // One weight row against the inputs `s..s + len`, into `t` (their `len` outputs).
    let run = |row: &[u8], s: usize, len: usize, t: &mut [f32]| {
        let x = &xq[s..s + len];
        let d = |j: usize| &xd_ref[(s + j) * nbx..(s + j + 1) * nbx];
        match (len, k8s, k4s, k4, k4f, kff) {
            (8, Some(k8s), ..) => k8s(
                row,
                std::array::from_fn(|j| x[j].bytes()),
                std::array::from_fn(d),
                t.try_into().expect("eight outputs"),
            ),
            (4, _, Some(k4s), ..) => k4s(
                row,
                std::array::from_fn(|j| x[j].bytes()),
                std::array::from_fn(d),
                t.try_into().expect("four outputs"),
            ),
            (4, _, _, Some(k4), ..) => k4(
                row,
                std::array::from_fn(|j| x[j].bytes()),
                t.try_into().expect("four outputs"),
            ),
            (4, _, _, _, Some(k4f), _) => k4f(
                row,
                std::array::from_fn(|j| x[j].floats()),
                t.try_into().expect("four outputs"),
            ),
            (2 | 3, .., Some(kff)) => {
                let xf: [&[f32]; 3] =
                    std::array::from_fn(|j| x.get(j).map_or(&[][..], |q| q.floats()));
                kff(row, &xf[..len], t)
            }
            _ => t[0] = k.dot(row, &x[0]),
        }
    };
    // tmp is rows × n: each task owns a contiguous run of whole rows. Rows go by tiles of about
    // TILE_BYTES, each tile through one group of inputs after another: the tile stays in L2
    // and the group's inputs in L1, where row by row all n inputs would stream from L3 for
    // every row (64 f32 inputs of 8192 are 2 MiB).
    let tile = TILE_BYTES.div_ceil(rb).max(1);
    // The first group's pass over a tile reads it from memory, and asks for the bytes
    // `STREAM_PREFETCH_BYTES` ahead as `matvec_q` does (running on into the next tile).
    let body = |t: &mut [f32], all: &[u8]| {
        for (ti, (t, data)) in t
            .chunks_mut(tile * n)
            .zip(all.chunks(tile * rb))
            .enumerate()
        {
            for (gi, &(s, len)) in groups.iter().enumerate() {
                for (r, (t, row)) in t.chunks_exact_mut(n).zip(data.chunks_exact(rb)).enumerate() {
                    if gi == 0 {
                        prefetch_ahead(all, (ti * tile + r) * rb, rb);
                    }
                    run(row, s, len, &mut t[s..s + len]);
                }
            }
        }
    };
    if w.rows * rb * n < SERIAL_BYTES || crate::parallel::threads() <= 1 {
        body(&mut tmp, w.data);
    } else {
        let chunk = rows_per_task(w.rows, rb, 4);
        crate::parallel::for_chunks_mut(&mut tmp, chunk * n, |i, t| {
            let start = i * chunk * rb;
            body(t, &w.data[start..start + t.len() / n * rb])
        });
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
