//! The call's timeline as `tracing` spans, which the process exports as an
//! OpenTelemetry trace when `[traces]` is on (one trace per call): under
//! the call's span (its `call_id` the SIP Call-ID), one span per turn of the
//! caller (from their first word or key to their next), and under the turn
//! one per provider request (`stt`, `llm`, `tts`: `first_byte_ms` is the
//! LLM's first token or the TTS's first audio) and one per playout segment
//! (from its first frame on the wire to its last).
//!
//! The spans follow the marks the call already makes: nothing here runs per
//! frame, and with no trace exporter a span costs what an unused `tracing`
//! span costs.

use tracing::field::Empty;
use tracing::{info_span, Span};

use super::{Mark, Provider};

/// Playout segments open at once at most (a reply's sentences, a filler,
/// a phrase); past it the oldest is closed.
const MAX_PLAYING: usize = 16;

/// The call's open spans.
pub(super) struct Spans {
    call: Span,
    turn: Option<Span>,
    turns: u64,
    playing: Vec<(String, Span)>,
    /// The call's record is closed: a mark made after it (a task still
    /// winding down) opens no span (it would start a trace of its own).
    closed: bool,
}

impl Spans {
    /// Spans under `call` (the span the call runs in).
    pub(super) fn new(call: Span) -> Self {
        Self {
            call,
            turn: None,
            turns: 0,
            playing: Vec::new(),
            closed: false,
        }
    }

    /// What a new span hangs from: the turn in progress, else the call
    /// (the greeting, before the caller said or pressed anything).
    fn parent(&self) -> &Span {
        self.turn.as_ref().unwrap_or(&self.call)
    }

    pub(super) fn on_mark(&mut self, mark: &Mark) {
        if self.closed {
            return;
        }
        match mark {
            Mark::CallerSpeechStart => self.new_turn("voice"),
            Mark::Dtmf { .. } => self.new_turn("key"),
            Mark::BargeIn => {
                if let Some(turn) = &self.turn {
                    turn.record("barge_in", true);
                }
            }
            Mark::SegmentStart { label, source } => {
                if self.playing.len() >= MAX_PLAYING {
                    self.playing.remove(0);
                }
                let span = info_span!(
                    parent: self.parent(),
                    "playout",
                    segment = label.as_str(),
                    source = ?source,
                    interrupted = Empty,
                );
                self.playing.push((label.clone(), span));
            }
            Mark::SegmentEnd {
                label, interrupted, ..
            } => {
                if let Some(at) = self.playing.iter().position(|(l, _)| l == label) {
                    let (_, span) = self.playing.remove(at);
                    span.record("interrupted", *interrupted);
                }
            }
            _ => {}
        }
    }

    fn new_turn(&mut self, by: &'static str) {
        self.turns += 1;
        self.turn = Some(info_span!(
            parent: &self.call,
            "turn",
            turn = self.turns,
            by,
            barge_in = Empty,
        ));
    }

    /// A provider request's span, under the turn in progress.
    pub(super) fn request(&self, provider: Provider, id: &str) -> Span {
        if self.closed {
            return Span::none();
        }
        info_span!(
            parent: self.parent(),
            "request",
            otel.name = provider.as_str(),
            request = id,
            first_byte_ms = Empty,
            ok = Empty,
            cancelled = Empty,
            otel.status_code = Empty,
        )
    }

    /// The call is over: its spans close (the call's own closes when the
    /// call's task ends).
    pub(super) fn close(&mut self) {
        self.playing.clear();
        self.turn = None;
        self.call = Span::none();
        self.closed = true;
    }
}

/// A request span's end: whether it answered, and an error status when
/// not.
pub(super) fn request_ended(span: &Span, ok: bool) {
    span.record("ok", ok);
    if !ok {
        span.record("otel.status_code", "ERROR");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::span::{Attributes, Id};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::*;
    use crate::metrics::PhraseSource;

    /// Records each span's name and its parent's name as it opens, and
    /// the names as they close.
    #[derive(Clone, Default)]
    struct Tree(Arc<Mutex<Seen>>);

    /// (span, its parent) as they opened; names as they closed.
    type Seen = (Vec<(String, String)>, Vec<String>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Tree {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let span = ctx.span(id).unwrap();
            let parent = span.parent().map_or("-".to_string(), |p| p.name().into());
            let mut name = attrs.metadata().name().to_string();
            if name == "request" {
                // otel.name says which provider.
                struct Otel(String);
                impl tracing::field::Visit for Otel {
                    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                        if f.name() == "otel.name" {
                            self.0 = v.into();
                        }
                    }
                    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {
                    }
                }
                let mut otel = Otel(name.clone());
                attrs.record(&mut otel);
                name = otel.0;
            }
            self.0.lock().unwrap().0.push((name, parent));
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let name = ctx.span(&id).unwrap().name().to_string();
            self.0.lock().unwrap().1.push(name);
        }
    }

    #[test]
    fn turns_hang_from_the_call_and_requests_and_segments_from_the_turn() {
        let tree = Tree::default();
        let subscriber = tracing_subscriber::registry().with(tree.clone());
        tracing::subscriber::with_default(subscriber, || {
            let call = info_span!("call", call_id = "c@x");
            let mut spans = Spans::new(call.clone());
            let greet = Mark::SegmentStart {
                label: "greet".into(),
                source: PhraseSource::cache,
            };
            spans.on_mark(&greet);
            spans.on_mark(&Mark::SegmentEnd {
                label: "greet".into(),
                source: PhraseSource::cache,
                interrupted: false,
            });
            spans.on_mark(&Mark::CallerSpeechStart);
            let stt = spans.request(Provider::Stt, "turn#1");
            request_ended(&stt, true);
            drop(stt);
            let _llm = spans.request(Provider::Llm, "reply#1");
            spans.on_mark(&Mark::SegmentStart {
                label: "reply#1.0".into(),
                source: PhraseSource::generated,
            });
            spans.on_mark(&Mark::Dtmf { digit: '1' });
            // A turn lasts while what it started runs: the first still
            // plays its reply and waits on its LLM.
            assert_eq!(tree.0.lock().unwrap().1, ["playout", "request"]);
            spans.close();
            // Marks after the close open nothing.
            spans.on_mark(&Mark::CallerSpeechStart);
            assert!(spans.request(Provider::Llm, "late").is_none());
            drop(call);
        });
        let (opened, closed) = tree.0.lock().unwrap().clone();
        let opened: Vec<(&str, &str)> = opened
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(
            opened,
            [
                ("call", "-"),
                ("playout", "call"),
                ("turn", "call"),
                ("stt", "turn"),
                ("llm", "turn"),
                ("playout", "turn"),
                ("turn", "call"),
            ]
        );
        assert_eq!(closed.len(), 7, "every span closed: {closed:?}");
        assert_eq!(closed.last().map(String::as_str), Some("call"));
    }
}
