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
