//! Writer → reader round trips: synthetic metadata of every value type, and a real model
//! re-written tensor by tensor.
mod common;

use powerinfer::gguf::{align_up, GgufFile, GgufWriter, Value, ValueType};
use powerinfer::quant::GgmlType;

/// One value of every type, plus empty, string and nested arrays.
fn every_value() -> Vec<(String, Value)> {
    use Value as V;
    let arr = |t, v| V::Array(t, v);
    let kv = vec![
        ("t.u8", V::U8(255)),
        ("t.i8", V::I8(-128)),
        ("t.u16", V::U16(65535)),
        ("t.i16", V::I16(-32768)),
        ("t.u32", V::U32(u32::MAX)),
        ("t.i32", V::I32(i32::MIN)),
        ("t.f32", V::F32(-1.5e-7)),
        ("t.bool_t", V::Bool(true)),
        ("t.bool_f", V::Bool(false)),
        ("t.string", V::String("héllo ▁wörld\n\u{0}".into())),
        ("t.string_empty", V::String(String::new())),
        ("t.u64", V::U64(u64::MAX)),
        ("t.i64", V::I64(i64::MIN)),
        ("t.f64", V::F64(std::f64::consts::PI)),
        ("t.arr_empty_u8", arr(ValueType::U8, vec![])),
        ("t.arr_empty_str", arr(ValueType::String, vec![])),
        ("t.arr_empty_arr", arr(ValueType::Array, vec![])),
        (
            "t.arr_i32",
            arr(ValueType::I32, vec![V::I32(-1), V::I32(0), V::I32(7)]),
        ),
        (
            "t.arr_f32",
            arr(
                ValueType::F32,
                (0..100).map(|i| V::F32(i as f32 * 0.25)).collect(),
            ),
        ),
        (
            "t.arr_str",
            arr(
                ValueType::String,
                vec![
                    V::String("a".into()),
                    V::String(String::new()),
                    V::String("ç".into()),
                ],
            ),
        ),
        (
            "t.arr_bool",
            arr(ValueType::Bool, vec![V::Bool(true), V::Bool(false)]),
        ),
        (
            "t.arr_nested",
            arr(
                ValueType::Array,
                vec![
                    arr(ValueType::U16, vec![V::U16(1), V::U16(2)]),
                    arr(ValueType::String, vec![V::String("x".into())]),
                    arr(
                        ValueType::Array,
                        vec![arr(ValueType::I64, vec![V::I64(-9)])],
                    ),
                    arr(ValueType::F64, vec![]),
                ],
            ),
        ),
    ];
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Deterministic bytes for tensor `i`.
fn tensor_bytes(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| (j * 31 + i * 7 + 3) as u8).collect()
}

/// A writer holding every value type and tensors of several types and ranks, with their data.
fn every_value_file(alignment: Option<u32>) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama").unwrap();
    if let Some(a) = alignment {
        w.set_alignment(a).unwrap();
    }
    for (k, v) in every_value() {
        w.add(k, v).unwrap();
    }
    let shapes: [(&str, &[u64], GgmlType); 6] = [
        ("f32.1d", &[5], GgmlType::F32),
        ("f16.2d", &[3, 7], GgmlType::F16),
        ("q4_0", &[64, 3], GgmlType::Q4_0),
        ("q4_k.3d", &[256, 2, 2], GgmlType::Q4_K),
        ("q6_k", &[512, 1], GgmlType::Q6_K),
        ("i8.4d", &[1, 2, 3, 5], GgmlType::I8),
    ];
    for (name, dims, ty) in shapes {
        w.add_tensor(name, dims, ty).unwrap();
    }
    let data = w
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_bytes(i, t.n_bytes()))
        .collect();
    (w, data)
}

#[test]
fn every_value_type_and_tensor_round_trips() {
    for alignment in [None, Some(1u32), Some(64)] {
        let (w, data) = every_value_file(alignment);
        let expect_meta = w.metadata().to_vec();
        let expect_tensors = w.tensors().to_vec();
        let file_len = w.file_len();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let bytes = w.to_bytes(&refs).unwrap();
        assert_eq!(bytes.len() as u64, file_len);

        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, alignment.unwrap_or(32) as u64);
        assert_eq!(f.data_offset as u64 % f.alignment, 0);
        assert_eq!(f.metadata, expect_meta);
        assert_eq!(f.tensors, expect_tensors);
        for (t, d) in f.tensors.iter().zip(&data) {
            assert_eq!(f.view(t).data, d.as_slice(), "{}", t.name);
        }
        // f32 bit patterns (negative tiny value) survive exactly.
        assert_eq!(f.get("t.f32").unwrap().as_f64().unwrap() as f32, -1.5e-7f32);
    }
}

#[test]
fn streaming_chunks_equal_whole_writes() {
    let build = || {
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama").unwrap();
        w.add_tensor("big", &[4096, 33], GgmlType::F16).unwrap();
        w.add_tensor("small", &[3], GgmlType::F32).unwrap();
        w
    };
    let big = tensor_bytes(0, 4096 * 33 * 2);
    let small = tensor_bytes(1, 12);
    let whole = build().to_bytes(&[&big, &small]).unwrap();
    let mut tw = build().write_header(Vec::new()).unwrap();
    tw.begin_tensor("big").unwrap();
    for chunk in big.chunks(1000) {
        tw.write_chunk(chunk).unwrap();
    }
    tw.write_tensor_data("small", &small).unwrap();
    assert_eq!(tw.finish().unwrap(), whole);
}

/// Re-write each registry model from its parsed header and data: every metadata value, tensor
/// info and tensor byte must come back, and since the GGUF layout is deterministic the file is
/// byte-identical.
#[test]
fn rewrites_real_models_identically() {
    for m in ["smollm2", "gemma3", "qwen05"] {
        if let Some(path) = common::model(m) {
            rewrite_identically(m, &path);
        }
    }
}

fn rewrite_identically(m: &str, path: &std::path::Path) {
    let orig = GgufFile::open(path).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in &orig.metadata {
        w.add(k.clone(), v.clone()).unwrap();
    }
    for t in &orig.tensors {
        w.add_tensor(t.name.clone(), &t.dims, t.ty).unwrap();
    }
    assert_eq!(w.tensors(), orig.tensors.as_slice(), "same offsets");
    let dir = std::env::temp_dir().join(format!("pi-roundtrip-{m}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("rewritten.gguf");
    w.write_file(&out, |tw| -> powerinfer::gguf::Result<()> {
        for t in &orig.tensors {
            tw.write_tensor_data(&t.name, orig.view(t).data)?;
        }
        Ok(())
    })
    .unwrap();

    let new = GgufFile::open(&out).unwrap();
    assert_eq!(new.metadata.len(), orig.metadata.len());
    for ((k1, v1), (k2, v2)) in orig.metadata.iter().zip(&new.metadata) {
        assert_eq!(k1, k2);
        assert_eq!(v1, v2, "{k1}");
    }
    assert_eq!(new.tensors, orig.tensors);
    for t in &orig.tensors {
        assert_eq!(
            new.tensor(&t.name).unwrap().data,
            orig.view(t).data,
            "{}",
            t.name
        );
    }
    let same_bytes = new.bytes() == orig.bytes();
    eprintln!(
        "{m}: {} kv, {} tensors, {} bytes, byte-identical: {same_bytes}",
        new.metadata.len(),
        new.tensors.len(),
        new.bytes().len()
    );
    assert_eq!(new.bytes().len(), orig.bytes().len());
    assert!(same_bytes);
    drop(new);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// JSON form of a value for scripts/check_gguf_python.py: type name plus value.
fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    let ty = format!("{:?}", v.value_type());
    match v {
        Value::Array(elem, items) => json!({
            "type": ty,
            "elem": format!("{elem:?}"),
            "items": items.iter().map(value_json).collect::<Vec<_>>(),
        }),
        Value::String(s) => json!({"type": ty, "value": s}),
        Value::Bool(b) => json!({"type": ty, "value": b}),
        Value::F32(x) => json!({"type": ty, "value": *x as f64}),
        Value::F64(x) => json!({"type": ty, "value": x}),
        _ => match v.as_i64() {
            Some(i) => json!({"type": ty, "value": i}),
            None => json!({"type": ty, "value": v.as_u64()}),
        },
    }
}

/// Writes synthetic files plus a JSON description of what they hold into `$GGUF_DUMP_DIR`,
/// for `scripts/check_gguf_python.py`, which reads them back with gguf-py's GGUFReader.
#[test]
#[ignore = "run by scripts/check_gguf_python.py"]
fn dump_for_python() {
    let dir = std::path::PathBuf::from(std::env::var("GGUF_DUMP_DIR").expect("GGUF_DUMP_DIR"));
    for (name, alignment) in [("every_value_a32", None), ("every_value_a64", Some(64))] {
        let (w, data) = every_value_file(alignment);
        let desc = serde_json::json!({
            "alignment": w.alignment(),
            "file_len": w.file_len(),
            "metadata": w.metadata().iter().map(|(k, v)| serde_json::json!([k, value_json(v)])).collect::<Vec<_>>(),
            "tensors": w.tensors().iter().enumerate().map(|(i, t)| serde_json::json!({
                "name": t.name, "dims": t.dims, "type": t.ty.id(), "offset": t.offset,
                "n_bytes": t.n_bytes(), "seed": i,
            })).collect::<Vec<_>>(),
        });
        w.write_file(
            dir.join(format!("{name}.gguf")),
            |tw| -> powerinfer::gguf::Result<()> {
                for (i, d) in data.iter().enumerate() {
                    let name = tw.next_tensor().unwrap().name.clone();
                    assert_eq!(d.len(), data[i].len());
                    tw.write_tensor_data(&name, d)?;
                }
                Ok(())
            },
        )
        .unwrap();
        std::fs::write(dir.join(format!("{name}.json")), desc.to_string()).unwrap();
    }
}

/// Seed inputs for the `gguf_header` fuzz target (see fuzz/README.md), written into
/// `$GGUF_SEED_DIR`: small files covering every value type, both alignments and many tensor
/// types.
#[test]
#[ignore = "run by hand to seed the fuzz corpus"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("GGUF_SEED_DIR").expect("GGUF_SEED_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, alignment) in [("every_value_a32", None), ("every_value_a64", Some(64))] {
        let (w, data) = every_value_file(alignment);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        std::fs::write(dir.join(name), w.to_bytes(&refs).unwrap()).unwrap();
    }
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama").unwrap();
    for ty in GgmlType::ALL {
        w.add_tensor(format!("t.{ty}"), &[ty.block_len() as u64, 1], ty)
            .unwrap();
    }
    let data: Vec<Vec<u8>> = w
        .tensors()
        .iter()
        .map(|t| vec![0x5A; t.n_bytes()])
        .collect();
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    std::fs::write(dir.join("all_types"), w.to_bytes(&refs).unwrap()).unwrap();
    std::fs::write(dir.join("empty"), GgufWriter::new().to_bytes(&[]).unwrap()).unwrap();
}

/// Counts bytes instead of storing them, keeping only the first few KB (the header).
struct CountingSink {
    len: u64,
    head: Vec<u8>,
}

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let keep = buf.len().min(65536usize.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&buf[..keep]);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A LLaMA-7B-shaped Q8_0 file (~6.7 GiB) streamed in 1 MiB chunks from one reused buffer:
/// offsets past 4 GiB stay exact, and the byte count equals the promised file length.
#[test]
fn seven_b_shaped_file_streams_in_chunks() {
    let (d, ff, layers, vocab) = (4096u64, 11008u64, 32, 32000u64);
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama").unwrap();
    w.add("llama.block_count", Value::U32(layers)).unwrap();
    w.add_tensor("token_embd.weight", &[d, vocab], GgmlType::Q8_0)
        .unwrap();
    for l in 0..layers {
        w.add_tensor(format!("blk.{l}.attn_norm.weight"), &[d], GgmlType::F32)
            .unwrap();
        for m in ["q", "k", "v", "output"] {
            w.add_tensor(format!("blk.{l}.attn_{m}.weight"), &[d, d], GgmlType::Q8_0)
                .unwrap();
        }
        w.add_tensor(format!("blk.{l}.ffn_norm.weight"), &[d], GgmlType::F32)
            .unwrap();
        for (m, dims) in [("gate", [d, ff]), ("up", [d, ff]), ("down", [ff, d])] {
            w.add_tensor(format!("blk.{l}.ffn_{m}.weight"), &dims, GgmlType::Q8_0)
                .unwrap();
        }
    }
    w.add_tensor("output_norm.weight", &[d], GgmlType::F32)
        .unwrap();
    w.add_tensor("output.weight", &[d, vocab], GgmlType::Q8_0)
        .unwrap();
    let tensors = w.tensors().to_vec();
    let (file_len, header_len) = (w.file_len(), w.header_len());
    assert!(file_len > 6 << 30, "{file_len}");
    let mut tw = w
        .write_header(CountingSink {
            len: 0,
            head: Vec::new(),
        })
        .unwrap();
    let chunk = vec![0x11u8; 1 << 20];
    for t in &tensors {
        tw.begin_tensor(&t.name).unwrap();
        let mut left = t.n_bytes();
        while left > 0 {
            let n = left.min(chunk.len());
            tw.write_chunk(&chunk[..n]).unwrap();
            left -= n;
        }
    }
    let sink = tw.finish().unwrap();
    assert_eq!(sink.len, file_len);
    assert_eq!(&sink.head[..4], b"GGUF");
    let n_tensors = u64::from_le_bytes(sink.head[8..16].try_into().unwrap());
    assert_eq!(n_tensors, 1 + 9 * layers as u64 + 2);
    let last = tensors.last().unwrap();
    assert!(last.offset > 4 << 30, "{}", last.offset);
    assert_eq!(
        file_len,
        header_len + last.offset + align_up(last.n_bytes() as u64, 32)
    );
}
