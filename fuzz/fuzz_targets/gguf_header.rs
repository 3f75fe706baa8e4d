//! Fuzz the GGUF header parser: any input must parse or fail with an error, never panic or
//! allocate out of proportion. Files that parse are also opened, every tensor viewed, every
//! value formatted, and — when the writer accepts their contents — re-written and re-parsed
//! to the same metadata and tensor bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use powerinfer::gguf::{parse_header, GgufFile, GgufWriter, Value};

fuzz_target!(|data: &[u8]| {
    if parse_header(data).is_err() {
        return;
    }
    let f = GgufFile::from_bytes(data.to_vec()).expect("parse_header accepted it");
    for (_, v) in &f.metadata {
        let _ = v.to_string();
    }
    for t in &f.tensors {
        assert_eq!(f.view(t).data.len(), t.n_bytes());
    }
    rewrite_round_trip(&f);
});

/// The writer may refuse what the reader tolerates (u64 alignment, long names); whatever it
/// accepts must read back unchanged.
fn rewrite_round_trip(f: &GgufFile) {
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        if w.add(k.clone(), v.clone()).is_err() {
            return;
        }
    }
    for t in &f.tensors {
        if w.add_tensor(t.name.clone(), &t.dims, t.ty).is_err() {
            return;
        }
    }
    let data: Vec<&[u8]> = f.tensors.iter().map(|t| f.view(t).data).collect();
    let bytes = w
        .to_bytes(&data)
        .expect("writer accepted every declaration");
    let g = GgufFile::from_bytes(bytes).expect("re-written file parses");
    assert_eq!(g.metadata.len(), f.metadata.len());
    for ((k1, v1), (k2, v2)) in f.metadata.iter().zip(&g.metadata) {
        assert_eq!(k1, k2);
        assert!(same(v1, v2), "{k1}: {v1:?} != {v2:?}");
    }
    assert_eq!(g.tensors.len(), f.tensors.len());
    for (a, b) in f.tensors.iter().zip(&g.tensors) {
        assert_eq!((&a.name, &a.dims, a.ty), (&b.name, &b.dims, b.ty));
        assert_eq!(f.view(a).data, g.view(b).data);
    }
}

/// Equality that compares floats by bit pattern, so NaNs read from the input compare equal.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(t, xs), Value::Array(u, ys)) => {
            t == u && xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}
