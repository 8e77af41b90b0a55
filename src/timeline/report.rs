//! A call's timeline drawn as an SVG a person reads at a glance: one lane for
//! the caller (speech, keys), one for the bot (each segment coloured by its
//! source: cached phrase, filler, generated speech), one per provider
//! (request to end, first byte marked, latency written on it), and the bot's
//! dead air (silence on its turn) in red with its length.
//!
//! Pure: timeline in, SVG text out. Elements carry classes and `data-`
//! attributes so that tests (and scripts) can read the picture back.

use std::fmt::Write as _;

use super::{CallTimeline, Mark, Provider};
use crate::metrics::PhraseSource;

/// Silence on the bot's turn at least this long is marked as dead air.
pub const DEAD_AIR_MS: u64 = 250;

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 56.0;
const LANE: f64 = 46.0;
const BAR: f64 = 22.0;

/// An interval on a lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start_ms: u64,
    pub end_ms: u64,
    pub label: String,
}

/// What the picture shows, computed from the timeline.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Layout {
    pub caller_speech: Vec<Span>,
    pub dtmf: Vec<(u64, char)>,
    pub bot: Vec<(Span, PhraseSource, bool)>,
    /// Requests per provider: span, first byte (ms), ok.
    pub requests: Vec<(Provider, Span, Option<u64>, bool)>,
    pub dead_air: Vec<Span>,
    /// Caller's end of turn → the bot's next audio.
    pub responses: Vec<Span>,
    pub barge_ins: Vec<u64>,
    pub transfers: Vec<(u64, String)>,
    pub end_ms: u64,
}

impl Layout {
    pub fn of(timeline: &CallTimeline) -> Self {
        let mut layout = Layout {
            end_ms: timeline.duration_ms,
            ..Default::default()
        };
        let mut speech_start: Option<u64> = None;
        let mut open_segments: Vec<(String, PhraseSource, u64)> = Vec::new();
        let mut open_requests: Vec<OpenRequest> = Vec::new();
        for entry in &timeline.events {
            let at = entry.at_ms;
            layout.end_ms = layout.end_ms.max(at);
            match &entry.mark {
                Mark::CallerSpeechStart => {
                    speech_start.get_or_insert(at);
                }
                Mark::CallerSpeechEnd => {
                    if let Some(start) = speech_start.take() {
                        layout.caller_speech.push(Span {
                            start_ms: start,
                            end_ms: at,
                            label: String::new(),
                        });
                    }
                }
                Mark::Dtmf { digit } => layout.dtmf.push((at, *digit)),
                Mark::SegmentStart { label, source } => {
                    open_segments.push((label.clone(), *source, at));
                }
                Mark::SegmentEnd {
                    label, interrupted, ..
                } => {
                    if let Some(i) = open_segments.iter().position(|(l, _, _)| l == label) {
                        let (label, source, start) = open_segments.remove(i);
                        layout.bot.push((
                            Span {
                                start_ms: start,
                                end_ms: at,
                                label,
                            },
                            source,
                            *interrupted,
                        ));
                    }
                }
                Mark::Request { provider, id } => {
                    open_requests.push((*provider, id.clone(), at, None));
                }
                Mark::FirstByte { provider, id } => {
                    if let Some(r) = open_requests
                        .iter_mut()
                        .find(|(p, i, _, first)| p == provider && i == id && first.is_none())
                    {
                        r.3 = Some(at);
                    }
                }
                Mark::End { provider, id, ok } => {
                    close_request(&mut open_requests, &mut layout, *provider, id, at, *ok, "");
                }
                Mark::Cancelled { provider, id } => {
                    close_request(
                        &mut open_requests,
                        &mut layout,
                        *provider,
                        id,
                        at,
                        true,
                        " (cancelled)",
                    );
                }
                Mark::BargeIn => layout.barge_ins.push(at),
                Mark::Transfer { target } => layout.transfers.push((at, target.clone())),
                Mark::Answered
                | Mark::NoInput { .. }
                | Mark::Partial
                | Mark::Starved
                | Mark::TransferResult { .. }
                | Mark::Hangup { .. } => {}
            }
        }
        let end = layout.end_ms;
        if let Some(start) = speech_start {
            layout.caller_speech.push(Span {
                start_ms: start,
                end_ms: end,
                label: String::new(),
            });
        }
        for (label, source, start) in open_segments {
            layout.bot.push((
                Span {
                    start_ms: start,
                    end_ms: end,
                    label,
                },
                source,
                true,
            ));
        }
        for (provider, id, start, first) in open_requests {
            layout.requests.push((
                provider,
                Span {
                    start_ms: start,
                    end_ms: end,
                    label: id,
                },
                first,
                false,
            ));
        }
        layout.bot.sort_by_key(|(s, _, _)| s.start_ms);
        layout.find_dead_air(timeline);
        layout
    }

    /// The bot's turns start when the caller stops talking (or keys) and at
    /// the answer; each lasts until the caller talks again. Within a turn,
    /// silence before the bot's last audio of that turn is dead air (the
    /// silence after it is the caller's to fill).
    fn find_dead_air(&mut self, timeline: &CallTimeline) {
        // (when, the caller's turn ended there: a response is measured)
        let mut turn_starts: Vec<(u64, bool)> = timeline
            .events
            .iter()
            // The answer, and a reprompt after the caller's silence (that
            // silence was the caller's to fill, not dead air).
            .filter(|e| matches!(e.mark, Mark::Answered | Mark::NoInput { .. }))
            .map(|e| (e.at_ms, false))
            .collect();
        turn_starts.extend(self.caller_speech.iter().map(|s| (s.end_ms, true)));
        turn_starts.extend(self.dtmf.iter().map(|(at, _)| (*at, true)));
        turn_starts.sort_unstable();
        turn_starts.dedup_by_key(|(at, _)| *at);
        for (i, &(start, caller_turn)) in turn_starts.iter().enumerate() {
            let next_turn = turn_starts.get(i + 1).map_or(u64::MAX, |(at, _)| *at);
            let caller_again = self
                .caller_speech
                .iter()
                .map(|s| s.start_ms)
                .find(|&s| s > start)
                .unwrap_or(u64::MAX);
            let turn_end = next_turn.min(caller_again).min(self.end_ms);
            let mut cursor = start;
            for (span, _, _) in &self.bot {
                if span.end_ms <= cursor || span.start_ms >= turn_end {
                    continue;
                }
                if span.start_ms > cursor && span.start_ms - cursor >= DEAD_AIR_MS {
                    self.dead_air.push(Span {
                        start_ms: cursor,
                        end_ms: span.start_ms,
                        label: format!("{} ms", span.start_ms - cursor),
                    });
                }
                if cursor == start && span.start_ms >= start && caller_turn {
                    self.responses.push(Span {
                        start_ms: start,
                        end_ms: span.start_ms,
                        label: format!("{} ms", span.start_ms - start),
                    });
                }
                cursor = cursor.max(span.end_ms);
            }
        }
    }
}

/// A provider request still open: provider, id, start, first byte.
type OpenRequest = (Provider, String, u64, Option<u64>);

/// Ends the open request `id` of `provider` at `at` into the layout.
fn close_request(
    open: &mut Vec<OpenRequest>,
    layout: &mut Layout,
    provider: Provider,
    id: &str,
    at: u64,
    ok: bool,
    suffix: &str,
) {
    if let Some(i) = open
        .iter()
        .position(|(p, r, _, _)| *p == provider && r == id)
    {
        let (provider, id, start, first) = open.remove(i);
        layout.requests.push((
            provider,
            Span {
                start_ms: start,
                end_ms: at,
                label: format!("{id}{suffix}"),
            },
            first,
            ok,
        ));
    }
}

fn source_name(source: PhraseSource) -> &'static str {
    match source {
        PhraseSource::cache => "cache",
        PhraseSource::filler => "filler",
        PhraseSource::generated => "generated",
    }
}

fn colour(source: PhraseSource) -> &'static str {
    match source {
        PhraseSource::cache => "#2e7d32",
        PhraseSource::filler => "#f9a825",
        PhraseSource::generated => "#1565c0",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the timeline.
pub fn svg(timeline: &CallTimeline) -> String {
    let layout = Layout::of(timeline);
    let lanes: [(&str, &str); 5] = [
        ("caller", "Caller"),
        ("bot", "Bot"),
        ("llm", "LLM"),
        ("tts", "TTS"),
        ("stt", "STT"),
    ];
    let height = TOP + LANE * lanes.len() as f64 + 70.0;
    let span_ms = layout.end_ms.max(1) as f64;
    let x = |ms: u64| LEFT + (ms as f64 / span_ms) * (WIDTH - LEFT - RIGHT);
    let lane_y = |i: usize| TOP + LANE * i as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="20" font-size="14" font-weight="bold">Call {} · {} · {:.1} s · cost {:.4} {}</text>"##,
        escape(&timeline.call_id),
        escape(&timeline.outcome),
        layout.end_ms as f64 / 1000.0,
        timeline.cost,
        escape(&timeline.currency)
    );
    // Time axis: a tick per second (per 5 or 10 s on long calls).
    let step = match layout.end_ms {
        0..=20_000 => 1000,
        20_001..=120_000 => 5000,
        _ => 10_000,
    };
    let axis_y = lane_y(lanes.len()) + 8.0;
    let _ = writeln!(out, r#"<g class="axis">"#);
    let mut t = 0;
    while t <= layout.end_ms {
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{axis_y}" stroke="#e0e0e0"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle" fill="#666">{2} s</text>"##,
            x(t),
            axis_y + 14.0,
            t / 1000
        );
        t += step;
    }
    let _ = writeln!(out, "</g>");
    for (i, (key, name)) in lanes.iter().enumerate() {
        let y = lane_y(i);
        let _ = writeln!(
            out,
            r##"<g class="lane" data-lane="{key}"><text x="8" y="{:.1}" font-weight="bold">{name}</text><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bdbdbd"/>"##,
            y + LANE / 2.0 + 4.0,
            y + LANE - 2.0,
            WIDTH - RIGHT,
            y + LANE - 2.0
        );
        let bar_y = y + (LANE - BAR) / 2.0;
        match *key {
            "caller" => {
                for s in &layout.caller_speech {
                    let _ = writeln!(
                        out,
                        r##"<rect class="speech" x="{:.1}" y="{bar_y:.1}" width="{:.1}" height="{BAR}" fill="#78909c"><title>caller speaks {}–{} ms</title></rect>"##,
                        x(s.start_ms),
                        (x(s.end_ms) - x(s.start_ms)).max(1.0),
                        s.start_ms,
                        s.end_ms
                    );
                }
                for (at, digit) in &layout.dtmf {
                    let _ = writeln!(
                        out,
                        r##"<g class="dtmf" data-digit="{digit}"><circle cx="{0:.1}" cy="{1:.1}" r="8" fill="#6a1b9a"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#fff" font-weight="bold">{digit}</text></g>"##,
                        x(*at),
                        y + LANE / 2.0,
                        y + LANE / 2.0 + 4.0
                    );
                }
            }
            "bot" => {
                for dead in &layout.dead_air {
                    let _ = writeln!(
                        out,
                        r##"<rect class="dead-air" data-ms="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#e53935" fill-opacity="0.35" stroke="#c62828"/><text class="dead-air-label" x="{:.1}" y="{:.1}" text-anchor="middle" fill="#b71c1c" font-weight="bold">{}</text>"##,
                        dead.end_ms - dead.start_ms,
                        x(dead.start_ms),
                        y + 2.0,
                        (x(dead.end_ms) - x(dead.start_ms)).max(1.0),
                        LANE - 4.0,
                        (x(dead.start_ms) + x(dead.end_ms)) / 2.0,
                        y - 2.0,
                        escape(&dead.label)
                    );
                }
                for (s, source, interrupted) in &layout.bot {
                    let _ = writeln!(
                        out,
                        r##"<rect class="segment" data-source="{}" data-label="{}" x="{:.1}" y="{bar_y:.1}" width="{:.1}" height="{BAR}" fill="{}"{}><title>{} ({}) {}–{} ms{}</title></rect>"##,
                        source_name(*source),
                        escape(&s.label),
                        x(s.start_ms),
                        (x(s.end_ms) - x(s.start_ms)).max(1.0),
                        colour(*source),
                        if *interrupted {
                            r##" stroke="#000" stroke-dasharray="3,2""##
                        } else {
                            ""
                        },
                        escape(&s.label),
                        source_name(*source),
                        s.start_ms,
                        s.end_ms,
                        if *interrupted { ", cut" } else { "" }
                    );
                    // The phrase's name on its bar, when it fits.
                    if x(s.end_ms) - x(s.start_ms) > 7.0 * s.label.len() as f64 + 6.0 {
                        let _ = writeln!(
                            out,
                            r##"<text class="segment-label" x="{:.1}" y="{:.1}" fill="#fff">{}</text>"##,
                            x(s.start_ms) + 3.0,
                            bar_y + BAR / 2.0 + 4.0,
                            escape(&s.label)
                        );
                    }
                }
                for r in &layout.responses {
                    let _ = writeln!(
                        out,
                        r##"<text class="latency" data-kind="response" x="{:.1}" y="{:.1}" fill="#37474f">↳ {}</text>"##,
                        x(r.start_ms) + 2.0,
                        y + LANE + 0.0 - 1.0,
                        escape(&r.label)
                    );
                }
                for at in &layout.barge_ins {
                    let _ = writeln!(
                        out,
                        r##"<g class="barge-in"><line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#000" stroke-width="2"/><text x="{0:.1}" y="{1:.1}" text-anchor="middle">barge-in</text></g>"##,
                        x(*at),
                        lane_y(0) + 8.0,
                        y + LANE - 2.0
                    );
                }
                for (at, target) in &layout.transfers {
                    let _ = writeln!(
                        out,
                        r##"<text class="transfer" x="{:.1}" y="{:.1}" fill="#4e342e">⇒ {}</text>"##,
                        x(*at),
                        y + 10.0,
                        escape(target)
                    );
                }
            }
            lane => {
                for (provider, s, first, ok) in &layout.requests {
                    if provider.as_str() != lane {
                        continue;
                    }
                    let fill = if *ok { "#90a4ae" } else { "#ef9a9a" };
                    let _ = writeln!(
                        out,
                        r##"<rect class="request" data-provider="{lane}" data-ok="{ok}" x="{:.1}" y="{bar_y:.1}" width="{:.1}" height="{BAR}" fill="{fill}"><title>{} {}–{} ms</title></rect>"##,
                        x(s.start_ms),
                        (x(s.end_ms) - x(s.start_ms)).max(1.0),
                        escape(&s.label),
                        s.start_ms,
                        s.end_ms
                    );
                    let text = match first {
                        Some(first) => {
                            let _ = writeln!(
                                out,
                                r##"<line class="first-byte" x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#000" stroke-width="2"/>"##,
                                x(*first),
                                bar_y - 3.0,
                                bar_y + BAR + 3.0
                            );
                            let name = if lane == "llm" { "ttft" } else { "ttfb" };
                            format!("{name} {} ms", first - s.start_ms)
                        }
                        None => format!("{} ms", s.end_ms - s.start_ms),
                    };
                    let _ = writeln!(
                        out,
                        r##"<text class="latency" data-kind="{lane}" x="{:.1}" y="{:.1}">{}</text>"##,
                        x(s.start_ms) + 2.0,
                        bar_y - 3.0,
                        escape(&text)
                    );
                }
            }
        }
        let _ = writeln!(out, "</g>");
    }
    // Legend.
    let legend_y = height - 22.0;
    let mut lx = LEFT;
    let _ = writeln!(out, r#"<g class="legend">"#);
    for (name, fill) in [
        ("cached phrase", colour(PhraseSource::cache)),
        ("filler", colour(PhraseSource::filler)),
        ("generated", colour(PhraseSource::generated)),
        ("caller speech", "#78909c"),
        ("provider request", "#90a4ae"),
        ("dead air", "#e53935"),
    ] {
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{fill}"/><text x="{:.1}" y="{legend_y:.1}">{name}</text>"#,
            legend_y - 9.0,
            lx + 18.0
        );
        lx += 40.0 + name.len() as f64 * 6.5;
    }
    let _ = writeln!(out, "</g>\n</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Entry;

    fn entry(at_ms: u64, mark: Mark) -> Entry {
        Entry { at_ms, mark }
    }

    fn seg(at: u64, label: &str, source: PhraseSource, end: bool) -> Entry {
        entry(
            at,
            if end {
                Mark::SegmentEnd {
                    label: label.into(),
                    source,
                    interrupted: false,
                }
            } else {
                Mark::SegmentStart {
                    label: label.into(),
                    source,
                }
            },
        )
    }

    fn sample() -> CallTimeline {
        use PhraseSource::*;
        CallTimeline {
            media: None,
            call_id: "call-1".into(),
            outcome: "resolved".into(),
            duration_ms: 9000,
            events: vec![
                entry(40, Mark::Answered),
                seg(41, "greet", cache, false),
                seg(2000, "greet", cache, true),
                entry(2500, Mark::CallerSpeechStart),
                entry(4000, Mark::CallerSpeechEnd),
                seg(4010, "filler_hum", filler, false),
                entry(
                    4010,
                    Mark::Request {
                        provider: Provider::Llm,
                        id: "reply#1".into(),
                    },
                ),
                entry(
                    4400,
                    Mark::FirstByte {
                        provider: Provider::Llm,
                        id: "reply#1".into(),
                    },
                ),
                seg(4800, "filler_hum", filler, true),
                // 900 ms of nothing: the reply is late.
                seg(5700, "reply#1.0", generated, false),
                entry(
                    6000,
                    Mark::End {
                        provider: Provider::Llm,
                        id: "reply#1".into(),
                        ok: true,
                    },
                ),
                seg(7000, "reply#1.0", generated, true),
                entry(7600, Mark::Dtmf { digit: '1' }),
                seg(7610, "goodbye", cache, false),
                seg(8500, "goodbye", cache, true),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn layout_finds_segments_speech_requests_and_dead_air() {
        let layout = Layout::of(&sample());
        assert_eq!(layout.bot.len(), 4);
        assert_eq!(layout.caller_speech.len(), 1);
        assert_eq!(layout.dtmf, vec![(7600, '1')]);
        assert_eq!(layout.requests.len(), 1);
        assert_eq!(layout.requests[0].2, Some(4400));
        // The 900 ms hole between the filler and the reply; nothing else
        // (the silence after the greeting is the caller's turn).
        assert_eq!(
            layout.dead_air,
            vec![Span {
                start_ms: 4800,
                end_ms: 5700,
                label: "900 ms".into()
            }]
        );
        let responses: Vec<u64> = layout
            .responses
            .iter()
            .map(|r| r.end_ms - r.start_ms)
            .collect();
        assert_eq!(responses, vec![10, 10], "after the caller's turns only");
    }

    #[test]
    fn svg_has_lanes_segments_and_marks() {
        let svg = svg(&sample());
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches(r#"class="lane""#).count(), 5);
        assert_eq!(svg.matches(r#"class="segment""#).count(), 4);
        assert_eq!(svg.matches(r#"data-source="filler""#).count(), 1);
        assert_eq!(svg.matches(r#"class="dead-air""#).count(), 1);
        assert!(svg.contains("ttft 390 ms"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn labels_are_escaped_and_an_unfinished_call_still_draws() {
        let mut t = sample();
        t.call_id = "<a&b>".into();
        t.events.truncate(6);
        let svg = svg(&t);
        assert!(svg.contains("&lt;a&amp;b&gt;"));
        assert!(!svg.contains("<a&b>"));
        assert_eq!(svg.matches(r#"class="segment""#).count(), 2);
    }
}
