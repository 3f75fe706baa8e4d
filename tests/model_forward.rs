//! Forward-pass checks on the real models that need no tokenizer or sampler.
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::model::Model;

fn top(logits: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.truncate(k);
    idx
}

/// Prompt "The capital of France is" (ids from llama.cpp's tokenizer, tests/data/tokenizer_ids.json)
/// and the expected next token: " Paris" for the instruction-tuned models; gemma3-270m (base)
/// continues with " the", as llama.cpp's greedy output does.
fn case(short: &str) -> (Vec<u32>, u32) {
    match short {
        "smollm2" => (vec![504, 3575, 282, 4649, 314], 7042),
        "qwen05" => (vec![785, 6722, 315, 9625, 374], 12095),
        "gemma3" => (vec![2, 818, 5279, 529, 7001, 563], 506),
        _ => unreachable!(),
    }
}

#[test]
fn next_token_and_batched_equals_incremental() {
    for short in ["smollm2", "qwen05", "gemma3"] {
        let Some(path) = common::model(short) else {
            continue;
        };
        let model = Model::load(&path, CpuBackend::new(), None).unwrap();
        let (prompt, want) = case(short);
        let mut st = model.new_state(64);
        let batched = model.forward(&mut st, &prompt, true).unwrap().to_vec();
        let vocab = model.config.vocab_size;
        assert_eq!(batched.len(), prompt.len() * vocab);
        let last = &batched[(prompt.len() - 1) * vocab..];
        assert_eq!(
            top(last, 1)[0] as u32,
            want,
            "{short}: top-5 {:?}",
            top(last, 5)
        );

        // Token-by-token decoding through the KV cache gives bit-identical logits at every
        // position: results must not depend on how tokens are batched (a server batches
        // sequences together, and a request must answer the same as when served alone).
        let mut st2 = model.new_state(64);
        for (i, &t) in prompt.iter().enumerate() {
            let inc = model.forward(&mut st2, &[t], false).unwrap();
            let row = &batched[i * vocab..(i + 1) * vocab];
            let differing = inc.iter().zip(row).filter(|(a, b)| a != b).count();
            assert_eq!(
                differing, 0,
                "{short} position {i}: {differing} logits differ"
            );
        }
    }
}

#[test]
fn context_overflow_and_bad_tokens_are_errors() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let mut st = model.new_state(4);
    let e = model.forward(&mut st, &[1, 2, 3, 4, 5], false).unwrap_err();
    assert!(e.to_string().contains("context overflow"), "{e}");
    let e = model.forward(&mut st, &[10_000_000], false).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    assert!(model.forward(&mut st, &[], false).is_err());
}

/// The FFN observer sees every layer in order with consistent tensors, and observing does not
/// change the logits.
#[test]
fn ffn_observer_sees_every_layer() {
    use powerinfer::model::{FfnObserver, FfnTaps};
    struct Check {
        layers: Vec<usize>,
        n_embd: usize,
        n_ff: usize,
    }
    impl FfnObserver for Check {
        fn observe(&mut self, layer: usize, rows: usize, t: FfnTaps<'_>) {
            self.layers.push(layer);
            assert_eq!(t.input.len(), rows * self.n_embd);
            assert_eq!(t.gate.len(), rows * self.n_ff);
            assert_eq!(t.up.len(), rows * self.n_ff);
            assert_eq!(t.act.len(), rows * self.n_ff);
            // SmolLM2's FFN is SwiGLU: act = silu(gate) * up.
            for i in 0..t.act.len() {
                let g = t.gate[i];
                let want = g / (1.0 + (-g).exp()) * t.up[i];
                assert!((t.act[i] - want).abs() <= 1e-4 * (1.0 + want.abs()));
            }
        }
    }
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let (prompt, _) = case("smollm2");
    let mut st = model.new_state(64);
    let plain = model.forward(&mut st, &prompt, true).unwrap().to_vec();
    let mut check = Check {
        layers: Vec::new(),
        n_embd: model.config.d_model,
        n_ff: model.config.n_ff,
    };
    let mut st = model.new_state(64);
    let seen = model
        .forward_observed(&mut st, &prompt, true, Some(&mut check))
        .unwrap()
        .to_vec();
    assert_eq!(plain, seen);
    let want: Vec<usize> = (0..model.config.n_layer).collect();
    assert_eq!(check.layers, want);
}
