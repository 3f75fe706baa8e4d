/// Why the CUDA backend cannot run, or what failed inside it.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver: libcuda.so was not found (is the NVIDIA driver installed?)")]
    NoDriver,
    #[error(
        "no NVRTC: libnvrtc.so (CUDA 13) was not found on the library path \
         (install the CUDA toolkit or `pip install nvidia-cuda-nvrtc` and add its lib \
         directory to LD_LIBRARY_PATH)"
    )]
    NoNvrtc,
    #[error("the CUDA driver found no GPU")]
    NoDevice,
    #[error("GPU compute capability {major}.{minor} is too old (sm_75 or newer needed)")]
    TooOld { major: i32, minor: i32 },
    #[error("CUDA driver: {0}")]
    Driver(String),
    #[error("NVRTC could not compile {file} for {arch}: {log}")]
    Compile {
        file: String,
        arch: String,
        log: String,
    },
    #[error("CUDA backend: {0}")]
    Unsupported(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}
