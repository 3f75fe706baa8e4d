//! A weight row as integer levels with one scale and offset per group: `w = scale·q + offset`.
//! Every block format is this underneath; the sparse FFN uses it to store the down matrix
//! neuron-major without changing a single weight value.

use super::layout::*;
use super::GgmlType;

/// Elements sharing one scale and offset in `ty`, when the format decomposes exactly into
/// signed 8-bit levels (every block format except Q2_K/Q3_K, left to a float fallback).
pub fn level_group(ty: GgmlType) -> Option<usize> {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4_K | Q5_K => Some(32),
        Q6_K => Some(16),
        _ => None,
    }
}

/// Decompose one row (`src`, whole blocks of `ty`) into levels `q` (one per element) and
/// `scale`/`offset` (one per group of [`level_group`] elements), such that
/// `scale[g] * q[i] + offset[g]` equals `dequantize_row`'s value for element `i`, computed in
/// the same f32 operations. Returns false for formats without a decomposition.
pub fn row_levels(
    ty: GgmlType,
    src: &[u8],
    q: &mut [i8],
    scale: &mut [f32],
    offset: &mut [f32],
) -> bool {
    use GgmlType::*;
    let Some(group) = level_group(ty) else {
        return false;
    };
    let n = q.len();
    let bl = ty.block_len();
    assert!(n.is_multiple_of(bl), "row of whole blocks");
    assert_eq!(src.len(), n / bl * ty.block_bytes(), "row bytes");
    assert!(
        scale.len() == n / group && offset.len() == n / group,
        "group count"
    );
    let per_block = bl / group;
    for (bi, b) in src.chunks_exact(ty.block_bytes()).enumerate() {
        let qb = &mut q[bi * bl..(bi + 1) * bl];
        let sc = &mut scale[bi * per_block..(bi + 1) * per_block];
        let of = &mut offset[bi * per_block..(bi + 1) * per_block];
        match ty {
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 => {
                let mut u = [0i8; 32];
                let (d, m, bias) = match ty {
                    Q4_0 => {
                        unpack_q4(&b[2..18], &mut u);
                        (f16_at(b, 0), 0.0, 8)
                    }
                    Q4_1 => {
                        unpack_q4(&b[4..20], &mut u);
                        (f16_at(b, 0), f16_at(b, 2), 0)
                    }
                    Q5_0 => {
                        unpack_q5(&b[2..6], &b[6..22], &mut u);
                        (f16_at(b, 0), 0.0, 16)
                    }
                    Q5_1 => {
                        unpack_q5(&b[4..8], &b[8..24], &mut u);
                        (f16_at(b, 0), f16_at(b, 2), 0)
                    }
                    _ => {
                        for (u, &x) in u.iter_mut().zip(&b[2..34]) {
                            *u = x as i8;
                        }
                        (f16_at(b, 0), 0.0, 0)
                    }
                };
                for (o, u) in qb.iter_mut().zip(u) {
                    *o = u - bias;
                }
                sc[0] = d;
                of[0] = m;
            }
            Q4_K | Q5_K => {
                let (d, dmin) = (f16_at(b, Q4K_D), f16_at(b, Q4K_DMIN));
                let (s, m) = k4_scales_mins(&b[Q4K_SCALES..Q4K_SCALES + 12]);
                let mut u = [0i8; 256];
                if ty == Q4_K {
                    unpack_q4k(b, &mut u);
                } else {
                    unpack_q5k(b, &mut u);
                }
                qb.copy_from_slice(&u);
                for g in 0..8 {
                    sc[g] = d * s[g] as f32;
                    of[g] = -(dmin * m[g] as f32);
                }
            }
            Q6_K => {
                let d = f16_at(b, Q6K_D);
                let mut u = [0i8; 256];
                unpack_q6k(b, &mut u);
                qb.copy_from_slice(&u);
                for g in 0..16 {
                    sc[g] = d * b[Q6K_SCALES + g] as i8 as f32;
                    of[g] = 0.0;
                }
            }
            _ => unreachable!("level_group checked"),
        }
    }
    true
}
