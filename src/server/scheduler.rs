//! The slot scheduler: one model thread serves up to N sequences at once, each in its own
//! slot with its own KV cache, and decodes them together (continuous batching).
//!
//! Requests wait in a bounded queue for a free slot. Every loop of the model thread takes in
//! new requests, gives free slots to waiting ones, evaluates one prompt chunk for each slot
//! still in its prompt, samples one token for every other slot, and runs the sampled tokens
//! of all slots through one batched forward pass ([`Model::forward_multi`]). Tokens reach
//! the HTTP side through a channel per request; a request whose receiver is gone (its client
//! disconnected) gives up its slot on the next loop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{ApiError, Metrics};
use crate::backend::Backend;
use crate::generate::speculative::{Drafter, Round};
use crate::generate::{Decoding, Engine, FinishReason, Sampler, SamplerConfig, Step};
use crate::model::{Model, State};
use crate::sparse::FfnMode;

/// Prompt tokens evaluated per loop for one slot: long prompts are split so that the other
/// slots keep decoding while one prompt is read. Fixed, so that a request is evaluated the
/// same way whatever runs beside it.
pub const PREFILL_CHUNK: usize = 128;

/// Period over which the tokens-per-second gauge is measured.
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Sequences decoded at once (slots).
    pub parallel: usize,
    /// Requests that may wait for a slot; beyond that, requests are refused.
    pub queue: usize,
    /// Context (KV cache positions) of each slot.
    pub n_ctx: usize,
    /// How every slot evaluates its FFNs; the sparse modes need the model's sidecar.
    pub ffn_mode: FfnMode,
    /// Speculative decoding: every slot drafts up to this many tokens with the model in
    /// `draft_mode` and verifies them in one pass of its own (slots then no longer share
    /// batched steps).
    pub speculative: Option<usize>,
    pub draft_mode: FfnMode,
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampler: SamplerConfig,
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

/// What the model thread tells a request's handler.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Text that became final.
    Text(String),
    /// The end; `completion_tokens` counts sampled tokens, an end-of-generation token included.
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed(String),
}

/// Counts a request as in the system (queued or in a slot) until it is dropped.
struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct Queued {
    job: Job,
    events: UnboundedSender<Event>,
    arrived: Instant,
    _ticket: Ticket,
}

/// Handle of the model thread; submitting is cheap and never blocks.
pub struct Scheduler {
    jobs: Option<Sender<Queued>>,
    thread: Option<JoinHandle<()>>,
    load: Arc<AtomicUsize>,
    limit: usize,
    n_ctx: usize,
}

impl Scheduler {
    /// Start the model thread.
    pub fn start<B: Backend + 'static>(
        engine: Arc<Engine<B>>,
        cfg: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Scheduler> {
        let parallel = cfg.parallel.max(1);
        let states: Vec<State<B>> = (0..parallel)
            .map(|_| {
                let mut st = engine.model.new_state(cfg.n_ctx);
                st.ffn_mode = cfg.ffn_mode.clone();
                st
            })
            .collect();
        let n_ctx = states[0].n_ctx;
        metrics.slots.store(parallel, Relaxed);
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("powerinfer-model".into())
            .spawn(move || {
                let drafters = match cfg.speculative {
                    None => Vec::new(),
                    Some(k) => (0..parallel)
                        .map(|_| Drafter::new(&engine.model, cfg.draft_mode.clone(), n_ctx, k))
                        .collect::<Result<_, _>>()
                        // server::serve has checked the mode against the model.
                        .expect("draft mode checked at start"),
                };
                ModelLoop::new(&engine, states, drafters, metrics).run(rx)
            })?;
        Ok(Scheduler {
            jobs: Some(tx),
            thread: Some(thread),
            load: Arc::new(AtomicUsize::new(0)),
            limit: parallel + cfg.queue,
            n_ctx,
        })
    }

    /// Context of each slot, in tokens.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Queue a request. Fails with `ContextLength` when the prompt leaves no room for a
    /// generated token, and with `Busy` when every slot and queue place is taken.
    pub fn submit(&self, job: Job) -> Result<UnboundedReceiver<Event>, ApiError> {
        if job.prompt.is_empty() {
            return Err(ApiError::BadRequest("the prompt is empty".into()));
        }
        if job.prompt.len() >= self.n_ctx {
            return Err(ApiError::ContextLength {
                tokens: job.prompt.len(),
                n_ctx: self.n_ctx,
            });
        }
        self.load
            .fetch_update(Relaxed, Relaxed, |n| (n < self.limit).then_some(n + 1))
            .map_err(|_| ApiError::Busy(self.limit))?;
        let ticket = Ticket(self.load.clone());
        let (events, rx) = unbounded_channel();
        let queued = Queued {
            job,
            events,
            arrived: Instant::now(),
            _ticket: ticket,
        };
        let jobs = self.jobs.as_ref().expect("scheduler running");
        jobs.send(queued)
            .map_err(|_| ApiError::Internal("the model thread has stopped".into()))?;
        Ok(rx)
    }
}

impl Drop for Scheduler {
    /// Close the queue and wait for the sequences in flight to end.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A sequence in a slot.
struct Seq<'t> {
    q: Queued,
    /// Prompt tokens evaluated so far.
    prefilled: usize,
    decoding: Decoding<'t>,
    sampler: Sampler,
    /// Every token in the slot's cache.
    history: Vec<u32>,
    first_token: bool,
    /// Speculative decoding: the token the last round decided, next to evaluate.
    pending: Option<u32>,
}

/// The model thread's state.
struct ModelLoop<'e, B: Backend> {
    engine: &'e Engine<B>,
    states: Vec<State<B>>,
    /// One per slot with speculative decoding; empty without.
    drafters: Vec<Drafter<'e, B>>,
    seqs: Vec<Option<Seq<'e>>>,
    queue: VecDeque<Queued>,
    metrics: Arc<Metrics>,
    window_start: Instant,
    window_tokens: usize,
}

impl<'e, B: Backend> ModelLoop<'e, B> {
    fn new(
        engine: &'e Engine<B>,
        states: Vec<State<B>>,
        drafters: Vec<Drafter<'e, B>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ModelLoop {
            engine,
            drafters,
            seqs: states.iter().map(|_| None).collect(),
            states,
            queue: VecDeque::new(),
            metrics,
            window_start: Instant::now(),
            window_tokens: 0,
        }
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.seqs.iter().all(Option::is_none)
    }

    fn run(mut self, rx: Receiver<Queued>) {
        let model: &Model<B> = &self.engine.model;
        let mut batch = model.new_decode_batch();
        loop {
            if self.idle() {
                // The gauge keeps the rate of the last activity, however short it was.
                if self.window_tokens > 0 {
                    let secs = self.window_start.elapsed().as_secs_f64();
                    self.metrics
                        .set_tokens_per_second(self.window_tokens as f64 / secs.max(1e-6));
                }
                match rx.recv() {
                    Ok(q) => self.queue.push_back(q),
                    Err(_) => return,
                }
                self.window_start = Instant::now();
                self.window_tokens = 0;
            }
            loop {
                match rx.try_recv() {
                    Ok(q) => self.queue.push_back(q),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if self.idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.drop_abandoned();
            self.admit();
            self.prefill();
            let steps = self.sample();
            self.decode(&mut batch, steps);
            self.update_rate();
        }
    }

    /// Forget queued requests and sequences whose client has gone.
    fn drop_abandoned(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|q| !q.events.is_closed());
        let mut gone = before - self.queue.len();
        for seq in self.seqs.iter_mut() {
            if seq.as_ref().is_some_and(|s| s.q.events.is_closed()) {
                *seq = None;
                gone += 1;
            }
        }
        self.metrics.cancelled.fetch_add(gone as u64, Relaxed);
        self.metrics.completions.fetch_add(gone as u64, Relaxed);
    }

    /// Give free slots to waiting requests, oldest first.
    fn admit(&mut self) {
        let tokenizer = &self.engine.tokenizer;
        for (slot, seq) in self.seqs.iter_mut().enumerate() {
            if seq.is_some() {
                continue;
            }
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            let state = &mut self.states[slot];
            state.reset();
            if let Some(d) = self.drafters.get_mut(slot) {
                d.reset();
            }
            let decoding =
                Decoding::new(tokenizer, q.job.stop.clone(), q.job.max_tokens, state.n_ctx);
            *seq = Some(Seq {
                sampler: Sampler::new(q.job.sampler.clone()),
                history: Vec::with_capacity(q.job.prompt.len() + 64),
                prefilled: 0,
                decoding,
                first_token: true,
                pending: None,
                q,
            });
        }
        let active = self.seqs.iter().filter(|s| s.is_some()).count();
        self.metrics.queue_depth.store(self.queue.len(), Relaxed);
        self.metrics.active_slots.store(active, Relaxed);
    }

    /// One prompt chunk for every slot that is still reading its prompt.
    fn prefill(&mut self) {
        let model = &self.engine.model;
        for (slot, entry) in self.seqs.iter_mut().enumerate() {
            let Some(seq) = entry else { continue };
            let prompt = &seq.q.job.prompt;
            if seq.prefilled == prompt.len() {
                continue;
            }
            let end = (seq.prefilled + PREFILL_CHUNK).min(prompt.len());
            let chunk = &prompt[seq.prefilled..end];
            match model.forward(&mut self.states[slot], chunk, false) {
                Ok(_) => {
                    seq.history.extend_from_slice(chunk);
                    seq.prefilled = end;
                    self.metrics
                        .prompt_tokens
                        .fetch_add(chunk.len() as u64, Relaxed);
                }
                Err(e) => {
                    self.metrics.finish_completion();
                    let _ = seq.q.events.send(Event::Failed(e.to_string()));
                    *entry = None;
                }
            }
        }
    }

    /// Sample the next token of every slot whose logits are ready; returns the slots that go
    /// on, with their token.
    fn sample(&mut self) -> Vec<(usize, u32)> {
        let mut steps = Vec::new();
        for (slot, entry) in self.seqs.iter_mut().enumerate() {
            let Some(seq) = entry else { continue };
            if seq.prefilled < seq.q.job.prompt.len() {
                continue;
            }
            if let Some(token) = seq.pending.take() {
                steps.push((slot, token));
                continue;
            }
            let logits = &self.states[slot].logits;
            let before = seq.decoding.generated();
            let step = seq.decoding.step(&mut seq.sampler, logits, &seq.history);
            let sampled = seq.decoding.generated() - before;
            self.metrics
                .generated_tokens
                .fetch_add(sampled as u64, Relaxed);
            self.window_tokens += sampled;
            if seq.first_token {
                seq.first_token = false;
                let us = seq.q.arrived.elapsed().as_micros() as u64;
                self.metrics.ttft_us_sum.fetch_add(us, Relaxed);
                self.metrics.ttft_count.fetch_add(1, Relaxed);
            }
            match step {
                Step::Next { token, text } => {
                    if !text.is_empty() && seq.q.events.send(Event::Text(text)).is_err() {
                        // The client left; the slot is freed on the next loop.
                        continue;
                    }
                    steps.push((slot, token));
                }
                Step::Done { finish, text } => {
                    if !text.is_empty() {
                        let _ = seq.q.events.send(Event::Text(text));
                    }
                    self.metrics.finish_completion();
                    let _ = seq.q.events.send(Event::Done {
                        finish,
                        prompt_tokens: seq.q.job.prompt.len(),
                        completion_tokens: seq.decoding.generated(),
                    });
                    *entry = None;
                }
            }
        }
        steps
    }

    /// One batched forward pass over the sampled tokens.
    fn decode(&mut self, batch: &mut crate::model::DecodeBatch<B>, steps: Vec<(usize, u32)>) {
        if steps.is_empty() {
            return;
        }
        if !self.drafters.is_empty() {
            return self.speculate(steps);
        }
        let tokens: Vec<u32> = steps.iter().map(|&(_, t)| t).collect();
        let mut states: Vec<&mut State<B>> = self
            .states
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| steps.iter().any(|&(s, _)| s == *i))
            .map(|(_, st)| st)
            .collect();
        // `steps` is in slot order, as is `states`.
        let result = self.engine.model.forward_multi(batch, &mut states, &tokens);
        for &(slot, token) in &steps {
            let entry = &mut self.seqs[slot];
            let Some(seq) = entry else { continue };
            match &result {
                Ok(()) => seq.history.push(token),
                Err(e) => {
                    self.metrics.finish_completion();
                    let _ = seq.q.events.send(Event::Failed(e.to_string()));
                    *entry = None;
                }
            }
        }
    }

    /// A draft-and-verify round for each sampled token, slot by slot.
    fn speculate(&mut self, steps: Vec<(usize, u32)>) {
        let model = &self.engine.model;
        for (slot, token) in steps {
            let entry = &mut self.seqs[slot];
            let Some(seq) = entry else { continue };
            let events = &seq.q.events;
            let mut on_text = |t: &str| events.send(Event::Text(t.to_string())).is_ok();
            let before = seq.decoding.generated();
            let round = self.drafters[slot].round(
                model,
                &mut self.states[slot],
                &mut seq.history,
                token,
                &mut seq.decoding,
                &mut seq.sampler,
                &mut on_text,
            );
            let sampled = seq.decoding.generated() - before;
            self.metrics
                .generated_tokens
                .fetch_add(sampled as u64, Relaxed);
            self.window_tokens += sampled;
            match round {
                Ok(Round::Next(t)) => seq.pending = Some(t),
                // The client left; the slot is freed on the next loop.
                Ok(Round::Done(FinishReason::Cancelled)) => {}
                Ok(Round::Done(finish)) => {
                    self.metrics.finish_completion();
                    let _ = seq.q.events.send(Event::Done {
                        finish,
                        prompt_tokens: seq.q.job.prompt.len(),
                        completion_tokens: seq.decoding.generated(),
                    });
                    *entry = None;
                }
                Err(e) => {
                    self.metrics.finish_completion();
                    let _ = seq.q.events.send(Event::Failed(e.to_string()));
                    *entry = None;
                }
            }
        }
    }

    fn update_rate(&mut self) {
        let elapsed = self.window_start.elapsed();
        if elapsed >= RATE_WINDOW {
            self.metrics
                .set_tokens_per_second(self.window_tokens as f64 / elapsed.as_secs_f64());
            self.window_start = Instant::now();
            self.window_tokens = 0;
        }
        let active = self.seqs.iter().filter(|s| s.is_some()).count();
        self.metrics.active_slots.store(active, Relaxed);
    }
}
