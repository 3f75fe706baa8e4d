//! The measurement loop: every FFN mode on the same model and prompt, repetitions interleaved
//! (rep 1 of each mode, then rep 2, ...) so that a burst of load on a shared machine hits all
//! modes alike instead of skewing one of them.

use std::time::Instant;

use crate::backend::Backend;
use crate::model::{Model, ModelError, State};
use crate::sparse::{FfnMode, SparseCounters};

/// The raw measurements of one mode.
#[derive(Clone, Debug)]
pub struct ModeRuns {
    pub mode: FfnMode,
    pub prefill_tok_s: Vec<f64>,
    pub decode_tok_s: Vec<f64>,
    /// Sparse FFN counters over the timed decode steps of all repetitions (zero for dense).
    pub decode_counters: SparseCounters,
    /// Tokens decoded in the timed steps of all repetitions.
    pub decoded: u64,
}

impl ModeRuns {
    /// FFN weight bytes the sparse path read per decoded token, if it ran.
    pub fn sparse_ffn_bytes_per_token(&self) -> Option<f64> {
        (self.decode_counters.rows > 0 && self.decoded > 0)
            .then(|| self.decode_counters.bytes as f64 / self.decoded as f64)
    }
}

/// A deterministic pseudo-random prompt (llama-bench also times random tokens).
pub fn random_prompt(n: usize, vocab: usize) -> Vec<u32> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % vocab.max(1) as u64) as u32
        })
        .collect()
}

/// Prefill `prompt` then decode `n_gen` tokens, `reps` times per mode, interleaved: each step
/// feeds the next token of `feed` (a text's continuation, teacher-forced) or, without one,
/// the greedy choice. One untimed warm-up per mode first pages the weights in and sizes the
/// scratch buffers.
pub fn run_interleaved<B: Backend>(
    model: &Model<B>,
    state: &mut State<B>,
    modes: &[FfnMode],
    prompt: &[u32],
    feed: Option<&[u32]>,
    n_gen: usize,
    reps: usize,
) -> Result<Vec<ModeRuns>, ModelError> {
    assert!(
        feed.is_none_or(|f| f.len() >= n_gen),
        "decode inputs shorter than -n"
    );
    let mut out: Vec<ModeRuns> = modes
        .iter()
        .map(|m| ModeRuns {
            mode: m.clone(),
            prefill_tok_s: Vec::with_capacity(reps),
            decode_tok_s: Vec::with_capacity(reps),
            decode_counters: SparseCounters::default(),
            decoded: 0,
        })
        .collect();
    for m in modes {
        state.ffn_mode = m.clone();
        once(model, state, prompt, feed, n_gen.min(4))?;
    }
    for _ in 0..reps {
        for r in out.iter_mut() {
            state.ffn_mode = r.mode.clone();
            let t = once(model, state, prompt, feed, n_gen)?;
            r.prefill_tok_s.push(prompt.len() as f64 / t.prefill_s);
            r.decode_tok_s.push(n_gen as f64 / t.decode_s);
            add(&mut r.decode_counters, &state.sparse.counters);
            r.decoded += n_gen as u64;
        }
    }
    Ok(out)
}

struct Times {
    prefill_s: f64,
    decode_s: f64,
}

/// One prefill and `n_gen` decode steps from a fresh sequence; the sparse counters are reset
/// after the prefill so that they hold the decode steps only.
fn once<B: Backend>(
    model: &Model<B>,
    state: &mut State<B>,
    prompt: &[u32],
    feed: Option<&[u32]>,
    n_gen: usize,
) -> Result<Times, ModelError> {
    state.reset();
    let t = Instant::now();
    let mut next = argmax(model.forward(state, prompt, false)?);
    let prefill_s = t.elapsed().as_secs_f64();
    state.sparse.counters = SparseCounters::default();
    let t = Instant::now();
    for i in 0..n_gen {
        if let Some(f) = feed {
            next = f[i];
        }
        next = argmax(model.forward(state, &[next], false)?);
    }
    Ok(Times {
        prefill_s,
        decode_s: t.elapsed().as_secs_f64(),
    })
}

fn add(acc: &mut SparseCounters, c: &SparseCounters) {
    acc.rows += c.rows;
    acc.neurons += c.neurons;
    acc.predicted += c.predicted;
    acc.computed += c.computed;
    acc.bytes += c.bytes;
}

/// Index of the largest logit (the first on ties): greedy decoding in the benches.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}
