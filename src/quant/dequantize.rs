//! Dequantisation of a row of any supported block format to f32.

use super::layout::*;
use super::{GgmlType, QuantError};

/// Decode the first `dst.len()` elements stored in `src` (whole blocks) into `dst`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    let n = dst.len();
    let bl = ty.block_len();
    if !matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
    ) {
        return Err(QuantError::Unsupported {
            op: "dequantize",
            ty,
        });
    }
    if !n.is_multiple_of(bl) {
        return Err(QuantError::PartialBlock { ty, n, block: bl });
    }
    let need = n / bl * ty.block_bytes();
    if src.len() < need {
        return Err(QuantError::Length {
            what: "dequantize source",
            expected: need,
            got: src.len(),
        });
    }
    let bb = ty.block_bytes();
    let blocks = src[..need].chunks_exact(bb).zip(dst.chunks_exact_mut(bl));
    match ty {
        F32 => blocks.for_each(|(b, y)| y[0] = f32_at(b, 0)),
        F16 => blocks.for_each(|(b, y)| y[0] = f16_at(b, 0)),
        BF16 => blocks.for_each(|(b, y)| y[0] = bf16_at(b, 0)),
        Q4_0 => blocks.for_each(|(b, y)| {
            let d = f16_at(b, 0);
            let mut q = [0i8; 32];
            unpack_q4(&b[2..18], &mut q);
            y.iter_mut()
                .zip(q)
                .for_each(|(y, q)| *y = (q - 8) as f32 * d);
        }),
        Q4_1 => blocks.for_each(|(b, y)| {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let mut q = [0i8; 32];
            unpack_q4(&b[4..20], &mut q);
            y.iter_mut().zip(q).for_each(|(y, q)| *y = q as f32 * d + m);
        }),
        Q5_0 => blocks.for_each(|(b, y)| {
            let d = f16_at(b, 0);
            let mut q = [0i8; 32];
            unpack_q5(&b[2..6], &b[6..22], &mut q);
            y.iter_mut()
                .zip(q)
                .for_each(|(y, q)| *y = (q - 16) as f32 * d);
        }),
        Q5_1 => blocks.for_each(|(b, y)| {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let mut q = [0i8; 32];
            unpack_q5(&b[4..8], &b[8..24], &mut q);
            y.iter_mut().zip(q).for_each(|(y, q)| *y = q as f32 * d + m);
        }),
        Q8_0 => blocks.for_each(|(b, y)| {
            let d = f16_at(b, 0);
            y.iter_mut()
                .zip(&b[2..34])
                .for_each(|(y, &q)| *y = q as i8 as f32 * d);
        }),
        Q8_1 => blocks.for_each(|(b, y)| {
            let d = f16_at(b, 0);
            y.iter_mut()
                .zip(&b[4..36])
                .for_each(|(y, &q)| *y = q as i8 as f32 * d);
        }),
        Q8_K => blocks.for_each(|(b, y)| {
            let d = f32_at(b, 0);
            y.iter_mut()
                .zip(&b[Q8K_QS..Q8K_QS + 256])
                .for_each(|(y, &q)| *y = d * q as i8 as f32);
        }),
        Q2_K => blocks.for_each(|(b, y)| {
            let (d, dmin) = (f16_at(b, Q2K_D), f16_at(b, Q2K_DMIN));
            let mut q = [0i8; 256];
            unpack_q2k(b, &mut q);
            for (s, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let sc = b[Q2K_SCALES + s];
                let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                y.iter_mut()
                    .zip(q)
                    .for_each(|(y, &q)| *y = dl * q as f32 - ml);
            }
        }),
        Q3_K => blocks.for_each(|(b, y)| {
            let d = f16_at(b, Q3K_D);
            let sc = q3k_scales(&b[Q3K_SCALES..Q3K_SCALES + 12]);
            let mut q = [0i8; 256];
            unpack_q3k(b, &mut q);
            for (s, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d * sc[s] as f32;
                y.iter_mut().zip(q).for_each(|(y, &q)| *y = dl * q as f32);
            }
        }),
        Q4_K | Q5_K => blocks.for_each(|(b, y)| {
            let (d, dmin) = (f16_at(b, Q4K_D), f16_at(b, Q4K_DMIN));
            let (sc, m) = k4_scales_mins(&b[Q4K_SCALES..Q4K_SCALES + 12]);
            let mut q = [0i8; 256];
            if ty == Q4_K {
                unpack_q4k(b, &mut q);
            } else {
                unpack_q5k(b, &mut q);
            }
            for (s, (y, q)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
                let (dl, ml) = (d * sc[s] as f32, dmin * m[s] as f32);
                y.iter_mut()
                    .zip(q)
                    .for_each(|(y, &q)| *y = dl * q as f32 - ml);
            }
        }),
        Q6_K => blocks.for_each(|(b, y)| {
            let d = f16_at(b, Q6K_D);
            let mut q = [0i8; 256];
            unpack_q6k(b, &mut q);
            for (s, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d * b[Q6K_SCALES + s] as i8 as f32;
                y.iter_mut().zip(q).for_each(|(y, &q)| *y = dl * q as f32);
            }
        }),
        _ => unreachable!("checked above"),
    }
    Ok(())
}
