//! Every CUDA kernel file compiles through NVRTC for the architectures we ship for. Needs
//! libnvrtc (CUDA 13) but no GPU; scripts/test.sh installs it.
#![cfg(feature = "cuda")]

use powerinfer::backend::cuda::kernels;

/// `true` when NVRTC is loadable; otherwise prints SKIPPED (or fails when the test script
/// promised the library with POWERINFER_REQUIRE_MODELS=1).
fn nvrtc_or_skip() -> bool {
    if kernels::nvrtc_present() {
        return true;
    }
    if std::env::var("POWERINFER_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("libnvrtc not found (scripts/test.sh installs it and sets LD_LIBRARY_PATH)");
    }
    eprintln!("SKIPPED: libnvrtc not found (see scripts/test.sh)");
    false
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = kernels::nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    for arch in ["sm_80", "sm_90"] {
        for f in kernels::files() {
            let cubin = kernels::compile(&f, arch).unwrap_or_else(|e| panic!("{e}"));
            // An ELF image: the driver loads it as is.
            assert_eq!(&cubin[..4], b"\x7fELF", "{} for {arch}", f.name);
            for k in f.kernels {
                // The symbol table carries each extern "C" kernel's name.
                let needle = format!("\0{k}\0");
                assert!(
                    cubin.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{k} missing from the cubin of {} for {arch}",
                    f.name
                );
            }
        }
    }
}
