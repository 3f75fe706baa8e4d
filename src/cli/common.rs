//! Arguments shared by the subcommands that run a model.

use std::path::PathBuf;

use anyhow::Context;
use powerinfer::backend::CpuBackend;
use powerinfer::generate::{Engine, SamplerConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file [default: the model installed by scripts/setup.sh]
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// CPU threads [default: all cores]
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Context size in tokens (capped at the model's trained context)
    #[arg(short = 'c', long, default_value_t = 4096)]
    pub ctx_size: usize,
    /// Override the FFN activation recorded in the model (silu, gelu, relu, reglu, drelu)
    #[arg(long)]
    pub activation: Option<String>,
    /// Sparse FFN: only the neurons the profile's predictors select (needs `powerinfer profile`)
    #[arg(long)]
    pub sparse: bool,
    /// With --sparse: the exact active set instead of the predictors (an evaluation mode)
    #[arg(long)]
    pub oracle: bool,
    /// Profile sidecar [default: MODEL.powerinfer.gguf next to the model]
    #[arg(long)]
    pub sidecar: Option<PathBuf>,
}

impl ModelArgs {
    pub fn model_path(&self) -> anyhow::Result<PathBuf> {
        let p = match &self.model {
            Some(p) => p.clone(),
            None => {
                let p = powerinfer::paths::default_model();
                anyhow::ensure!(
                    p.exists(),
                    "no model given and the default model is not installed at {} \
                     (run scripts/setup.sh, or pass -m MODEL.gguf)",
                    p.display()
                );
                p
            }
        };
        anyhow::ensure!(p.exists(), "model file {} does not exist", p.display());
        Ok(p)
    }

    /// Size the thread pool and load the model (with its sidecar for --sparse / --oracle).
    pub fn load(&self) -> anyhow::Result<Engine<CpuBackend>> {
        let want = if self.sparse || self.oracle {
            SidecarUse::Required
        } else {
            SidecarUse::No
        };
        Ok(self.load_with(want)?.0)
    }

    /// The sidecar path: --sidecar, or MODEL.powerinfer.gguf next to the model.
    pub fn sidecar_path(&self, model: &std::path::Path) -> PathBuf {
        self.sidecar
            .clone()
            .unwrap_or_else(|| powerinfer::sparse::sidecar::default_path(model))
    }

    /// Load the model, attaching the profile sidecar as `want` says; returns the sidecar's
    /// path when one was attached.
    pub fn load_with(
        &self,
        want: SidecarUse,
    ) -> anyhow::Result<(Engine<CpuBackend>, Option<PathBuf>)> {
        init_threads(self.threads)?;
        let path = self.model_path()?;
        let t = std::time::Instant::now();
        let mut engine = Engine::load(&path, CpuBackend::new(), self.activation.as_deref())
            .with_context(|| format!("loading {}", path.display()))?;
        let sc_path = self.sidecar_path(&path);
        let attach = match want {
            SidecarUse::No => false,
            SidecarUse::Required => true,
            SidecarUse::IfPresent => sc_path.exists(),
        };
        let attached = if attach {
            let sc = powerinfer::sparse::Sidecar::read(&sc_path)?;
            sc.check_model(&sc_path, &engine.model.file)?;
            engine.model.attach_sidecar(&sc)?;
            tracing::info!("sparse FFN from {}", sc_path.display());
            Some(sc_path)
        } else {
            None
        };
        tracing::info!(
            "loaded {} ({}, {} layers, ffn {}) in {:.2}s on {}",
            path.display(),
            engine.model.config.arch.name(),
            engine.model.config.n_layer,
            engine.model.config.ffn.name(),
            t.elapsed().as_secs_f64(),
            powerinfer::backend::Backend::name(&engine.model.backend)
        );
        Ok((engine, attached))
    }
}

/// Whether to attach the profile sidecar when loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarUse {
    No,
    /// When it exists (bench: add the sparse modes if the model was profiled).
    IfPresent,
    /// It must exist and match the model.
    Required,
}

impl ModelArgs {
    /// The FFN mode the flags ask for.
    pub fn ffn_mode(&self) -> powerinfer::sparse::FfnMode {
        use powerinfer::sparse::FfnMode;
        match (self.sparse, self.oracle) {
            (_, true) => FfnMode::Oracle,
            (true, false) => FfnMode::Predicted,
            _ => FfnMode::Dense,
        }
    }
}

pub fn init_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        // A second call (e.g. from tests) finds the pool built already; that is fine.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1.0 = off)
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (same seed, same output)
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}
