//! Errors of the bench machinery.

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("model file has no tensor {0}")]
    MissingTensor(String),
    #[error("drawing the chart: {0}")]
    Plot(String),
    #[error("{0}")]
    LlamaBench(String),
}
