//! The `powerinfer` command line. Each subcommand lives in its own file with its clap
//! arguments and a `run` function.

mod bench;
mod bench_spec;
mod chat;
mod common;
mod inspect;
mod perplexity;
mod place;
mod profile;
mod quantize;
mod run;
mod serve;
mod synth;
mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "powerinfer",
    version,
    about = "LLM inference exploiting activation sparsity"
)]
pub struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a GGUF file's architecture, hyper-parameters, tensors and tokenizer
    Inspect(inspect::InspectArgs),
    /// Print the token ids of a text
    Tokenize(tokenize::TokenizeArgs),
    /// Complete a prompt
    Run(run::RunArgs),
    /// Interactive chat with the model's chat template
    Chat(chat::ChatArgs),
    /// Prefill and decode speed
    Bench(bench::BenchArgs),
    /// Profile activations, train predictors, place neurons: writes MODEL.powerinfer.gguf
    Profile(profile::ProfileArgs),
    /// Re-solve the hot-neuron placement of a profile for another VRAM budget
    Place(place::PlaceArgs),
    /// Perplexity of a text (dense, --sparse or --oracle; --compare-dense)
    Perplexity(perplexity::PerplexityArgs),
    /// Write a synthetic ReLU-family model (random weights, chosen sparsity) for tests and benchmarks
    Synth(synth::SynthArgs),
    /// OpenAI-compatible HTTP server with a chat page
    Serve(serve::ServeArgs),
    /// Requantise a model (q4_0, q4_1, q8_0, q4_k, q6_k, ...), optionally a sensitivity-chosen mix
    Quantize(quantize::QuantizeArgs),
}

pub fn main(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Place(a) => place::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Quantize(a) => quantize::run(a),
    }
}
