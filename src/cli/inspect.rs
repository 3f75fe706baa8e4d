//! `powerinfer inspect`: what a GGUF file holds, without loading the model. The first thing to
//! run on an unfamiliar file, so it reports everything the loaders depend on (architecture,
//! hyper-parameters, tensor types and sizes, tokenizer) and fails with a clear message, never a
//! panic, on a damaged file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Map, Value as Json};

use powerinfer::gguf::{GgufFile, TensorInfo, Value};

/// Show a GGUF file's metadata, hyper-parameters, tensors and tokenizer.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The GGUF file.
    pub model: PathBuf,
    /// List every tensor (name, shape, type, bytes, offset); otherwise totals by type.
    #[arg(long)]
    pub tensors: bool,
    /// Machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match inspect(args, &mut out) {
        // `powerinfer inspect m.gguf --tensors | head` is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        r => r,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Open `args.model` and write the report to `out`.
pub fn inspect(args: &InspectArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let path = &args.model;
    let file = GgufFile::open(path)
        .with_context(|| format!("cannot inspect {} as a GGUF file", path.display()))?;
    let report = Report::new(path, &file);
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report.json(args.tensors))?;
        writeln!(out)?;
    } else {
        report.text(out, args.tensors)?;
    }
    out.flush()?;
    Ok(())
}

/// Per-type tensor totals.
#[derive(Default)]
struct TypeTotal {
    count: usize,
    elements: u64,
    bytes: u64,
}

/// What the report says, gathered once for both output formats.
struct Report<'a> {
    path: &'a Path,
    file: &'a GgufFile,
    arch: Option<&'a str>,
    general: Vec<(&'a str, &'a Value)>,
    hparams: Vec<(&'a str, &'a Value)>,
    tokenizer: Vec<(&'a str, &'a Value)>,
    other: Vec<(&'a str, &'a Value)>,
    by_type: BTreeMap<&'static str, TypeTotal>,
    elements: u64,
    tensor_bytes: u64,
}

impl<'a> Report<'a> {
    fn new(path: &'a Path, file: &'a GgufFile) -> Report<'a> {
        let arch = file.architecture();
        let arch_prefix = arch.map(|a| format!("{a}."));
        let mut r = Report {
            path,
            file,
            arch,
            general: Vec::new(),
            hparams: Vec::new(),
            tokenizer: Vec::new(),
            other: Vec::new(),
            by_type: BTreeMap::new(),
            elements: 0,
            tensor_bytes: 0,
        };
        for (k, v) in &file.metadata {
            let k = k.as_str();
            if let Some(rest) = arch_prefix.as_deref().and_then(|p| k.strip_prefix(p)) {
                r.hparams.push((rest, v));
            } else if let Some(rest) = k.strip_prefix("general.") {
                r.general.push((rest, v));
            } else if let Some(rest) = k.strip_prefix("tokenizer.") {
                r.tokenizer.push((rest, v));
            } else {
                r.other.push((k, v));
            }
        }
        for t in &file.tensors {
            let tot = r.by_type.entry(t.ty.name()).or_default();
            // Saturating: the reader does not forbid tensors that share data, so totals of a
            // hostile file need not be bounded by its size.
            let (n, b) = (t.n_elements(), t.n_bytes() as u64);
            tot.count += 1;
            tot.elements = tot.elements.saturating_add(n);
            tot.bytes = tot.bytes.saturating_add(b);
            r.elements = r.elements.saturating_add(n);
            r.tensor_bytes = r.tensor_bytes.saturating_add(b);
        }
        r
    }

    fn file_len(&self) -> u64 {
        self.file.bytes().len() as u64
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.file.get(key)
    }

    fn array_len(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(Value::as_array).map(<[Value]>::len)
    }

    /// Chat templates: the default one and any named ones (`tokenizer.chat_template.NAME`).
    fn chat_templates(&self) -> Vec<(&'a str, usize)> {
        self.tokenizer
            .iter()
            .filter(|(k, _)| *k == "chat_template" || k.starts_with("chat_template."))
            .map(|(k, v)| (*k, v.as_str().map_or(0, str::len)))
            .collect()
    }

    fn text(&self, out: &mut impl Write, all_tensors: bool) -> std::io::Result<()> {
        let f = self.file;
        writeln!(out, "file:          {}", self.path.display())?;
        writeln!(
            out,
            "size:          {} ({} bytes)",
            human_bytes(self.file_len()),
            self.file_len()
        )?;
        writeln!(out, "GGUF version:  {}", f.version)?;
        writeln!(out, "architecture:  {}", self.arch.unwrap_or("(none)"))?;
        writeln!(
            out,
            "layout:        {} metadata keys, {} tensors, alignment {}, data at byte {}",
            f.metadata.len(),
            f.tensors.len(),
            f.alignment,
            f.data_offset
        )?;
        section(out, "general", &self.general)?;
        section(out, "hyper-parameters", &self.hparams)?;

        // The tokenizer summary first, then its remaining scalar keys; arrays are summarised
        // by their lengths only.
        let s = |k: &str| {
            self.get(k)
                .and_then(Value::as_str)
                .unwrap_or("(none)")
                .to_string()
        };
        let n = |k: &str| self.array_len(k).map_or("(none)".into(), |n| n.to_string());
        let mut rows: Vec<(String, String)> = vec![
            ("model".into(), s("tokenizer.ggml.model")),
            ("pre".into(), s("tokenizer.ggml.pre")),
            ("vocab size".into(), n("tokenizer.ggml.tokens")),
            ("merges".into(), n("tokenizer.ggml.merges")),
        ];
        let templates = self.chat_templates();
        if templates.is_empty() {
            rows.push(("chat template".into(), "absent".into()));
        }
        for (k, len) in templates {
            rows.push((k.into(), format!("present ({len} bytes)")));
        }
        for (k, v) in &self.tokenizer {
            let shown = matches!(*k, "ggml.model" | "ggml.pre") || k.starts_with("chat_template");
            if !shown && v.as_array().is_none() {
                rows.push((k.to_string(), v.to_string()));
            }
        }
        let rows: Vec<(&str, &String)> = rows.iter().map(|(k, v)| (k.as_str(), v)).collect();
        section(out, "tokenizer", &rows)?;
        section(out, "other metadata", &self.other)?;

        writeln!(
            out,
            "\ntensors: {} tensors, {} parameters, {}",
            f.tensors.len(),
            human_count(self.elements),
            human_bytes(self.tensor_bytes)
        )?;
        writeln!(
            out,
            "  {:<6} {:>6} {:>12} {:>12}",
            "type", "count", "parameters", "bytes"
        )?;
        for (ty, t) in &self.by_type {
            writeln!(
                out,
                "  {ty:<6} {:>6} {:>12} {:>12}",
                t.count,
                human_count(t.elements),
                human_bytes(t.bytes)
            )?;
        }
        if all_tensors {
            writeln!(
                out,
                "\n  {:<40} {:<22} {:<6} {:>12} {:>12}",
                "name", "shape", "type", "bytes", "offset"
            )?;
            for t in &f.tensors {
                writeln!(
                    out,
                    "  {:<40} {:<22} {:<6} {:>12} {:>12}",
                    t.name,
                    shape(t),
                    t.ty.name(),
                    t.n_bytes(),
                    t.offset
                )?;
            }
        }
        Ok(())
    }

    fn json(&self, all_tensors: bool) -> Json {
        let f = self.file;
        let obj = |kv: &[(&str, &Value)]| -> Json {
            Json::Object(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), value_json(v)))
                    .collect::<Map<_, _>>(),
            )
        };
        let by_type: Map<String, Json> = self
            .by_type
            .iter()
            .map(|(ty, t)| {
                let v = json!({"count": t.count, "parameters": t.elements, "bytes": t.bytes});
                (ty.to_string(), v)
            })
            .collect();
        let templates: Map<String, Json> = self
            .chat_templates()
            .into_iter()
            .map(|(k, len)| (k.to_string(), json!(len)))
            .collect();
        let mut j = json!({
            "path": self.path.display().to_string(),
            "file_bytes": self.file_len(),
            "version": f.version,
            "architecture": self.arch,
            "alignment": f.alignment,
            "data_offset": f.data_offset,
            "general": obj(&self.general),
            "hyperparameters": obj(&self.hparams),
            "tokenizer": {
                "model": self.get("tokenizer.ggml.model").and_then(Value::as_str),
                "pre": self.get("tokenizer.ggml.pre").and_then(Value::as_str),
                "vocab_size": self.array_len("tokenizer.ggml.tokens"),
                "merges": self.array_len("tokenizer.ggml.merges"),
                "chat_templates": templates,
                "metadata": obj(&self.tokenizer),
            },
            "other": obj(&self.other),
            "tensor_count": f.tensors.len(),
            "parameters": self.elements,
            "tensor_bytes": self.tensor_bytes,
            "by_type": by_type,
        });
        if all_tensors {
            j["tensors"] = f
                .tensors
                .iter()
                .map(|t| {
                    json!({"name": t.name, "shape": t.dims, "type": t.ty.name(),
                           "bytes": t.n_bytes(), "offset": t.offset})
                })
                .collect();
        }
        j
    }
}

fn section<V: std::fmt::Display + ?Sized>(
    out: &mut impl Write,
    title: &str,
    kv: &[(&str, &V)],
) -> std::io::Result<()> {
    if kv.is_empty() {
        return Ok(());
    }
    writeln!(out, "\n{title}:")?;
    let width = kv.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in kv {
        writeln!(out, "  {k:<width$} {v}")?;
    }
    Ok(())
}

/// Shape as `[576, 49152]` (ggml order: row length first).
fn shape(t: &TensorInfo) -> String {
    let d: Vec<String> = t.dims.iter().map(u64::to_string).collect();
    format!("[{}]", d.join(", "))
}

/// JSON for a metadata value; arrays longer than 16 (vocabularies) are summarised.
fn value_json(v: &Value) -> Json {
    match v {
        Value::Array(t, items) if items.len() > 16 => {
            json!({"array": format!("{t:?}"), "len": items.len()})
        }
        Value::Array(_, items) => items.iter().map(value_json).collect(),
        Value::String(s) => json!(s),
        Value::Bool(b) => json!(b),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        _ => match v.as_i64() {
            Some(i) => json!(i),
            None => json!(v.as_u64()),
        },
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[u])
    }
}

fn human_count(n: u64) -> String {
    let x = n as f64;
    if n < 10_000 {
        n.to_string()
    } else if n < 1_000_000 {
        format!("{:.1}K", x / 1e3)
    } else if n < 1_000_000_000 {
        format!("{:.1}M", x / 1e6)
    } else {
        format!("{:.2}B", x / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerinfer::gguf::{GgufWriter, ValueType};
    use powerinfer::quant::GgmlType;

    fn args(model: PathBuf, tensors: bool, json: bool) -> InspectArgs {
        InspectArgs {
            model,
            tensors,
            json,
        }
    }

    /// Whether some line reads `key  value` (any spacing).
    fn has_line(text: &str, key: &str, value: &str) -> bool {
        text.lines().any(|l| {
            l.trim()
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(' ') && rest.trim() == value)
        })
    }

    fn render(a: &InspectArgs) -> anyhow::Result<String> {
        let mut out = Vec::new();
        inspect(a, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    /// A file in a temp directory of its own, removed with it on drop, so that test runs
    /// leave nothing behind. One directory per file: a shared one could be removed by one
    /// test's drop while another test was creating it.
    struct Tmp(PathBuf);

    impl std::ops::Deref for Tmp {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl AsRef<std::path::Path> for Tmp {
        fn as_ref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Tmp {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn tmp(name: &str) -> Tmp {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pi-inspect-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir.join(name))
    }

    /// A small synthetic model written with our writer.
    fn synthetic(name: &str) -> Tmp {
        let p = tmp(name);
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "qwen2").unwrap();
        w.add_str("general.name", "tiny").unwrap();
        w.add("qwen2.block_count", Value::U32(2)).unwrap();
        w.add("qwen2.rope.freq_base", Value::F32(1e6)).unwrap();
        w.add_str("tokenizer.ggml.model", "gpt2").unwrap();
        let toks = (0..20).map(|i| Value::String(format!("t{i}"))).collect();
        w.add(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, toks),
        )
        .unwrap();
        w.add("tokenizer.ggml.bos_token_id", Value::U32(7)).unwrap();
        w.add_tensor("token_embd.weight", &[64, 20], GgmlType::Q8_0)
            .unwrap();
        w.add_tensor("output_norm.weight", &[64], GgmlType::F32)
            .unwrap();
        w.write_file(&p, |tw| -> powerinfer::gguf::Result<()> {
            tw.write_tensor_data("token_embd.weight", &[0; 20 * 68])?;
            tw.write_tensor_data("output_norm.weight", &[0; 256])
        })
        .unwrap();
        p
    }

    #[test]
    fn synthetic_model_text_and_json() {
        let p = synthetic("synthetic.gguf");
        let text = render(&args(p.clone(), true, false)).unwrap();
        for (key, value) in [
            ("GGUF version:", "3"),
            ("architecture:", "qwen2"),
            ("block_count", "2"),
            ("rope.freq_base", "1000000"),
            ("vocab size", "20"),
            ("chat template", "absent"),
            ("ggml.bos_token_id", "7"),
        ] {
            assert!(has_line(&text, key, value), "no {key} {value} in\n{text}");
        }
        // Q8_0 bytes: 20 rows * 2 blocks * 34.
        assert!(text.contains("token_embd.weight"), "{text}");
        assert!(text
            .lines()
            .any(|l| l.contains("[64, 20]") && l.contains("1360")));
        let j: Json = serde_json::from_str(&render(&args(p.clone(), true, true)).unwrap()).unwrap();
        assert_eq!(j["architecture"], "qwen2");
        assert_eq!(j["hyperparameters"]["block_count"], 2);
        assert_eq!(j["tokenizer"]["vocab_size"], 20);
        assert_eq!(j["tokenizer"]["metadata"]["ggml.tokens"]["len"], 20);
        assert_eq!(j["by_type"]["Q8_0"]["bytes"], 1360);
        assert_eq!(j["parameters"], 64 * 20 + 64);
        assert_eq!(j["tensors"][1]["name"], "output_norm.weight");
        assert_eq!(j["file_bytes"], std::fs::metadata(&p).unwrap().len());
        // Without --tensors only the totals.
        let summary = render(&args(p.to_path_buf(), false, false)).unwrap();
        assert!(!summary.contains("offset"));
    }

    #[test]
    fn bad_files_are_errors_naming_the_path() {
        let missing = tmp("does-not-exist.gguf");
        let e = render(&args(missing.clone(), false, false)).unwrap_err();
        assert!(
            format!("{e:#}").contains(&*missing.to_string_lossy()),
            "{e:#}"
        );

        let garbage = tmp("garbage.gguf");
        std::fs::write(&garbage, b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        let e = render(&args(garbage.clone(), false, true)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&*garbage.to_string_lossy()), "{msg}");
        assert!(
            msg.contains("truncated") || msg.contains("cannot fit"),
            "{msg}"
        );

        let not_gguf = tmp("not.gguf");
        std::fs::write(&not_gguf, b"hello world, not a model").unwrap();
        let msg = format!(
            "{:#}",
            render(&args(not_gguf.to_path_buf(), false, false)).unwrap_err()
        );
        assert!(msg.contains("bad magic"), "{msg}");
    }

    #[test]
    fn smollm2_report() {
        let p = powerinfer::paths::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.exists() {
            eprintln!("SKIPPED: {} not found", p.display());
            return;
        }
        let text = render(&args(p.clone(), false, false)).unwrap();
        eprintln!("{text}");
        for (key, value) in [
            ("architecture:", "llama"),
            ("context_length", "8192"),
            ("embedding_length", "576"),
            ("feed_forward_length", "1536"),
            ("block_count", "30"),
            ("attention.head_count", "9"),
            ("attention.head_count_kv", "3"),
            ("attention.layer_norm_rms_epsilon", "0.00001"),
            ("model", "gpt2"),
            ("pre", "smollm"),
            ("vocab size", "49152"),
            ("merges", "48900"),
            ("chat_template", "present (368 bytes)"),
        ] {
            assert!(has_line(&text, key, value), "no {key} {value}");
        }
        assert!(text.contains("tensors: 272 tensors"));
        assert!(text
            .lines()
            .any(|l| l.trim_start().starts_with("Q4_1") && l.contains("210")));
        let j: Json = serde_json::from_str(&render(&args(p, true, true)).unwrap()).unwrap();
        assert_eq!(j["tensor_count"], 272);
        assert_eq!(j["tensors"].as_array().unwrap().len(), 272);
        assert_eq!(j["hyperparameters"]["embedding_length"], 576);
        let by_type_bytes: u64 = j["by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|t| t["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(by_type_bytes, j["tensor_bytes"].as_u64().unwrap());
        assert!(j["tensor_bytes"].as_u64().unwrap() < j["file_bytes"].as_u64().unwrap());
    }

    /// Damaged copies of a valid file (deterministic byte smashes and truncations): the report
    /// is an error or a report, never a panic.
    #[test]
    fn damaged_files_never_panic() {
        let good = std::fs::read(synthetic("to-damage.gguf")).unwrap();
        let p = tmp("damaged.gguf");
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let (mut ok, mut err) = (0, 0);
        for i in 0..300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = good.clone();
            let pos = (state >> 16) as usize % b.len();
            if i % 5 == 0 {
                b.truncate(pos);
            } else {
                b[pos] = [0x00, 0xFF, 0x80, state as u8][i % 4];
            }
            std::fs::write(&p, &b).unwrap();
            for json in [false, true] {
                let r = std::panic::catch_unwind(|| render(&args(p.clone(), true, json)));
                match r.expect("inspect panicked") {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        assert!(format!("{e:#}").contains("damaged.gguf"), "{e:#}");
                        err += 1;
                    }
                }
            }
        }
        assert!(ok > 0 && err > 0, "{ok} ok, {err} errors");
    }
}
