//! The down projection stored neuron-major, so that one neuron's contribution (its column of
//! `down`) is one contiguous run of memory and skipping a neuron skips its bytes.
//!
//! Why a transposed copy: in GGUF each row of `down` is an output feature over all neurons, in
//! blocks of 32 neurons; with 10% of neurons active almost every block holds one, so a sparse
//! read of the original layout reads nearly everything. The copy keeps the exact weight values
//! (integer levels with the format's own group scales, see `quant::row_levels`), so the
//! sparse result equals the dense one up to f32 summation order.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::down_simd;
use crate::huge_vec::HugeVec;
use crate::quant::{self, GgmlType, QMatrix};

/// Rows per nibble block: byte `i` of a block holds row `i` (low nibble) and row `32 + i`
/// (high nibble) of one neuron, so that unpacking is two contiguous runs of 32 outputs.
const NIB_BLOCK: usize = 64;

/// Below this many weights (active neurons × d_model) the accumulation stays on one thread.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;

/// Runs of active neurons the accumulation sums apart (see `TransposedDown::accumulate`): a
/// fixed number, so that the result is the same for any number of threads. Two: one long run
/// a thread streams faster than two half as long (`benches/sparse_ffn.rs`, 2 threads: 16.6-17.8
/// against 15.9-16.7 GB/s with four), and any even number of threads shares them evenly (the
/// rows are split as well).
const PIECES: usize = 2;

/// Neuron-major down matrix: `n_ff` neurons × `d_model` outputs.
pub struct TransposedDown {
    pub d_model: usize,
    pub n_ff: usize,
    /// Weight type of the original matrix; the activations are rounded as the dense kernel
    /// rounds them for this type.
    pub ty: GgmlType,
    repr: Repr,
}

enum Repr {
    /// `w[j][r] = scale[j / group][r] * q[j][r] + offset[j / group][r]`.
    Levels {
        group: usize,
        q: Levels,
        scale: Scales,
        /// Absent when every offset is zero (Q4_0, Q5_0, Q8_0, Q6_K).
        offset: Option<Scales>,
    },
    /// Float weights, and the formats without a level decomposition (rounded to f16).
    Float(HugeVec<f16>),
}

/// The integer levels, one neuron after another.
enum Levels {
    /// One byte per weight.
    I8(HugeVec<i8>),
    /// Levels spanning at most 16 values (the 4-bit formats): `q = nibble + bias`, two per
    /// byte in blocks of [`NIB_BLOCK`] rows. Half the bytes of `I8`.
    Nibbles { bias: i8, q: NibbleStore },
}

/// Where the packed levels live: neuron `j`'s `d / 2` bytes at `offset + j * stride` of
/// `data`. A buffer of their own at first (`stride = d / 2`); the sparse FFN may move them
/// into a slot of each neuron's record beside its gate and up rows (`records`), where the
/// hardware prefetcher that follows a kept neuron's up row brings them in on the way.
struct NibbleStore {
    data: Arc<HugeVec<u8>>,
    offset: usize,
    stride: usize,
}

impl NibbleStore {
    /// Bytes of neuron `j`'s levels from row `r0` (even) on, `len` of them.
    fn bytes(&self, j: usize, r0: usize, len: usize) -> &[u8] {
        let start = self.offset + j * self.stride + r0 / 2;
        &self.data[start..start + len]
    }
}

/// Per-group scales (or offsets), group-major: f16 when every value is exactly an f16 (the
/// formats whose block scales are f16), which halves their bytes and changes no value.
enum Scales {
    F16(HugeVec<f16>),
    F32(HugeVec<f32>),
}

impl Scales {
    fn new(v: HugeVec<f32>) -> Scales {
        if v.iter().all(|&x| f16::from_f32(x).to_f32() == x) {
            let mut h = HugeVec::zeroed(v.len());
            h.iter_mut()
                .zip(v.iter())
                .for_each(|(h, &x)| *h = f16::from_f32(x));
            Scales::F16(h)
        } else {
            Scales::F32(v)
        }
    }

    fn elem_bytes(&self) -> usize {
        match self {
            Scales::F16(_) => 2,
            Scales::F32(_) => 4,
        }
    }

    fn n_bytes(&self) -> usize {
        match self {
            Scales::F16(v) => 2 * v.len(),
            Scales::F32(v) => 4 * v.len(),
        }
    }

    /// Elements `range` as f32: borrowed, or converted into `buf`.
    fn slice<'a>(&'a self, range: std::ops::Range<usize>, buf: &'a mut [f32]) -> &'a [f32] {
        match self {
            Scales::F32(v) => &v[range],
            Scales::F16(v) => {
                let buf = &mut buf[..range.len()];
                v[range].convert_to_f32_slice(buf);
                buf
            }
        }
    }
}

impl Levels {
    fn new(q: HugeVec<i8>, d: usize) -> Levels {
        let (lo, hi) = q
            .iter()
            .fold((i8::MAX, i8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if q.is_empty() || !d.is_multiple_of(NIB_BLOCK) || hi as i16 - lo as i16 > 15 {
            return Levels::I8(q);
        }
        let mut packed = HugeVec::zeroed(q.len() / 2);
        packed
            .par_chunks_mut(NIB_BLOCK / 2)
            .zip(q.par_chunks(NIB_BLOCK))
            .for_each(|(p, q)| {
                for i in 0..NIB_BLOCK / 2 {
                    let l = (q[i] - lo) as u8;
                    let h = (q[i + NIB_BLOCK / 2] - lo) as u8;
                    p[i] = l | (h << 4);
                }
            });
        Levels::Nibbles {
            bias: lo,
            q: NibbleStore {
                data: Arc::new(packed),
                offset: 0,
                stride: d / 2,
            },
        }
    }

    /// Bytes of the levels of `n` neurons of `d` rows.
    fn n_bytes(&self, n: usize, d: usize) -> usize {
        match self {
            Levels::I8(_) => n * d,
            Levels::Nibbles { .. } => n * d / 2,
        }
    }

    /// `y += a · q[j][r0..r0 + y.len()]` for neuron `j` of a `d`-row matrix.
    fn axpy(&self, y: &mut [f32], a: f32, j: usize, d: usize, r0: usize) {
        let start = j * d + r0;
        match self {
            Levels::I8(q) => axpy_i8(y, a, &q[start..start + y.len()]),
            Levels::Nibbles { bias, q } => axpy_nib(y, a, q.bytes(j, r0, y.len() / 2), *bias),
        }
    }
}

impl TransposedDown {
    /// Build from the model's down matrix (`rows` = d_model outputs, `cols` = n_ff neurons).
    pub fn new(down: &QMatrix) -> TransposedDown {
        let (d, n) = (down.rows, down.cols);
        let repr = match quant::level_group(down.ty) {
            Some(group) => {
                let ng = n / group;
                // Row-major decomposition first (parallel over output rows), then transpose.
                let mut rq = vec![0i8; d * n];
                let mut rs = vec![0f32; d * ng];
                let mut ro = vec![0f32; d * ng];
                rq.par_chunks_mut(n)
                    .zip(rs.par_chunks_mut(ng).zip(ro.par_chunks_mut(ng)))
                    .enumerate()
                    .for_each(|(r, (q, (s, o)))| {
                        quant::row_levels(down.ty, down.row(r), q, s, o);
                    });
                let mut q = HugeVec::zeroed(n * d);
                q.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
                    for (r, v) in col.iter_mut().enumerate() {
                        *v = rq[r * n + j];
                    }
                });
                drop(rq);
                let transpose_groups = |src: &[f32]| {
                    let mut out = HugeVec::zeroed(ng * d);
                    out.par_chunks_mut(d).enumerate().for_each(|(g, col)| {
                        for (r, v) in col.iter_mut().enumerate() {
                            *v = src[r * ng + g];
                        }
                    });
                    out
                };
                let scale = Scales::new(transpose_groups(&rs));
                let offset = ro
                    .iter()
                    .any(|&v| v != 0.0)
                    .then(|| Scales::new(transpose_groups(&ro)));
                Repr::Levels {
                    group,
                    q: Levels::new(q, d),
                    scale,
                    offset,
                }
            }
            None => {
                let mut rows = vec![0f32; d * n];
                rows.par_chunks_mut(n).enumerate().for_each(|(r, out)| {
                    quant::dequantize_row(down.ty, down.row(r), out)
                        .expect("weight type checked at load");
                });
                let mut w = HugeVec::zeroed(n * d);
                w.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
                    for (r, v) in col.iter_mut().enumerate() {
                        *v = f16::from_f32(rows[r * n + j]);
                    }
                });
                Repr::Float(w)
            }
        };
        TransposedDown {
            d_model: d,
            n_ff: n,
            ty: down.ty,
            repr,
        }
    }

    /// Bytes of one neuron's levels when they are packed 4-bit ones, which
    /// [`TransposedDown::share_levels`] can move; `None` otherwise.
    pub fn nibble_bytes(&self) -> Option<usize> {
        match &self.repr {
            Repr::Levels {
                q: Levels::Nibbles { .. },
                ..
            } => Some(self.d_model / 2),
            _ => None,
        }
    }

    /// Copy the packed levels into `records` (neuron `j`'s at `offset + j * stride`), read them
    /// from there from now on, and return the buffer, shared, for its other users. `records`
    /// is returned untouched where the levels are not packed nibbles.
    pub fn share_levels(
        &mut self,
        mut records: HugeVec<u8>,
        offset: usize,
        stride: usize,
    ) -> Arc<HugeVec<u8>> {
        let len = self.d_model / 2;
        let Repr::Levels {
            q: Levels::Nibbles { q, .. },
            ..
        } = &mut self.repr
        else {
            return Arc::new(records);
        };
        assert!(
            stride >= len && offset + len <= stride && records.len() >= self.n_ff * stride,
            "records too small for the levels"
        );
        records
            .par_chunks_mut(stride)
            .take(self.n_ff)
            .enumerate()
            .for_each(|(j, rec)| rec[offset..offset + len].copy_from_slice(q.bytes(j, 0, len)));
        let shared = Arc::new(records);
        *q = NibbleStore {
            data: Arc::clone(&shared),
            offset,
            stride,
        };
        shared
    }

    /// Bytes held (for memory reports).
    pub fn n_bytes(&self) -> usize {
        match &self.repr {
            Repr::Levels {
                q, scale, offset, ..
            } => {
                q.n_bytes(self.n_ff, self.d_model)
                    + scale.n_bytes()
                    + offset.as_ref().map_or(0, Scales::n_bytes)
            }
            Repr::Float(w) => 2 * w.len(),
        }
    }

    /// Bytes that reading the neurons `active` (ascending) touches: their levels, and the
    /// scales and offsets of every group that holds one of them.
    pub fn bytes_read(&self, active: &[u32]) -> usize {
        let d = self.d_model;
        match &self.repr {
            Repr::Float(_) => 2 * d * active.len(),
            Repr::Levels {
                group,
                q,
                scale,
                offset,
            } => {
                let mut groups = 0;
                let mut last = usize::MAX;
                for &j in active {
                    let g = j as usize / group;
                    groups += usize::from(g != last);
                    last = g;
                }
                let per_group = scale.elem_bytes() + offset.as_ref().map_or(0, Scales::elem_bytes);
                q.n_bytes(active.len(), d) + groups * d * per_group
            }
        }
    }

    /// `out = Σ_{j in active} a[j] · column j`, with `a` indexed by neuron (only the active
    /// entries are read). `active` must be ascending. `group_sums`, when given, replaces the
    /// sum of `a` over each scale group in the offset term. `tmp` is scratch.
    ///
    /// The active neurons are cut into [`PIECES`] runs of about equal length at scale-group
    /// boundaries; each run's columns are summed on their own and the runs' sums added in
    /// order. Why by neurons rather than by output rows: a task then reads each of its groups'
    /// scales (4 KiB for 2,048 rows, more bytes than the levels of the ~2-3 neurons kept in a
    /// group) and its neurons' levels whole, and consecutive groups' scales are adjacent, so a
    /// task streams where a split by rows reads every group's scales in halves
    /// (`benches/sparse_ffn.rs`: ~1.25× on a 1B-class layer). With more threads than pieces,
    /// the rows are split as well. The cut depends on `active` only, so the result does not
    /// depend on the number of threads.
    pub fn accumulate(
        &self,
        active: &[u32],
        a: &[f32],
        group_sums: Option<&[f32]>,
        out: &mut [f32],
        tmp: &mut Vec<f32>,
    ) {
        let d = self.d_model;
        assert_eq!(out.len(), d);
        let cuts = self.cuts(active);
        let threads = crate::parallel::threads();
        let parallel = threads > 1 && active.len() * d >= PARALLEL_MIN_WEIGHTS;
        let row_chunks = if parallel {
            threads.div_ceil(PIECES)
        } else {
            1
        };
        let chunk = d.div_ceil(row_chunks).next_multiple_of(NIB_BLOCK).min(d);
        let n_rc = d.div_ceil(chunk);
        let tasks = PIECES * n_rc;
        // One `chunk`-long partial sum per task (its piece's sum over its rows), then each
        // task's scratch.
        tmp.clear();
        tmp.resize(tasks * 4 * chunk, 0.0);
        let (partials, scratch) = tmp.split_at_mut(tasks * chunk);
        let task = |t: usize, part: &mut [f32], scratch: &mut [f32]| {
            let (p, c) = (t / n_rc, t % n_rc);
            let r0 = c * chunk;
            let rows = chunk.min(d - r0);
            let piece = &active[cuts[p]..cuts[p + 1]];
            self.accumulate_rows(piece, a, group_sums, r0, &mut part[..rows], scratch);
        };
        if parallel {
            crate::parallel::for_chunk_pairs_mut(partials, chunk, scratch, 3 * chunk, task);
        } else {
            let scratch = &mut scratch[..3 * chunk];
            for (t, part) in partials.chunks_mut(chunk).enumerate() {
                task(t, part, scratch);
            }
        }
        for (c, out) in out.chunks_mut(chunk).enumerate() {
            let n = out.len();
            let part = |p: usize| &partials[(p * n_rc + c) * chunk..][..n];
            out.copy_from_slice(part(0));
            for p in 1..PIECES {
                add_into(out, part(p));
            }
        }
    }

    /// Where [`TransposedDown::accumulate`] cuts `active` (ascending): [`PIECES`] runs of
    /// about equal length, each cut moved forward to the start of a scale group so that no
    /// group's scales are read twice.
    fn cuts(&self, active: &[u32]) -> [usize; PIECES + 1] {
        let group = match &self.repr {
            Repr::Levels { group, .. } => *group as u32,
            Repr::Float(_) => 1,
        };
        let n = active.len();
        let mut cuts = [n; PIECES + 1];
        cuts[0] = 0;
        for p in 1..PIECES {
            let at = (p * n / PIECES).max(cuts[p - 1]);
            cuts[p] = match at.checked_sub(1).map(|i| active[i] / group) {
                Some(g) if at < n => at + active[at..].partition_point(|&j| j / group == g),
                _ => at,
            };
        }
        cuts
    }

    /// [`TransposedDown::accumulate`] for output rows `r0..r0 + out.len()`; `tmp` holds at
    /// least three times `out.len()`. `r0` is a multiple of the nibble block.
    fn accumulate_rows(
        &self,
        active: &[u32],
        a: &[f32],
        group_sums: Option<&[f32]>,
        r0: usize,
        out: &mut [f32],
        tmp: &mut [f32],
    ) {
        let (d, n) = (self.d_model, out.len());
        out.fill(0.0);
        match &self.repr {
            Repr::Float(w) => {
                if n.is_multiple_of(8) && down_simd::available() {
                    return down_simd::accumulate_f16(w, d, active, a, r0, out);
                }
                for &j in active {
                    let j = j as usize;
                    axpy_f16(out, a[j], &w[j * d + r0..j * d + r0 + n]);
                }
            }
            Repr::Levels { .. } => {
                if let Some(m) = self.nibble_f16() {
                    if n.is_multiple_of(down_simd::ROWS) && down_simd::available() {
                        return down_simd::accumulate(&m, active, a, group_sums, r0, out);
                    }
                }
                self.accumulate_levels(active, a, group_sums, r0, out, tmp);
            }
        }
    }

    /// The 4-bit levels with f16 scales (and offsets) as the SIMD kernel takes them.
    fn nibble_f16(&self) -> Option<down_simd::NibbleF16<'_>> {
        let Repr::Levels {
            group,
            q: Levels::Nibbles { bias, q },
            scale: Scales::F16(scale),
            offset,
        } = &self.repr
        else {
            return None;
        };
        let offset = match offset {
            None => None,
            Some(Scales::F16(o)) => Some(&o[..]),
            Some(Scales::F32(_)) => return None,
        };
        Some(down_simd::NibbleF16 {
            q: &q.data[q.offset..],
            stride: q.stride,
            n_ff: self.n_ff,
            bias: *bias,
            scale,
            offset,
            group: *group,
            d: self.d_model,
        })
    }

    /// The portable loops over integer levels: per scale group, the kept neurons' levels
    /// summed into `tmp`, then scaled into `out`.
    fn accumulate_levels(
        &self,
        active: &[u32],
        a: &[f32],
        group_sums: Option<&[f32]>,
        r0: usize,
        out: &mut [f32],
        tmp: &mut [f32],
    ) {
        let (d, n) = (self.d_model, out.len());
        let Repr::Levels {
            group,
            q,
            scale,
            offset,
        } = &self.repr
        else {
            unreachable!("called for level layouts only")
        };
        let group = *group;
        let (acc, rest) = tmp.split_at_mut(n);
        let (sbuf, obuf) = rest.split_at_mut(n);
        let mut i = 0;
        while i < active.len() {
            // All active neurons of one scale group share the final scaling.
            let g = active[i] as usize / group;
            let mut sum_a = 0f32;
            acc.fill(0.0);
            while i < active.len() && active[i] as usize / group == g {
                let j = active[i] as usize;
                q.axpy(acc, a[j], j, d, r0);
                sum_a += a[j];
                i += 1;
            }
            if let Some(sums) = group_sums {
                // Q8_1 activations carry their own block sum (f16, from the unrounded
                // scale), and the dense kernel multiplies the offsets by that.
                sum_a = sums[g];
            }
            let range = g * d + r0..g * d + r0 + n;
            let s = scale.slice(range.clone(), sbuf);
            match offset {
                Some(o) => {
                    let o = o.slice(range, obuf);
                    scale_offset_add(out, acc, s, o, sum_a)
                }
                None => scale_add(out, acc, s),
            }
        }
    }
}

// The loops below are written for the auto-vectoriser; each has an AVX2+FMA entry point chosen
// at run time and a plain one, computing the same expression.

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn simd($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features the function was compiled for.
                    return unsafe { simd($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

#[inline(always)]
fn axpy_i8_body(y: &mut [f32], a: f32, q: &[i8]) {
    for (y, &q) in y.iter_mut().zip(q) {
        *y = (q as f32).mul_add(a, *y);
    }
}

#[inline(always)]
fn axpy_nib_body(y: &mut [f32], a: f32, q: &[u8], bias: i8) {
    const H: usize = NIB_BLOCK / 2;
    for (y, q) in y.chunks_exact_mut(NIB_BLOCK).zip(q.chunks_exact(H)) {
        let (lo, hi) = y.split_at_mut(H);
        for i in 0..H {
            // The level as an integer first: the same f32 value, and operation, as axpy_i8.
            let l = ((q[i] & 15) as i8 + bias) as f32;
            let h = ((q[i] >> 4) as i8 + bias) as f32;
            lo[i] = l.mul_add(a, lo[i]);
            hi[i] = h.mul_add(a, hi[i]);
        }
    }
}

#[inline(always)]
fn axpy_f16_body(y: &mut [f32], a: f32, w: &[f16]) {
    for (y, w) in y.iter_mut().zip(w) {
        *y = w.to_f32().mul_add(a, *y);
    }
}

#[inline(always)]
fn scale_add_body(out: &mut [f32], t: &[f32], s: &[f32]) {
    for ((o, &t), &s) in out.iter_mut().zip(t).zip(s) {
        *o = t.mul_add(s, *o);
    }
}

#[inline(always)]
fn scale_offset_add_body(out: &mut [f32], t: &[f32], s: &[f32], off: &[f32], sum_a: f32) {
    for (((o, &t), &s), &m) in out.iter_mut().zip(t).zip(s).zip(off) {
        *o = m.mul_add(sum_a, t.mul_add(s, *o));
    }
}

#[inline(always)]
fn add_into_body(out: &mut [f32], x: &[f32]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o += x;
    }
}

dispatch!(add_into, add_into_body, (out: &mut [f32], x: &[f32]));
dispatch!(axpy_i8, axpy_i8_body, (y: &mut [f32], a: f32, q: &[i8]));
dispatch!(axpy_nib, axpy_nib_body, (y: &mut [f32], a: f32, q: &[u8], bias: i8));
dispatch!(axpy_f16, axpy_f16_body, (y: &mut [f32], a: f32, w: &[f16]));
dispatch!(scale_add, scale_add_body, (out: &mut [f32], t: &[f32], s: &[f32]));
dispatch!(
    scale_offset_add,
    scale_offset_add_body,
    (out: &mut [f32], t: &[f32], s: &[f32], off: &[f32], sum_a: f32)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Sparse accumulation equals the dense product of the dequantised matrix with the
    /// activation vector zeroed outside the active set, for level (i8 and nibble, f16 and f32
    /// scales) and float layouts, on one thread and split over row ranges.
    #[test]
    fn accumulate_matches_dense_reference() {
        // (d, n, keep every k-th neuron): 96 rows cannot hold nibble blocks; 256 × 1024 with
        // half the neurons is large enough to be split over the pool.
        for (d, n, k) in [(96, 256, 3), (128, 256, 5), (256, 1024, 2)] {
            let w = rand(d * n, 7 + d as u64);
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q4_1,
                GgmlType::Q5_0,
                GgmlType::Q8_0,
                GgmlType::F16,
            ] {
                let rb = n / ty.block_len() * ty.block_bytes();
                let mut data = vec![0u8; d * rb];
                for r in 0..d {
                    quant::quantize_row(
                        ty,
                        &w[r * n..(r + 1) * n],
                        &mut data[r * rb..(r + 1) * rb],
                    )
                    .unwrap();
                }
                let m = QMatrix::new(ty, d, n, &data).unwrap();
                let t = TransposedDown::new(&m);
                let nibbles = matches!(
                    &t.repr,
                    Repr::Levels {
                        q: Levels::Nibbles { .. },
                        ..
                    }
                );
                let four_bit = matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1);
                assert_eq!(nibbles, four_bit && d % NIB_BLOCK == 0, "{ty} d {d}");
                let a = rand(n, 11);
                let active: Vec<u32> = (0..n as u32).filter(|j| j % k == 0 || j % 7 == 1).collect();
                let mut dense_w = vec![0f32; n];
                let mut want = vec![0f64; d];
                for (r, want) in want.iter_mut().enumerate() {
                    quant::dequantize_row(ty, m.row(r), &mut dense_w).unwrap();
                    *want = active
                        .iter()
                        .map(|&j| dense_w[j as usize] as f64 * a[j as usize] as f64)
                        .sum();
                }
                let mut out = vec![0f32; d];
                t.accumulate(&active, &a, None, &mut out, &mut Vec::new());
                for r in 0..d {
                    assert!(
                        (out[r] as f64 - want[r]).abs() < 1e-4 * (1.0 + want[r].abs()),
                        "{ty} {d}x{n} row {r}: {} vs {}",
                        out[r],
                        want[r]
                    );
                }
                // One thread, and more threads than pieces (rows split too), give the very
                // same bits.
                for threads in [1, PIECES + 1] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut other = vec![0f32; d];
                    pool.install(|| t.accumulate(&active, &a, None, &mut other, &mut Vec::new()));
                    assert_eq!(out, other, "{ty} {d}x{n} on {threads} threads");
                }
            }
        }
    }

    /// The accumulation's pieces cover the active list in order, start at scale-group
    /// boundaries and share it out about evenly.
    #[test]
    fn pieces_cut_at_group_boundaries() {
        let (d, n) = (64, 1024);
        let w = rand(d * n, 3);
        let rb = n / 32 * 18;
        let mut data = vec![0u8; d * rb];
        for r in 0..d {
            quant::quantize_row(
                GgmlType::Q4_0,
                &w[r * n..(r + 1) * n],
                &mut data[r * rb..][..rb],
            )
            .unwrap();
        }
        let t = TransposedDown::new(&QMatrix::new(GgmlType::Q4_0, d, n, &data).unwrap());
        for (k, len) in [(1, 1024), (3, 342), (7, 147), (101, 11), (1024, 1)] {
            let active: Vec<u32> = (0..n as u32).filter(|j| j % k == 0).collect();
            assert_eq!(active.len(), len);
            let cuts = t.cuts(&active);
            assert_eq!((cuts[0], cuts[PIECES]), (0, len), "every {k}th");
            for p in 1..PIECES {
                let c = cuts[p];
                assert!(cuts[p - 1] <= c, "every {k}th: cuts {cuts:?}");
                if c > 0 && c < len {
                    assert_ne!(
                        active[c - 1] / 32,
                        active[c] / 32,
                        "every {k}th: cuts {cuts:?}"
                    );
                }
                // At most one group's neurons past the even share.
                assert!(
                    c >= p * len / PIECES && c <= p * len / PIECES + 32,
                    "{cuts:?}"
                );
            }
        }
        let empty: [u32; 0] = [];
        assert_eq!(t.cuts(&empty), [0; PIECES + 1]);
    }

    /// The SIMD kernel for 4-bit levels, its 256- and 512-bit bodies, gives the very bits of
    /// the portable loops, with and without offsets (Q4_1, Q4_0), for sparse and dense active
    /// sets and the Q8_1 group sums.
    #[test]
    fn simd_nibble_kernel_equals_portable_loops() {
        if !down_simd::available() {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let (d, n) = (256, 512);
        let w = rand(d * n, 21);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1] {
            let rb = n / ty.block_len() * ty.block_bytes();
            let mut data = vec![0u8; d * rb];
            for r in 0..d {
                quant::quantize_row(ty, &w[r * n..(r + 1) * n], &mut data[r * rb..(r + 1) * rb])
                    .unwrap();
            }
            let t = TransposedDown::new(&QMatrix::new(ty, d, n, &data).unwrap());
            assert!(t.nibble_f16().is_some(), "{ty}");
            let a = rand(n, 23);
            let sums = rand(n / 32, 29);
            for k in [1, 2, 3, 17] {
                let active: Vec<u32> = (0..n as u32)
                    .filter(|j| j % k == 0 || j % 13 == 5)
                    .collect();
                for group_sums in [None, Some(&sums[..])] {
                    for r0 in [0, 64] {
                        let rows = d - r0 - 64;
                        let mut port = vec![0f32; rows];
                        let mut tmp = vec![0f32; 3 * rows];
                        t.accumulate_levels(&active, &a, group_sums, r0, &mut port, &mut tmp);
                        assert!(port.iter().any(|&v| v != 0.0));
                        let m = t.nibble_f16().unwrap();
                        for wide in [false, true] {
                            if wide && !down_simd::wide_available() {
                                eprintln!("512-bit body skipped: no AVX-512 F");
                                continue;
                            }
                            let mut simd = vec![0f32; rows];
                            down_simd::accumulate_with(
                                wide, &m, &active, &a, group_sums, r0, &mut simd,
                            );
                            assert_eq!(simd, port, "{ty} k {k} r0 {r0} wide {wide}");
                        }
                    }
                }
            }
        }
    }

    /// The f16 column kernel gives the bits of the portable `axpy_f16` loop.
    #[test]
    fn simd_f16_kernel_equals_portable_loop() {
        if !down_simd::available() {
            eprintln!("skipped: no AVX2/FMA/F16C");
            return;
        }
        let (d, n) = (200, 96);
        let w: Vec<f16> = rand(d * n, 31).iter().map(|&v| f16::from_f32(v)).collect();
        let a = rand(n, 37);
        let active: Vec<u32> = (0..n as u32).filter(|j| j % 3 != 1).collect();
        for (r0, rows) in [(0, 200), (8, 64), (96, 104)] {
            let mut simd = vec![0.5f32; rows];
            down_simd::accumulate_f16(&w, d, &active, &a, r0, &mut simd);
            let mut port = vec![0.5f32; rows];
            for &j in &active {
                let j = j as usize;
                axpy_f16(&mut port, a[j], &w[j * d + r0..j * d + r0 + rows]);
            }
            assert_eq!(simd, port, "r0 {r0}");
        }
    }

    /// Bytes read, against counting by hand: level bytes per active neuron plus d scales (and
    /// offsets) per touched group, at the width the scales are stored in.
    #[test]
    fn bytes_read_counts_touched_groups() {
        let (d, n) = (128, 256);
        let w = rand(d * n, 5);
        for (ty, level_bytes, group_bytes) in [
            (GgmlType::Q4_0, d / 2, 2),
            (GgmlType::Q4_1, d / 2, 2 + 2),
            (GgmlType::Q8_0, d, 2),
        ] {
            let rb = n / ty.block_len() * ty.block_bytes();
            let mut data = vec![0u8; d * rb];
            for r in 0..d {
                quant::quantize_row(ty, &w[r * n..(r + 1) * n], &mut data[r * rb..(r + 1) * rb])
                    .unwrap();
            }
            let t = TransposedDown::new(&QMatrix::new(ty, d, n, &data).unwrap());
            // Neurons 0, 1, 31 (group 0), 64 (group 2), 255 (group 7): three groups.
            let active = [0u32, 1, 31, 64, 255];
            assert_eq!(
                t.bytes_read(&active),
                5 * level_bytes + 3 * d * group_bytes,
                "{ty}"
            );
        }
    }
}
