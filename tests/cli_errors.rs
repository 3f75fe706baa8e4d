//! Bad input on the command line: one clear error line and a non-zero exit, never a panic.
mod common;

use std::process::{Command, Output};

fn powerinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_powerinfer"))
        .args(args)
        .env("POWERINFER_MODELS", "/nonexistent-powerinfer-models")
        .output()
        .expect("run powerinfer")
}

fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.starts_with("error: "), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("powerinfer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_model_file() {
    let out = powerinfer(&["run", "-m", "/no/such/model.gguf", "-p", "hi"]);
    assert_clean_error(&out, "/no/such/model.gguf");
}

#[test]
fn missing_default_model_says_how_to_install() {
    let out = powerinfer(&["run", "-p", "hi"]);
    assert_clean_error(&out, "scripts/setup.sh");
}

#[test]
fn corrupt_and_truncated_files() {
    let bad = temp_file("bad-magic.gguf", b"NOPE\x03\x00\x00\x00rest of a file");
    assert_clean_error(
        &powerinfer(&["run", "-m", bad.to_str().unwrap(), "-p", "hi"]),
        "bad magic",
    );
    let short = temp_file("short.gguf", b"GGUF\x03\x00\x00\x00\x01");
    assert_clean_error(
        &powerinfer(&["run", "-m", short.to_str().unwrap(), "-p", "hi"]),
        "truncated",
    );
    if let Some(m) = common::model("smollm2") {
        // A real header cut off in the middle of the metadata.
        let bytes = std::fs::read(m).unwrap();
        let cut = temp_file("cut.gguf", &bytes[..4096]);
        assert_clean_error(
            &powerinfer(&["run", "-m", cut.to_str().unwrap(), "-p", "hi"]),
            "truncated",
        );
    }
}

#[test]
fn prompt_longer_than_context() {
    let Some(m) = common::model("smollm2") else {
        return;
    };
    let prompt = "word ".repeat(200);
    let out = powerinfer(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-c",
        "64",
        "-n",
        "4",
        "-p",
        &prompt,
    ]);
    assert_clean_error(&out, "does not fit in the context");
}

#[test]
fn unknown_activation_override() {
    let Some(m) = common::model("smollm2") else {
        return;
    };
    let out = powerinfer(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "--activation",
        "tanh",
        "-p",
        "hi",
    ]);
    assert_clean_error(&out, "unknown FFN activation");
}

#[test]
fn gpu_flag_on_cpu_only_subcommands() {
    for sub in ["profile", "perplexity"] {
        let out = powerinfer(&[sub, "--gpu", "-m", "/no/such/model.gguf"]);
        assert_clean_error(&out, &format!("`powerinfer {sub}` runs on the CPU only"));
    }
}

#[test]
fn speculative_flags_are_checked() {
    let m = common::synthetic_model_with_sidecar("cli-spec");
    let m = m.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-m", m, "-p", "hi", "-n", "4"];
        args.extend_from_slice(extra);
        powerinfer(&args)
    };
    assert_clean_error(&run(&["--speculative", "0"]), "at least 1");
    assert_clean_error(&run(&["--speculative", "2", "--sparse"]), "drop --sparse");
    assert_clean_error(
        &run(&["--speculative", "2", "--draft", "dense"]),
        "--draft dense without --draft-model",
    );
    assert_clean_error(
        &run(&["--speculative", "2", "--sidecar", "/no/such/sidecar.gguf"]),
        "/no/such/sidecar.gguf",
    );
    assert_clean_error(
        &run(&["--speculative", "2", "--draft-model", "/no/such/draft.gguf"]),
        "/no/such/draft.gguf",
    );
    assert_clean_error(
        &run(&["--speculative", "2", "--draft-type", "q9_9"]),
        "unknown quantisation type",
    );
    assert_clean_error(
        &run(&[
            "--speculative",
            "2",
            "--draft-type",
            "q4_0",
            "--draft",
            "sparse",
        ]),
        "--draft sparse needs a profile",
    );
    assert_clean_error(
        &powerinfer(&[
            "serve",
            "-m",
            m,
            "--speculative",
            "2",
            "--draft-type",
            "q4_0",
        ]),
        "--draft-type are for run",
    );
    if let Some(smol) = common::model("smollm2") {
        let out = powerinfer(&[
            "run",
            "-m",
            smol.to_str().unwrap(),
            "-p",
            "hi",
            "--speculative",
            "2",
            "--draft-model",
            m,
        ]);
        assert_clean_error(&out, "vocabulary");
    }
    // The flags work: a speculative run reports its acceptance.
    let out = run(&["--speculative", "2", "--temp", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens per verify"));
}

#[test]
fn vram_budget_and_gpu_layers_without_a_gpu_are_clear_errors() {
    #[cfg(feature = "cuda")]
    if powerinfer::backend::cuda::unavailable_reason().is_none() {
        // There they run: scripts/gpu-check.sh checks them.
        eprintln!("SKIPPED: a GPU is usable here");
        return;
    }
    let m = common::synthetic_model_with_sidecar("cli-vram");
    let m = m.to_str().unwrap();
    let run = |flags: &[&str]| {
        let mut a = vec!["run", "-m", m, "-p", "hi", "-n", "2"];
        a.extend_from_slice(flags);
        powerinfer(&a)
    };
    for flags in [
        &["--sparse", "--vram-budget", "0.5"][..],
        &["--oracle", "--vram-budget", "0.5"],
        &["--vram-budget", "0.5"],
    ] {
        let out = run(flags);
        assert_clean_error(&out, "--vram-budget: ");
        assert_clean_error(&out, "GPU");
    }
    let out = run(&["--gpu-layers", "2"]);
    assert_clean_error(&out, "--gpu-layers: ");
    assert_clean_error(&out, "GPU");
    // Subcommands without a GPU path say so.
    let out = powerinfer(&["bench", "-m", m, "--vram-budget", "1"]);
    assert_clean_error(&out, "--vram-budget: ");
    let out = powerinfer(&["bench", "-m", m, "--speculative", "2", "--gpu-layers", "1"]);
    assert_clean_error(&out, "runs on the CPU only");
    let out = powerinfer(&["perplexity", "-m", m, "--gpu-layers", "1"]);
    assert_clean_error(&out, "runs on the CPU only");
}

#[test]
fn gpu_placement_flags_that_contradict_each_other() {
    for flags in [
        &["--cpu", "--vram-budget", "1"][..],
        &["--cpu", "--gpu-layers", "1"],
        &["--sparse", "--gpu-layers", "1"],
    ] {
        let mut a = vec!["run", "-m", "/no/such/model.gguf", "-p", "hi"];
        a.extend_from_slice(flags);
        let out = powerinfer(&a);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} accepted");
        assert!(
            stderr.contains("cannot be used with"),
            "{flags:?}: {stderr}"
        );
    }
    let out = powerinfer(&[
        "run",
        "-m",
        "/no/such/model.gguf",
        "-p",
        "hi",
        "--sparse",
        "--vram-budget",
        "-1",
    ]);
    assert!(!out.status.success());
}

#[test]
fn profile_phases_says_when_no_hybrid_ffn_ran() {
    let m = common::synthetic_model_with_sidecar("cli-phases");
    let m = m.to_str().unwrap();
    let out = powerinfer(&[
        "run",
        "-m",
        m,
        "--cpu",
        "--sparse",
        "--profile-phases",
        "-p",
        "hi",
        "-n",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no hybrid FFN ran"), "{stderr}");
}
