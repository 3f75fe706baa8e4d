//! The kernel sources (cuda/*.cu, embedded in the binary), their compilation by NVRTC to a
//! cubin for the device's architecture, and the on-disk cache of the results.
//!
//! A cubin (machine code) rather than PTX is cached and loaded: PTX from a newer NVRTC than
//! the driver is refused by the driver, machine code for the exact architecture is not.

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;

use cudarc::nvrtc::{result, sys};

use super::CudaError;

/// Prepended to every kernel file (NVRTC gets no include path).
const COMMON: &str = include_str!("../../../cuda/common.cuh");
const QUANT: &str = include_str!("../../../cuda/quant.cuh");

/// One compilation unit: a file of cuda/ and the kernels it defines.
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

/// Weight formats with their own kernels, as the suffix of the kernel names.
pub const TYPE_SUFFIXES: [&str; 8] = ["f32", "f16", "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k"];

macro_rules! per_type {
    ($prefix:literal) => {
        &[
            concat!($prefix, "f32"),
            concat!($prefix, "f16"),
            concat!($prefix, "q4_0"),
            concat!($prefix, "q4_1"),
            concat!($prefix, "q5_0"),
            concat!($prefix, "q8_0"),
            concat!($prefix, "q4_k"),
            concat!($prefix, "q6_k"),
        ]
    };
}

const MATVEC: &[&str] = per_type!("matvec_");
const MATMUL: &[&str] = per_type!("matmul_");
const EMBED: &[&str] = per_type!("embed_");
const SPARSE_GATE_UP: &[&str] = per_type!("sparse_gate_up_");

/// Every kernel file. A kernel name appears in exactly one file.
pub fn files() -> Vec<KernelFile> {
    let cat = |parts: &[&'static [&'static str]]| -> &'static [&'static str] {
        Vec::leak(parts.concat())
    };
    vec![
        KernelFile {
            name: "matmul.cu",
            source: include_str!("../../../cuda/matmul.cu"),
            kernels: cat(&[MATVEC, MATMUL, EMBED]),
        },
        KernelFile {
            name: "norm.cu",
            source: include_str!("../../../cuda/norm.cu"),
            kernels: &["rms_norm"],
        },
        KernelFile {
            name: "rope.cu",
            source: include_str!("../../../cuda/rope.cu"),
            kernels: &["rope"],
        },
        KernelFile {
            name: "elementwise.cu",
            source: include_str!("../../../cuda/elementwise.cu"),
            kernels: &["add", "add_bias", "ffn_activation", "ffn_mask"],
        },
        KernelFile {
            name: "softmax.cu",
            source: include_str!("../../../cuda/softmax.cu"),
            kernels: &["softmax"],
        },
        KernelFile {
            name: "attention.cu",
            source: include_str!("../../../cuda/attention.cu"),
            kernels: &["store_kv", "attention"],
        },
        KernelFile {
            name: "predictor.cu",
            source: include_str!("../../../cuda/predictor.cu"),
            kernels: &["predictor_hidden", "predictor_logits", "predictor_compact"],
        },
        KernelFile {
            name: "sparse_ffn.cu",
            source: include_str!("../../../cuda/sparse_ffn.cu"),
            kernels: cat(&[SPARSE_GATE_UP, &["sparse_down"]]),
        },
    ]
}

/// The full text NVRTC compiles for a file: the shared headers, then the file.
pub fn full_source(file: &KernelFile) -> String {
    format!(
        "{COMMON}\n{QUANT}\n#line 1 \"{}\"\n{}",
        file.name, file.source
    )
}

/// Whether libnvrtc can be loaded (cudarc panics on the first call otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's (major, minor) version. Caller checks `nvrtc_present` first.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Driver(format!("nvrtcVersion: {e}")))?;
    Ok((major, minor))
}

/// Compile one file to a cubin for `arch` (e.g. "sm_90"). Caller checks `nvrtc_present`.
pub fn compile(file: &KernelFile, arch: &str) -> Result<Vec<u8>, CudaError> {
    let fail = |log: String| CudaError::Compile {
        file: file.name.to_string(),
        arch: arch.to_string(),
        log,
    };
    let src = CString::new(full_source(file)).map_err(|_| fail("NUL byte in source".into()))?;
    let name = CString::new(file.name).expect("file names have no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| fail(e.to_string()))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    // SAFETY: prog is a live program; the options are plain strings.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let out = match compiled {
        Ok(()) => cubin(prog).map_err(|e| fail(e.to_string())),
        Err(e) => {
            // SAFETY: prog is live; the log is NUL-terminated by NVRTC.
            let log = unsafe { result::get_program_log(prog) }
                .map(|l| c_chars_to_string(&l))
                .unwrap_or_default();
            Err(fail(format!("{e}\n{log}")))
        }
    };
    // SAFETY: prog is live and not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, result::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: prog compiled successfully; the buffer has the size NVRTC reported.
    unsafe {
        sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
        let mut buf = vec![0u8; size];
        sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char).result()?;
        Ok(buf)
    }
}

fn c_chars_to_string(v: &[c_char]) -> String {
    if v.is_empty() {
        return String::new();
    }
    // SAFETY: NVRTC's log is NUL-terminated within the buffer it sized.
    unsafe { CStr::from_ptr(v.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// FNV-1a: a stable hash of the source text for the cache key (std's hasher may change
/// between Rust releases).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `$POWERINFER_KERNEL_CACHE`, else `~/.cache/powerinfer/kernels`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("POWERINFER_KERNEL_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/powerinfer/kernels")
}

/// Cache file of a file's cubin: keyed by the source hash, the architecture and the NVRTC
/// version, so any change to one of them compiles afresh.
pub fn cache_path(file: &KernelFile, arch: &str, nvrtc: (i32, i32)) -> PathBuf {
    let hash = fnv1a(full_source(file).as_bytes());
    let stem = file.name.trim_end_matches(".cu");
    cache_dir().join(format!(
        "{stem}-{arch}-nvrtc{}.{}-{hash:016x}.cubin",
        nvrtc.0, nvrtc.1
    ))
}

/// The cubin of a file, from the cache or compiled (and then cached). A cache that cannot be
/// read or written only costs a compilation.
pub fn cubin_cached(file: &KernelFile, arch: &str) -> Result<Vec<u8>, CudaError> {
    let path = cache_path(file, arch, nvrtc_version()?);
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok(bytes);
        }
    }
    let t = std::time::Instant::now();
    let bytes = compile(file, arch)?;
    tracing::debug!(
        "compiled {} for {arch} in {:.2}s",
        file.name,
        t.elapsed().as_secs_f64()
    );
    if let Err(e) = write_atomic(&path, &bytes) {
        tracing::debug!("kernel cache {} not written: {e}", path.display());
    }
    Ok(bytes)
}

/// Write through a unique temporary file and rename, so that concurrent processes never see
/// a half-written cubin.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("k"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_name_is_unique_and_defined_in_its_file() {
        let mut seen = std::collections::HashSet::new();
        for f in files() {
            for k in f.kernels {
                assert!(seen.insert(*k), "kernel {k} listed twice");
                // Per-type kernels are generated by a macro from their prefix.
                let base = TYPE_SUFFIXES
                    .iter()
                    .find_map(|s| k.strip_suffix(s).filter(|b| b.ends_with('_')))
                    .unwrap_or(k);
                assert!(f.source.contains(base), "{k} not found in {}", f.name);
            }
        }
    }

    #[test]
    fn cache_key_changes_with_arch_and_version() {
        let f = &files()[1];
        let a = cache_path(f, "sm_80", (13, 0));
        assert_ne!(a, cache_path(f, "sm_90", (13, 0)));
        assert_ne!(a, cache_path(f, "sm_80", (13, 1)));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
