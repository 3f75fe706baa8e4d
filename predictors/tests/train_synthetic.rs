//! Training on data whose labels come from a hidden low-rank linear model with per-neuron biases
//! (power-law firing frequencies, about 90% sparsity), evaluated on held-out rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use powerinfer_predictors::{
    train_layer, BitMatrix, Confusion, Dataset, GateInit, Predictor, PredictorError, Scratch,
    TrainConfig,
};

/// SplitMix64 + Box-Muller, enough for test data.
struct Gen(u64);
impl Gen {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (a, b) = (1.0 - self.uniform(), self.uniform());
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

struct Synthetic {
    d_in: usize,
    d_out: usize,
    /// The hidden gate, `d_out × d_in`.
    gate: Vec<f32>,
    /// Per-neuron firing threshold on the gate pre-activation.
    bias: Vec<f32>,
}

impl Synthetic {
    fn new(d_in: usize, d_out: usize, hidden_rank: usize, g: &mut Gen) -> Self {
        let a: Vec<f32> = (0..d_out * hidden_rank).map(|_| g.normal()).collect();
        let b: Vec<f32> = (0..hidden_rank * d_in)
            .map(|_| g.normal() / (d_in as f32).sqrt())
            .collect();
        let mut gate = vec![0f32; d_out * d_in];
        for i in 0..d_out {
            for j in 0..d_in {
                gate[i * d_in + j] = (0..hidden_rank)
                    .map(|t| a[i * hidden_rank + t] * b[t * d_in + j])
                    .sum();
            }
        }
        // Power-law firing rates, mean about 0.1, set by empirical quantiles of the pre-activation.
        let rates: Vec<f64> = (0..d_out)
            .map(|i| (0.7 * ((i % 97) as f64 + 1.0).powf(-0.7)).min(0.6))
            .collect();
        let probe: Vec<Vec<f32>> = (0..4000)
            .map(|_| (0..d_in).map(|_| g.normal()).collect())
            .collect();
        let mut s = Synthetic {
            d_in,
            d_out,
            gate,
            bias: vec![0.0; d_out],
        };
        for i in 0..d_out {
            let mut pre: Vec<f32> = probe.iter().map(|x| s.pre(i, x)).collect();
            pre.sort_by(f32::total_cmp);
            s.bias[i] = pre[((1.0 - rates[i]) * pre.len() as f64) as usize];
        }
        s
    }

    fn pre(&self, i: usize, x: &[f32]) -> f32 {
        self.gate[i * self.d_in..(i + 1) * self.d_in]
            .iter()
            .zip(x)
            .map(|(w, v)| w * v)
            .sum()
    }

    /// Rows of x ~ N(0, I); neuron i fires iff its pre-activation plus small noise passes its bias.
    fn dataset(&self, n: usize, g: &mut Gen) -> Dataset {
        let mut d = Dataset::empty(self.d_in, self.d_out).unwrap();
        for _ in 0..n {
            let x: Vec<f32> = (0..self.d_in).map(|_| g.normal()).collect();
            let active: Vec<u32> = (0..self.d_out)
                .filter(|&i| self.pre(i, &x) + 0.05 * g.normal() > self.bias[i])
                .map(|i| i as u32)
                .collect();
            d.push(&x, &active).unwrap();
        }
        d
    }
}

/// Recall etc. of the predictor's own SIMD forward on a held-out set.
fn evaluate(p: &Predictor, test: &Dataset) -> Confusion {
    let mut scratch = Scratch::new();
    let mut active = Vec::new();
    let mut pred = BitMatrix::with_cols(test.d_out());
    for r in 0..test.len() {
        p.predict(test.row(r), &mut scratch, &mut active).unwrap();
        pred.push_row_indices(&active).unwrap();
    }
    Confusion::from_bits(&pred, test.labels()).unwrap()
}

#[test]
fn svd_init_meets_targets_at_the_smallest_rank() {
    let mut g = Gen(42);
    let syn = Synthetic::new(96, 384, 8, &mut g);
    let train = syn.dataset(4000, &mut g);
    let val = syn.dataset(1000, &mut g);
    let test = syn.dataset(1000, &mut g);
    let epochs_seen = Arc::new(AtomicUsize::new(0));
    let seen = epochs_seen.clone();
    let cfg = TrainConfig {
        ranks: vec![16, 32, 64],
        progress: Some(Arc::new(move |p| {
            assert!(p.loss.is_finite() && p.epoch >= 1 && p.epoch <= p.epochs);
            seen.fetch_add(1, Ordering::Relaxed);
        })),
        ..TrainConfig::default()
    };
    let init = GateInit {
        w: &syn.gate,
        rows: syn.d_out,
        cols: syn.d_in,
    };
    let out = train_layer(&train, &val, Some(&init), &cfg).unwrap();
    let rep = &out.report;
    eprintln!("{rep:?}");
    assert!(rep.met_target);
    assert_eq!(
        rep.rank, 16,
        "a rank-8 hidden model needs no more than rank 16"
    );
    assert_eq!(rep.tried.len(), 1);
    assert!(rep.recall >= 0.95);
    assert_eq!(epochs_seen.load(Ordering::Relaxed), cfg.epochs);
    let c = evaluate(&out.predictor, &test);
    eprintln!(
        "held out: recall {} precision {} sparsity {} true {}",
        c.recall(),
        c.precision(),
        c.predicted_sparsity(),
        c.true_sparsity()
    );
    assert!(c.true_sparsity() > 0.85 && c.true_sparsity() < 0.95);
    assert!(c.recall() >= 0.95, "held-out recall {}", c.recall());
    assert!(
        c.predicted_sparsity() >= 0.80,
        "held-out sparsity {}",
        c.predicted_sparsity()
    );
}

#[test]
fn random_init_also_learns_the_hidden_model() {
    let mut g = Gen(7);
    let syn = Synthetic::new(64, 256, 6, &mut g);
    let train = syn.dataset(4000, &mut g);
    let val = syn.dataset(1000, &mut g);
    let test = syn.dataset(1000, &mut g);
    let cfg = TrainConfig {
        ranks: vec![16, 32, 64],
        epochs: 20,
        ..TrainConfig::default()
    };
    let out = train_layer(&train, &val, None, &cfg).unwrap();
    eprintln!("{:?}", out.report);
    assert!(out.report.met_target);
    let c = evaluate(&out.predictor, &test);
    eprintln!(
        "held out: recall {} precision {} sparsity {} true {}",
        c.recall(),
        c.precision(),
        c.predicted_sparsity(),
        c.true_sparsity()
    );
    assert!(c.recall() >= 0.94, "held-out recall {}", c.recall());
    assert!(
        c.predicted_sparsity() >= 0.80,
        "held-out sparsity {}",
        c.predicted_sparsity()
    );
}

#[test]
fn same_seed_same_predictor() {
    let mut g = Gen(3);
    let syn = Synthetic::new(40, 100, 4, &mut g);
    let train = syn.dataset(600, &mut g);
    let val = syn.dataset(200, &mut g);
    let cfg = TrainConfig {
        ranks: vec![8],
        epochs: 3,
        ..TrainConfig::default()
    };
    let a = train_layer(&train, &val, None, &cfg).unwrap();
    let b = train_layer(&train, &val, None, &cfg).unwrap();
    assert_eq!(a.predictor, b.predictor);
    let c = train_layer(&train, &val, None, &TrainConfig { seed: 99, ..cfg }).unwrap();
    assert_ne!(a.predictor, c.predictor);
}

#[test]
fn mismatched_inputs_are_errors() {
    let mut g = Gen(5);
    let syn = Synthetic::new(12, 20, 2, &mut g);
    let train = syn.dataset(50, &mut g);
    let val = syn.dataset(20, &mut g);
    let cfg = TrainConfig {
        ranks: vec![4],
        epochs: 1,
        ..TrainConfig::default()
    };
    let other = Synthetic::new(13, 20, 2, &mut g).dataset(20, &mut g);
    assert!(matches!(
        train_layer(&train, &other, None, &cfg),
        Err(PredictorError::Mismatch { .. })
    ));
    let bad_gate = GateInit {
        w: &syn.gate,
        rows: 12,
        cols: 20,
    };
    assert!(train_layer(&train, &val, Some(&bad_gate), &cfg).is_err());
    let short_gate = GateInit {
        w: &syn.gate[1..],
        rows: 20,
        cols: 12,
    };
    assert!(train_layer(&train, &val, Some(&short_gate), &cfg).is_err());
    let empty = Dataset::empty(12, 20).unwrap();
    assert!(matches!(
        train_layer(&empty, &val, None, &cfg),
        Err(PredictorError::EmptyDataset(_))
    ));
    for bad in [
        TrainConfig {
            ranks: vec![],
            ..cfg.clone()
        },
        TrainConfig {
            target_recall: 1.5,
            ..cfg.clone()
        },
        TrainConfig {
            lr: f32::NAN,
            ..cfg.clone()
        },
        TrainConfig {
            batch_size: 0,
            ..cfg.clone()
        },
    ] {
        assert!(matches!(
            train_layer(&train, &val, None, &bad),
            Err(PredictorError::Config(_))
        ));
    }
}

/// With `neuron_bytes`, the ladder goes past the first accepted rank while a larger predictor
/// reads fewer bytes in all (it predicts fewer neurons), and stops at the first that does not;
/// when neurons cost next to nothing, the smallest accepted rank stays.
#[test]
fn the_ladder_trades_predictor_bytes_for_predicted_neurons() {
    let mut g = Gen(7);
    let syn = Synthetic::new(96, 384, 24, &mut g);
    let train = syn.dataset(4000, &mut g);
    let val = syn.dataset(1000, &mut g);
    let init = GateInit {
        w: &syn.gate,
        rows: syn.d_out,
        cols: syn.d_in,
    };
    let run = |neuron_bytes: Option<f64>| {
        let cfg = TrainConfig {
            ranks: vec![4, 32, 64],
            max_sparsity_loss: 0.7,
            neuron_bytes,
            ..TrainConfig::default()
        };
        train_layer(&train, &val, Some(&init), &cfg).unwrap().report
    };
    let plain = run(None);
    assert_eq!((plain.rank, plain.tried.len()), (4, 1), "{plain:?}");
    // A neuron as dear as a 1B model's (gate, up and down rows of Q4_0): the climb goes on
    // while a rank reads less in all, and keeps the cheapest it saw.
    let nb = 3456.0;
    let dear = run(Some(nb));
    // Selection bytes by hand: w1 (f16) and b1 (f32), then 8-bit levels and an f32
    // threshold per neuron, in blocks of 16.
    let bytes = |rank: usize, sparsity: f32| {
        (rank * 96 * 2 + rank * 4 + 384 * (rank + 4)) as f64 + (1.0 - sparsity as f64) * 384.0 * nb
    };
    let cost: Vec<f64> = dear.tried.iter().map(|&(r, _, s)| bytes(r, s)).collect();
    let best = cost.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(dear.rank > plain.rank, "{dear:?}");
    assert_eq!(
        bytes(dear.rank, dear.predicted_sparsity),
        best,
        "{dear:?} {cost:?}"
    );
    assert!(
        dear.predicted_sparsity > plain.predicted_sparsity + 0.3,
        "{dear:?}"
    );
    assert!(dear.recall >= 0.95);
    // Neurons that cost nothing: the first accepted rank, having tried the next.
    let cheap = run(Some(1e-6));
    assert_eq!((cheap.rank, cheap.tried.len()), (4, 2), "{cheap:?}");
}
