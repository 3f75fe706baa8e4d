//! Per-phase timing of the hybrid FFN (`--profile-phases`): where each layer call spends its
//! time, and how much of the device's hot part the host's cold part hides.

use std::time::{Duration, Instant};

/// A stretch of wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
}

impl Span {
    pub fn new(start: Instant, end: Instant) -> Span {
        Span { start, end }
    }

    pub fn len(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len().is_zero()
    }

    /// Time covered by both spans.
    pub fn overlap(&self, o: &Span) -> Duration {
        self.end
            .min(o.end)
            .saturating_duration_since(self.start.max(o.start))
    }
}

/// One layer call's phases, in schedule order. `hot` is the device's own span of the hot
/// part when it was measured (the CUDA device measures it only under `--profile-phases`).
#[derive(Clone, Copy, Debug)]
pub struct LayerTimeline {
    pub predict: Span,
    pub mask: Span,
    pub hot: Option<Span>,
    pub cold: Span,
    /// The host waiting for the hot part after its cold part (only when timed: otherwise the
    /// device orders the merge after the hot part by itself).
    pub hot_wait: Span,
    pub merge: Span,
}

/// Phase totals over the layer calls of a sequence.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    /// Time every phase apart (the device waits after each, which costs a little); set by
    /// `--profile-phases`.
    pub timed: bool,
    /// Keep every call's timeline (tests).
    pub keep_timelines: bool,
    pub calls: u64,
    pub predict: Duration,
    pub mask: Duration,
    pub hot: Duration,
    pub cold: Duration,
    pub hot_wait: Duration,
    pub merge: Duration,
    /// Time during which the hot and cold parts ran at once.
    pub overlap: Duration,
    /// From the start of `predict` to the end of `merge`.
    pub total: Duration,
    pub timelines: Vec<LayerTimeline>,
}

impl PhaseStats {
    pub fn add(&mut self, t: LayerTimeline) {
        self.calls += 1;
        self.predict += t.predict.len();
        self.mask += t.mask.len();
        self.cold += t.cold.len();
        self.hot_wait += t.hot_wait.len();
        self.merge += t.merge.len();
        if let Some(h) = t.hot {
            self.hot += h.len();
            self.overlap += h.overlap(&t.cold);
        }
        self.total += Span::new(t.predict.start, t.merge.end).len();
        if self.keep_timelines {
            self.timelines.push(t);
        }
    }

    /// Forget the totals, keeping the settings.
    pub fn clear(&mut self) {
        *self = PhaseStats {
            timed: self.timed,
            keep_timelines: self.keep_timelines,
            ..PhaseStats::default()
        };
    }

    /// The breakdown as text: each phase's total, share and mean per call.
    pub fn report(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let total = ms(self.total).max(f64::MIN_POSITIVE);
        let calls = self.calls.max(1) as f64;
        let mut s = format!(
            "hybrid FFN phases over {} layer calls ({:.1} ms{}):\n",
            self.calls,
            ms(self.total),
            if self.timed {
                ""
            } else {
                "; untimed: the device's phases are not separated"
            }
        );
        for (name, d) in [
            ("predict (device)", self.predict),
            ("mask copy", self.mask),
            ("hot (device)", self.hot),
            ("cold (host)", self.cold),
            ("wait for hot", self.hot_wait),
            ("upload + merge", self.merge),
        ] {
            s += &format!(
                "  {name:<18} {:>9.2} ms {:>5.1}% {:>8.1} us/call\n",
                ms(d),
                100.0 * ms(d) / total,
                1e3 * ms(d) / calls
            );
        }
        let hidden = if self.hot.is_zero() {
            0.0
        } else {
            100.0 * self.overlap.as_secs_f64() / self.hot.as_secs_f64()
        };
        s += &format!(
            "  {:<18} {:>9.2} ms ({hidden:.0}% of the hot part ran while the host computed)\n",
            "hot/cold overlap",
            ms(self.overlap)
        );
        s
    }
}
