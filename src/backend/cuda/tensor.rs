use cudarc::driver::CudaSlice;

/// A row-major f32 matrix in GPU memory. The buffer only grows, so scratch tensors reused
/// across tokens stop allocating once they reach their largest size.
#[derive(Default)]
pub struct CudaTensor {
    pub(crate) buf: Option<CudaSlice<f32>>,
    pub rows: usize,
    pub cols: usize,
}

impl CudaTensor {
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn buf(&self) -> &CudaSlice<f32> {
        self.buf
            .as_ref()
            .expect("CUDA tensor read before it was written")
    }

    pub(crate) fn buf_mut(&mut self) -> &mut CudaSlice<f32> {
        self.buf
            .as_mut()
            .expect("CUDA tensor read before it was written")
    }
}
