mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(e) = cli::main(cli) {
        // One clear line, the causes joined, and a non-zero exit; never a panic.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
