//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Directory holding the registry models: `$POWERINFER_MODELS`, else `~/.cache/powerinfer/models`
/// (where `scripts/fetch-models.sh` puts them).
pub fn models_dir() -> PathBuf {
    powerinfer::paths::models_dir()
}

/// File names of the three registry models, by short name.
pub fn model_file(short: &str) -> &'static str {
    match short {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => "gemma-3-270m.Q4_K_M.gguf",
        "qwen05" => "qwen2.5-coder-0.5b.Q4_K_M.gguf",
        _ => panic!("unknown model {short}"),
    }
}

/// Path to a registry model, or `None` after printing why the calling test is skipped.
/// With `POWERINFER_REQUIRE_MODELS=1` (set by .ci/run) a missing model is a failure instead.
pub fn model(short: &str) -> Option<PathBuf> {
    let p = models_dir().join(model_file(short));
    if p.exists() {
        return Some(p);
    }
    if std::env::var("POWERINFER_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "model {short} missing at {} (run scripts/fetch-models.sh)",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: model {short} not found at {} (run scripts/fetch-models.sh)",
        p.display()
    );
    None
}

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
