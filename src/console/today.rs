//! The day's figures: calls, resolved/transferred/callback rates, the
//! cache's share of what was heard, first-audio latency per turn (p50,
//! p95), dead air over [`DEAD_AIR_INCIDENT_MS`], provider errors, cost;
//! and per hour (UTC) the calls and the turns' p95 latency as small
//! server-drawn SVG charts. Computed from the day's records and timelines
//! ([`figures`] is pure), at most [`MAX_DAY_CALLS`] calls, on a blocking
//! thread, kept [`MEMO`] so a room of open pages costs one computation
//! per [`MEMO`] (pages that miss at the same moment each compute it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup, PreEscaped};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{day_start_ms, error, layout, today_utc, Api, Console, Page};
use crate::metrics::PhraseSource;
use crate::store::browse::{DayCall, MAX_DAY_CALLS};
use crate::timeline::report::Layout;
use crate::timeline::CallTimeline;

/// Dead air at least this long is an incident.
pub const DEAD_AIR_INCIDENT_MS: u64 = 700;
/// How long a day's figures are reused.
pub const MEMO: Duration = Duration::from_secs(20);

/// A day's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Today {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub calls: u64,
    /// Whether the day had more calls than were read ([`MAX_DAY_CALLS`]).
    pub truncated: bool,
    pub resolved: u64,
    pub transferred: u64,
    pub callbacks: u64,
    /// Shares of the calls, 0–1 (`null` without calls).
    pub resolved_rate: Option<f64>,
    pub transferred_rate: Option<f64>,
    pub callback_rate: Option<f64>,
    /// Of the segments heard, the share from the cache (phrases and
    /// fillers) rather than generated.
    pub cache_hit_rate: Option<f64>,
    /// End of the caller's turn → the bot's first audio, over every turn.
    pub first_audio_p50_ms: Option<u64>,
    pub first_audio_p95_ms: Option<u64>,
    pub turns: u64,
    /// Silences on the bot's turn of at least [`DEAD_AIR_INCIDENT_MS`].
    pub dead_air_incidents: u64,
    /// Provider requests that failed (not those cancelled by a barge-in).
    pub provider_errors: u64,
    pub cost: f64,
    pub currency: String,
    /// Per hour (UTC, 0–23): calls started.
    pub calls_per_hour: Vec<u64>,
    /// Per hour: the turns' p95 first-audio latency, ms.
    pub latency_p95_per_hour: Vec<Option<u64>>,
}

/// The figures of `day` from its calls.
pub fn figures(day: &str, day_start: i64, calls: &[DayCall]) -> Today {
    let mut today = Today {
        day: day.to_string(),
        calls: calls.len() as u64,
        truncated: calls.len() as i64 >= MAX_DAY_CALLS,
        calls_per_hour: vec![0; 24],
        latency_p95_per_hour: vec![None; 24],
        ..Default::default()
    };
    let (mut cached, mut generated) = (0u64, 0u64);
    let mut latencies: Vec<u64> = Vec::new();
    let mut per_hour: Vec<Vec<u64>> = vec![Vec::new(); 24];
    for call in calls {
        let hour = ((call.started_at - day_start).div_euclid(3_600_000)).clamp(0, 23) as usize;
        today.calls_per_hour[hour] += 1;
        match call.outcome.as_deref() {
            Some("resolved") => today.resolved += 1,
            Some("callback") => today.callbacks += 1,
            _ => {}
        }
        if call.transferred || call.outcome.as_deref() == Some("transferred") {
            today.transferred += 1;
        }
        let Some(timeline) = call
            .timeline
            .as_deref()
            .and_then(|json| serde_json::from_str::<CallTimeline>(json).ok())
        else {
            continue;
        };
        today.cost += timeline.cost;
        if today.currency.is_empty() {
            today.currency = timeline.currency.clone();
        }
        let layout = Layout::of(&timeline);
        for (_, source, _) in &layout.bot {
            match source {
                PhraseSource::generated => generated += 1,
                _ => cached += 1,
            }
        }
        for response in &layout.responses {
            let ms = response.end_ms.saturating_sub(response.start_ms);
            latencies.push(ms);
            per_hour[hour].push(ms);
        }
        today.dead_air_incidents += layout
            .dead_air
            .iter()
            .filter(|d| d.end_ms.saturating_sub(d.start_ms) >= DEAD_AIR_INCIDENT_MS)
            .count() as u64;
        today.provider_errors += layout.requests.iter().filter(|(_, _, _, ok)| !ok).count() as u64;
    }
    let rate = |n: u64| (today.calls > 0).then(|| n as f64 / today.calls as f64);
    today.resolved_rate = rate(today.resolved);
    today.transferred_rate = rate(today.transferred);
    today.callback_rate = rate(today.callbacks);
    today.cache_hit_rate =
        (cached + generated > 0).then(|| cached as f64 / (cached + generated) as f64);
    today.turns = latencies.len() as u64;
    today.first_audio_p50_ms = percentile(&mut latencies, 50);
    today.first_audio_p95_ms = percentile(&mut latencies, 95);
    for (hour, mut values) in per_hour.into_iter().enumerate() {
        today.latency_p95_per_hour[hour] = percentile(&mut values, 95);
    }
    today
}

/// The `p`th percentile (nearest rank).
fn percentile(values: &mut [u64], p: usize) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    Some(values[rank - 1])
}

/// The figures of the days asked lately.
#[derive(Default)]
pub struct Memo {
    days: Mutex<Vec<(Instant, Arc<Today>)>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DayQuery {
    day: Option<String>,
}

/// The figures of `day` (today by default), from the memo or the store.
async fn of_day(console: &Arc<Console>, day: Option<String>) -> Result<Arc<Today>, Response> {
    let day = day
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(today_utc);
    let Some(start) = day_start_ms(&day) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("day {day:?}: expected YYYY-MM-DD"),
        ));
    };
    {
        let memo = console.today.days.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, today)) = memo
            .iter()
            .find(|(at, t)| t.day == day && at.elapsed() < MEMO)
        {
            return Ok(today.clone());
        }
    }
    let calls = console
        .services
        .store
        .day_calls(start, start + 86_400_000)
        .await
        .map_err(|e| {
            warn!(error = %e, "console: the day's calls not read");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not answering",
            )
        })?;
    let asked = day.clone();
    let today = tokio::task::spawn_blocking(move || figures(&asked, start, &calls))
        .await
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "figures not computed"))?;
    let today = Arc::new(today);
    let mut memo = console.today.days.lock().unwrap_or_else(|e| e.into_inner());
    memo.retain(|(at, t)| at.elapsed() < MEMO && t.day != day);
    memo.truncate(7);
    memo.push((Instant::now(), today.clone()));
    Ok(today)
}

pub(super) async fn api(
    State(console): State<Arc<Console>>,
    Api(_): Api,
    Query(query): Query<DayQuery>,
) -> Response {
    match of_day(&console, query.day).await {
        Ok(today) => Json(today.as_ref().clone()).into_response(),
        Err(response) => response,
    }
}

pub(super) async fn page(
    State(console): State<Arc<Console>>,
    Page(caller): Page,
    Query(query): Query<DayQuery>,
) -> Response {
    let today = match of_day(&console, query.day).await {
        Ok(today) => today,
        Err(response) => return response,
    };
    let percent = |r: Option<f64>| {
        r.map(|r| format!("{:.0} %", r * 100.0))
            .unwrap_or("—".into())
    };
    let ms = |v: Option<u64>| v.map(|v| format!("{v} ms")).unwrap_or("—".into());
    let figure = |name: &str, value: String| {
        html! { div { span { (name) } strong { (value) } } }
    };
    let body = html! {
        h1 { "Aujourd'hui" }
        form.filters method="get" action="/today" {
            label { "Jour" input name="day" type="date" value=(today.day); }
            button type="submit" { "Voir" }
        }
        @if today.truncated {
            p { "Seuls les " (MAX_DAY_CALLS) " appels les plus récents sont comptés." }
        }
        section.figures aria-label="Chiffres du jour" {
            (figure("Appels", today.calls.to_string()))
            (figure("Résolus", percent(today.resolved_rate)))
            (figure("Transférés", percent(today.transferred_rate)))
            (figure("Rappels", percent(today.callback_rate)))
            (figure("Depuis le cache", percent(today.cache_hit_rate)))
            (figure("Premier son p50", ms(today.first_audio_p50_ms)))
            (figure("Premier son p95", ms(today.first_audio_p95_ms)))
            (figure("Silences > 700 ms", today.dead_air_incidents.to_string()))
            (figure("Erreurs fournisseurs", today.provider_errors.to_string()))
            (figure("Coût", format!("{:.2} {}", today.cost, today.currency)))
        }
        h2 { "Appels par heure (UTC)" }
        (chart("Appels par heure", &today.calls_per_hour.iter().map(|&n| Some(n)).collect::<Vec<_>>(), ""))
        h2 { "Premier son, p95 par heure (UTC)" }
        (chart("Latence p95 par heure", &today.latency_p95_per_hour, " ms"))
    };
    layout("Aujourd'hui", Some(&caller), body).into_response()
}

/// A bar per hour, each with its value as a title (and the whole as a
/// labelled image for screen readers).
fn chart(label: &str, values: &[Option<u64>], unit: &str) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 140.0;
    let max = values.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let bar = W / values.len().max(1) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{label}" viewBox="0 0 {W} {}" width="100%">"##,
        H + 16.0
    );
    for (hour, value) in values.iter().enumerate() {
        let x = hour as f64 * bar;
        if let Some(v) = value {
            let h = (*v as f64 / max) * H;
            svg.push_str(&format!(
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#1e88e5"><title>{hour:02}h: {v}{unit}</title></rect>"##,
                x + 2.0,
                H - h,
                bar - 4.0
            ));
        }
        if hour % 3 == 0 {
            svg.push_str(&format!(
                r##"<text x="{:.1}" y="{}" font-size="11" fill="#555">{hour:02}h</text>"##,
                x + 2.0,
                H + 13.0
            ));
        }
    }
    svg.push_str("</svg>");
    html! { figure.chart { (PreEscaped(svg)) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Entry, Mark, Provider};

    fn timeline(cost: f64, events: Vec<(u64, Mark)>) -> String {
        serde_json::to_string(&CallTimeline {
            call_id: "c".into(),
            outcome: "resolved".into(),
            duration_ms: 10_000,
            cost,
            currency: "EUR".into(),
            events: events
                .into_iter()
                .map(|(at_ms, mark)| Entry { at_ms, mark })
                .collect(),
            ..Default::default()
        })
        .unwrap()
    }

    fn heard(label: &str, source: PhraseSource, from: u64, to: u64) -> Vec<(u64, Mark)> {
        vec![
            (
                from,
                Mark::SegmentStart {
                    label: label.into(),
                    source,
                },
            ),
            (
                to,
                Mark::SegmentEnd {
                    label: label.into(),
                    source,
                    interrupted: false,
                },
            ),
        ]
    }

    #[test]
    fn the_day_is_counted_from_its_calls_and_their_timelines() {
        let start = day_start_ms("2026-12-02").unwrap();
        let hour = 3_600_000;
        // A call at 09:10: greeting from the cache, the caller speaks, a
        // generated answer 900 ms after they stop, with 800 ms of dead air.
        let mut first = heard("greet", PhraseSource::cache, 0, 2000);
        first.push((2500, Mark::CallerSpeechStart));
        first.push((4000, Mark::CallerSpeechEnd));
        first.extend(heard("reply#1.1", PhraseSource::generated, 4900, 6000));
        // One LLM request failed, one was cancelled (not an error).
        for (id, at, end) in [
            (
                "1",
                4000,
                Mark::End {
                    provider: Provider::Llm,
                    id: "1".into(),
                    ok: false,
                },
            ),
            (
                "2",
                4100,
                Mark::Cancelled {
                    provider: Provider::Llm,
                    id: "2".into(),
                },
            ),
        ] {
            first.push((
                at,
                Mark::Request {
                    provider: Provider::Llm,
                    id: id.into(),
                },
            ));
            first.push((at + 50, end));
        }
        // A call at 14:30: the caller's turn answered by a filler in 300 ms.
        let mut second = heard("greet", PhraseSource::cache, 0, 2000);
        second.push((3000, Mark::CallerSpeechStart));
        second.push((3500, Mark::CallerSpeechEnd));
        second.extend(heard("filler_ok", PhraseSource::filler, 3800, 4500));
        let calls = vec![
            DayCall {
                started_at: start + 14 * hour + 30 * 60_000,
                outcome: Some("transferred".into()),
                transferred: true,
                timeline: Some(timeline(0.02, second)),
            },
            DayCall {
                started_at: start + 9 * hour + 10 * 60_000,
                outcome: Some("resolved".into()),
                transferred: false,
                timeline: Some(timeline(0.05, first)),
            },
            DayCall {
                started_at: start + 9 * hour + 50 * 60_000,
                outcome: Some("abandoned".into()),
                transferred: false,
                timeline: None,
            },
        ];
        let today = figures("2026-12-02", start, &calls);
        assert_eq!(
            (
                today.calls,
                today.resolved,
                today.transferred,
                today.callbacks
            ),
            (3, 1, 1, 0)
        );
        assert_eq!(today.resolved_rate, Some(1.0 / 3.0));
        assert_eq!(today.calls_per_hour[9], 2);
        assert_eq!(today.calls_per_hour[14], 1);
        // Four segments heard, one generated.
        assert_eq!(today.cache_hit_rate, Some(0.75));
        assert_eq!(today.turns, 2);
        assert_eq!(
            (today.first_audio_p50_ms, today.first_audio_p95_ms),
            (Some(300), Some(900))
        );
        assert_eq!(today.latency_p95_per_hour[9], Some(900));
        assert_eq!(today.latency_p95_per_hour[14], Some(300));
        assert_eq!(today.dead_air_incidents, 1);
        assert_eq!(today.provider_errors, 1);
        assert!((today.cost - 0.07).abs() < 1e-9);
        assert_eq!(today.currency, "EUR");
        let svg = chart("x", &[Some(1), None, Some(2)], "");
        assert_eq!(svg.0.matches("<rect").count(), 2);
        assert_eq!(figures("2026-12-03", start, &[]).resolved_rate, None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 95), Some(95));
        assert_eq!(percentile(&mut [7], 95), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }
}
