//! What a team running sav watches: Prometheus metrics (one registry per
//! process, atomics only, so the 20 ms media path pays one atomic add per
//! wake-up) and the readiness behind `/healthz`. The HTTP side is in
//! [`http`]; what one call used and costs is in [`CallUsage`].

pub mod config;
pub mod http;
mod process;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

/// Where a phrase the caller heard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum PhraseSource {
    /// A cached phrase of the flow (greeting, menu, step…).
    cache,
    /// A cached filler or acknowledgement said while a reply is made.
    filler,
    /// Speech generated for this call (TTS, of an LLM reply or a template).
    generated,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: PhraseSource,
}

/// Where a phrase's first audio byte came from, for the TTFB histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AudioSource {
    cache,
    api,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AudioSourceLabel {
    pub source: AudioSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenKind {
    prompt,
    completion,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenLabel {
    pub kind: TokenKind,
}

/// Registration with the PBX, as a gauge value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Registration {
    /// No `[sip.register]`: nothing to wait for.
    NotConfigured = 0,
    Registering = 1,
    Registered = 2,
    Failing = 3,
    Unregistered = 4,
}

impl Registration {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Registering,
            2 => Self::Registered,
            3 => Self::Failing,
            4 => Self::Unregistered,
            _ => Self::NotConfigured,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::Registering => "registering",
            Self::Registered => "registered",
            Self::Failing => "failing",
            Self::Unregistered => "unregistered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

const REGISTRATION_STATES: [Registration; 5] = [
    Registration::NotConfigured,
    Registration::Registering,
    Registration::Registered,
    Registration::Failing,
    Registration::Unregistered,
];

/// Prices used to estimate what a call costs (`[costs]`), in one currency.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Currency of the figures below (informative; shown in reports).
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default)]
    pub llm_prompt_per_million_tokens: f64,
    #[serde(default)]
    pub llm_completion_per_million_tokens: f64,
    #[serde(default)]
    pub tts_per_thousand_characters: f64,
    #[serde(default)]
    pub stt_per_minute: f64,
}

fn default_currency() -> String {
    "USD".into()
}

/// A currency as a metric name's unit: `EUR` → `eur`; anything but ASCII
/// letters and digits left out (`currency` when nothing is left).
fn currency_unit(currency: &str) -> String {
    let unit: String = currency
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if unit.is_empty() {
        "currency".into()
    } else {
        unit
    }
}

impl Default for CostConfig {
    fn default() -> Self {
        Self {
            currency: default_currency(),
            llm_prompt_per_million_tokens: 0.0,
            llm_completion_per_million_tokens: 0.0,
            tts_per_thousand_characters: 0.0,
            stt_per_minute: 0.0,
        }
    }
}

/// What one call used of the paid APIs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CallUsage {
    pub llm_prompt_tokens: u64,
    pub llm_completion_tokens: u64,
    pub tts_characters: u64,
    pub stt_seconds: f64,
}

impl CallUsage {
    /// The estimated cost of this usage at these prices.
    pub fn cost(&self, prices: &CostConfig) -> f64 {
        self.llm_prompt_tokens as f64 * prices.llm_prompt_per_million_tokens / 1e6
            + self.llm_completion_tokens as f64 * prices.llm_completion_per_million_tokens / 1e6
            + self.tts_characters as f64 * prices.tts_per_thousand_characters / 1e3
            + self.stt_seconds * prices.stt_per_minute / 60.0
    }
}

/// The process's metrics. Cheap to update from any task.
pub struct Metrics {
    registry: Registry,
    pub phrases: Family<SourceLabel, Counter>,
    pub tts_first_byte: Family<AudioSourceLabel, Histogram>,
    pub llm_first_token: Histogram,
    pub llm_total: Histogram,
    /// The caller's stream at the end of each call: the share of its
    /// packets lost, its interarrival jitter; the round trip RTCP measured.
    pub rtp_loss: Histogram,
    pub rtp_jitter: Histogram,
    pub rtp_round_trip: Histogram,
    pub stt_latency: Histogram,
    pub llm_tokens: Family<TokenLabel, Counter>,
    pub tts_characters: Counter,
    pub stt_audio_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub call_cost: Histogram,
    pub cost_total: Counter<f64, std::sync::atomic::AtomicU64>,
    pub provider_errors: Family<ProviderLabel, Counter>,
    pub active_calls: Gauge,
    pub calls: Family<OutcomeLabel, Counter>,
    pub calls_refused: Family<ReasonLabel, Counter>,
    /// Inbound RTP packets dropped, by reason (another source, malformed,
    /// a bad telephone-event).
    pub rtp_dropped: Family<ReasonLabel, Counter>,
    /// SIP requests (datagrams, connections) refused at the door, by
    /// reason (rate limited, banned, scanner...).
    pub sip_refused: Family<ReasonLabel, Counter>,
    /// Sources banned.
    pub sip_bans: Counter,
    registration_gauge: Family<StateLabel, Gauge>,
    pub rtp_frames_sent: Counter,
    pub rtp_send_errors: Counter,
    pub late_ticks: Counter,
    pub underruns: Counter,
    pub silent_runs: Histogram,
    pub barge_ins: Counter,
    pub dtmf: Counter,
    pub transfers: Counter,
    pub no_input_reprompts: Counter,
    pub speculative_replies: Counter,
    pub speculative_restarts: Counter,
    pub no_input_escalations: Counter,
    pub ready_gauge: Gauge,
    cache_loaded: AtomicBool,
    draining: AtomicBool,
    registration: AtomicU8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Latency buckets (seconds) for provider timings: 10 ms to ~10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.005, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
    ]
    .into_iter()
}

fn latency_family() -> Family<AudioSourceLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, costs in the default currency ([`CostConfig`]'s).
    pub fn new() -> Self {
        Self::with_currency(&default_currency())
    }

    /// The metrics, with the cost families named in `currency` (the
    /// Prometheus naming guide puts the unit in the name:
    /// `sav_call_cost_eur`, `sav_api_cost_eur_total`).
    pub fn with_currency(currency: &str) -> Self {
        let mut root = Registry::default();
        // The process's own figures, unprefixed as every exporter has them.
        process::register(&mut root);
        let registry = root.sub_registry_with_prefix("sav");
        registry.register(
            "build",
            "The build: sav's version (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let currency_unit = Unit::Other(currency_unit(currency));
        let phrases = Family::<SourceLabel, Counter>::default();
        registry.register(
            "phrases",
            "Phrases that started playing, by source (cache hit rate = cache+filler over all)",
            phrases.clone(),
        );
        let tts_first_byte = latency_family();
        registry.register_with_unit(
            "tts_first_byte",
            "Time from asking for a phrase's audio to its first byte, by source",
            Unit::Seconds,
            tts_first_byte.clone(),
        );
        let llm_first_token = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "llm_first_token",
            "Time from the LLM request to its first token",
            Unit::Seconds,
            llm_first_token.clone(),
        );
        let llm_total = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "llm_reply",
            "Time from the LLM request to the end of its answer",
            Unit::Seconds,
            llm_total.clone(),
        );
        let rtp_loss = Histogram::new([0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]);
        registry.register_with_unit(
            "rtp_loss",
            "Share of the caller's RTP packets lost, per call (RFC 3550 A.3)",
            Unit::Other("ratio".into()),
            rtp_loss.clone(),
        );
        let rtp_jitter = Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]);
        registry.register_with_unit(
            "rtp_jitter",
            "Interarrival jitter of the caller's RTP at the end of a call (RFC 3550 A.8)",
            Unit::Seconds,
            rtp_jitter.clone(),
        );
        let rtp_round_trip = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "rtp_round_trip",
            "Round trip to the caller from its RTCP reports, at the end of a call",
            Unit::Seconds,
            rtp_round_trip.clone(),
        );
        let stt_latency = Histogram::new(latency_buckets());
        registry.register_with_unit(
            "stt_latency",
            "Time from the end of the caller's turn to its transcript",
            Unit::Seconds,
            stt_latency.clone(),
        );
        let llm_tokens = Family::<TokenLabel, Counter>::default();
        registry.register("llm_tokens", "LLM tokens used", llm_tokens.clone());
        let tts_characters = Counter::default();
        registry.register(
            "tts_characters",
            "Characters sent to the TTS",
            tts_characters.clone(),
        );
        let stt_audio_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "stt_audio_seconds",
            "Seconds of caller audio sent to the STT",
            stt_audio_seconds.clone(),
        );
        let call_cost = Histogram::new([0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        registry.register_with_unit(
            "call_cost",
            "Estimated API cost per call ([costs] prices, in their currency)",
            currency_unit.clone(),
            call_cost.clone(),
        );
        let cost_total = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "api_cost",
            "Estimated API cost of all calls ([costs] prices, in their currency)",
            currency_unit,
            cost_total.clone(),
        );
        let provider_errors = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "provider_errors",
            "Provider requests that failed (timeouts, HTTP errors, bad streams)",
            provider_errors.clone(),
        );
        let active_calls = Gauge::default();
        registry.register("active_calls", "Calls in progress", active_calls.clone());
        let calls = Family::<OutcomeLabel, Counter>::default();
        registry.register("calls", "Calls ended, by outcome", calls.clone());
        let calls_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "calls_refused",
            "INVITEs refused before answering, by reason",
            calls_refused.clone(),
        );
        let rtp_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rtp_dropped",
            "Inbound RTP packets dropped, by reason",
            rtp_dropped.clone(),
        );
        let sip_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sip_refused",
            "SIP requests and connections refused before the stack saw them, by reason",
            sip_refused.clone(),
        );
        let sip_bans = Counter::default();
        registry.register(
            "sip_bans",
            "Sources banned for a while (over their limits, or scanners)",
            sip_bans.clone(),
        );
        let registration_gauge = Family::<StateLabel, Gauge>::default();
        registry.register(
            "registration_state",
            "Registration with the PBX: 1 for the current state",
            registration_gauge.clone(),
        );
        let rtp_frames_sent = Counter::default();
        registry.register(
            "rtp_frames_sent",
            "RTP audio frames sent",
            rtp_frames_sent.clone(),
        );
        let rtp_send_errors = Counter::default();
        registry.register(
            "rtp_send_errors",
            "RTP frames the socket refused",
            rtp_send_errors.clone(),
        );
        let late_ticks = Counter::default();
        registry.register(
            "late_ticks",
            "Frames sent after their due time (caught up, not dropped)",
            late_ticks.clone(),
        );
        let underruns = Counter::default();
        registry.register(
            "playout_underruns",
            "Generated speech that ran dry while playing",
            underruns.clone(),
        );
        let silent_runs = Histogram::new([0.02, 0.06, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0]);
        registry.register_with_unit(
            "bot_silent_run",
            "Runs of silence on the bot's turn while generated speech was awaited",
            Unit::Seconds,
            silent_runs.clone(),
        );
        let barge_ins = Counter::default();
        registry.register(
            "barge_ins",
            "Times the caller talked over the bot and its audio was stopped",
            barge_ins.clone(),
        );
        let dtmf = Counter::default();
        registry.register("dtmf", "DTMF digits received", dtmf.clone());
        let transfers = Counter::default();
        registry.register(
            "transfers",
            "Blind transfers (REFER) started",
            transfers.clone(),
        );
        let speculative_replies = Counter::default();
        registry.register(
            "speculative_replies",
            "Replies asked for on a stable partial transcript, before the final one",
            speculative_replies.clone(),
        );
        let speculative_restarts = Counter::default();
        registry.register(
            "speculative_restarts",
            "Speculative replies dropped and asked again: the final transcript differed",
            speculative_restarts.clone(),
        );
        let no_input_reprompts = Counter::default();
        registry.register(
            "no_input_reprompts",
            "Times the caller said and pressed nothing and was asked again",
            no_input_reprompts.clone(),
        );
        let no_input_escalations = Counter::default();
        registry.register(
            "no_input_escalations",
            "Calls handed over (transfer or call-back) because the caller said and pressed nothing",
            no_input_escalations.clone(),
        );
        let ready_gauge = Gauge::default();
        registry.register(
            "ready",
            "1 when the cache is loaded, registration (if any) succeeded and new calls are taken",
            ready_gauge.clone(),
        );
        let metrics = Self {
            registry: root,
            phrases,
            tts_first_byte,
            llm_first_token,
            llm_total,
            rtp_loss,
            rtp_jitter,
            rtp_round_trip,
            stt_latency,
            llm_tokens,
            tts_characters,
            stt_audio_seconds,
            call_cost,
            cost_total,
            provider_errors,
            active_calls,
            calls,
            calls_refused,
            rtp_dropped,
            sip_refused,
            sip_bans,
            registration_gauge,
            rtp_frames_sent,
            rtp_send_errors,
            late_ticks,
            underruns,
            silent_runs,
            barge_ins,
            dtmf,
            transfers,
            no_input_reprompts,
            no_input_escalations,
            speculative_replies,
            speculative_restarts,
            ready_gauge,
            cache_loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            registration: AtomicU8::new(Registration::NotConfigured as u8),
        };
        // Every phrase source and registration state is shown from the start
        // (a rate over a series that appears late is wrong for a while).
        for source in [
            PhraseSource::cache,
            PhraseSource::filler,
            PhraseSource::generated,
        ] {
            drop(metrics.phrases.get_or_create(&SourceLabel { source }));
        }
        for source in [AudioSource::cache, AudioSource::api] {
            drop(
                metrics
                    .tts_first_byte
                    .get_or_create(&AudioSourceLabel { source }),
            );
        }
        for kind in [TokenKind::prompt, TokenKind::completion] {
            drop(metrics.llm_tokens.get_or_create(&TokenLabel { kind }));
        }
        metrics.set_registration(Registration::NotConfigured);
        metrics
    }

    /// Every outcome a call can end with, shown at zero from the start (a
    /// rate over a series that appears with its first call is wrong for a
    /// while, and an alert on it cannot fire before).
    pub fn declare_outcomes(&self, outcomes: impl IntoIterator<Item = &'static str>) {
        for outcome in outcomes {
            drop(self.calls.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            }));
        }
    }

    /// Every reason an INVITE can be refused for, at zero.
    pub fn declare_refusals(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            drop(self.calls_refused.get_or_create(&ReasonLabel { reason }));
        }
    }

    /// Every provider that can fail, at zero.
    pub fn declare_providers(&self, providers: impl IntoIterator<Item = &'static str>) {
        for provider in providers {
            drop(
                self.provider_errors
                    .get_or_create(&ProviderLabel { provider }),
            );
        }
    }

    /// Every reason an inbound RTP packet can be dropped for, at zero.
    pub fn declare_rtp_drops(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            drop(self.rtp_dropped.get_or_create(&ReasonLabel { reason }));
        }
    }

    /// The exposition in OpenMetrics text (what Prometheus asks for).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the Prometheus text format 0.0.4 (what other
    /// scrapers, `curl` and `promtool check metrics` read).
    pub fn render_prometheus_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    pub fn phrase(&self, source: PhraseSource) {
        self.phrases.get_or_create(&SourceLabel { source }).inc();
    }

    pub fn first_byte(&self, source: AudioSource, after: Duration) {
        self.tts_first_byte
            .get_or_create(&AudioSourceLabel { source })
            .observe(after.as_secs_f64());
    }

    pub fn provider_error(&self, provider: &'static str) {
        self.provider_errors
            .get_or_create(&ProviderLabel { provider })
            .inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.calls_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// A call ended: its outcome and its estimated cost.
    pub fn call_ended(&self, outcome: &str, cost: f64) {
        self.calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        self.call_cost.observe(cost);
        self.cost_total.inc_by(cost);
    }

    pub fn usage(&self, usage: &CallUsage) {
        self.llm_tokens
            .get_or_create(&TokenLabel {
                kind: TokenKind::prompt,
            })
            .inc_by(usage.llm_prompt_tokens);
        self.llm_tokens
            .get_or_create(&TokenLabel {
                kind: TokenKind::completion,
            })
            .inc_by(usage.llm_completion_tokens);
        self.tts_characters.inc_by(usage.tts_characters);
        self.stt_audio_seconds.inc_by(usage.stt_seconds);
    }

    pub fn set_cache_loaded(&self, loaded: bool) {
        self.cache_loaded.store(loaded, Ordering::SeqCst);
        self.update_ready();
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.update_ready();
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_registration(&self, state: Registration) {
        self.registration.store(state as u8, Ordering::SeqCst);
        for s in REGISTRATION_STATES {
            self.registration_gauge
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::from(s == state));
        }
        self.update_ready();
    }

    pub fn registration(&self) -> Registration {
        Registration::from_u8(self.registration.load(Ordering::SeqCst))
    }

    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining() {
            return Some("shutting down");
        }
        if !self.cache_loaded.load(Ordering::SeqCst) {
            return Some("phrase cache not loaded");
        }
        match self.registration() {
            Registration::NotConfigured | Registration::Registered => None,
            Registration::Registering => Some("registering"),
            Registration::Failing => Some("registration failing"),
            Registration::Unregistered => Some("unregistered"),
        }
    }

    fn update_ready(&self) {
        self.ready_gauge.set(i64::from(self.not_ready().is_none()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, line_start: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn exposition_names_and_counts() {
        let m = Metrics::new();
        m.phrase(PhraseSource::cache);
        m.phrase(PhraseSource::cache);
        m.phrase(PhraseSource::generated);
        m.call_ended("resolved", 0.0);
        m.first_byte(AudioSource::api, Duration::from_millis(300));
        let text = m.render();
        assert_eq!(
            sample(&text, "sav_phrases_total{source=\"cache\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "sav_phrases_total{source=\"filler\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "sav_phrases_total{source=\"generated\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "sav_calls_total{outcome=\"resolved\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "sav_tts_first_byte_seconds_bucket{le=\"0.3\",source=\"api\"}"
            )
            .or_else(|| sample(
                &text,
                "sav_tts_first_byte_seconds_bucket{source=\"api\",le=\"0.3\"}"
            )),
            Some(1.0)
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn names_carry_their_units_and_every_family_shows_from_the_start() {
        let m = Metrics::with_currency("EUR");
        m.declare_outcomes(["resolved", "abandoned"]);
        m.declare_refusals(["max_calls"]);
        m.declare_providers(["llm"]);
        m.declare_rtp_drops(["malformed"]);
        m.call_ended("resolved", 0.25);
        let text = m.render_prometheus_text();
        assert_eq!(sample(&text, "sav_call_cost_eur_count"), Some(1.0));
        assert_eq!(sample(&text, "sav_call_cost_eur_sum"), Some(0.25));
        assert_eq!(sample(&text, "sav_api_cost_eur_total"), Some(0.25));
        assert_eq!(sample(&text, "sav_llm_reply_seconds_count"), Some(0.0));
        assert_eq!(
            sample(&text, "sav_calls_total{outcome=\"abandoned\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "sav_calls_refused_total{reason=\"max_calls\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "sav_provider_errors_total{provider=\"llm\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "sav_rtp_dropped_total{reason=\"malformed\"}"),
            Some(0.0)
        );
        let build = format!(
            "sav_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0));
        // In the 0.0.4 format a counter's HELP and TYPE name its samples.
        assert!(text.contains("# TYPE sav_calls_total counter"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(m.render().trim_end().ends_with("# EOF"));
        #[cfg(target_os = "linux")]
        assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
        assert_eq!(currency_unit("€ EUR"), "eur");
        assert_eq!(currency_unit("€"), "currency");
    }

    #[test]
    fn the_callers_stream_quality_is_named_with_its_unit() {
        let m = Metrics::new();
        m.rtp_loss.observe(0.02);
        m.rtp_jitter.observe(0.004);
        m.rtp_round_trip.observe(0.08);
        let text = m.render();
        assert_eq!(sample(&text, "sav_rtp_loss_ratio_count"), Some(1.0));
        assert_eq!(
            sample(&text, "sav_rtp_loss_ratio_bucket{le=\"0.02\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "sav_rtp_loss_ratio_bucket{le=\"0.01\"}"),
            Some(0.0)
        );
        assert_eq!(sample(&text, "sav_rtp_jitter_seconds_count"), Some(1.0));
        assert_eq!(sample(&text, "sav_rtp_round_trip_seconds_sum"), Some(0.08));
    }

    #[test]
    fn readiness_waits_for_cache_and_registration_and_ends_with_drain() {
        let m = Metrics::new();
        assert_eq!(m.not_ready(), Some("phrase cache not loaded"));
        m.set_cache_loaded(true);
        assert_eq!(m.not_ready(), None, "no registration configured");
        m.set_registration(Registration::Registering);
        assert_eq!(m.not_ready(), Some("registering"));
        m.set_registration(Registration::Registered);
        assert_eq!(m.not_ready(), None);
        assert_eq!(
            sample(&m.render(), "sav_registration_state{state=\"registered\"}"),
            Some(1.0)
        );
        m.set_draining();
        assert_eq!(m.not_ready(), Some("shutting down"));
        assert_eq!(sample(&m.render(), "sav_ready"), Some(0.0));
    }

    #[test]
    fn cost_of_a_call() {
        let prices = CostConfig {
            currency: "EUR".into(),
            llm_prompt_per_million_tokens: 1.0,
            llm_completion_per_million_tokens: 2.0,
            tts_per_thousand_characters: 0.3,
            stt_per_minute: 0.006,
        };
        let usage = CallUsage {
            llm_prompt_tokens: 1_000_000,
            llm_completion_tokens: 500_000,
            tts_characters: 2_000,
            stt_seconds: 30.0,
        };
        let cost = usage.cost(&prices);
        assert!((cost - (1.0 + 1.0 + 0.6 + 0.003)).abs() < 1e-9, "{cost}");
    }
}
