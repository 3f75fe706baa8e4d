//! `powerinfer serve` end to end, on loopback with SmolLM2: concurrency, disconnects, the
//! queue bound, errors, the real `openai` Python client and the chat page in Chromium; and the
//! sparse FFN in every slot, on a synthetic model.
#[path = "../common/mod.rs"]
mod common;
mod http;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use http::{get, post, send, Server};
use serde_json::{json, Value};

fn model() -> Option<PathBuf> {
    common::model("smollm2")
}

fn required() -> bool {
    std::env::var("POWERINFER_REQUIRE_MODELS").as_deref() == Ok("1")
}

fn chat_body(prompt: &str, max_tokens: usize, stream: bool) -> String {
    json!({
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

/// A whole streamed chat answer: its text and finish reason; checks the stream's shape.
fn stream_chat(addr: std::net::SocketAddr, body: &str) -> (String, String) {
    let mut r = post(addr, "/v1/chat/completions", body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let mut text = String::new();
    let mut finish = None;
    let mut events = Vec::new();
    while let Some(data) = r.next_event() {
        events.push(data.clone());
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{data}");
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str() {
            assert!(finish.is_none(), "text after the finish chunk");
            text.push_str(t);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "stream ends with [DONE]"
    );
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    (text, finish.expect("a chunk with finish_reason"))
}

/// The value of an unlabelled metric.
fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
}

/// Poll until `cond` holds; panics after a minute (a generous bound, not a timing check).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(60), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn concurrent_streams_equal_each_request_served_alone() {
    let Some(m) = model() else { return };
    let server = Server::start(&m, &["--parallel", "8"]);
    let addr = server.addr;
    let topics = [
        "the sea",
        "a cat",
        "winter",
        "bread",
        "a robot",
        "the moon",
        "trains",
        "music",
        "a garden",
        "chess",
        "rain",
        "a library",
    ];
    // 8 clients × 3 requests, each with its own prompt and length.
    let requests: Vec<(String, usize)> = (0..24)
        .map(|i| {
            let prompt = format!("Write one sentence about {}.", topics[i % topics.len()]);
            let prompt = if i >= topics.len() {
                format!("{prompt} Be brief.")
            } else {
                prompt
            };
            (prompt, 12 + (i * 7) % 20)
        })
        .collect();
    // Reference: each request alone, not streamed.
    let alone: Vec<(String, String)> = requests
        .iter()
        .map(|(p, n)| {
            let v = post(addr, "/v1/chat/completions", &chat_body(p, *n, false)).json();
            let c = &v["choices"][0];
            let usage = &v["usage"];
            assert_eq!(
                usage["total_tokens"].as_u64(),
                Some(
                    usage["prompt_tokens"].as_u64().unwrap()
                        + usage["completion_tokens"].as_u64().unwrap()
                )
            );
            assert!(usage["completion_tokens"].as_u64().unwrap() <= *n as u64);
            (
                c["message"]["content"].as_str().unwrap().to_string(),
                c["finish_reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let distinct: std::collections::HashSet<_> = alone.iter().map(|a| &a.0).collect();
    assert!(distinct.len() >= 12, "prompts give different answers");
    assert!(alone.iter().any(|a| a.1 == "length"));

    let served: Vec<Vec<(usize, (String, String))>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let requests = &requests;
                s.spawn(move || {
                    (0..3)
                        .map(|k| {
                            let i = client * 3 + k;
                            let (p, n) = &requests[i];
                            (i, stream_chat(addr, &chat_body(p, *n, true)))
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, got) in served.into_iter().flatten() {
        assert_eq!(got, alone[i], "request {i} ({:?})", requests[i].0);
    }
    assert_eq!(metric(addr, "powerinfer_active_slots"), 0.0);
    assert_eq!(metric(addr, "powerinfer_completions_total"), 48.0);
    assert!(metric(addr, "powerinfer_generated_tokens_total") > 48.0);
}

/// What `powerinfer run --chat` prints for an answer of at most `n` tokens sampled at
/// temperature 1.5 (unless `extra` sets --temp) with seed 7 (the server's other sampling
/// defaults are run's).
fn run_chat(model: &std::path::Path, prompt: &str, n: usize, extra: &[&str]) -> String {
    let temp: &[&str] = if extra.contains(&"--temp") {
        &[]
    } else {
        &["--temp", "1.5"]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_powerinfer"))
        .arg("run")
        .arg("-m")
        .arg(model)
        .args(temp)
        .args(["--chat", "--seed", "7", "-p", prompt])
        .args(["-n", &n.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.strip_suffix('\n')
        .expect("run ends its answer with a newline")
        .to_string()
}

/// `serve --sparse`: every slot runs the predicted-sparse FFN. Concurrent streams (so sparse
/// rows share batched steps) give exactly what `run --sparse` gives for each prompt alone,
/// same seed. The sidecar's predictors are random, so dense answers differ: a server that
/// ignored --sparse would fail. (Sampled rather than greedy: this synthetic model's argmax
/// hardly depends on its FFN, its distribution does.)
#[test]
fn sparse_slots_answer_as_run_sparse() {
    let m = common::synthetic_model_with_sidecar("serve-sparse");
    let server = Server::start(&m, &["--sparse", "--parallel", "3"]);
    let addr = server.addr;
    let prompts = [
        "Tell me about the sea.",
        "Where is the cat?",
        "Winter comes.",
    ];
    let n = 24;
    let served: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let body = json!({
                    "messages": [{"role": "user", "content": p}],
                    "temperature": 1.5,
                    "seed": 7,
                    "max_tokens": n,
                    "stream": true,
                });
                s.spawn(move || stream_chat(addr, &body.to_string()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut differs_from_dense = 0;
    for (p, (text, _finish)) in prompts.iter().zip(&served) {
        assert!(!text.is_empty(), "{p:?}: empty answer");
        assert_eq!(text, &run_chat(&m, p, n, &["--sparse"]), "{p:?}");
        if *text != run_chat(&m, p, n, &[]) {
            differs_from_dense += 1;
        }
    }
    assert!(
        differs_from_dense > 0,
        "sparse answers equal the dense ones"
    );
    assert_eq!(metric(addr, "powerinfer_completions_total"), 3.0);
}

/// `serve --speculative`: every slot drafts with the predicted-sparse model and verifies its
/// drafts alone. Sampled answers equal `run --speculative` for each prompt (same seed, same
/// draws), and greedy answers equal plain greedy `run`.
#[test]
fn speculative_slots_answer_as_run_speculative() {
    let m = common::synthetic_model_with_sidecar("serve-spec");
    let server = Server::start(&m, &["--speculative", "3", "--parallel", "2"]);
    let addr = server.addr;
    let prompts = ["Tell me about the sea.", "Where is the cat?"];
    let n = 24;
    for temperature in [1.5, 0.0] {
        let served: Vec<(String, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let body = json!({
                        "messages": [{"role": "user", "content": p}],
                        "temperature": temperature,
                        "seed": 7,
                        "max_tokens": n,
                        "stream": true,
                    });
                    s.spawn(move || stream_chat(addr, &body.to_string()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let temp = temperature.to_string();
        for (p, (text, _finish)) in prompts.iter().zip(&served) {
            assert!(!text.is_empty(), "{p:?}: empty answer");
            let spec_run = run_chat(&m, p, n, &["--speculative", "3", "--temp", &temp]);
            assert_eq!(text, &spec_run, "{p:?} at temperature {temp}");
            if temperature == 0.0 {
                assert_eq!(text, &run_chat(&m, p, n, &["--temp", "0"]), "{p:?} greedy");
            }
        }
    }
    assert_eq!(metric(addr, "powerinfer_completions_total"), 4.0);
}

#[test]
fn disconnect_frees_the_slot_and_a_full_queue_answers_503() {
    let Some(m) = model() else { return };
    let server = Server::start(&m, &["--parallel", "1", "--queue", "1"]);
    let addr = server.addr;
    // Greedy counting goes on for thousands of tokens: this request holds the only slot.
    let long = json!({"prompt": "1, 2, 3, 4, 5, 6, 7,", "temperature": 0,
                      "max_tokens": 4000, "stream": true})
    .to_string();
    let mut a = post(addr, "/v1/completions", &long);
    assert_eq!(a.status, 200);
    let first: Value = serde_json::from_str(&a.next_event().unwrap()).unwrap();
    assert_eq!(first["object"], "text_completion");

    // The second waits in the queue (its response has started, no text yet).
    let mut b = post(
        addr,
        "/v1/chat/completions",
        &chat_body("Say hello.", 8, true),
    );
    assert_eq!(b.status, 200);
    wait_for("one request queued", || {
        metric(addr, "powerinfer_queue_depth") == 1.0
    });
    // The third finds slot and queue full.
    let c = post(
        addr,
        "/v1/chat/completions",
        &chat_body("Say hello.", 8, false),
    );
    assert_eq!(c.status, 503);
    let err = c.json();
    assert_eq!(err["error"]["code"], "server_busy", "{err}");
    assert!(err["error"]["message"].is_string());

    // Leaving mid-stream frees the slot for the queued request at once, long before the
    // 4000 tokens would have ended.
    drop(a);
    let mut b_text = String::new();
    while let Some(data) = b.next_event() {
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        b_text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert!(!b_text.is_empty());
    assert_eq!(metric(addr, "powerinfer_cancelled_total"), 1.0);
    let (alone, _) = stream_chat(addr, &chat_body("Say hello.", 8, true));
    assert_eq!(b_text, alone);
    wait_for("the slot is free", || {
        metric(addr, "powerinfer_active_slots") == 0.0
    });
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let Some(m) = model() else { return };
    let server = Server::start(&m, &["--api-key", "sesame", "--ctx-size", "256"]);
    let addr = server.addr;
    let key = [("Authorization", "Bearer sesame")];
    let call = |body: &str, headers: &[(&str, &str)]| {
        let r = send(addr, "POST", "/v1/chat/completions", headers, body);
        let status = r.status;
        let v = r.json();
        (status, v)
    };
    // llama.cpp answers this one with "The capital of France is Paris." by clear margins (the
    // bare question, under SmolLM2's default system prompt, starts with a near-tie).
    let ok = chat_body(
        "What is the capital of France? Answer in one sentence.",
        8,
        false,
    );
    let long_prompt = "word ".repeat(400);
    /// What is wrong, body, headers, expected status and error code ("" for any).
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no key", ok.clone(), vec![], 401, "invalid_api_key"),
        (
            "wrong key",
            ok.clone(),
            vec![("Authorization", "Bearer nope")],
            401,
            "invalid_api_key",
        ),
        (
            "malformed JSON",
            "{\"messages\": [".into(),
            key.to_vec(),
            400,
            "",
        ),
        (
            "wrong field type",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"})
                .to_string(),
            key.to_vec(),
            400,
            "",
        ),
        (
            "messages not a list",
            json!({"messages": "hi"}).to_string(),
            key.to_vec(),
            400,
            "",
        ),
        (
            "unknown model",
            json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            key.to_vec(),
            404,
            "model_not_found",
        ),
        (
            "prompt longer than the context",
            chat_body(&long_prompt, 8, false),
            key.to_vec(),
            400,
            "context_length_exceeded",
        ),
    ];
    for (what, body, headers, status, code) in &cases {
        let (got, v) = call(body, headers);
        assert_eq!(got, *status, "{what}: {v}");
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert!(e["type"].is_string(), "{what}: {v}");
        if !code.is_empty() {
            assert_eq!(e["code"], *code, "{what}: {v}");
        }
    }
    // Open routes need no key; the API still answers with one.
    assert_eq!(get(addr, "/health").status, 200);
    let page = get(addr, "/");
    assert_eq!(page.status, 200);
    let html = page.text();
    // Self-contained: no script, style or font from another host.
    assert!(html.contains("/v1/chat/completions") && !html.contains("://"));
    let (status, v) = call(&ok, &key);
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Paris"));
    let models = send(addr, "GET", "/v1/models", &key, "").json();
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains("powerinfer_requests_total{code=\"401\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("powerinfer_requests_total{code=\"400\"} 4"),
        "{metrics}"
    );
}

/// Whether the Python tools for a check are there: `python3` that imports `modules`, and
/// the `programs`. Missing tools skip the check, or fail it under POWERINFER_REQUIRE_MODELS=1.
fn tools(modules: &str, programs: &[&str]) -> bool {
    let python = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| which(p).is_none())
        .collect();
    if python && missing.is_empty() {
        return true;
    }
    let why = format!(
        "python3 with {modules}{}{} (scripts/test.sh installs them)",
        if missing.is_empty() { "" } else { ", and " },
        missing.join(", ")
    );
    if required() {
        panic!("missing {why}");
    }
    eprintln!("SKIPPED: needs {why}");
    false
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn run_script(script: &str, env: &[(&str, String)]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/serve")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    eprint!("{stdout}");
}

#[test]
fn openai_python_client() {
    let Some(m) = model() else { return };
    if !tools("openai", &[]) {
        return;
    }
    let server = Server::start(&m, &["--api-key", "sesame"]);
    run_script(
        "openai_client.py",
        &[
            ("POWERINFER_URL", format!("http://{}", server.addr)),
            ("POWERINFER_KEY", "sesame".into()),
        ],
    );
}

#[test]
fn chat_page_streams_an_answer_in_chromium() {
    let Some(m) = model() else { return };
    if !tools("selenium", &["chromium", "chromedriver"]) {
        return;
    }
    let server = Server::start(&m, &[]);
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-chat-page.png");
    let _ = std::fs::remove_file(&shot);
    run_script(
        "chat_page.py",
        &[
            ("POWERINFER_URL", format!("http://{}", server.addr)),
            ("SCREENSHOT", shot.display().to_string()),
        ],
    );
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000));
}
