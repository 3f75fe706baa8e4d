//! Every CUDA kernel against its CPU twin (src/backend/cuda/twins.rs, or the CPU backend's
//! function of the same name) on random non-zero inputs, with sizes that are not multiples
//! of the kernels' blocks, warps or tiles. Needs a GPU: without one each test prints
//! SKIPPED, unless POWERINFER_REQUIRE_GPU=1 (scripts/gpu-check.sh) makes that a failure.
#![cfg(feature = "cuda")]

mod common;
mod quant_common;

use common::gpu;

use half::f16;
use powerinfer::backend::cpu::{self, ops, CpuTensor};
use powerinfer::backend::cuda::{self, twins, CudaBackend};
use powerinfer::backend::{AttnParams, Backend, CpuBackend};
use powerinfer::model::{FfnKind, RopeStyle};
use powerinfer::quant::GgmlType;
use powerinfer::sparse::{self, LayerThreshold, SparsityRule};
use quant_common::{random_row, Rng};

/// Weight formats with kernels of their own.
const TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

const KINDS: [FfnKind; 5] = [
    FfnKind::SwiGlu,
    FfnKind::GeGlu,
    FfnKind::ReGlu,
    FfnKind::DReLU,
    FfnKind::Relu,
];

/// ‖got − want‖ / ‖want‖ under `rel`, no NaN, same length.
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g} (want {w})");
        num += (g as f64 - w as f64).powi(2);
        den += (w as f64).powi(2);
    }
    let err = (num / den.max(1e-30)).sqrt();
    assert!(
        err < rel,
        "{what}: relative error {err:.3e} over {rel:.0e} (first values {:?} vs {:?})",
        &got[..got.len().min(4)],
        &want[..want.len().min(4)]
    );
}

/// Column counts to test for a type: whole blocks, and for float types a width that is not a
/// multiple of the 32-value chunk.
fn widths(ty: GgmlType) -> Vec<usize> {
    match ty {
        GgmlType::F32 | GgmlType::F16 => vec![100, 544],
        GgmlType::Q4_K | GgmlType::Q6_K => vec![256, 768],
        _ => vec![96, 544],
    }
}

fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    (0..rows).flat_map(|_| random_row(rng, ty, cols)).collect()
}

#[test]
fn matvec_and_matmul_match_twins_for_every_type() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(1);
    for ty in TYPES {
        for cols in widths(ty) {
            // 37 rows: not a multiple of the 4 warps of a block; 13 tokens: not of the 8 of a tile.
            let rows = 37;
            let data = random_matrix(&mut rng, ty, rows, cols);
            let w = b.upload_weight(ty, rows, cols, &data).unwrap();
            for n_tok in [1, 5, 13] {
                let x = rng.vec(n_tok * cols);
                let mut out = b.new_tensor();
                b.matmul(&w, &b.upload(&x, n_tok, cols), &mut out);
                let want = if n_tok == 1 {
                    twins::matvec(ty, &data, rows, cols, &x)
                } else {
                    twins::matmul(ty, &data, rows, cols, &x)
                };
                let name = if n_tok == 1 { "matvec" } else { "matmul" };
                assert_close(
                    &format!("{name}_{ty} {rows}x{cols} x{n_tok}"),
                    &b.download(&out),
                    &want,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn weights_without_kernels_are_converted_and_match() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(2);
    for ty in [
        GgmlType::BF16,
        GgmlType::Q5_1,
        GgmlType::Q5_K,
        GgmlType::Q3_K,
    ] {
        let (rows, cols) = (9, 256);
        let data = random_matrix(&mut rng, ty, rows, cols);
        let w = b.upload_weight(ty, rows, cols, &data).unwrap();
        let x = rng.vec(cols);
        let mut out = b.new_tensor();
        b.matmul(&w, &b.upload(&x, 1, cols), &mut out);
        // Converted to f16 (f32 for BF16): the f16 rounding of the weights is the error.
        let want = twins::matvec(ty, &data, rows, cols, &x);
        assert_close(&format!("converted {ty}"), &b.download(&out), &want, 2e-3);
    }
}

#[test]
fn embed_matches_twin_for_every_type() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(3);
    for ty in TYPES {
        for cols in widths(ty) {
            let vocab = 50;
            let data = random_matrix(&mut rng, ty, vocab, cols);
            let w = b.upload_weight(ty, vocab, cols, &data).unwrap();
            let tokens: Vec<u32> = (0..7).map(|_| (rng.u64() % vocab as u64) as u32).collect();
            let mut out = b.new_tensor();
            b.embed(&w, &tokens, 1.7, &mut out);
            let want = twins::embed(ty, &data, cols, &tokens, 1.7);
            assert_close(
                &format!("embed_{ty} {cols}"),
                &b.download(&out),
                &want,
                1e-6,
            );
        }
    }
}

#[test]
fn rms_norm_matches_twin_whole_rows_and_per_head() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(4);
    for (rows, cols, seg) in [(3, 1000, 1000), (5, 120, 40), (1, 576, 576)] {
        let x = rng.vec(rows * cols);
        let w = rng.vec(seg);
        let mut want = vec![0f32; rows * cols];
        for (o, xs) in want.chunks_exact_mut(seg).zip(x.chunks_exact(seg)) {
            ops::rms_norm(xs, &w, 1e-6, o);
        }
        let (xt, wt) = (b.upload(&x, rows, cols), b.load_vector(&w));
        let mut out = b.new_tensor();
        b.rms_norm(&xt, &wt, 1e-6, &mut out);
        assert_close("rms_norm", &b.download(&out), &want, 1e-6);
        let mut inplace = b.upload(&x, rows, cols);
        b.rms_norm_inplace(&mut inplace, &wt, 1e-6);
        assert_close("rms_norm in place", &b.download(&inplace), &want, 1e-6);
    }
}

#[test]
fn rope_matches_twin_in_both_layouts() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(5);
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        for (rows, heads, head_dim, rope_dim, pos0) in [(1, 9, 64, 64, 37), (6, 3, 128, 64, 5)] {
            let cols = heads * head_dim;
            let x = rng.vec(rows * cols);
            let mut want = x.clone();
            for (i, r) in want.chunks_exact_mut(cols).enumerate() {
                ops::rope(r, head_dim, rope_dim, pos0 + i, 10000.0, style);
            }
            let mut t = b.upload(&x, rows, cols);
            b.rope(&mut t, head_dim, rope_dim, pos0, 10000.0, style);
            assert_close(&format!("rope {style:?}"), &b.download(&t), &want, 1e-5);
        }
    }
}

#[test]
fn elementwise_kernels_match_twins() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(6);
    let (rows, cols) = (3, 333);
    let x = rng.vec(rows * cols);
    let y = rng.vec(rows * cols);
    let bias = rng.vec(cols);

    let mut want = x.clone();
    twins::add(&mut want, &y);
    let mut t = b.upload(&x, rows, cols);
    b.add(&mut t, &b.upload(&y, rows, cols));
    assert_close("add", &b.download(&t), &want, 1e-7);

    let mut want = x.clone();
    twins::add_bias(&mut want, &bias);
    let mut t = b.upload(&x, rows, cols);
    b.add_bias(&mut t, &b.load_vector(&bias));
    assert_close("add_bias", &b.download(&t), &want, 1e-7);

    for kind in KINDS {
        // Scaled up so that the activations' curved parts and both signs are exercised.
        let g: Vec<f32> = x.iter().map(|v| v * 4.0).collect();
        let mut want = y.clone();
        for (u, gr) in want.chunks_exact_mut(cols).zip(g.chunks_exact(cols)) {
            ops::ffn_activation_f32(kind, if kind.is_gated() { gr } else { &[] }, u);
        }
        let mut up = b.upload(&y, rows, cols);
        b.ffn_activation(kind, &b.upload(&g, rows, cols), &mut up);
        assert_close(
            &format!("ffn_activation {kind:?}"),
            &b.download(&up),
            &want,
            1e-6,
        );
    }

    let mut want = x.clone();
    for r in want.chunks_exact_mut(cols) {
        ops::softmax(r);
    }
    let mut t = b.upload(&x, rows, cols);
    b.softmax(&mut t);
    assert_close("softmax", &b.download(&t), &want, 1e-6);

    let cold = rng.vec(cols);
    let mut want = y[..cols].to_vec();
    twins::add(&mut want, &cold);
    let mut t = b.upload(&y[..cols], 1, cols);
    let mut scratch = b.new_tensor();
    b.merge_cold(&mut t, &cold, &mut scratch);
    assert_close("merge_cold (add)", &b.download(&t), &want, 1e-7);
}

/// The median of the non-zero `|v|`: a threshold that masks about half of those values.
fn median_abs(v: &[f32]) -> f32 {
    let mut a: Vec<f32> = v.iter().map(|x| x.abs()).filter(|&x| x > 0.0).collect();
    a.sort_by(f32::total_cmp);
    a[a.len() / 2]
}

#[test]
fn ffn_mask_matches_twin_for_every_rule_and_kind() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(12);
    let (rows, cols) = (3, 333);
    // Scaled up so that the gate non-linearities' curved parts and both signs are exercised.
    let g: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v * 4.0).collect();
    let u = rng.vec(rows * cols);
    let ones = vec![1.0f32; rows * cols];
    for kind in KINDS {
        let gated = kind.is_gated();
        let apply = |up: &[f32]| {
            let mut a = up.to_vec();
            for (r, gr) in a.chunks_exact_mut(cols).zip(g.chunks_exact(cols)) {
                ops::ffn_activation_f32(kind, if gated { gr } else { &[] }, r);
            }
            a
        };
        let act = apply(&u);
        // act(gate) alone, from the activation with up = 1 (the plain kind has no gate).
        let gate_act = apply(&ones);
        for rule in [
            SparsityRule::Relu,
            SparsityRule::Gate,
            SparsityRule::Product,
        ] {
            let t = match rule {
                SparsityRule::Relu => 0.0,
                SparsityRule::Gate => median_abs(&gate_act),
                SparsityRule::Product => median_abs(&act),
            };
            let th = LayerThreshold { rule, t };
            let mut want = act.clone();
            sparse::mask_activation(kind, th, if gated { &g } else { &[] }, &mut want);
            let masked = want.iter().zip(&act).filter(|(w, a)| w != a).count();
            if rule == SparsityRule::Product || (rule == SparsityRule::Gate && gated) {
                // The threshold is real: some entries go, others stay.
                assert!(
                    masked > 0 && want.iter().any(|&w| w != 0.0),
                    "{kind:?} {rule:?}: {masked} of {} masked",
                    act.len()
                );
            }
            let mut t_act = b.upload(&act, rows, cols);
            assert!(b.ffn_mask(kind, th, &b.upload(&g, rows, cols), &mut t_act));
            let got = b.download(&t_act);
            for i in 0..act.len() {
                // The GPU evaluates act(gate) itself: entries within rounding of the
                // threshold may fall either way, and are then either kept or zeroed.
                let edge = rule == SparsityRule::Gate && (gate_act[i].abs() - t).abs() <= 1e-5 * t;
                let ok = got[i].to_bits() == want[i].to_bits()
                    || (edge && (got[i] == 0.0 || got[i] == act[i]));
                assert!(
                    ok,
                    "{kind:?} {rule:?} t={t}: entry {i} is {} (want {}, act {})",
                    got[i], want[i], act[i]
                );
            }
        }
    }
}

#[test]
fn concat_rows_matches_cpu() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(13);
    let cols = 77;
    let cpu = CpuBackend::new();
    // Parts of different heights, one empty.
    let data: Vec<(usize, Vec<f32>)> = [1, 3, 0, 2]
        .iter()
        .map(|&r| (r, rng.vec(r * cols)))
        .collect();
    let cpu_parts: Vec<CpuTensor> = data
        .iter()
        .map(|(r, v)| CpuTensor::from_vec(v.clone(), *r, cols))
        .collect();
    let gpu_parts: Vec<_> = data.iter().map(|(r, v)| b.upload(v, *r, cols)).collect();
    let mut want = cpu.new_tensor();
    cpu.concat_rows(&cpu_parts.iter().collect::<Vec<_>>(), &mut want);
    // A stale, larger output buffer must be resized, not appended to.
    let mut got = b.upload(&rng.vec(10 * cols), 10, cols);
    b.concat_rows(&gpu_parts.iter().collect::<Vec<_>>(), &mut got);
    assert_eq!((b.rows(&got), got.cols), (6, cols));
    let mut want_host = Vec::new();
    cpu.append_to_host(&want, &mut want_host);
    assert_eq!(b.download(&got), want_host);
}

#[test]
fn store_kv_rounds_like_twin_and_attention_matches_cpu() {
    let Some(b) = gpu() else { return };
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(7);
    // (heads, kv heads, head_dim, window): MHA, GQA with a head_dim off the warp size, MQA with
    // gemma's 256 and a sliding window.
    for (n_head, n_head_kv, hd, window) in
        [(4, 4, 64, None), (6, 2, 80, None), (4, 1, 256, Some(5))]
    {
        let p = AttnParams {
            n_head,
            n_head_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window,
        };
        let kv_dim = n_head_kv * hd;
        let (n_layer, n_ctx, layer) = (2, 40, 1);
        let mut gc = b.new_kv_cache(n_layer, n_ctx, kv_dim, hd);
        let mut cc = cpu.new_kv_cache(n_layer, n_ctx, kv_dim, hd);
        // A prefill of 9 rows at 0, then of 7 rows at 9, then one decode row at 16.
        for (pos0, n_q) in [(0, 9), (9, 7), (16, 1)] {
            let k: Vec<f32> = rng.vec(n_q * kv_dim).iter().map(|v| v * 3.0).collect();
            let v = rng.vec(n_q * kv_dim);
            let q = rng.vec(n_q * n_head * hd);
            b.store_kv(
                &mut gc,
                layer,
                pos0,
                &b.upload(&k, n_q, kv_dim),
                &b.upload(&v, n_q, kv_dim),
            );
            cpu.store_kv(
                &mut cc,
                layer,
                pos0,
                &CpuTensor::from_vec(k.clone(), n_q, kv_dim),
                &CpuTensor::from_vec(v.clone(), n_q, kv_dim),
            );
            let (gk, gv) = b.kv_to_host(&gc, layer);
            let at = pos0 * kv_dim..(pos0 + n_q) * kv_dim;
            assert_eq!(&gk[at.clone()], &twins::store_kv(&k)[..], "store_kv keys");
            assert_eq!(&gv[at], &twins::store_kv(&v)[..], "store_kv values");

            let mut got = b.new_tensor();
            b.attention(
                &b.upload(&q, n_q, n_head * hd),
                &gc,
                layer,
                pos0,
                p,
                &mut got,
            );
            let mut want = CpuTensor::default();
            cpu::attention(
                &CpuTensor::from_vec(q, n_q, n_head * hd),
                &cc,
                layer,
                pos0,
                p,
                &mut want,
            );
            // The CPU twin keeps its value sums at f16 precision (llama.cpp's numerics).
            assert_close(
                &format!("attention {n_head}/{n_head_kv}x{hd} {window:?} at {pos0}+{n_q}"),
                &b.download(&got),
                &want.data,
                4e-3,
            );
        }
    }
}

#[test]
fn predictor_and_compaction_match_twins() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(8);
    // d_out 3000 with 2100 hot neurons: the compaction makes three passes of 1024.
    for (rank, d_in, d_out, n_hot) in [(50, 200, 300, 150), (96, 576, 3000, 2100)] {
        let w1: Vec<f16> = rng
            .vec(rank * d_in)
            .iter()
            .map(|&v| f16::from_f32(v * 0.2))
            .collect();
        let w2: Vec<f16> = rng
            .vec(d_out * rank)
            .iter()
            .map(|&v| f16::from_f32(v * 0.2))
            .collect();
        let (b1, b2) = (rng.vec(rank), rng.vec(d_out));
        let x = rng.vec(d_in);
        let pred = b
            .load_predictor(&w1, &b1, &w2, &b2, rank, d_in, d_out)
            .unwrap();
        // Hot neurons in a shuffled order, as a placement would list them.
        let mut ids: Vec<u32> = (0..d_out as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, (rng.u64() % (i as u64 + 1)) as usize);
        }
        let hot_ids = &ids[..n_hot];
        let cols = 256;
        let up = random_matrix(&mut rng, GgmlType::Q8_0, d_out, cols);
        // F16 down: d_out need not be whole blocks.
        let down = random_matrix(&mut rng, GgmlType::F16, cols, d_out);
        let hot = b
            .load_hot_ffn(
                FfnKind::Relu,
                GgmlType::Q8_0,
                cols,
                d_out,
                None,
                &up,
                GgmlType::F16,
                &down,
                hot_ids,
            )
            .unwrap();
        let mut s = b.new_sparse_scratch(&pred, &hot);
        b.predict(&pred, &b.upload(&x, 1, d_in), &mut s);
        let logits = b.download(&s.logits);
        let h = twins::predictor_hidden(&w1, &b1, &x);
        let want = twins::predictor_logits(&w2, &b2, &h);
        assert_close("predictor_hidden + predictor_logits", &logits, &want, 1e-5);
        b.compact_active(&hot, &mut s);
        let active = b.active_list(&s);
        // Judged on the GPU's own logits, so a logit within rounding of 0 cannot flip it.
        assert_eq!(
            active,
            twins::predictor_compact(&logits, hot_ids),
            "predictor_compact"
        );
        assert!(
            !active.is_empty() && active.len() < n_hot,
            "a mixed active set"
        );
    }
}

#[test]
fn sparse_ffn_kernels_match_twins_for_every_type_and_kind() {
    let Some(b) = gpu() else { return };
    let mut rng = Rng::new(9);
    // Down is [d_model][n_ff] in Q8_0, so n_ff is whole 32-value blocks.
    let n_ff = 320;
    let pred = b
        .load_predictor(&[f16::ONE; 4], &[0.5; 2], &[f16::ONE; 2], &[0.5], 2, 2, 1)
        .unwrap();
    for ty in TYPES {
        let d_model = widths(ty)[1];
        let gate = random_matrix(&mut rng, ty, n_ff, d_model);
        let up = random_matrix(&mut rng, ty, n_ff, d_model);
        let down = random_matrix(&mut rng, GgmlType::Q8_0, d_model, n_ff);
        // Two neurons in three, listed backwards: hot rows are not in neuron order.
        let hot_ids: Vec<u32> = (0..n_ff as u32).filter(|i| i % 3 != 1).rev().collect();
        let x = rng.vec(d_model);
        // The three rules; the thresholds are small next to these activations, so that
        // some neurons are zeroed and most are not.
        let rules = [
            (SparsityRule::Relu, 0.0),
            (SparsityRule::Gate, 0.05),
            (SparsityRule::Product, 0.05),
        ];
        for (kind, (rule, t)) in KINDS
            .into_iter()
            .flat_map(|k| rules.into_iter().map(move |r| (k, r)))
        {
            let th = LayerThreshold { rule, t };
            let g = kind.is_gated().then_some(&gate[..]);
            let hot = b
                .load_hot_ffn(
                    kind,
                    ty,
                    d_model,
                    n_ff,
                    g,
                    &up,
                    GgmlType::Q8_0,
                    &down,
                    &hot_ids,
                )
                .unwrap_or_else(|e| panic!("{ty} {kind:?}: {e}"))
                .with_threshold(th);
            let mut s = b.new_sparse_scratch(&pred, &hot);
            // Every third hot row, plus the last: not a multiple of the 4 warps of a block.
            let mut active: Vec<u32> = (0..hot_ids.len() as u32).step_by(3).collect();
            active.push(hot_ids.len() as u32 - 1);
            b.set_active_list(&mut s, &active);
            let mut y = b.new_tensor();
            b.hot_ffn(&hot, &b.upload(&x, 1, d_model), &mut s, &mut y);

            let rb = ty.row_bytes(d_model).unwrap();
            let pick = |m: &[u8]| -> Vec<u8> {
                hot_ids
                    .iter()
                    .flat_map(|&i| &m[i as usize * rb..][..rb])
                    .copied()
                    .collect()
            };
            let (gate_hot, up_hot) = (pick(&gate), pick(&up));
            let act = b.hot_activations(&s);
            let want = twins::sparse_gate_up(
                kind,
                th,
                ty,
                d_model,
                g.map(|_| &gate_hot[..]),
                &up_hot,
                &active,
                &x,
            );
            assert_close(
                &format!("sparse_gate_up_{ty} {kind:?} {th:?}"),
                &act,
                &want,
                1e-5,
            );

            // The GPU's activations feed the down twin, so this checks sparse_down alone.
            let dense_down = twins::dequantize_matrix(GgmlType::Q8_0, &down, d_model, n_ff);
            let down_t: Vec<f16> = hot_ids
                .iter()
                .flat_map(|&i| (0..d_model).map(move |d| (i as usize, d)))
                .map(|(i, d)| f16::from_f32(dense_down[d * n_ff + i]))
                .collect();
            let want_y = twins::sparse_down(&down_t, &active, &act, d_model);
            assert_close(
                &format!("sparse_down after {ty} {kind:?}"),
                &b.download(&y),
                &want_y,
                1e-5,
            );
        }
    }
}

#[test]
fn unavailable_reason_agrees_with_new() {
    // Holds on any machine: a usable GPU exactly when the backend opens.
    let reason = cuda::unavailable_reason();
    match CudaBackend::new(0) {
        Ok(_) => assert!(reason.is_none()),
        Err(e) => {
            eprintln!("no GPU here: {e}");
            assert!(reason.is_some() || matches!(e, cuda::CudaError::Compile { .. }));
        }
    }
}
