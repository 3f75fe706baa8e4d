//! The GPU side of the dense layer split (see `backend::layer_split`): weights of the layers
//! past the first N stay in the mapped file and their matmuls run on the CPU backend.

use super::{CudaBackend, CudaTensor, CudaWeight};
use crate::backend::cpu::{CpuTensor, CpuWeight};
use crate::backend::layer_split::tensor_layer;
use crate::backend::{Backend, CpuBackend};

impl CudaBackend {
    /// Keep the weights of layers `n..` on the host (set before loading the model).
    pub fn with_gpu_layers(mut self, n: usize) -> CudaBackend {
        self.host_layers_from = Some(n);
        self
    }

    /// Keep every layer's dense FFN matrices on the host: with a sidecar under a VRAM
    /// budget only the hot neurons' copies are in VRAM, and a dense FFN (the prompt's, in
    /// the sparse modes) runs on the CPU.
    pub fn with_ffn_on_host(mut self) -> CudaBackend {
        self.ffn_on_host = true;
        self
    }

    /// The layer split's N, when one is set.
    pub fn gpu_layers(&self) -> Option<usize> {
        self.host_layers_from
    }

    pub(crate) fn keeps_on_host(&self, tensor: &str) -> bool {
        let ffn = ["ffn_gate.", "ffn_up.", "ffn_down."]
            .iter()
            .any(|m| tensor.contains(m));
        match (self.host_layers_from, tensor_layer(tensor)) {
            (Some(n), Some(il)) => il >= n,
            (None, Some(_)) => self.ffn_on_host && ffn,
            _ => false,
        }
    }

    pub(crate) fn host_weight(&self, host: CpuWeight) -> CudaWeight {
        CudaWeight {
            ty: host.ty,
            rows: host.rows,
            cols: host.cols,
            row_bytes: 0,
            data: self.gpu.alloc(1),
            host: Some(host),
            host_only: true,
        }
    }

    /// `out = x Wᵀ` on the CPU for a host-only weight: x down, the CPU's matmul, out up.
    pub(crate) fn host_matmul(&self, w: &CudaWeight, x: &CudaTensor, out: &mut CudaTensor) {
        let host = w
            .host
            .as_ref()
            .expect("host-only weights keep their host bytes");
        let xh = CpuTensor::from_vec(self.download(x), x.rows, x.cols);
        let mut y = CpuTensor::default();
        CpuBackend::new().matmul(host, &xh, &mut y);
        self.resize(out, x.rows, w.rows);
        self.gpu.upload_into(&y.data, out.buf_mut());
    }
}
