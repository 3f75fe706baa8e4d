//! Server counters and gauges, rendered in Prometheus' text exposition format.
//!
//! Written by the HTTP handlers and the model thread, read by `GET /metrics`; plain atomics
//! so that neither side ever waits for the other.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Finished HTTP requests by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    /// Completion requests that finished, by any reason.
    pub completions: AtomicU64,
    /// Completion requests whose client went away before the end.
    pub cancelled: AtomicU64,
    /// Sum of the times to first token, in microseconds, over `ttft_count` requests.
    pub ttft_us_sum: AtomicU64,
    pub ttft_count: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicUsize,
    /// Slots holding a sequence.
    pub active_slots: AtomicUsize,
    pub slots: AtomicUsize,
    /// Generated tokens per second over all sequences, in the last measuring window (up
    /// to a second of activity); f64 bits.
    tokens_per_second: AtomicU64,
}

impl Metrics {
    pub fn new(slots: usize) -> Self {
        let m = Metrics::default();
        m.slots.store(slots, Relaxed);
        m
    }

    /// One completion ended (its slot is free). Called before the client is sent its last
    /// event, so a client that reads `/metrics` right after its answer sees the slot free.
    pub fn finish_completion(&self) {
        self.completions.fetch_add(1, Relaxed);
        let _ = self
            .active_slots
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    pub fn record_response(&self, status: u16) {
        let mut map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(status).or_default() += 1;
    }

    pub fn set_tokens_per_second(&self, tps: f64) {
        self.tokens_per_second.store(tps.to_bits(), Relaxed);
    }

    pub fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.tokens_per_second.load(Relaxed))
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let ttft_sum = self.ttft_us_sum.load(Relaxed) as f64 / 1e6;
        metric(
            "powerinfer_prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            self.prompt_tokens.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_generated_tokens_total",
            "counter",
            "Tokens generated.",
            self.generated_tokens.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_completions_total",
            "counter",
            "Completion requests that ran to their end or were cancelled.",
            self.completions.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_cancelled_total",
            "counter",
            "Completion requests whose client disconnected before the end.",
            self.cancelled.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_tokens_per_second",
            "gauge",
            "Generated tokens per second over all sequences, last window.",
            format!("{:.3}", self.tokens_per_second()),
        );
        metric(
            "powerinfer_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            self.queue_depth.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_active_slots",
            "gauge",
            "Slots decoding a sequence.",
            self.active_slots.load(Relaxed).to_string(),
        );
        metric(
            "powerinfer_slots",
            "gauge",
            "Sequences served at once (--parallel).",
            self.slots.load(Relaxed).to_string(),
        );
        let _ = writeln!(
            s,
            "# HELP powerinfer_time_to_first_token_seconds Time from arrival to the first generated token.\n\
             # TYPE powerinfer_time_to_first_token_seconds summary\n\
             powerinfer_time_to_first_token_seconds_sum {ttft_sum:.6}\n\
             powerinfer_time_to_first_token_seconds_count {}",
            self.ttft_count.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP powerinfer_requests_total HTTP requests answered, by status code.\n\
             # TYPE powerinfer_requests_total counter"
        );
        let map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        for (code, n) in map.iter() {
            let _ = writeln!(s, "powerinfer_requests_total{{code=\"{code}\"}} {n}");
        }
        s
    }
}
