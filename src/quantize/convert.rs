//! Requantising rows and writing the output file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::target::file_type;
use super::{Plan, QuantizeError};
use crate::gguf::{GgufFile, GgufWriter, TensorDataWriter, Value};
use crate::quant::{dequantize_row, quantize_row, GgmlType};

/// Rows converted per progress step and per write.
const SLAB_ROWS: usize = 512;

/// Convert whole rows of `row_len` elements from `from` to `to`; `scratch` holds one row of
/// f32. Rows already of the output type are copied, never re-rounded.
pub fn requantize_rows(
    from: GgmlType,
    src: &[u8],
    to: GgmlType,
    row_len: usize,
    scratch: &mut Vec<f32>,
    dst: &mut [u8],
) -> Result<(), QuantizeError> {
    if from == to {
        dst.copy_from_slice(src);
        return Ok(());
    }
    let rb_in = from.row_bytes(row_len).unwrap_or(0);
    let rb_out = to.row_bytes(row_len).unwrap_or(0);
    scratch.resize(row_len, 0.0);
    for (s, d) in src.chunks_exact(rb_in).zip(dst.chunks_exact_mut(rb_out)) {
        dequantize_row(from, s, scratch)?;
        quantize_row(to, scratch, d)?;
    }
    Ok(())
}

/// What [`write`] did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub n_tensors: usize,
    /// Per output type of the weight matrices: (matrices, parameters).
    pub types: BTreeMap<&'static str, (usize, u64)>,
    /// Matrices written in a fallback type: (name, wanted, written).
    pub fallbacks: Vec<(String, GgmlType, GgmlType)>,
}

/// Refuse to write over the input (also through another name for the same file).
pub fn check_distinct(input: &Path, output: &Path) -> Result<(), QuantizeError> {
    let same = match (std::fs::canonicalize(input), std::fs::canonicalize(output)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same || input == output {
        return Err(QuantizeError::SamePath(output.to_path_buf()));
    }
    Ok(())
}

/// Write `file` (read from `input_path`) to `output` with the weight matrices of `plan`
/// requantised; every other tensor and all metadata are copied, `general.file_type` is set
/// for the main type. The output appears atomically; on error nothing is left under its
/// name. `progress(done, total)` counts elements.
pub fn write(
    file: &GgufFile,
    input_path: &Path,
    plan: &Plan,
    output: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Summary, QuantizeError> {
    check_distinct(input_path, output)?;
    let w = header(file, plan)?;
    let mut summary = Summary {
        input_bytes: std::fs::metadata(input_path).map(|m| m.len()).unwrap_or(0),
        n_tensors: file.tensors.len(),
        output_bytes: w.file_len(),
        ..Summary::default()
    };
    for m in &plan.matrices {
        let e = summary.types.entry(m.output.name()).or_default();
        e.0 += 1;
        e.1 += m.params;
        if m.output != m.wanted {
            summary.fallbacks.push((m.name.clone(), m.wanted, m.output));
        }
    }
    w.write_file(output, |tw| fill(tw, file, plan, progress))?;
    Ok(summary)
}

/// `file` with the weight matrices of `plan` requantised, built in memory rather than
/// written: the model's own cheap copy, e.g. the 4-bit draft of an f16 model for speculative
/// decoding, without a second file on disk.
pub fn requantize_in_memory(file: &GgufFile, plan: &Plan) -> Result<GgufFile, QuantizeError> {
    let w = header(file, plan)?;
    let mut out = Vec::with_capacity(w.file_len() as usize);
    let mut tw = w.write_header(&mut out)?;
    fill(&mut tw, file, plan, &mut |_, _| {})?;
    tw.finish()?;
    Ok(GgufFile::from_bytes(out)?)
}

/// The output's header: `file`'s metadata (with `general.file_type` for the plan's main type)
/// and its tensors, the planned ones in their output types.
fn header(file: &GgufFile, plan: &Plan) -> Result<GgufWriter, QuantizeError> {
    let mut w = GgufWriter::new();
    let mut saw_qv = false;
    for (k, v) in &file.metadata {
        let v = match k.as_str() {
            "general.file_type" => Value::U32(file_type(plan.main)),
            "general.quantization_version" => {
                saw_qv = true;
                v.clone()
            }
            _ => v.clone(),
        };
        w.add(k.clone(), v)?;
    }
    if file.get("general.file_type").is_none() {
        w.add("general.file_type", Value::U32(file_type(plan.main)))?;
    }
    if !saw_qv {
        // The block layouts we write are those of ggml's quantisation version 2.
        w.add("general.quantization_version", Value::U32(2))?;
    }
    for t in &file.tensors {
        let ty = plan.get(&t.name).map_or(t.ty, |m| m.output);
        w.add_tensor(t.name.clone(), &t.dims, ty)?;
    }
    Ok(w)
}

/// Every tensor's data in file order: planned matrices requantised slab by slab (rows in
/// parallel), the rest copied.
fn fill<W: Write>(
    tw: &mut TensorDataWriter<W>,
    file: &GgufFile,
    plan: &Plan,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), QuantizeError> {
    let total: u64 = file.tensors.iter().map(|t| t.n_elements()).sum();
    let mut done = 0u64;
    progress(0, total);
    for t in &file.tensors {
        let view = file.view(t);
        tw.begin_tensor(&t.name)?;
        let Some(m) = plan.get(&t.name) else {
            tw.write_chunk(view.data)?;
            done += t.n_elements();
            progress(done, total);
            continue;
        };
        let rb_in = view.row_bytes();
        let rb_out = m.output.row_bytes(m.row_len).unwrap_or(0);
        let mut out = Vec::new();
        for start in (0..view.n_rows()).step_by(SLAB_ROWS) {
            let end = (start + SLAB_ROWS).min(view.n_rows());
            let src = view.rows(start, end);
            out.resize((end - start) * rb_out, 0);
            // Rows in parallel, a few per task.
            src.par_chunks(rb_in * 16)
                .zip(out.par_chunks_mut(rb_out * 16))
                .try_for_each_init(Vec::new, |scratch, (s, d)| {
                    requantize_rows(t.ty, s, m.output, m.row_len, scratch, d)
                })?;
            tw.write_chunk(&out)?;
            done += ((end - start) * m.row_len) as u64;
            progress(done, total);
        }
    }
    Ok(())
}
