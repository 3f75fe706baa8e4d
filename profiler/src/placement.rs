//! Neuron placement: which FFN neurons of which layers go to the GPU under a VRAM budget.
//!
//! Fixed items (attention weights, KV cache, predictors, norms, output head) are placed first,
//! in the given order. The remaining bytes go to neurons by value per byte (value: activation
//! frequency or mass), a greedy knapsack across all layers. Within a layer every neuron costs
//! the same, so a layer's hot set is always its most valuable neurons.
//!
//! The greedy takes neurons in one fixed global order and stops at the first that does not fit.
//! That wastes at most one neuron's bytes, keeps the result within one neuron's value of the
//! exact 0/1 optimum (the fractional optimum is this prefix plus a part of that neuron), and
//! makes the hot set grow with the budget: a larger budget's hot set contains a smaller one's.
//! (A greedy that skips items that do not fit and goes on loses that property.)
//!
//! Layers stay in their true order: results are indexed by layer number, never by a name sort
//! (which puts `blk.10` before `blk.2`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum PlacementError {
    #[error(
        "the fixed items need {needed} bytes but the VRAM budget is {budget} bytes \
         ({short} bytes short): {detail}"
    )]
    FixedExceedBudget {
        needed: u64,
        budget: u64,
        short: u64,
        detail: String,
    },
    #[error("layer {layer}: bytes per neuron must be > 0")]
    ZeroNeuronBytes { layer: usize },
    #[error("layer {layer} neuron {neuron}: value {value} is not a finite number >= 0")]
    BadValue {
        layer: usize,
        neuron: usize,
        value: f64,
    },
    #[error("layer {layer} has {n} neurons, more than the 2^32 a neuron id can name")]
    TooManyNeurons { layer: usize, n: usize },
    #[error("the fixed items' sizes overflow 64 bits")]
    Overflow,
    #[error("granularity must be at least 1")]
    ZeroGranularity,
}

/// Something that must be on the GPU before any neuron.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedItem {
    pub name: String,
    pub bytes: u64,
}

/// One layer's neurons: a value per neuron and the bytes one neuron occupies on the GPU
/// (gate and up rows plus the down column, at the layer's quantisation types).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNeurons {
    pub values: Vec<f64>,
    pub bytes_per_neuron: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPlacement {
    /// The layer's true number.
    pub layer: usize,
    /// Hot neuron ids, ascending.
    pub hot: Vec<u32>,
    /// Bytes the hot neurons occupy.
    pub bytes: u64,
    /// Share of the layer's total value (frequency or mass) that the hot neurons carry; 0 for a
    /// layer whose values are all zero.
    pub value_fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub budget: u64,
    pub fixed: Vec<FixedItem>,
    pub fixed_bytes: u64,
    /// Bytes of all hot neurons.
    pub neuron_bytes: u64,
    /// Per layer, in layer order.
    pub layers: Vec<LayerPlacement>,
    /// Share of all layers' value made hot.
    pub value_fraction: f64,
}

impl Placement {
    pub fn total_bytes(&self) -> u64 {
        self.fixed_bytes + self.neuron_bytes
    }
}

/// A layer prepared once: neurons by value, best first, with running sums.
#[derive(Debug, Clone)]
struct Ranked {
    order: Vec<u32>,
    /// `prefix[i]` = value of the first `i` neurons of `order`.
    prefix: Vec<f64>,
    bytes_per_neuron: u64,
}

/// The problem with every layer ranked, so solving for another budget or granularity takes
/// a merge over the layers (milliseconds) instead of a new profile or sort.
#[derive(Debug, Clone)]
pub struct Placer {
    fixed: Vec<FixedItem>,
    fixed_bytes: u64,
    layers: Vec<Ranked>,
}

/// A block of a layer's ranked neurons in the global merge; ordered by value per byte, best
/// first, ties to the lower layer.
struct Block {
    rate: f64,
    layer: usize,
}

impl PartialEq for Block {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Block {}
impl PartialOrd for Block {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Block {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rate
            .total_cmp(&other.rate)
            .then(other.layer.cmp(&self.layer))
    }
}

impl Placer {
    /// Checks and ranks the input. `fixed` is in priority order; `layers[l]` is layer `l`.
    pub fn new(fixed: Vec<FixedItem>, layers: Vec<LayerNeurons>) -> Result<Self, PlacementError> {
        let fixed_bytes = fixed
            .iter()
            .try_fold(0u64, |a, f| a.checked_add(f.bytes))
            .ok_or(PlacementError::Overflow)?;
        let mut ranked = Vec::with_capacity(layers.len());
        for (layer, l) in layers.into_iter().enumerate() {
            if l.bytes_per_neuron == 0 {
                return Err(PlacementError::ZeroNeuronBytes { layer });
            }
            if u32::try_from(l.values.len()).is_err() {
                return Err(PlacementError::TooManyNeurons {
                    layer,
                    n: l.values.len(),
                });
            }
            if let Some((neuron, &value)) = l
                .values
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(PlacementError::BadValue {
                    layer,
                    neuron,
                    value,
                });
            }
            let mut order: Vec<u32> = (0..l.values.len() as u32).collect();
            order.sort_by(|&a, &b| {
                l.values[b as usize]
                    .total_cmp(&l.values[a as usize])
                    .then(a.cmp(&b))
            });
            let mut prefix = Vec::with_capacity(order.len() + 1);
            let mut sum = 0.0;
            prefix.push(sum);
            for &i in &order {
                sum += l.values[i as usize];
                prefix.push(sum);
            }
            ranked.push(Ranked {
                order,
                prefix,
                bytes_per_neuron: l.bytes_per_neuron,
            });
        }
        Ok(Self {
            fixed,
            fixed_bytes,
            layers: ranked,
        })
    }

    pub fn fixed_bytes(&self) -> u64 {
        self.fixed_bytes
    }

    /// Places neurons within `budget` bytes. Each layer's hot count is a multiple of
    /// `granularity` (for GPU kernels that work in blocks) unless it is the whole layer.
    pub fn solve(&self, budget: u64, granularity: usize) -> Result<Placement, PlacementError> {
        if granularity == 0 {
            return Err(PlacementError::ZeroGranularity);
        }
        if self.fixed_bytes > budget {
            let detail = self
                .fixed
                .iter()
                .map(|f| format!("{} {}", f.name, f.bytes))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(PlacementError::FixedExceedBudget {
                needed: self.fixed_bytes,
                budget,
                short: self.fixed_bytes - budget,
                detail,
            });
        }
        let mut left = budget - self.fixed_bytes;
        let mut counts = vec![0usize; self.layers.len()];

        // Blocks of a layer come in non-increasing value per byte (each holds the next-best
        // neurons), so merging the layers' block streams by rate gives the global order.
        let block_of = |layer: usize, start: usize| -> Option<Block> {
            let r = &self.layers[layer];
            let n = r.order.len();
            (start < n).then(|| {
                let end = (start + granularity).min(n);
                let value = r.prefix[end] - r.prefix[start];
                let bytes = (end - start) as f64 * r.bytes_per_neuron as f64;
                Block {
                    rate: value / bytes,
                    layer,
                }
            })
        };
        let mut heap: BinaryHeap<Block> = (0..self.layers.len())
            .filter_map(|l| block_of(l, 0))
            .collect();
        while let Some(block) = heap.pop() {
            let l = block.layer;
            let len = (self.layers[l].order.len() - counts[l]).min(granularity);
            let bytes = len as u64 * self.layers[l].bytes_per_neuron;
            if bytes > left {
                break;
            }
            left -= bytes;
            counts[l] += len;
            if let Some(next) = block_of(l, counts[l]) {
                heap.push(next);
            }
        }

        let mut layers = Vec::with_capacity(self.layers.len());
        let (mut hot_value, mut all_value, mut neuron_bytes) = (0.0, 0.0, 0u64);
        for (layer, (r, &count)) in self.layers.iter().zip(&counts).enumerate() {
            let mut hot = r.order[..count].to_vec();
            hot.sort_unstable();
            let total = *r.prefix.last().unwrap();
            let bytes = count as u64 * r.bytes_per_neuron;
            hot_value += r.prefix[count];
            all_value += total;
            neuron_bytes += bytes;
            let value_fraction = if total > 0.0 {
                r.prefix[count] / total
            } else {
                0.0
            };
            layers.push(LayerPlacement {
                layer,
                hot,
                bytes,
                value_fraction,
            });
        }
        Ok(Placement {
            budget,
            fixed: self.fixed.clone(),
            fixed_bytes: self.fixed_bytes,
            neuron_bytes,
            layers,
            value_fraction: if all_value > 0.0 {
                hot_value / all_value
            } else {
                0.0
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Power-law-like frequencies in a random neuron order: a few hot neurons, many cold.
    fn random_layers(
        rng: &mut SplitMix64,
        n_layers: usize,
        n: (u64, u64),
        bytes: (u64, u64),
    ) -> Vec<LayerNeurons> {
        (0..n_layers)
            .map(|_| {
                let count = (n.0 + rng.below(n.1 - n.0 + 1)) as usize;
                let values = (0..count).map(|_| rng.next_open01().powi(4)).collect();
                LayerNeurons {
                    values,
                    bytes_per_neuron: bytes.0 + rng.below(bytes.1 - bytes.0 + 1),
                }
            })
            .collect()
    }

    fn fixed() -> Vec<FixedItem> {
        vec![
            FixedItem {
                name: "attention".into(),
                bytes: 100,
            },
            FixedItem {
                name: "kv_cache".into(),
                bytes: 40,
            },
            FixedItem {
                name: "output".into(),
                bytes: 60,
            },
        ]
    }

    /// Exact 0/1 knapsack over every neuron by dynamic programming on bytes.
    fn exact(layers: &[LayerNeurons], capacity: usize) -> f64 {
        let mut best = vec![0.0f64; capacity + 1];
        for l in layers {
            let w = l.bytes_per_neuron as usize;
            for &v in &l.values {
                for c in (w..=capacity).rev() {
                    best[c] = best[c].max(best[c - w] + v);
                }
            }
        }
        best[capacity]
    }

    fn hot_value(layers: &[LayerNeurons], p: &Placement) -> f64 {
        p.layers
            .iter()
            .map(|lp| {
                lp.hot
                    .iter()
                    .map(|&i| layers[lp.layer].values[i as usize])
                    .sum::<f64>()
            })
            .sum()
    }

    fn check_invariants(layers: &[LayerNeurons], p: &Placement, granularity: usize) {
        assert!(p.total_bytes() <= p.budget);
        assert_eq!(p.layers.len(), layers.len());
        for (l, lp) in p.layers.iter().enumerate() {
            assert_eq!(lp.layer, l);
            assert!(lp.hot.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(lp.bytes, lp.hot.len() as u64 * layers[l].bytes_per_neuron);
            let n = layers[l].values.len();
            assert!(lp.hot.len() % granularity == 0 || lp.hot.len() == n);
            // The hot set is the layer's most valuable neurons.
            let mut is_hot = vec![false; n];
            lp.hot.iter().for_each(|&i| is_hot[i as usize] = true);
            let coldest_hot = lp
                .hot
                .iter()
                .map(|&i| layers[l].values[i as usize])
                .fold(f64::INFINITY, f64::min);
            let hottest_cold = (0..n)
                .filter(|&i| !is_hot[i])
                .map(|i| layers[l].values[i])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(coldest_hot >= hottest_cold);
            let total: f64 = layers[l].values.iter().sum();
            let hot: f64 = lp.hot.iter().map(|&i| layers[l].values[i as usize]).sum();
            assert!((lp.value_fraction - hot / total).abs() < 1e-9);
        }
        assert_eq!(
            p.neuron_bytes,
            p.layers.iter().map(|l| l.bytes).sum::<u64>()
        );
    }

    #[test]
    fn within_one_neuron_of_exact_knapsack_on_small_instances() {
        let mut rng = SplitMix64::new(41);
        for _ in 0..30 {
            let layers = random_layers(&mut rng, 3, (5, 25), (2, 9));
            let neuron_bytes: u64 = layers
                .iter()
                .map(|l| l.values.len() as u64 * l.bytes_per_neuron)
                .sum();
            let budget = 200 + rng.below(neuron_bytes);
            let placer = Placer::new(fixed(), layers.clone()).unwrap();
            let p = placer.solve(budget, 1).unwrap();
            check_invariants(&layers, &p, 1);
            let opt = exact(&layers, (budget - 200) as usize);
            let got = hot_value(&layers, &p);
            let max_value = layers
                .iter()
                .flat_map(|l| l.values.iter().cloned())
                .fold(0.0, f64::max);
            assert!(got <= opt + 1e-9);
            assert!(got >= opt - max_value - 1e-9, "greedy {got} vs exact {opt}");
        }
    }

    #[test]
    fn within_one_percent_of_exact_knapsack() {
        let mut rng = SplitMix64::new(42);
        for _ in 0..20 {
            let layers = random_layers(&mut rng, 4, (100, 200), (3, 8));
            let neuron_bytes: u64 = layers
                .iter()
                .map(|l| l.values.len() as u64 * l.bytes_per_neuron)
                .sum();
            // Between a tenth and nine tenths of the neurons' bytes.
            let room = neuron_bytes / 10 + rng.below(neuron_bytes * 8 / 10);
            let p = Placer::new(fixed(), layers.clone())
                .unwrap()
                .solve(200 + room, 1)
                .unwrap();
            check_invariants(&layers, &p, 1);
            let opt = exact(&layers, room as usize);
            let got = hot_value(&layers, &p);
            assert!(got >= 0.99 * opt, "greedy {got} vs exact {opt}");
        }
    }

    #[test]
    fn hot_sets_grow_with_the_budget_with_and_without_rounding() {
        let mut rng = SplitMix64::new(43);
        let layers = random_layers(&mut rng, 5, (150, 300), (2, 12));
        let placer = Placer::new(fixed(), layers.clone()).unwrap();
        for granularity in [1usize, 32] {
            let mut previous: Option<Placement> = None;
            for budget in (200..6000).step_by(137) {
                let p = placer.solve(budget, granularity).unwrap();
                check_invariants(&layers, &p, granularity);
                if let Some(prev) = &previous {
                    for (a, b) in prev.layers.iter().zip(&p.layers) {
                        assert!(a.hot.iter().all(|i| b.hot.binary_search(i).is_ok()));
                    }
                    assert!(p.value_fraction >= prev.value_fraction);
                }
                previous = Some(p);
            }
        }
        // A budget that holds everything makes everything hot.
        let all = placer.solve(u64::MAX, 32).unwrap();
        assert!(all
            .layers
            .iter()
            .zip(&layers)
            .all(|(lp, l)| lp.hot.len() == l.values.len()));
        assert!((all.value_fraction - 1.0).abs() < 1e-12);
    }

    #[test]
    fn layers_keep_their_true_order() {
        // Twelve layers where layer 10 is by far the most active: it must come back as
        // layer 10, not where a name sort ("blk.10" < "blk.2") would put it.
        let mut rng = SplitMix64::new(44);
        let layers: Vec<LayerNeurons> = (0..12)
            .map(|l| LayerNeurons {
                values: (0..64)
                    .map(|_| rng.next_open01() * if l == 10 { 100.0 } else { 1.0 })
                    .collect(),
                bytes_per_neuron: 4,
            })
            .collect();
        let p = Placer::new(vec![], layers.clone())
            .unwrap()
            .solve(64 * 4, 1)
            .unwrap();
        check_invariants(&layers, &p, 1);
        assert_eq!(p.layers[10].hot, (0..64).collect::<Vec<u32>>());
        assert!(p
            .layers
            .iter()
            .enumerate()
            .all(|(l, lp)| l == 10 || lp.hot.is_empty()));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let layers = vec![LayerNeurons {
            values: vec![1.0, 0.5],
            bytes_per_neuron: 8,
        }];
        let placer = Placer::new(fixed(), layers).unwrap();
        let err = placer.solve(150, 1).unwrap_err();
        assert_eq!(
            err,
            PlacementError::FixedExceedBudget {
                needed: 200,
                budget: 150,
                short: 50,
                detail: "attention 100, kv_cache 40, output 60".into()
            }
        );
        assert!(err.to_string().contains("need 200 bytes"));
        // Exactly the fixed items fit: no neuron is hot.
        assert_eq!(placer.solve(200, 1).unwrap().neuron_bytes, 0);
        assert_eq!(
            placer.solve(200, 0).unwrap_err(),
            PlacementError::ZeroGranularity
        );
        let bad = vec![LayerNeurons {
            values: vec![1.0, f64::NAN],
            bytes_per_neuron: 8,
        }];
        assert!(matches!(
            Placer::new(vec![], bad),
            Err(PlacementError::BadValue {
                layer: 0,
                neuron: 1,
                ..
            })
        ));
        let zero = vec![LayerNeurons {
            values: vec![1.0],
            bytes_per_neuron: 0,
        }];
        assert!(matches!(
            Placer::new(vec![], zero),
            Err(PlacementError::ZeroNeuronBytes { layer: 0 })
        ));
    }
}
