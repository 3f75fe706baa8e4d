//! `powerinfer place`: re-solve the hot/cold neuron placement of an existing profile for
//! another VRAM budget, from the frequencies stored in the sidecar (no re-profile).

use std::path::PathBuf;

use powerinfer::profile::placement_of_sidecar;
use powerinfer::sparse::{sidecar, Sidecar};

use super::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct PlaceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output [default: overwrite the sidecar]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PlaceArgs) -> anyhow::Result<()> {
    let Some(vram_budget) = args.model.vram_budget else {
        anyhow::bail!("--vram-budget GiB is required");
    };
    anyhow::ensure!(vram_budget > 0.0, "--vram-budget must be positive");
    let t = std::time::Instant::now();
    let path = args.model.model_path()?;
    let sc_path = args
        .model
        .sidecar
        .clone()
        .unwrap_or_else(|| sidecar::default_path(&path));
    let mut sc = Sidecar::read(&sc_path)?;
    let model =
        powerinfer::model::Model::load(&path, powerinfer::backend::CpuBackend::new(), None)?;
    sc.check_model(&sc_path, &model.file)?;
    let budget = (vram_budget * (1u64 << 30) as f64) as u64;
    let placement = placement_of_sidecar(&model, &sc, args.model.ctx_size, budget)?;
    for (l, lp) in sc.layers.iter_mut().zip(&placement.layers) {
        l.hot = lp.hot.clone();
    }
    sc.vram_budget = budget;
    let out = args.output.clone().unwrap_or(sc_path);
    sc.write(&out)?;
    let hot: usize = placement.layers.iter().map(|l| l.hot.len()).sum();
    if args.json {
        let mut v = serde_json::to_value(&placement)?;
        v["seconds"] = t.elapsed().as_secs_f64().into();
        v["sidecar"] = out.display().to_string().into();
        println!("{v}");
    } else {
        for f in &placement.fixed {
            println!(
                "{:>28}: {:>10.1} MiB",
                f.name,
                f.bytes as f64 / (1 << 20) as f64
            );
        }
        println!(
            "hot neurons: {hot} of {} ({:.1} MiB), {:.1}% of activation frequency; {:.1} of {:.1} MiB used",
            sc.layers.iter().map(|l| l.freq.len()).sum::<usize>(),
            placement.neuron_bytes as f64 / (1 << 20) as f64,
            100.0 * placement.value_fraction,
            placement.total_bytes() as f64 / (1 << 20) as f64,
            budget as f64 / (1 << 20) as f64
        );
        println!(
            "wrote {} in {:.2}s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
