//! Which tensors are requantised, and to what: every weight matrix to one type, or under
//! `--ratio` the most sensitive matrices kept at a higher precision.

use std::collections::HashSet;

use super::target::fit_type;
use super::{QuantizeError, Sensitivity};
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::GgmlType;

/// One weight matrix of the input and the type it is written in.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixPlan {
    pub name: String,
    pub input: GgmlType,
    pub params: u64,
    pub row_len: usize,
    /// The type asked for: the main type, or the kept one.
    pub wanted: GgmlType,
    /// The type written: `wanted`, or its fallback when rows are not whole blocks of it.
    pub output: GgmlType,
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// The main type (`--type`), which names the file type.
    pub main: GgmlType,
    /// In the input's tensor order; tensors not listed are copied unchanged.
    pub matrices: Vec<MatrixPlan>,
}

impl Plan {
    pub fn get(&self, name: &str) -> Option<&MatrixPlan> {
        self.matrices.iter().find(|m| m.name == name)
    }
}

/// Weight matrices are the 2-D `.weight` tensors (attention, FFN, embeddings, output head);
/// norms, biases and other 1-D tensors are copied as they are.
pub fn is_weight_matrix(info: &TensorInfo) -> bool {
    info.dims.len() == 2 && info.dims[1] > 1 && info.name.ends_with(".weight")
}

/// Element types we can read a weight matrix from.
fn readable(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    )
}

/// The weight matrices of `file`, checked to be readable.
pub fn weight_matrices(file: &GgufFile) -> Result<Vec<&TensorInfo>, QuantizeError> {
    let mut out = Vec::new();
    for t in file.tensors.iter().filter(|t| is_weight_matrix(t)) {
        if !readable(t.ty) {
            return Err(QuantizeError::UnsupportedTensor {
                name: t.name.clone(),
                ty: t.ty,
            });
        }
        out.push(t);
    }
    Ok(out)
}

fn matrix_plan(t: &TensorInfo, wanted: GgmlType) -> MatrixPlan {
    MatrixPlan {
        name: t.name.clone(),
        input: t.ty,
        params: t.n_elements(),
        row_len: t.row_len(),
        wanted,
        output: fit_type(wanted, t.row_len()),
    }
}

/// Every weight matrix to `ty` (or its fallback).
pub fn plan_uniform(file: &GgufFile, ty: GgmlType) -> Result<Plan, QuantizeError> {
    let matrices = weight_matrices(file)?
        .into_iter()
        .map(|t| matrix_plan(t, ty))
        .collect();
    Ok(Plan { main: ty, matrices })
}

/// The matrices kept at the higher precision: in order of decreasing measured error, each
/// one that still fits in `(1 - ratio)` of all parameters (one that does not fit is passed
/// over for less sensitive, smaller ones). Ties are broken by name, so the choice is
/// deterministic.
pub fn choose_kept(sens: &[Sensitivity], ratio: f64) -> Result<HashSet<String>, QuantizeError> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(QuantizeError::BadRatio(ratio));
    }
    let total: u64 = sens.iter().map(|s| s.params).sum();
    let budget = ((1.0 - ratio) * total as f64).round() as u64;
    let mut order: Vec<&Sensitivity> = sens.iter().collect();
    order.sort_by(|a, b| {
        b.error
            .total_cmp(&a.error)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut kept = HashSet::new();
    let mut used = 0u64;
    for s in order {
        if used + s.params <= budget {
            used += s.params;
            kept.insert(s.name.clone());
        }
    }
    Ok(kept)
}

/// `ratio` of the weight parameters to `low`, the rest (the most sensitive by `sens`) to
/// `keep`. Every weight matrix must have a measurement.
pub fn plan_mixed(
    file: &GgufFile,
    low: GgmlType,
    keep: GgmlType,
    ratio: f64,
    sens: &[Sensitivity],
) -> Result<Plan, QuantizeError> {
    let kept = choose_kept(sens, ratio)?;
    let mut matrices = Vec::new();
    for t in weight_matrices(file)? {
        if !sens.iter().any(|s| s.name == t.name) {
            return Err(QuantizeError::Unmeasured(t.name.clone()));
        }
        let wanted = if kept.contains(&t.name) { keep } else { low };
        matrices.push(matrix_plan(t, wanted));
    }
    Ok(Plan {
        main: low,
        matrices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, params: u64, error: f64) -> Sensitivity {
        Sensitivity {
            name: name.into(),
            params,
            error,
        }
    }

    #[test]
    fn the_most_sensitive_that_fit_are_kept() {
        let sens = [
            s("a", 10, 1.0),
            s("b", 60, 9.0),
            s("c", 20, 5.0),
            s("d", 10, 4.0),
        ];
        // Budget 50: b (60) does not fit, c and d do, a after them still fits (40 used).
        let kept = choose_kept(&sens, 0.5).unwrap();
        let mut k: Vec<_> = kept.into_iter().collect();
        k.sort();
        assert_eq!(k, ["a", "c", "d"]);
        assert!(choose_kept(&sens, 1.0).unwrap().is_empty());
        assert_eq!(choose_kept(&sens, 0.0).unwrap().len(), 4);
        assert!(choose_kept(&sens, 1.5).is_err());
    }
}
