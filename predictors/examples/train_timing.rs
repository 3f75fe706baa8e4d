//! Times `train_layer` on one SmolLM2-sized layer (d_in 576, d_out 1536) of synthetic data whose
//! labels come from a rank-48 hidden gate, so the ladder has to climb a little.
//! Run: cargo run --release -p powerinfer-predictors --example train_timing [n_train] [--random]

use std::time::Instant;

use powerinfer_predictors::{train_layer, Dataset, GateInit, TrainConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n_train: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(6000);
    let random = args.iter().any(|a| a == "--random");
    let (d_in, d_out, hidden) = (576, 1536, 48);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut normal = move || {
        // Sum of four uniforms: cheap, roughly Gaussian, enough for a timing run.
        let mut acc = 0f32;
        for _ in 0..4 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        acc * 1.73
    };
    let a: Vec<f32> = (0..d_out * hidden).map(|_| normal()).collect();
    let b: Vec<f32> = (0..hidden * d_in)
        .map(|_| normal() / (d_in as f32).sqrt())
        .collect();
    let mut gate = vec![0f32; d_out * d_in];
    for i in 0..d_out {
        for t in 0..hidden {
            let ai = a[i * hidden + t];
            for j in 0..d_in {
                gate[i * d_in + j] += ai * b[t * d_in + j];
            }
        }
    }
    let bias: Vec<f32> = (0..d_out)
        .map(|i| 1.0 + 2.0 * (i % 13) as f32 / 13.0)
        .collect();
    let mut make = |n: usize| {
        let mut d = Dataset::empty(d_in, d_out).unwrap();
        let mut x = vec![0f32; d_in];
        for _ in 0..n {
            x.iter_mut().for_each(|v| *v = normal());
            let active: Vec<u32> = (0..d_out)
                .filter(|&i| {
                    let pre = dot(&gate[i * d_in..(i + 1) * d_in], &x);
                    pre / (hidden as f32).sqrt() + 0.3 * normal() > bias[i]
                })
                .map(|i| i as u32)
                .collect();
            d.push(&x, &active).unwrap();
        }
        d
    };
    let train = make(n_train);
    let val = make(n_train / 4);
    let init = GateInit {
        w: &gate,
        rows: d_out,
        cols: d_in,
    };
    let cfg = TrainConfig {
        progress: Some(std::sync::Arc::new(|p| {
            eprintln!(
                "rank {} epoch {}/{} loss {:.5}",
                p.rank, p.epoch, p.epochs, p.loss
            )
        })),
        ..TrainConfig::default()
    };
    let t = Instant::now();
    let out = train_layer(&train, &val, (!random).then_some(&init), &cfg).unwrap();
    println!("{:?}", out.report);
    println!("wall {:.2}s", t.elapsed().as_secs_f64());
}

/// Eight running sums so the data generation vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}
