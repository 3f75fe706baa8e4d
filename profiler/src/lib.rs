//! Profiling: activation statistics, threshold calibration, placement (issue 4).
