//! Where things live on disk.

use std::path::PathBuf;

/// File name of the default chat model installed by `scripts/setup.sh`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Directory of installed models: `$POWERINFER_MODELS`, else `~/.cache/powerinfer/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("POWERINFER_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/powerinfer/models")
}

/// Path of the default model.
pub fn default_model() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}
