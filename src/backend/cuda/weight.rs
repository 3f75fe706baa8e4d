use cudarc::driver::CudaSlice;

use crate::backend::cpu::CpuWeight;
use crate::quant::{GgmlType, QMatrix};

/// A weight matrix in GPU memory, in the block format its kernels read (`ty`; formats without
/// kernels of their own are converted at load, see `CudaBackend::load_weight`).
pub struct CudaWeight {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub(crate) row_bytes: usize,
    pub(crate) data: CudaSlice<u8>,
    /// The GGUF bytes in the mapped model file, for the CPU code that reads weights on the
    /// host (the sparse FFN's neuron-major down copy). `None` for weights uploaded from a
    /// buffer the backend does not keep.
    pub(crate) host: Option<CpuWeight>,
    /// Left on the host by the layer split (`data` is then a placeholder): its matmuls run
    /// on the CPU.
    pub(crate) host_only: bool,
}

impl CudaWeight {
    /// Suffix of the kernels for this weight's format.
    pub(crate) fn suffix(&self) -> &'static str {
        kernel_suffix(self.ty).expect("weights are stored in a kernel format")
    }

    /// The weight as the model file stores it, when the backend keeps a reference to it.
    pub fn host_matrix(&self) -> Option<QMatrix<'_>> {
        self.host.as_ref().map(|h| h.qmatrix())
    }
}

/// Kernel-name suffix of a format the kernels read directly, `None` for the others.
pub fn kernel_suffix(ty: GgmlType) -> Option<&'static str> {
    use GgmlType::*;
    Some(match ty {
        F32 => "f32",
        F16 => "f16",
        Q4_0 => "q4_0",
        Q4_1 => "q4_1",
        Q5_0 => "q5_0",
        Q8_0 => "q8_0",
        Q4_K => "q4_k",
        Q6_K => "q6_k",
        _ => return None,
    })
}
