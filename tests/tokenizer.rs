//! Tokenizers against llama.cpp's ids for the registry models, plus round trips and streaming.

mod common;

use powerinfer::gguf::GgufFile;
use powerinfer::tokenizer::Tokenizer;
use serde_json::Value;

fn load(short: &str) -> Option<Tokenizer> {
    let path = common::model(short)?;
    let f = GgufFile::open(&path).expect("open gguf");
    Some(Tokenizer::from_gguf(&f).expect("build tokenizer"))
}

/// `(text, ids)` cases for one model from llama.cpp's `llama-tokenize --no-bos`.
fn golden(short: &str) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(common::data_path("tokenizer_ids.json")).unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    v["models"][short]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap();
            (
                c["text"].as_str().unwrap().to_string(),
                ids.iter().map(|i| i.as_u64().unwrap() as u32).collect(),
            )
        })
        .collect()
}

fn check_golden(short: &str) {
    let Some(tok) = load(short) else { return };
    let cases = golden(short);
    assert!(!cases.is_empty());
    for (text, want) in cases {
        let got = tok.encode(&text, false, true);
        assert_eq!(got, want, "{short}: {text:?}");
    }
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_golden("smollm2");
}

#[test]
fn qwen05_matches_llama_cpp() {
    check_golden("qwen05");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_golden("gemma3");
}

#[test]
fn decode_round_trips() {
    for short in ["smollm2", "qwen05", "gemma3"] {
        let Some(tok) = load(short) else { continue };
        let mut texts: Vec<String> = golden(short).into_iter().map(|c| c.0).collect();
        texts.push("<|im_start|>user\nHi<|im_end|>\n".to_string());
        texts.push("tabs\t\tand   spaces \u{3000}ünïcödé 中文 ١٢٣ 🤖🤖".to_string());
        for text in texts {
            let ids = tok.encode(&text, false, true);
            assert_eq!(tok.decode(&ids), text, "{short}");
        }
    }
}

#[test]
fn streaming_holds_back_partial_utf8() {
    for short in ["smollm2", "qwen05", "gemma3"] {
        let Some(tok) = load(short) else { continue };
        let text = "Emoji 🤖 and accents: café, naïve, Zürich. 中文🤖";
        let ids = tok.encode(text, false, true);
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        let mut split_somewhere = false;
        for &id in &ids {
            let part = dec.push(id);
            assert!(!part.contains('\u{FFFD}'), "{short}: U+FFFD mid-stream");
            split_somewhere |= std::str::from_utf8(&tok.token_bytes(id)).is_err();
            out.push_str(&part);
        }
        out.push_str(&dec.finish());
        assert_eq!(out, text, "{short}");
        if short != "gemma3" {
            // Byte-level BPE splits the emoji's four bytes across tokens.
            assert!(
                split_somewhere,
                "{short}: expected a token with partial UTF-8"
            );
        }
    }
}

#[test]
fn bos_only_where_metadata_asks() {
    if let Some(tok) = load("gemma3") {
        assert_eq!(tok.bos_id(), Some(2));
        let ids = tok.encode("Hello world!", true, true);
        assert_eq!(ids[0], 2);
        assert_eq!(&ids[1..], &[9259, 1902, 236888]);
        assert_eq!(tok.encode("Hello world!", false, true)[0], 9259);
    }
    if let Some(tok) = load("smollm2") {
        assert_eq!(tok.encode("Hello world!", true, true), [19556, 905, 17]);
    }
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let Some(tok) = load("smollm2") else { return };
    let start = tok.token_id("<|im_start|>").unwrap();
    let end = tok.token_id("<|im_end|>").unwrap();
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false, true);
    assert_eq!(ids.first(), Some(&start));
    assert_eq!(ids.last(), Some(&end));
    let plain = tok.encode("<|im_start|>user", false, false);
    assert!(!plain.contains(&start));
    assert_eq!(tok.decode(&plain), "<|im_start|>user");
}

#[test]
fn end_of_generation_tokens() {
    if let Some(tok) = load("smollm2") {
        assert!(tok.is_eog(tok.eos_id().unwrap()));
        assert!(tok.is_eog(tok.token_id("<|im_end|>").unwrap()));
        assert!(tok.is_eog(tok.token_id("<|endoftext|>").unwrap()));
        assert!(!tok.is_eog(tok.token_id("<|im_start|>").unwrap()));
        assert_eq!(tok.kind(), "gpt2");
    }
    if let Some(tok) = load("qwen05") {
        assert!(tok.is_eog(151645));
        assert!(tok.is_eog(151643));
        assert!(!tok.is_eog(151644));
    }
    if let Some(tok) = load("gemma3") {
        assert!(tok.is_eog(1));
        assert!(tok.is_eog(tok.token_id("<end_of_turn>").unwrap()));
        assert_eq!(tok.kind(), "llama");
        assert_eq!(tok.vocab_size(), 262144);
        assert_eq!(tok.token_bytes(236743), b" ");
        assert_eq!(tok.piece(236743), "\u{2581}");
    }
}

/// Chat prompts as in the greedy-generation golden files (ChatML, used by SmolLM2 and Qwen).
const CHAT_PROMPTS: &[&str] = &[
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a Python function that returns the square of a number.<|im_end|>\n<|im_start|>assistant\n",
];

#[test]
fn chat_prompts_tokenize_and_round_trip() {
    for short in ["smollm2", "qwen05"] {
        let Some(tok) = load(short) else { continue };
        let start = tok.token_id("<|im_start|>").unwrap();
        let end = tok.token_id("<|im_end|>").unwrap();
        for prompt in CHAT_PROMPTS {
            let ids = tok.encode(prompt, false, true);
            assert_eq!(ids[0], start);
            assert_eq!(
                ids.iter().filter(|&&i| i == start).count(),
                prompt.matches("<|im_start|>").count()
            );
            assert_eq!(
                ids.iter().filter(|&&i| i == end).count(),
                prompt.matches("<|im_end|>").count()
            );
            assert_eq!(tok.decode(&ids), *prompt);
        }
    }
}

#[test]
fn encoding_is_fast() {
    let Some(tok) = load("qwen05") else { return };
    let text = "The quick brown fox jumps over the lazy dog. 12345 fn main() {}\n".repeat(64);
    let t = std::time::Instant::now();
    let ids = tok.encode(&text, false, true);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(!ids.is_empty());
    assert!(ms < 100.0, "{} bytes took {ms:.1} ms", text.len());
}

/// Minimal GGUF (metadata only) so that tokenizer rules can be tested on tiny vocabularies.
mod synth {
    pub enum V<'a> {
        Str(&'a str),
        Bool(bool),
        U32(u32),
        Strs(Vec<String>),
        I32s(Vec<i32>),
        F32s(Vec<f32>),
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    pub fn gguf(kvs: &[(&str, V)]) -> powerinfer::gguf::GgufFile {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            string(&mut b, k);
            let arr = |b: &mut Vec<u8>, ty: u32, n: usize| {
                b.extend_from_slice(&9u32.to_le_bytes());
                b.extend_from_slice(&ty.to_le_bytes());
                b.extend_from_slice(&(n as u64).to_le_bytes());
            };
            match v {
                V::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut b, s);
                }
                V::Bool(x) => {
                    b.extend_from_slice(&7u32.to_le_bytes());
                    b.push(*x as u8);
                }
                V::U32(x) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                V::Strs(xs) => {
                    arr(&mut b, 8, xs.len());
                    xs.iter().for_each(|s| string(&mut b, s));
                }
                V::I32s(xs) => {
                    arr(&mut b, 5, xs.len());
                    xs.iter()
                        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
                V::F32s(xs) => {
                    arr(&mut b, 6, xs.len());
                    xs.iter()
                        .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
                }
            }
        }
        powerinfer::gguf::GgufFile::from_bytes(b).expect("synthetic gguf")
    }
}

use synth::V;

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, 256 byte tokens, then `normal`.
fn spm_tokenizer(normal: &[(&str, f32)], extra: Vec<(&'static str, V<'static>)>) -> Tokenizer {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in normal {
        tokens.push(t.to_string());
        types.push(1);
        scores.push(*s);
    }
    let mut kvs = vec![
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        ("tokenizer.ggml.token_type", V::I32s(types)),
        ("tokenizer.ggml.scores", V::F32s(scores)),
    ];
    kvs.extend(extra);
    Tokenizer::from_gguf(&synth::gguf(&kvs)).expect("spm tokenizer")
}

#[test]
fn spm_merges_by_score_with_space_prefix_and_byte_fallback() {
    let tok = spm_tokenizer(
        &[
            ("\u{2581}", -5.0),
            ("h", -5.0),
            ("e", -5.0),
            ("l", -5.0),
            ("o", -5.0),
            ("ll", -1.0),
            ("he", -2.0),
            ("llo", -0.5),
            ("hello", -0.1),
            ("\u{2581}hello", -0.05),
        ],
        vec![],
    );
    let id = |s: &str| tok.token_id(s).unwrap();
    // llama.cpp's SPM defaults: add_space_prefix and BOS on.
    assert_eq!(tok.encode("hello", false, true), [id("\u{2581}hello")]);
    assert_eq!(tok.encode("hello", true, true), [1, id("\u{2581}hello")]);
    // 'i' is not in the vocabulary: byte fallback to <0x69>.
    assert_eq!(
        tok.encode("hi", false, true),
        [id("\u{2581}"), id("h"), id("<0x69>")]
    );
    // A space is prefixed again after a special token.
    assert_eq!(
        tok.encode("hello</s>hello", false, true),
        [id("\u{2581}hello"), 2, id("\u{2581}hello")]
    );
    assert_eq!(tok.encode("</s>", false, false).len(), 5);
    for text in ["hello hi", "hi\u{e9}!", "hello</s>"] {
        assert_eq!(tok.decode(&tok.encode(text, false, true)), text);
        assert_eq!(
            tok.decode(&tok.encode(text, true, true)),
            format!("<s>{text}")
        );
    }
    assert_eq!(tok.token_bytes(id("<0x69>")), b"i");
    // "é" falls back to two byte tokens; streaming holds the first byte back.
    let ids = tok.encode("h\u{e9}", false, true);
    assert_eq!(ids[2..], [id("<0xC3>"), id("<0xA9>")]);
    let mut dec = tok.stream_decoder();
    let parts: Vec<String> = ids.iter().map(|&i| dec.push(i)).collect();
    assert_eq!(parts, [" ", "h", "", "\u{e9}"]);
    assert_eq!(dec.finish(), "");
    // An unfinished character at the end of the stream comes out as U+FFFD.
    assert_eq!(dec.push(id("<0xC3>")), "");
    assert_eq!(dec.finish(), "\u{fffd}");
    assert!(format!("{tok:?}").contains("llama"));
    assert!(tok.is_eog(2) && !tok.is_eog(1));
}

#[test]
fn spm_metadata_overrides_defaults() {
    let tok = spm_tokenizer(
        &[("\u{2581}", -1.0), ("a", -1.0)],
        vec![
            ("tokenizer.ggml.add_space_prefix", V::Bool(false)),
            ("tokenizer.ggml.add_bos_token", V::Bool(false)),
            ("tokenizer.ggml.add_eos_token", V::Bool(true)),
        ],
    );
    let a = tok.token_id("a").unwrap();
    assert_eq!(tok.encode("a", true, true), [a, 2]);
    assert_eq!(tok.encode("a", false, true), [a]);
}

/// A byte-level BPE vocabulary over "a", "b", "c" and space.
fn bpe_tokenizer(pre: &'static str, extra: Vec<(&'static str, V<'static>)>) -> Tokenizer {
    let tokens: Vec<String> = ["a", "b", "c", "\u{120}", "ab", "abc", "\u{120}a", "<|bos|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut kvs = vec![
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.pre", V::Str(pre)),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        (
            "tokenizer.ggml.token_type",
            V::I32s(vec![1, 1, 1, 1, 1, 1, 1, 3]),
        ),
        (
            "tokenizer.ggml.merges",
            V::Strs(vec!["a b".into(), "\u{120} a".into()]),
        ),
        ("tokenizer.ggml.bos_token_id", V::U32(7)),
    ];
    kvs.extend(extra);
    Tokenizer::from_gguf(&synth::gguf(&kvs)).expect("bpe tokenizer")
}

#[test]
fn bpe_pre_type_decides_ignore_merges_and_bos() {
    let gpt2 = bpe_tokenizer("gpt2", vec![]);
    // Merges only: "abc" -> "ab" + "c"; in " ab" the rank-0 merge "a b" wins over "Ġ a".
    assert_eq!(gpt2.encode("abc", true, true), [4, 2]);
    assert_eq!(gpt2.encode(" ab", false, true), [3, 4]);
    assert_eq!(gpt2.encode(" ac", false, true), [6, 2]);
    assert_eq!(gpt2.decode(&[6, 2]), " ac");
    // llama3-style: a whole word that is a token is used as is, and BOS is on by default.
    let llama3 = bpe_tokenizer("llama-bpe", vec![]);
    assert_eq!(llama3.encode("abc", true, true), [7, 5]);
    let no_bos = bpe_tokenizer(
        "llama-bpe",
        vec![("tokenizer.ggml.add_bos_token", V::Bool(false))],
    );
    assert_eq!(no_bos.encode("abc<|bos|>", true, true), [5, 7]);
    // As plain text, "<|bos|>" has no spelling in this vocabulary except the "b" of "bos";
    // bytes without a token are dropped, as in llama.cpp.
    assert_eq!(no_bos.encode("abc<|bos|>", true, false), [5, 1]);
}

#[test]
fn malformed_metadata_is_an_error() {
    let missing = synth::gguf(&[("tokenizer.ggml.model", V::Str("gpt2"))]);
    assert!(Tokenizer::from_gguf(&missing).is_err());
    let odd = synth::gguf(&[
        ("tokenizer.ggml.model", V::Str("wordpiece?")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a".into()])),
    ]);
    assert!(Tokenizer::from_gguf(&odd).is_err());
    let no_merges = synth::gguf(&[
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.tokens", V::Strs(vec!["a".into()])),
    ]);
    assert!(Tokenizer::from_gguf(&no_merges).is_err());
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}
