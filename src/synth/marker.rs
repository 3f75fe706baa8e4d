//! How a model file says it is synthetic: the generator records its settings under
//! `powerinfer.synth.*`, and reports must flag such models (their speed is real, their text is
//! not).

use crate::gguf::GgufFile;

/// Prefix of the metadata keys `powerinfer synth` writes (sparsity, skew, seed).
pub const SYNTH_KEY_PREFIX: &str = "powerinfer.synth.";

/// Whether `file` was made by `powerinfer synth`.
pub fn is_synthetic(file: &GgufFile) -> bool {
    file.metadata
        .iter()
        .any(|(k, _)| k.starts_with(SYNTH_KEY_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufWriter, Value};

    fn file_with(key: &str) -> GgufFile {
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama").unwrap();
        w.add(key, Value::U64(7)).unwrap();
        GgufFile::from_bytes(w.to_bytes(&[]).unwrap()).unwrap()
    }

    #[test]
    fn detects_the_generator_keys() {
        assert!(is_synthetic(&file_with("powerinfer.synth.seed")));
        assert!(!is_synthetic(&file_with("general.seed")));
        assert!(!is_synthetic(&file_with("powerinfer.synthetic_not")));
    }
}
