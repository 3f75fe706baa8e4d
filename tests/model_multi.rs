//! `Model::forward_multi` (one decoding step for several sequences) against the reference:
//! each sequence decoded alone with `Model::forward`.
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::model::{Model, ModelError};

/// Deterministic pseudo-random token ids (64-bit LCG), away from the special tokens at the
/// start of the vocabulary.
fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (1000 + (x >> 33) as usize % (vocab - 1000)) as u32
        })
        .collect()
}

#[test]
fn batched_step_equals_each_sequence_alone() {
    for short in ["smollm2", "gemma3"] {
        let Some(path) = common::model(short) else {
            continue;
        };
        let model = Model::load(&path, CpuBackend::new(), None).unwrap();
        let vocab = model.config.vocab_size;
        // Prompts of different lengths, so every sequence sits at its own position.
        let prompts: Vec<Vec<u32>> = [7, 2, 13]
            .iter()
            .enumerate()
            .map(|(i, &n)| random_tokens(i as u64 + 1, n, vocab))
            .collect();
        let mut batched: Vec<_> = prompts.iter().map(|_| model.new_state(64)).collect();
        let mut alone: Vec<_> = prompts.iter().map(|_| model.new_state(64)).collect();
        for (i, p) in prompts.iter().enumerate() {
            model.forward(&mut batched[i], p, false).unwrap();
            model.forward(&mut alone[i], p, false).unwrap();
        }
        let mut scratch = model.new_decode_batch();
        // Sequences join and leave the batch from step to step, as in a server.
        let steps: [&[usize]; 5] = [&[0, 1, 2], &[0, 2], &[1], &[0, 1, 2], &[1, 2]];
        for (s, members) in steps.iter().enumerate() {
            let all = random_tokens(100 + s as u64, prompts.len(), vocab);
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
                    "{short} step {s} sequence {i}"
                );
            }
        }
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
