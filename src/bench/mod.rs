//! `powerinfer bench`'s machinery: interleaved timing of the FFN modes, bytes per decoded
//! token, the machine's read bandwidth, and the report with its roofline and SVG chart.

mod bandwidth;
mod chart;
mod error;
mod machine;
mod report;
mod runner;
mod summary;
mod traffic;

pub use bandwidth::{measure_read_bandwidth, Bandwidth};
pub use chart::{chart_title, write_svg};
pub use error::BenchError;
pub use machine::Machine;
pub use report::{BenchReport, ModeReport, ModelInfo};
pub use runner::{argmax, random_prompt, run_interleaved, ModeRuns};
pub use summary::Summary;
pub use traffic::DecodeTraffic;
