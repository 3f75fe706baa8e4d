//! One GPU: its context and stream, the loaded kernels, and the few primitives the backend
//! is written with (allocate, copy, launch).
//!
//! cudarc panics when a library is missing, so `Gpu::open` probes libcuda and libnvrtc
//! before its first call into either.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{
    result as dr, CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::{kernels, CudaError};

/// A kernel argument: device pointers travel as 64-bit integers (that is their ABI).
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U64(u64),
    F32(f32),
}

pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    functions: HashMap<&'static str, cudarc::driver::CudaFunction>,
    pub(crate) arch: String,
    pub(crate) device_name: String,
    /// Synchronise and check after every launch (`POWERINFER_CUDA_SYNC=1`): slow, but a
    /// failing kernel is named at once instead of at the next copy.
    sync_each: bool,
}

/// Whether the driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Why no GPU can be used right now, or `None` when one can (loads the libraries and asks the
/// driver for devices; compiles nothing).
pub fn unavailable_reason() -> Option<CudaError> {
    if !driver_present() {
        return Some(CudaError::NoDriver);
    }
    if !kernels::nvrtc_present() {
        return Some(CudaError::NoNvrtc);
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some(CudaError::NoDevice),
        Err(e) => Some(CudaError::Driver(format!("cuInit: {e}"))),
    }
}

impl Gpu {
    /// Open device `ordinal` and load every kernel, compiled for its architecture (from the
    /// kernel cache after the first run).
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        if let Some(why) = unavailable_reason() {
            return Err(why);
        }
        let ctx = CudaContext::new(ordinal)?;
        // One stream, so cudarc's per-buffer event tracking is pure overhead.
        // SAFETY: called before any buffer or stream of this context exists.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability()?;
        if major < 7 || (major == 7 && minor < 5) {
            return Err(CudaError::TooOld { major, minor });
        }
        let arch = format!("sm_{major}{minor}");
        let device_name = ctx.name()?;
        let stream = ctx.default_stream();
        let mut functions = HashMap::new();
        for file in kernels::files() {
            let cubin = kernels::cubin_cached(&file, &arch)?;
            let module = ctx.load_module(Ptx::from_binary(cubin))?;
            for &k in file.kernels {
                functions.insert(k, module.load_function(k)?);
            }
        }
        Ok(Gpu {
            ctx,
            stream,
            functions,
            arch,
            device_name,
            sync_each: std::env::var("POWERINFER_CUDA_SYNC").as_deref() == Ok("1"),
        })
    }

    /// `len` zeroed elements (at least one: the driver refuses empty allocations).
    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> CudaSlice<T> {
        check(self.stream.alloc_zeros(len.max(1)), "allocation")
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> CudaSlice<T> {
        if data.is_empty() {
            // SAFETY: one element, never read before written.
            return check(unsafe { self.stream.alloc(1) }, "allocation");
        }
        check(self.stream.clone_htod(data), "host-to-device copy")
    }

    /// Copy `data` into the start of `dst`.
    pub fn upload_into<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) {
        if data.is_empty() {
            return;
        }
        check(
            self.stream
                .memcpy_htod(data, &mut dst.slice_mut(..data.len())),
            "host-to-device copy",
        )
    }

    /// The first `len` elements of `src`, on the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        src: &CudaSlice<T>,
        len: usize,
    ) -> Vec<T> {
        let mut out = vec![T::default(); len];
        if len > 0 {
            check(
                self.stream.memcpy_dtoh(&src.slice(..len), &mut out[..]),
                "device-to-host copy",
            );
        }
        self.sync();
        out
    }

    /// Copy `n` elements from `src[src_off..]` to `dst[dst_off..]`.
    pub fn copy<T: DeviceRepr>(
        &self,
        src: &CudaSlice<T>,
        src_off: usize,
        dst: &mut CudaSlice<T>,
        dst_off: usize,
        n: usize,
    ) {
        if n == 0 {
            return;
        }
        check(
            self.stream.memcpy_dtod(
                &src.slice(src_off..src_off + n),
                &mut dst.slice_mut(dst_off..dst_off + n),
            ),
            "device-to-device copy",
        )
    }

    pub fn sync(&self) {
        check(self.stream.synchronize(), "stream synchronisation")
    }

    /// Device address of a buffer's first element.
    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// Launch `kernel` on the stream. Panics with the kernel's name on a driver error: the
    /// backend trait's operations cannot return one, and a failed launch leaves the GPU
    /// state undefined.
    pub fn launch(&self, kernel: &str, grid: (u32, u32), block: u32, args: &[Arg]) {
        let f = self
            .functions
            .get(kernel)
            .unwrap_or_else(|| panic!("CUDA kernel {kernel} is not loaded"));
        if grid.0 == 0 || grid.1 == 0 {
            return;
        }
        // Each argument in its own 8-byte slot; the driver reads as many bytes as the
        // parameter's type has, from the slot's start (little-endian).
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) | Arg::U64(p) => p,
                Arg::I32(v) => v as u32 as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        check(self.ctx.bind_to_thread(), "binding the CUDA context");
        // SAFETY: the parameter list matches the kernel's signature (each call site passes
        // the arguments its .cu declaration names), and every pointer is a live buffer.
        let r = unsafe {
            dr::launch_kernel(
                f.cu_function(),
                (grid.0, grid.1, 1),
                (block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        };
        if let Err(e) = r {
            panic!("CUDA launch of {kernel} failed: {e}");
        }
        if self.sync_each {
            if let Err(e) = self.stream.synchronize() {
                panic!("CUDA kernel {kernel} failed: {e}");
            }
        }
    }
}

/// Unwrap a driver result; the message names the operation.
pub(crate) fn check<T>(r: Result<T, cudarc::driver::DriverError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("CUDA {what} failed: {e}"))
}

/// Blocks of `threads` covering `n` items.
pub fn blocks(n: usize, threads: usize) -> u32 {
    u32::try_from(n.div_ceil(threads)).expect("grid too large")
}
