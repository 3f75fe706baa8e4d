//! The `powerinfer` command line (minimal wiring in this branch: the lead's version of this
//! file, with every subcommand, replaces it at merge).

mod inspect;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "powerinfer",
    version,
    about = "LLM inference exploiting activation sparsity"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a GGUF file's architecture, hyper-parameters, tensors and tokenizer
    Inspect(inspect::InspectArgs),
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Inspect(a) => inspect::run(a),
    }
}
