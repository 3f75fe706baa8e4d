//! The reader on the real registry models.
mod common;

use powerinfer::gguf::GgufFile;

#[test]
fn reads_registry_models() {
    for m in ["smollm2", "gemma3", "qwen05"] {
        let Some(p) = common::model(m) else { continue };
        let f = GgufFile::open(&p).unwrap();
        let arch = f.architecture().unwrap();
        let expect = match m {
            "smollm2" => "llama",
            "gemma3" => "gemma3",
            _ => "qwen2",
        };
        assert_eq!(arch, expect);
        assert!(f.tensors.len() > 50, "{m}: {} tensors", f.tensors.len());
        let emb = f.tensor("token_embd.weight").unwrap();
        assert!(emb.n_rows() > 40_000);
        assert_eq!(emb.row(1).len(), emb.row_bytes());
        eprintln!(
            "{m}: v{} {} kv, {} tensors",
            f.version,
            f.metadata.len(),
            f.tensors.len()
        );
        for (k, v) in &f.metadata {
            eprintln!("  {k} = {v}");
        }
        let mut types = std::collections::BTreeMap::new();
        for t in &f.tensors {
            *types.entry(t.ty.name()).or_insert(0) += 1;
        }
        eprintln!("  types {types:?}");
    }
}
