//! Arguments shared by the subcommands that run a model.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use powerinfer::backend::{Backend, CpuBackend};
use powerinfer::generate::speculative::Drafter;
use powerinfer::generate::{Engine, Generator, Sampler, SamplerConfig};
use powerinfer::gguf::GgufFile;
use powerinfer::model::Model;
use powerinfer::sparse::FfnMode;

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
    /// Run on the GPU, and fail if none is usable [default: the GPU when one is usable]
    #[arg(long, conflicts_with = "cpu")]
    pub gpu: bool,
    /// Run on the CPU even when a GPU is usable
    #[arg(long, conflicts_with_all = ["vram_budget", "gpu_layers"])]
    pub cpu: bool,
    /// VRAM budget in GiB. With a sidecar (--sparse/--oracle): its hot neurons for this
    /// budget (its placement, re-solved when made for another budget) go to the GPU with
    /// attention, KV cache and predictors; cold neurons and the dense FFN matrices stay on the
    /// CPU. Without: as many whole layers as fit (the --gpu-layers baseline). `profile` and
    /// `place` solve their placement for it
    #[arg(long, value_name = "GiB")]
    pub vram_budget: Option<f64>,
    /// Dense layer split (llama.cpp's -ngl): the weights of the first N layers on the GPU,
    /// the others read by the CPU
    #[arg(long, value_name = "N", conflicts_with_all = ["sparse", "oracle", "vram_budget"])]
    pub gpu_layers: Option<usize>,
    /// Read the model into memory instead of mapping the file (as llama.cpp's --no-mmap):
    /// slower to load and not shared between processes, but on Linux the weights sit in
    /// transparent huge pages, which makes decoding faster
    #[arg(long)]
    pub no_mmap: bool,
    /// After the run, print the hybrid FFN's time per phase (predict, mask copy, hot, cold,
    /// upload + merge) and how much of the hot part the cold part hid; the GPU waits after
    /// each phase to time it
    #[arg(long)]
    pub profile_phases: bool,
}

/// A loaded engine on whichever backend was chosen.
// One per process, moved once: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyEngine {
    Cpu(Engine<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Engine<powerinfer::backend::cuda::CudaBackend>),
}

/// Evaluate `$body` with `$e` bound to the engine inside an [`AnyEngine`], whatever its
/// backend (the body is generic code instantiated once per backend).
macro_rules! with_engine {
    ($engine:expr, $e:ident => $body:expr) => {
        match $engine {
            $crate::cli::common::AnyEngine::Cpu($e) => $body,
            #[cfg(feature = "cuda")]
            $crate::cli::common::AnyEngine::Cuda($e) => $body,
        }
    };
}
pub(crate) use with_engine;

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

    /// The flag that asks for the GPU, if any (--gpu, --vram-budget, --gpu-layers).
    pub fn gpu_flag(&self) -> Option<&'static str> {
        if self.gpu {
            Some("--gpu")
        } else if self.vram_budget.is_some() {
            Some("--vram-budget")
        } else if self.gpu_layers.is_some() {
            Some("--gpu-layers")
        } else {
            None
        }
    }

    /// --vram-budget in bytes.
    fn budget_bytes(&self) -> anyhow::Result<Option<u64>> {
        self.vram_budget
            .map(|g| {
                anyhow::ensure!(
                    g.is_finite() && g > 0.0,
                    "--vram-budget must be a positive number of GiB"
                );
                Ok((g * (1u64 << 30) as f64) as u64)
            })
            .transpose()
    }

    /// Size the thread pool, choose the backend and load the model: the GPU when one is
    /// usable (for the sparse modes, the hybrid FFN: hot neurons there, cold ones on the
    /// CPU), otherwise the CPU.
    pub fn load(&self) -> anyhow::Result<AnyEngine> {
        Ok(self.load_any(SidecarUse::No)?.0)
    }

    /// [`ModelArgs::load`], attaching the sidecar as `want` says; also returns the sidecar's
    /// path when one was attached.
    fn load_any(&self, want: SidecarUse) -> anyhow::Result<(AnyEngine, Option<PathBuf>)> {
        init_threads(self.threads)?;
        let path = self.model_path()?;
        let budget = self.budget_bytes()?;
        #[cfg(feature = "cuda")]
        if !self.cpu {
            use powerinfer::backend::cuda::{CudaBackend, CudaError};
            match CudaBackend::new(0) {
                Ok(b) => {
                    let b = match self.split_layers(&path, budget, want)? {
                        Some(n) => b.with_gpu_layers(n),
                        // The budget holds the hot neurons, not the dense FFN matrices.
                        None if budget.is_some() => b.with_ffn_on_host(),
                        None => b,
                    };
                    let (e, sc) = self.load_on(&path, b, want)?;
                    return Ok((AnyEngine::Cuda(e), sc));
                }
                Err(e) if self.gpu_flag().is_some() => {
                    anyhow::bail!("{}: no usable GPU: {e}", self.gpu_flag().unwrap_or("--gpu"))
                }
                // No GPU on this machine is the ordinary case: say so only when asked.
                Err(e @ (CudaError::NoDriver | CudaError::NoNvrtc | CudaError::NoDevice)) => {
                    tracing::debug!("no GPU ({e}); running on the CPU")
                }
                Err(e) => tracing::warn!("GPU unusable ({e}); running on the CPU"),
            }
        }
        #[cfg(not(feature = "cuda"))]
        if let Some(flag) = self.gpu_flag() {
            anyhow::bail!(
                "{flag}: this build has no GPU support (built without the `cuda` feature)"
            );
        }
        let _ = budget;
        let (e, sc) = self.load_on(&path, CpuBackend::new(), want)?;
        Ok((AnyEngine::Cpu(e), sc))
    }

    /// Load on the CPU, for the subcommands that have no GPU path (`what` names the one
    /// asking); the GPU flags are then errors rather than silently ignored, except
    /// --vram-budget where the subcommand takes it for its placement (`takes_budget`).
    pub fn load_cpu(&self, what: &str, takes_budget: bool) -> anyhow::Result<Engine<CpuBackend>> {
        let flag = match self.gpu_flag() {
            Some("--vram-budget") if takes_budget => None,
            f => f,
        };
        if let Some(flag) = flag {
            anyhow::bail!("{flag}: `powerinfer {what}` runs on the CPU only; drop {flag}");
        }
        init_threads(self.threads)?;
        let path = self.model_path()?;
        Ok(self.load_on(&path, CpuBackend::new(), SidecarUse::No)?.0)
    }

    /// Load on the CPU for speculative decoding, attaching the sidecar also when a sparse draft
    /// of this model needs it (the model itself still runs dense unless --sparse).
    pub fn load_with(&self, spec: Option<&SpecArgs>) -> anyhow::Result<Engine<CpuBackend>> {
        if let Some(flag) = self.gpu_flag() {
            anyhow::bail!("{flag}: speculative decoding runs on the CPU only; drop {flag}");
        }
        init_threads(self.threads)?;
        let path = self.model_path()?;
        let sparse_draft = spec.is_some_and(|s| s.self_draft_mode() == Some(DraftMode::Sparse));
        let want = if sparse_draft {
            SidecarUse::Required
        } else {
            SidecarUse::No
        };
        Ok(self.load_on(&path, CpuBackend::new(), want)?.0)
    }

    /// Load for `bench` as [`ModelArgs::load`] does (the GPU when usable), attaching the
    /// sidecar as `want` says; returns the sidecar's path when one was attached. With
    /// `speculative` on the CPU only (speculative decoding has no GPU path).
    pub fn load_bench(
        &self,
        want: SidecarUse,
        speculative: bool,
    ) -> anyhow::Result<(AnyEngine, Option<PathBuf>)> {
        if !speculative {
            return self.load_any(want);
        }
        if let Some(flag) = self.gpu_flag() {
            anyhow::bail!(
                "{flag}: `powerinfer bench --speculative` runs on the CPU only; drop {flag}"
            );
        }
        init_threads(self.threads)?;
        let path = self.model_path()?;
        let (e, sc) = self.load_on(&path, CpuBackend::new(), want)?;
        Ok((AnyEngine::Cpu(e), sc))
    }

    /// Will loading `path` attach its sidecar (for --sparse/--oracle, and as `want` says)?
    fn attaches(&self, path: &std::path::Path, want: SidecarUse) -> bool {
        match want {
            SidecarUse::No => self.sparse || self.oracle,
            SidecarUse::Required => true,
            SidecarUse::IfPresent => self.sparse || self.oracle || self.sidecar_path(path).exists(),
        }
    }

    /// The sidecar path: --sidecar, or MODEL.powerinfer.gguf next to the model.
    pub fn sidecar_path(&self, model: &std::path::Path) -> PathBuf {
        self.sidecar
            .clone()
            .unwrap_or_else(|| powerinfer::sparse::sidecar::default_path(model))
    }

    /// Load `path` on `backend`; the sidecar is attached for --sparse/--oracle and as `want`
    /// says.
    fn load_on<B: Backend>(
        &self,
        path: &std::path::Path,
        backend: B,
        want: SidecarUse,
    ) -> anyhow::Result<(Engine<B>, Option<PathBuf>)> {
        let t = std::time::Instant::now();
        let file = if self.no_mmap {
            powerinfer::gguf::GgufFile::read(path)
        } else {
            powerinfer::gguf::GgufFile::open(path)
        }
        .with_context(|| format!("loading {}", path.display()))?;
        let mut engine = Engine::from_file(
            std::sync::Arc::new(file),
            backend,
            self.activation.as_deref(),
        )
        .with_context(|| format!("loading {}", path.display()))?;
        let sc_path = self.sidecar_path(path);
        let attached = if self.attaches(path, want) {
            let sc = powerinfer::sparse::Sidecar::read(&sc_path)?;
            sc.check_model(&sc_path, &engine.model.file)?;
            let hot = match self.budget_bytes()? {
                Some(b) => Some(hot_lists(&engine.model, &sc, b, self.ctx_size)?),
                None => None,
            };
            engine.model.attach_sidecar_placed(&sc, hot.as_deref())?;
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
            engine.model.backend.name()
        );
        Ok((engine, attached))
    }
}

impl ModelArgs {
    /// The dense layer split's N: --gpu-layers, or the whole layers that fit --vram-budget
    /// when no sidecar is attached to take the budget for its hot neurons.
    #[cfg(feature = "cuda")]
    fn split_layers(
        &self,
        path: &std::path::Path,
        budget: Option<u64>,
        want: SidecarUse,
    ) -> anyhow::Result<Option<usize>> {
        use powerinfer::backend::layer_split;
        if let Some(n) = self.gpu_layers {
            return Ok(Some(n));
        }
        let Some(budget) = budget.filter(|_| !self.attaches(path, want)) else {
            return Ok(None);
        };
        let file = powerinfer::gguf::GgufFile::open(path)?;
        let c = powerinfer::model::ModelConfig::from_gguf(&file, self.activation.as_deref())?;
        let ctx = self.ctx_size.clamp(1, c.context_length.max(1));
        let n = layer_split::layers_within(&file, &c, ctx, budget);
        tracing::info!(
            "--vram-budget (dense): the first {n} of {} layers on the GPU",
            c.n_layer
        );
        Ok(Some(n))
    }
}

/// The hot neurons of every layer for `budget` bytes (see `profile::hot_for_budget`).
fn hot_lists<B: Backend>(
    model: &Model<B>,
    sc: &powerinfer::sparse::Sidecar,
    budget: u64,
    ctx: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let p = powerinfer::profile::hot_for_budget(model, sc, budget, ctx)
        .context("placing the hot neurons for --vram-budget")?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let hot: usize = p.hot.iter().map(Vec::len).sum();
    match p.value_fraction {
        Some(v) => tracing::info!(
            "placement re-solved for {:.2} GiB (the sidecar's: {:.2} GiB): {hot} hot neurons, {:.1}% of activation frequency",
            gib(budget),
            gib(sc.vram_budget),
            100.0 * v
        ),
        None => tracing::info!("the sidecar's placement for {:.2} GiB: {hot} hot neurons", gib(budget)),
    }
    Ok(p.hot)
}

/// Whether to attach the profile sidecar beyond what --sparse/--oracle ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidecarUse {
    No,
    Required,
    /// When the file exists (bench compares the sparse modes whenever it can).
    IfPresent,
}

impl ModelArgs {
    /// The FFN mode the flags ask for.
    pub fn ffn_mode(&self) -> FfnMode {
        match (self.sparse, self.oracle) {
            (_, true) => FfnMode::Oracle,
            (true, false) => FfnMode::Predicted,
            _ => FfnMode::Dense,
        }
    }
}

/// A generator for `engine` as the flags ask: sampler, FFN mode, and the speculative draft
/// (this model's sparse FFN, or `draft_engine`) when --speculative is given.
pub fn generator<'m, B: Backend>(
    model: &ModelArgs,
    sampling: &SamplingArgs,
    spec: &SpecArgs,
    engine: &'m Engine<B>,
    draft_engine: Option<&'m Engine<B>>,
) -> anyhow::Result<Generator<'m, B>> {
    let mut gen = Generator::new(
        &engine.model,
        &engine.tokenizer,
        Sampler::new(sampling.config()),
        model.ctx_size,
    );
    gen.state.ffn_mode = model.ffn_mode();
    gen.state.sparse.hybrid.phases.timed = model.profile_phases;
    if let Some(d) = spec.drafter(engine, draft_engine, model.ctx_size)? {
        gen = gen.with_draft(d)?;
    }
    Ok(gen)
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

/// How the draft of speculative decoding evaluates its FFNs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DraftMode {
    /// Predicted-sparse FFN from the profile sidecar (only the neurons the predictors select)
    Sparse,
    /// Every neuron (for a separate --draft-model)
    Dense,
}

impl DraftMode {
    fn ffn_mode(self) -> FfnMode {
        match self {
            DraftMode::Sparse => FfnMode::Predicted,
            DraftMode::Dense => FfnMode::Dense,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// Speculative decoding: a cheap draft proposes up to K tokens, the full model checks them
    /// in one batched pass (K adapts to the acceptance rate; greedy output is unchanged)
    #[arg(long, value_name = "K")]
    pub speculative: Option<usize>,
    /// How the draft runs [default: sparse, i.e. this model's predicted-sparse FFN from its
    /// profile sidecar; dense with --draft-model]
    #[arg(long, value_enum, requires = "speculative")]
    pub draft: Option<DraftMode>,
    /// Draft with another GGUF model with the same vocabulary (e.g. a smaller quantization)
    #[arg(long, value_name = "FILE", requires = "speculative")]
    pub draft_model: Option<PathBuf>,
    /// Profile sidecar of --draft-model, for --draft sparse [default: next to it]
    #[arg(long, value_name = "FILE", requires = "draft_model")]
    pub draft_sidecar: Option<PathBuf>,
    /// Draft with this model's own copy requantised to TYPE (q4_0, q4_1, q5_0, q8_0, ...) in
    /// memory at load, as BigDL-LLM drafts for an FP16 model with its INT4 copy: worth it
    /// where the model's own type is costly to read (f16, q8_0)
    #[arg(
        long,
        value_name = "TYPE",
        requires = "speculative",
        conflicts_with = "draft_model"
    )]
    pub draft_type: Option<String>,
}

impl SpecArgs {
    /// The draft's mode when the draft is this model itself; `None` without speculation or
    /// with a separate draft model.
    /// Does the draft (this model, sparse) need the sidecar attached?
    pub fn wants_sidecar(&self) -> bool {
        self.self_draft_mode() == Some(DraftMode::Sparse)
    }

    fn self_draft_mode(&self) -> Option<DraftMode> {
        (self.speculative.is_some() && self.draft_model.is_none() && self.draft_type.is_none())
            .then(|| self.draft.unwrap_or(DraftMode::Sparse))
    }

    /// Check the flags against the target's, and load the separate draft model if one is
    /// asked for.
    pub fn load_draft(&self, target: &ModelArgs) -> anyhow::Result<Option<Engine<CpuBackend>>> {
        let Some(k) = self.speculative else {
            return Ok(None);
        };
        anyhow::ensure!(k >= 1, "--speculative must be at least 1");
        anyhow::ensure!(
            !target.sparse && !target.oracle,
            "--speculative verifies with the full model: drop --sparse/--oracle (the draft is \
             the sparse one, see --draft)"
        );
        anyhow::ensure!(
            self.draft_model.is_some()
                || self.draft_type.is_some()
                || self.draft != Some(DraftMode::Dense),
            "--draft dense without --draft-model or --draft-type would draft with the target itself"
        );
        if let Some(ty) = &self.draft_type {
            return self.requantised_draft(target, ty).map(Some);
        }
        let Some(path) = &self.draft_model else {
            return Ok(None);
        };
        anyhow::ensure!(
            path.exists(),
            "draft model {} does not exist",
            path.display()
        );
        let mut engine = Engine::load(path, CpuBackend::new(), None)
            .with_context(|| format!("loading the draft model {}", path.display()))?;
        if self.draft == Some(DraftMode::Sparse) {
            let sc_path = self
                .draft_sidecar
                .clone()
                .unwrap_or_else(|| powerinfer::sparse::sidecar::default_path(path));
            let sc = powerinfer::sparse::Sidecar::read(&sc_path)?;
            sc.check_model(&sc_path, &engine.model.file)?;
            engine.model.attach_sidecar(&sc)?;
        }
        Ok(Some(engine))
    }

    /// The target's copy requantised to `ty`, built in memory, as a dense draft.
    fn requantised_draft(
        &self,
        target: &ModelArgs,
        ty: &str,
    ) -> anyhow::Result<Engine<CpuBackend>> {
        anyhow::ensure!(
            self.draft != Some(DraftMode::Sparse),
            "--draft sparse needs a profile made for the draft's own weights: with --draft-type \
             the copy exists only in memory, so quantize it to a file (`powerinfer quantize`), \
             profile that, and pass it as --draft-model"
        );
        let ty = powerinfer::quantize::parse_type(ty)?;
        let path = target.model_path()?;
        let file = GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
        let start = std::time::Instant::now();
        let plan = powerinfer::quantize::plan_uniform(&file, ty)?;
        let copy = powerinfer::quantize::requantize_in_memory(&file, &plan)
            .with_context(|| format!("requantising {} to {ty} for the draft", path.display()))?;
        tracing::info!(
            "draft: {} requantised to {ty} in memory ({:.0} MB) in {:.1} s",
            path.display(),
            copy.bytes().len() as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        Ok(Engine::from_file(
            Arc::new(copy),
            CpuBackend::new(),
            target.activation.as_deref(),
        )?)
    }

    /// The model that drafts and its FFN mode.
    pub fn draft_of<'m, B: Backend>(
        &self,
        target: &'m Engine<B>,
        draft: Option<&'m Engine<B>>,
    ) -> (&'m Model<B>, FfnMode) {
        match draft {
            Some(e) => (&e.model, self.draft.unwrap_or(DraftMode::Dense).ffn_mode()),
            None => (
                &target.model,
                self.draft.unwrap_or(DraftMode::Sparse).ffn_mode(),
            ),
        }
    }

    /// The draft for `target` (or for the separate `draft` model), if speculation is on.
    pub fn drafter<'m, B: Backend>(
        &self,
        target: &'m Engine<B>,
        draft: Option<&'m Engine<B>>,
        n_ctx: usize,
    ) -> anyhow::Result<Option<Drafter<'m, B>>> {
        let Some(k) = self.speculative else {
            return Ok(None);
        };
        let (model, mode) = self.draft_of(target, draft);
        let d = Drafter::new(model, mode, n_ctx, k)?;
        d.check_target(&target.model)?;
        anyhow::ensure!(
            draft.is_none_or(|e| e.tokenizer.eos_id() == target.tokenizer.eos_id()),
            "the draft model's tokenizer differs from the target's (end-of-sequence ids differ)"
        );
        Ok(Some(d))
    }
}
