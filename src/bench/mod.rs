//! `powerinfer bench`'s machinery: interleaved timing of the FFN modes, bytes per decoded
//! token, the machine's read bandwidth, the report with its roofline and SVG chart, and
//! llama.cpp's llama-bench run beside it.

mod bandwidth;
mod chart;
mod error;
mod llama_cpp;
mod machine;
mod report;
mod runner;
mod summary;
mod traffic;

pub use bandwidth::{measure_read_bandwidth, Bandwidth};
pub use chart::{chart_title, write_svg};
pub use error::BenchError;
pub use llama_cpp::{
    find_llama_bench, parse_llama_bench_json, run_llama_bench, LlamaBenchResult,
    LlamaCppComparison, LlamaSpeed,
};
pub use machine::Machine;
pub use report::{BenchReport, ModeReport, ModelInfo};
pub use runner::{argmax, random_prompt, run_interleaved, ModeRuns};
pub use summary::Summary;
pub use traffic::DecodeTraffic;
