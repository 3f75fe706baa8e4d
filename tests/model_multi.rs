//! `Model::forward_multi` (one decoding step for several sequences) against the reference:
//! each sequence decoded alone with `Model::forward`, in every FFN mode.
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::model::{Model, ModelError};
use powerinfer::sparse::{FfnMode, LayerThreshold, Sidecar, SparsityRule};

/// Deterministic pseudo-random token ids (64-bit LCG) in `lo..vocab`, away from the special
/// tokens at the start of the vocabulary.
fn random_tokens(seed: u64, n: usize, lo: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (lo + (x >> 33) as usize % (vocab - lo)) as u32
        })
        .collect()
}

/// Decode sequences in `modes` (one each) through `forward_multi`, with sequences joining
/// and leaving the batch from step to step as in a server, and check every step's logits
/// bit for bit against the same sequence decoded alone with `forward`. Returns the logits
/// each sequence got at its last step.
fn batched_equals_alone(
    model: &Model<CpuBackend>,
    modes: &[FfnMode],
    lo: usize,
    label: &str,
) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab_size;
    let n = modes.len();
    // Prompts of different lengths, so every sequence sits at its own position.
    let prompts: Vec<Vec<u32>> = (0..n)
        .map(|i| random_tokens(i as u64 + 1, [7, 2, 13][i % 3] + 3 * (i / 3), lo, vocab))
        .collect();
    let new_state = |mode: &FfnMode| {
        let mut st = model.new_state(64);
        st.ffn_mode = mode.clone();
        st
    };
    let mut batched: Vec<_> = modes.iter().map(new_state).collect();
    let mut alone: Vec<_> = modes.iter().map(new_state).collect();
    for (i, p) in prompts.iter().enumerate() {
        model.forward(&mut batched[i], p, false).unwrap();
        model.forward(&mut alone[i], p, false).unwrap();
    }
    let mut scratch = model.new_decode_batch();
    let all: Vec<usize> = (0..n).collect();
    let evens: Vec<usize> = (0..n).step_by(2).collect();
    let odds: Vec<usize> = (1..n).step_by(2).collect();
    let steps: [&[usize]; 5] = [&all, &evens, &[1], &all, &odds];
    for (s, members) in steps.iter().enumerate() {
        let all = random_tokens(100 + s as u64, n, lo, vocab);
        let toks: Vec<u32> = members.iter().map(|&i| all[i]).collect();
        let mut states: Vec<_> = batched
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| members.contains(i))
            .map(|(_, st)| st)
            .collect();
        model
            .forward_multi(&mut scratch, &mut states, &toks)
            .unwrap();
        for (&i, &t) in members.iter().zip(&toks) {
            let want = model.forward(&mut alone[i], &[t], false).unwrap().to_vec();
            assert_eq!(batched[i].pos, alone[i].pos);
            let differing = batched[i]
                .logits
                .iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                (batched[i].logits.len(), differing),
                (vocab, 0),
                "{label} step {s} sequence {i} ({})",
                modes[i].name()
            );
        }
    }
    batched.into_iter().map(|st| st.logits).collect()
}

#[test]
fn batched_step_equals_each_sequence_alone() {
    for short in ["smollm2", "gemma3"] {
        let Some(path) = common::model(short) else {
            continue;
        };
        let model = Model::load(&path, CpuBackend::new(), None).unwrap();
        batched_equals_alone(&model, &vec![FfnMode::Dense; 3], 1000, short);
    }
}

/// Sequences in every FFN mode share one batch: the dense ones, the two masked with the same
/// thresholds (one batched FFN of their own), a masked one with others, and the sparse
/// ones (each its own row through the sparse executor) all decode as they do alone.
#[test]
fn mixed_ffn_modes_in_a_batch_equal_each_sequence_alone() {
    let path = common::synthetic_model_with_sidecar("multi");
    let mut model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let sc = Sidecar::read(&powerinfer::sparse::sidecar::default_path(&path)).unwrap();
    model.attach_sidecar(&sc).unwrap();
    let n_layer = model.config.n_layer;
    let masked = |rule, t| FfnMode::Masked(vec![LayerThreshold { rule, t }; n_layer].into());
    let modes = [
        FfnMode::Predicted,
        FfnMode::Dense,
        masked(SparsityRule::Product, 0.02),
        FfnMode::Oracle,
        masked(SparsityRule::Product, 0.02),
        masked(SparsityRule::Gate, 0.05),
        FfnMode::Predicted,
    ];
    let mixed = batched_equals_alone(&model, &modes, 259, "mixed");
    // Every sequence in one mode: the batch takes the whole-batch paths.
    for mode in [
        FfnMode::Predicted,
        FfnMode::Oracle,
        masked(SparsityRule::Gate, 0.05),
    ] {
        batched_equals_alone(&model, &vec![mode.clone(); 4], 259, mode.name());
    }
    // The modes really differ on this model, so a batch that ran a row in the wrong mode
    // would have failed above: sequence 0 again, dense.
    let mut dense_modes = modes.to_vec();
    dense_modes[0] = FfnMode::Dense;
    dense_modes[2] = FfnMode::Dense;
    dense_modes[5] = FfnMode::Dense;
    let dense = batched_equals_alone(&model, &dense_modes, 259, "dense");
    for i in [0, 2, 5] {
        assert_ne!(
            mixed[i],
            dense[i],
            "sequence {i}: {} equals dense",
            modes[i].name()
        );
    }
}

#[test]
fn bad_inputs_are_rejected_without_change() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let vocab = model.config.vocab_size as u32;
    let mut scratch = model.new_decode_batch();
    let mut a = model.new_state(4);
    let mut b = model.new_state(4);
    model
        .forward(&mut b, &[1000, 1001, 1002, 1003], false)
        .unwrap();

    let err = model
        .forward_multi(&mut scratch, &mut [&mut a], &[1000, 1001])
        .unwrap_err();
    assert!(matches!(err, ModelError::Config(_)), "{err}");
    let err = model
        .forward_multi(&mut scratch, &mut [&mut a, &mut b], &[1000, 1001])
        .unwrap_err();
    assert!(
        matches!(err, ModelError::ContextOverflow { need: 5, n_ctx: 4 }),
        "{err}"
    );
    let err = model
        .forward_multi(&mut scratch, &mut [&mut a], &[vocab])
        .unwrap_err();
    assert!(matches!(err, ModelError::BadToken { .. }), "{err}");
    assert!(matches!(
        model.forward_multi(&mut scratch, &mut [], &[]),
        Err(ModelError::EmptyInput)
    ));
    assert_eq!((a.pos, b.pos), (0, 4));
}
