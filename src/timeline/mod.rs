//! The timeline of a call: what the caller and the bot did when, which
//! provider was asked what and when it answered. Kept with the call record
//! (JSON) and drawn by `sav report` ([`report`]).
//!
//! [`CallTrace`] is the per-call handle the call task and its speech tasks
//! share: it timestamps marks against the call's start, feeds the process
//! metrics and adds up what the call used of the paid APIs.

pub mod report;
mod spans;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::metrics::{CallUsage, Metrics, PhraseSource};

/// Marks kept per call at most (a long call with a chatty caller stays
/// bounded; what comes after is counted, not kept).
pub const MAX_ENTRIES: usize = 20_000;

/// A paid API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Llm,
    Tts,
    Stt,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Llm, Provider::Tts, Provider::Stt];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Llm => "llm",
            Provider::Tts => "tts",
            Provider::Stt => "stt",
        }
    }
}

/// Something that happened in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Mark {
    /// The call is established (ACK): the bot's clock starts.
    Answered,
    CallerSpeechStart,
    CallerSpeechEnd,
    Dtmf {
        digit: char,
    },
    /// A segment's first frame left.
    SegmentStart {
        label: String,
        source: PhraseSource,
    },
    SegmentEnd {
        label: String,
        source: PhraseSource,
        interrupted: bool,
    },
    /// Generated speech was due and had no audio yet (the line is silent).
    Starved,
    /// A provider request left. `id` ties it to its answer.
    Request {
        provider: Provider,
        id: String,
    },
    FirstByte {
        provider: Provider,
        id: String,
    },
    End {
        provider: Provider,
        id: String,
        ok: bool,
    },
    /// The request was dropped before its end (the caller talked over the
    /// reply, or hung up).
    Cancelled {
        provider: Provider,
        id: String,
    },
    /// The caller talked over the bot, which stopped.
    BargeIn,
    /// A streaming recogniser's transcript so far changed.
    Partial,
    /// The caller said and pressed nothing: the bot reprompted, or
    /// (`escalated`) handed the call over.
    NoInput {
        escalated: bool,
    },
    Transfer {
        target: String,
    },
    TransferResult {
        ok: bool,
    },
    /// The call ended (`by`: caller, bot).
    Hangup {
        by: String,
    },
}

/// A mark and when it happened, in ms from the INVITE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: u64,
    #[serde(flatten)]
    pub mark: Mark,
}

/// The stored document of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CallTimeline {
    /// The SIP Call-ID.
    pub call_id: String,
    pub outcome: String,
    pub duration_ms: u64,
    pub usage: CallUsage,
    /// Estimated cost at the configured prices, in `currency`.
    pub cost: f64,
    pub currency: String,
    /// Marks not kept (past [`MAX_ENTRIES`]).
    #[serde(default)]
    pub dropped: u64,
    pub events: Vec<Entry>,
    /// The call's media as it ended (none when it never had any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaQuality>,
}

/// What a call's RTP and RTCP said when it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MediaQuality {
    /// The codec's SDP name at the end.
    pub codec: String,
    pub rtp_sent: u64,
    pub rtp_received: u64,
    /// The caller's packets lost (RFC 3550 A.3) and their jitter.
    pub rtp_lost: u64,
    pub jitter_ms: f64,
    /// Lost packets made up before the listener heard them.
    pub concealed: u64,
    /// From the caller's RTCP: the round trip, and how many of our packets
    /// it counted lost.
    #[serde(default)]
    pub round_trip_ms: Option<f64>,
    #[serde(default)]
    pub caller_reports_lost: Option<i64>,
}

struct State {
    entries: Vec<Entry>,
    /// The call's spans (its trace).
    spans: spans::Spans,
    dropped: u64,
    usage: CallUsage,
    media: Option<MediaQuality>,
}

/// Per-call observation handle; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct CallTrace {
    inner: Arc<TraceInner>,
}

struct TraceInner {
    metrics: Arc<Metrics>,
    t0: Instant,
    state: Mutex<State>,
}

impl CallTrace {
    /// A trace starting now (the INVITE); its spans hang from the span
    /// the caller runs in (the call's).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::starting_at(metrics, now())
    }

    pub fn starting_at(metrics: Arc<Metrics>, t0: Instant) -> Self {
        Self {
            inner: Arc::new(TraceInner {
                metrics,
                t0,
                state: Mutex::new(State {
                    entries: Vec::new(),
                    spans: spans::Spans::new(tracing::Span::current()),
                    dropped: 0,
                    usage: CallUsage::default(),
                    media: None,
                }),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records `mark` as happening now.
    pub fn mark(&self, mark: Mark) {
        self.mark_at(now(), mark);
    }

    /// Records `mark` as happening at `at`.
    pub fn mark_at(&self, at: Instant, mark: Mark) {
        let at_ms = at.saturating_duration_since(self.inner.t0).as_millis() as u64;
        let Ok(mut state) = self.inner.state.lock() else {
            return;
        };
        state.spans.on_mark(&mark);
        if state.entries.len() >= MAX_ENTRIES {
            state.dropped += 1;
            return;
        }
        state.entries.push(Entry { at_ms, mark });
    }

    /// Adds to the call's API usage (and to the process counters).
    pub fn used(&self, usage: CallUsage) {
        self.inner.metrics.usage(&usage);
        if let Ok(mut state) = self.inner.state.lock() {
            let total = &mut state.usage;
            total.llm_prompt_tokens += usage.llm_prompt_tokens;
            total.llm_completion_tokens += usage.llm_completion_tokens;
            total.tts_characters += usage.tts_characters;
            total.stt_seconds += usage.stt_seconds;
        }
    }

    /// A provider request starting now; it marks its end (or its
    /// cancellation, when dropped unfinished).
    pub fn request(&self, provider: Provider, id: String) -> RequestSpan {
        let asked = now();
        self.mark_at(
            asked,
            Mark::Request {
                provider,
                id: id.clone(),
            },
        );
        let span = match self.inner.state.lock() {
            Ok(state) => state.spans.request(provider, &id),
            Err(_) => tracing::Span::none(),
        };
        RequestSpan {
            trace: self.clone(),
            provider,
            span,
            id,
            asked,
            first: None,
            finished: false,
        }
    }

    /// A phrase from the cache for a call in `codec`, its lookup timed as the phrase's "first
    /// byte" from the cache (µs: the audio is in memory).
    pub fn cached<'a>(
        &self,
        cache: &'a crate::cache::PhraseCache,
        key: &str,
        codec: crate::media::codec::Codec,
    ) -> Option<&'a crate::media::playout::Clip> {
        let asked = now();
        let clip = cache.clip(key, codec)?;
        self.inner
            .metrics
            .first_byte(crate::metrics::AudioSource::cache, asked.elapsed());
        Some(clip)
    }

    pub fn elapsed(&self) -> Duration {
        self.inner.t0.elapsed()
    }

    /// The document for the call record, with the marks sorted by time
    /// (tasks may record a little out of order).
    pub fn finish(
        &self,
        call_id: &str,
        outcome: &str,
        prices: &crate::metrics::CostConfig,
    ) -> CallTimeline {
        let (mut events, dropped, usage) = match self.inner.state.lock() {
            Ok(mut state) => {
                state.spans.close();
                (state.entries.clone(), state.dropped, state.usage)
            }
            Err(_) => Default::default(),
        };
        events.sort_by_key(|e| e.at_ms);
        CallTimeline {
            call_id: call_id.to_string(),
            outcome: outcome.to_string(),
            duration_ms: self.elapsed().as_millis() as u64,
            usage,
            cost: usage.cost(prices),
            currency: prices.currency.clone(),
            dropped,
            events,
            media: self.inner.state.lock().ok().and_then(|s| s.media.clone()),
        }
    }

    /// The call's media as it ended, for its record.
    pub fn media(&self, quality: MediaQuality) {
        if let Ok(mut state) = self.inner.state.lock() {
            state.media = Some(quality);
        }
    }
}

/// One provider request in the timeline.
pub struct RequestSpan {
    trace: CallTrace,
    provider: Provider,
    /// Its span in the call's trace.
    span: tracing::Span,
    id: String,
    asked: Instant,
    first: Option<Instant>,
    finished: bool,
}

impl RequestSpan {
    pub fn asked(&self) -> Instant {
        self.asked
    }

    /// The first byte (token, audio) came at `at`; later calls are ignored.
    /// Returns the time to first byte the first time.
    pub fn first_byte_at(&mut self, at: Instant) -> Option<Duration> {
        if self.first.is_some() {
            return None;
        }
        self.first = Some(at);
        let waited = at.saturating_duration_since(self.asked);
        self.span
            .record("first_byte_ms", waited.as_secs_f64() * 1000.0);
        self.trace.mark_at(
            at,
            Mark::FirstByte {
                provider: self.provider,
                id: self.id.clone(),
            },
        );
        Some(waited)
    }

    /// The request ended; counted as a provider error when not `ok`.
    /// Returns how long it took.
    pub fn end(mut self, ok: bool) -> Duration {
        self.finished = true;
        spans::request_ended(&self.span, ok);
        if !ok {
            self.trace.metrics().provider_error(self.provider.as_str());
        }
        self.trace.mark(Mark::End {
            provider: self.provider,
            id: std::mem::take(&mut self.id),
            ok,
        });
        self.asked.elapsed()
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if !self.finished {
            self.span.record("cancelled", true);
            self.trace.mark(Mark::Cancelled {
                provider: self.provider,
                id: std::mem::take(&mut self.id),
            });
        }
    }
}

/// The runtime's clock: real time in production, the paused clock of a test
/// (so a call run in virtual time has a timeline in virtual time too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_timed_from_the_start_sorted_and_bounded() {
        let t0 = Instant::now();
        let trace = CallTrace::starting_at(Arc::new(Metrics::new()), t0);
        trace.mark_at(t0 + Duration::from_millis(300), Mark::CallerSpeechEnd);
        trace.mark_at(t0 + Duration::from_millis(100), Mark::CallerSpeechStart);
        trace.used(CallUsage {
            tts_characters: 12,
            ..Default::default()
        });
        trace.used(CallUsage {
            tts_characters: 3,
            stt_seconds: 1.5,
            ..Default::default()
        });
        let doc = trace.finish("abc", "resolved", &Default::default());
        assert_eq!(doc.events.len(), 2);
        assert_eq!(doc.events[0].at_ms, 100);
        assert_eq!(doc.events[0].mark, Mark::CallerSpeechStart);
        assert_eq!(doc.usage.tts_characters, 15);
        assert_eq!(doc.usage.stt_seconds, 1.5);
        for _ in 0..MAX_ENTRIES + 5 {
            trace.mark(Mark::BargeIn);
        }
        let doc = trace.finish("abc", "resolved", &Default::default());
        assert_eq!(doc.events.len(), MAX_ENTRIES);
        assert_eq!(doc.dropped, 7);
    }

    #[test]
    fn a_request_marks_its_first_byte_once_and_its_end_or_cancellation() {
        let t0 = Instant::now();
        let trace = CallTrace::starting_at(Arc::new(Metrics::new()), t0);
        let mut tts = trace.request(Provider::Tts, "reply#1.0".into());
        // (Times in the future would sort after the end: use the asking time.)
        let at = tts.asked();
        assert_eq!(tts.first_byte_at(at), Some(Duration::ZERO));
        assert_eq!(tts.first_byte_at(at + Duration::from_millis(5)), None);
        tts.end(true);
        drop(trace.request(Provider::Llm, "reply#2".into()));
        let stt = trace.request(Provider::Stt, "turn#1".into());
        stt.end(false);
        let marks: Vec<String> = trace
            .finish("c", "ended", &Default::default())
            .events
            .iter()
            .map(|e| {
                serde_json::to_value(&e.mark).unwrap()["event"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            marks,
            [
                "request",
                "first_byte",
                "end",
                "request",
                "cancelled",
                "request",
                "end"
            ]
        );
        assert!(trace
            .metrics()
            .render()
            .contains("sav_provider_errors_total{provider=\"stt\"} 1"));
    }

    #[test]
    fn the_document_round_trips_as_json() {
        let doc = CallTimeline {
            media: None,
            call_id: "x@y".into(),
            outcome: "resolved".into(),
            duration_ms: 1234,
            events: vec![
                Entry {
                    at_ms: 5,
                    mark: Mark::SegmentStart {
                        label: "greet".into(),
                        source: PhraseSource::cache,
                    },
                },
                Entry {
                    at_ms: 900,
                    mark: Mark::Request {
                        provider: Provider::Llm,
                        id: "reply#1".into(),
                    },
                },
            ],
            ..Default::default()
        };
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains(r#""event":"segment_start""#), "{json}");
        assert!(json.contains(r#""source":"cache""#), "{json}");
        let back: CallTimeline = serde_json::from_str(&json).unwrap();
        assert_eq!(back, doc);
    }
}
