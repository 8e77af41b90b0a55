//! Configuration: `sav.toml`, with the repository's copy compiled in as the
//! default. A bad file fails at start with the key, the value and what was
//! expected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod console;

pub use crate::cache::config::CacheConfig;
pub use crate::conversation::config::CallConfig;
pub use crate::media::config::{ListenConfig, MediaConfig};
pub use crate::metrics::config::MetricsConfig;
pub use crate::sip::config::{AllowedSource, RegisterConfig, SipConfig, TlsConfig, Transport};
pub use crate::store::config::StoreConfig;

/// The repository's `sav.toml`, the configuration `sav serve` runs on when no
/// file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../sav.toml");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {origin}: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    #[error("config {origin}: {source}")]
    Secret {
        origin: String,
        source: crate::secret::SecretError,
    },
    #[error("config {origin}: `{key}` = {value}: {expected}")]
    Invalid {
        origin: String,
        key: String,
        value: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub call: CallConfig,
    pub cache: CacheConfig,
    /// Listening: voice activity and end of turn.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Hybrid speech: fillers, fallback, backchannel words, prompt.
    #[serde(default)]
    pub hybrid: HybridSection,
    /// The speech providers; turn-taking runs when all three are set.
    pub llm: Option<crate::providers::llm::LlmConfig>,
    pub tts: Option<crate::providers::tts::TtsConfig>,
    pub stt: Option<crate::providers::stt::SttConfig>,
    /// Customers, call records, the CRM outbox.
    #[serde(default)]
    pub store: StoreConfig,
    /// The guided flow's phrases and answers.
    #[serde(default)]
    pub flow: crate::conversation::guide::FlowConfig,
    /// The knowledge base: problems and their fix steps. Without any, every
    /// turn is answered by the LLM (a free conversation).
    #[serde(default)]
    pub problems: Vec<crate::conversation::guide::ProblemConfig>,
    /// Delivery of call events to the CRM.
    #[serde(default)]
    pub crm: crate::store::outbox::CrmConfig,
    /// How long recordings, transcripts and timelines are kept.
    #[serde(default)]
    pub retention: crate::store::retention::RetentionConfig,
    /// The operations HTTP listener (`/metrics`, `/healthz`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Prices for the estimated cost of calls.
    #[serde(default)]
    pub costs: crate::metrics::CostConfig,
    /// Logging and its privacy.
    #[serde(default)]
    pub log: LogConfig,
    /// The after-sales team's console (off unless it listens).
    #[serde(default)]
    pub console: console::ConsoleConfig,
    /// OpenTelemetry traces of calls (off unless an endpoint is set).
    #[serde(default)]
    pub traces: TracesConfig,
    /// Shutdown and call recordings.
    #[serde(default)]
    pub operations: OperationsConfig,
    /// The directory relative paths are taken from (the file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// Show callers' numbers and addresses in full (default: only their
    /// last three characters).
    #[serde(default)]
    pub show_caller_numbers: bool,
}

/// `[traces]`: each call as an OpenTelemetry trace, sent by OTLP over
/// HTTP (protobuf) to a collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`): spans
    /// are posted to `<endpoint>/v1/traces`. No endpoint: no traces.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: default_service_name(),
        }
    }
}

fn default_service_name() -> String {
    "sav".into()
}

impl TracesConfig {
    /// Where spans are posted, when traces are on.
    pub fn traces_url(&self) -> Option<String> {
        let base = self.endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// `[operations]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationsConfig {
    /// On SIGTERM/SIGINT, calls in progress may go on this long before they
    /// are ended with BYE.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u64,
    /// When set, every call is recorded to `<dir>/<call record id>.wav`
    /// (stereo 8 kHz: caller left, bot right). Off by default.
    #[serde(default)]
    pub recordings_dir: Option<PathBuf>,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        Self {
            drain_secs: default_drain_secs(),
            recordings_dir: None,
        }
    }
}

fn default_drain_secs() -> u64 {
    30
}

/// `[hybrid]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HybridSection {
    /// Cached phrases that cover the wait for a reply, in turn.
    #[serde(default = "default_fillers")]
    pub fillers: Vec<String>,
    /// Cached phrase said when a provider fails.
    #[serde(default = "default_fallback")]
    pub fallback: String,
    /// Words that are no real interruption.
    #[serde(default = "default_backchannel")]
    pub backchannel: Vec<String>,
    /// Cached phrase said when the caller's words could not be made out.
    #[serde(default = "default_not_understood")]
    pub not_understood: Option<String>,
    /// Audio buffered before a generated reply starts (and after it ran dry).
    #[serde(default = "default_preroll")]
    pub preroll_ms: u64,
    /// Silence waited for a late reply before another filler.
    #[serde(default = "default_grace")]
    pub filler_grace_ms: u64,
    /// The LLM's instructions.
    #[serde(default = "default_system_prompt")]
    pub system_prompt: String,
    /// Conversation turns kept for the LLM.
    #[serde(default = "default_history")]
    pub history_turns: usize,
    /// With a streaming recogniser, in a free conversation: the reply is
    /// asked for on the partial transcript when it was stable at the end
    /// of the turn, and asked again if the final one differs.
    #[serde(default = "default_true")]
    pub speculative_reply: bool,
}

fn default_true() -> bool {
    true
}

impl Default for HybridSection {
    fn default() -> Self {
        Self {
            fillers: default_fillers(),
            fallback: default_fallback(),
            backchannel: default_backchannel(),
            not_understood: default_not_understood(),
            preroll_ms: default_preroll(),
            filler_grace_ms: default_grace(),
            system_prompt: default_system_prompt(),
            history_turns: default_history(),
            speculative_reply: true,
        }
    }
}

fn default_fillers() -> Vec<String> {
    [
        "filler_hum",
        "filler_ok",
        "filler_one_moment",
        "filler_let_me_see",
    ]
    .map(String::from)
    .to_vec()
}
fn default_fallback() -> String {
    "sorry".into()
}
fn default_backchannel() -> Vec<String> {
    [
        "mhm", "hum", "hm", "euh", "oui", "ok", "okay", "d'accord", "ah", "oh", "bon",
    ]
    .map(String::from)
    .to_vec()
}
fn default_not_understood() -> Option<String> {
    Some("not_understood".into())
}
fn default_preroll() -> u64 {
    60
}
fn default_grace() -> u64 {
    300
}
fn default_system_prompt() -> String {
    "Tu es l'assistant vocal du service après-vente. Tu parles au téléphone : réponds en français, \
     en une ou deux phrases courtes et simples à dire à voix haute, sans listes, sans markdown, \
     sans émojis. Aide le client à résoudre son problème étape par étape."
        .into()
}
fn default_history() -> usize {
    8
}

impl Config {
    /// Where recordings are written, when they are.
    pub fn recordings_dir(&self) -> Option<PathBuf> {
        self.operations
            .recordings_dir
            .as_ref()
            .map(|dir| self.base_dir.join(dir))
    }

    /// Loads `path`, or the embedded default when `None`. Relative paths in
    /// the file are resolved against the file's directory (the current
    /// directory for the embedded default).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::from_toml(EMBEDDED_DEFAULT, "embedded default", Path::new(".")),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let base = path.parent().filter(|p| !p.as_os_str().is_empty());
                Self::from_toml(
                    &text,
                    &path.display().to_string(),
                    base.unwrap_or(Path::new(".")),
                )
            }
        }
    }

    pub fn from_toml(text: &str, origin: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_string(),
            source: Box::new(source),
        })?;
        for path in [
            &mut config.cache.dir,
            &mut config.sip.tls.cert,
            &mut config.sip.tls.key,
        ] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        config.resolve_secrets(origin, base)?;
        config.base_dir = base.to_path_buf();
        config.normalise_keys();
        config.validate(origin)?;
        Ok(config)
    }

    /// Secret files named relative to the configuration file's directory;
    /// the store URL, the webhook URL and the webhook's signing key read
    /// from their `_env` or `_file` forms now (a reload reads them again;
    /// the providers' keys and the SIP password are read where they are
    /// used, when a client or a registration is made).
    fn resolve_secrets(&mut self, origin: &str, base: &Path) -> Result<(), ConfigError> {
        let secret = |source| ConfigError::Secret {
            origin: origin.to_string(),
            source,
        };
        let mut files: Vec<&mut Option<PathBuf>> = vec![
            &mut self.store.url_file,
            &mut self.crm.webhook_url_file,
            &mut self.crm.signing_secret_file,
        ];
        if let Some(register) = self.sip.register.as_mut() {
            files.push(&mut register.password_file);
        }
        if let Some(llm) = self.llm.as_mut() {
            files.push(&mut llm.api_key_file);
        }
        if let Some(tts) = self.tts.as_mut() {
            files.push(&mut tts.api_key_file);
        }
        if let Some(stt) = self.stt.as_mut() {
            files.push(&mut stt.api_key_file);
            if let Some(streaming) = stt.streaming.as_mut() {
                files.push(&mut streaming.api_key_file);
            }
        }
        for path in files.into_iter().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        let store = &mut self.store;
        if let Some(url) = crate::secret::read(
            "store.url",
            store.url_env.as_deref(),
            store.url_file.as_deref(),
        )
        .map_err(secret)?
        {
            store.url = url;
        }
        let crm = &mut self.crm;
        if let Some(url) = crate::secret::read(
            "crm.webhook_url",
            crm.webhook_url_env.as_deref(),
            crm.webhook_url_file.as_deref(),
        )
        .map_err(secret)?
        {
            crm.webhook_url = Some(url);
        }
        crm.signing_secret = crate::secret::read(
            "crm.signing_secret",
            crm.signing_secret_env.as_deref(),
            crm.signing_secret_file.as_deref(),
        )
        .map_err(secret)?;
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, expected| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            value,
            expected,
        };
        // A console beyond loopback needs users; their hashes must read.
        if let Err(error) = self.console.users(&self.base_dir) {
            return Err(invalid("console", error.to_string(), "see the message"));
        }
        if let Some(url) = self.traces.traces_url() {
            let parsed = reqwest::Url::parse(&url);
            if !matches!(parsed.as_ref().map(|u| u.scheme()), Ok("http" | "https")) {
                return Err(invalid(
                    "traces.endpoint",
                    scheme_only(self.traces.endpoint.as_deref().unwrap_or("")),
                    "an http:// or https:// URL (the collector's OTLP/HTTP base, e.g. http://127.0.0.1:4318)",
                ));
            }
        }
        let media = &self.media;
        if media.rtp_port_min == 0 || media.rtp_port_min > media.rtp_port_max {
            return Err(invalid(
                "media.rtp_port_min",
                format!("{}..={}", media.rtp_port_min, media.rtp_port_max),
                "a non-empty port range with rtp_port_min >= 1 and <= rtp_port_max",
            ));
        }
        if media.rtp_timeout_secs == 0 {
            return Err(invalid(
                "media.rtp_timeout_secs",
                "0".into(),
                "at least 1 second",
            ));
        }
        if let Err(error) = media.codec_choice() {
            let listed: Vec<&str> = media.codecs.iter().map(|c| c.name()).collect();
            return Err(invalid(
                "media.codecs",
                format!("{listed:?} ({error})"),
                "a non-empty list of distinct codecs among \"PCMA\", \"PCMU\"",
            ));
        }
        if media.srtp == crate::media::srtp::SrtpMode::Mandatory
            && !media.srtp_without_tls
            && !self
                .sip
                .transports
                .contains(&crate::sip::config::Transport::Tls)
        {
            return Err(invalid(
                "media.srtp",
                "\"mandatory\" without a TLS transport".into(),
                "sip.transports with \"tls\" (SDES keys travel only in encrypted SIP), \
                 or media.srtp_without_tls = true: no call could be answered",
            ));
        }
        if self.sip.max_calls == 0 {
            return Err(invalid("sip.max_calls", "0".into(), "at least 1"));
        }
        if self.sip.listen.ip().is_unspecified() && self.sip.public_address.is_none() {
            return Err(invalid(
                "sip.public_address",
                "unset".into(),
                "an address for Contact and SDP when sip.listen is a wildcard address",
            ));
        }
        if self.sip.answer_after_ms > 60_000 {
            return Err(invalid(
                "sip.answer_after_ms",
                self.sip.answer_after_ms.to_string(),
                "at most 60000 (a minute of ringing)",
            ));
        }
        if let Some(register) = &self.sip.register {
            let uri_ok = |u: &str| {
                (u.starts_with("sip:") || u.starts_with("sips:")) && u.len() > 4 && !u.contains(' ')
            };
            if !uri_ok(&register.registrar) {
                return Err(invalid(
                    "sip.register.registrar",
                    format!("{:?}", register.registrar),
                    "a SIP URI such as \"sip:pbx.example.com\"",
                ));
            }
            if let Some(proxy) = &register.outbound_proxy {
                if !uri_ok(proxy) {
                    return Err(invalid(
                        "sip.register.outbound_proxy",
                        format!("{proxy:?}"),
                        "a SIP URI such as \"sip:10.0.0.1:5060\"",
                    ));
                }
            }
            if register.username.is_empty() || register.username.contains(['@', ':', ' ']) {
                return Err(invalid(
                    "sip.register.username",
                    format!("{:?}", register.username),
                    "the extension's user name, without '@', ':' or spaces",
                ));
            }
            if !(10..=86_400).contains(&register.expires) {
                return Err(invalid(
                    "sip.register.expires",
                    register.expires.to_string(),
                    "between 10 and 86400 seconds",
                ));
            }
            if register.retry_min_secs == 0 || register.retry_min_secs > register.retry_max_secs {
                return Err(invalid(
                    "sip.register.retry_min_secs",
                    format!("{}..={}", register.retry_min_secs, register.retry_max_secs),
                    "at least 1 and at most retry_max_secs",
                ));
            }
        }
        if self.sip.transports.contains(&Transport::Tls) && self.sip.tls_listen() == self.sip.listen
        {
            return Err(invalid(
                "sip.tls.listen",
                self.sip.tls_listen().to_string(),
                "an address other than sip.listen (TCP and TLS cannot share a port)",
            ));
        }
        if self.sip.transports.is_empty() {
            return Err(invalid(
                "sip.transports",
                "[]".into(),
                "at least one of \"udp\", \"tcp\", \"tls\"",
            ));
        }
        for key in self.cache.phrases.keys() {
            if !is_phrase_key(key) {
                return Err(invalid(
                    "cache.phrases",
                    format!("{key:?}"),
                    "keys of lowercase letters, digits and '_' (they name files)",
                ));
            }
        }
        for (key, text) in &self.cache.phrases {
            if text.trim().is_empty() {
                return Err(invalid(
                    &format!("cache.phrases.{key}"),
                    "\"\"".into(),
                    "some text to say",
                ));
            }
        }
        if self.speech_enabled() {
            for key in self
                .hybrid
                .fillers
                .iter()
                .chain([&self.hybrid.fallback])
                .chain(self.hybrid.not_understood.as_ref())
            {
                if !self.cache.phrases.contains_key(key) {
                    return Err(invalid(
                        "hybrid",
                        format!("{key:?}"),
                        "a phrase key defined in [cache.phrases]",
                    ));
                }
            }
            // Free turns (listen, generate, speak) wait for every reply:
            // they need a filler. A TTS alone may go without (the wait is
            // then silence, as a timeline shows).
            let free_turns = self.llm.is_some() && self.tts.is_some() && self.stt.is_some();
            if free_turns && self.hybrid.fillers.is_empty() {
                return Err(invalid(
                    "hybrid.fillers",
                    "[]".into(),
                    "at least one filler phrase",
                ));
            }
        }
        let listen = &self.listen;
        if listen.end_of_turn_from_voice
            && (listen.finished_hangover_ms == 0
                || listen.finished_hangover_ms > listen.unfinished_hangover_ms
                || listen.unfinished_hangover_ms > 5000)
        {
            return Err(invalid(
                "listen.finished_hangover_ms",
                format!(
                    "{} (unfinished {})",
                    listen.finished_hangover_ms, listen.unfinished_hangover_ms
                ),
                "0 < finished_hangover_ms <= unfinished_hangover_ms <= 5000",
            ));
        }
        if let Some((field, value)) = self.call.no_input.bad_wait() {
            return Err(invalid(
                field,
                value.to_string(),
                "a number of seconds in (0, 3600]",
            ));
        }
        if self.call.no_input.escalation
            == Some(crate::conversation::config::NoInputEscalation::Transfer)
            && self.call.transfer_to.is_none()
        {
            return Err(invalid(
                "call.no_input.escalation",
                "\"transfer\"".into(),
                "\"callback\", or a [call] transfer_to to transfer to",
            ));
        }
        for (field, key) in self.call.phrase_keys() {
            if !self.cache.phrases.contains_key(key) {
                return Err(invalid(
                    &format!("call.{field}"),
                    format!("{key:?}"),
                    "a phrase key defined in [cache.phrases]",
                ));
            }
        }
        for (key, digit) in [
            ("call.hangup_digit", self.call.hangup_digit),
            ("call.transfer_digit", self.call.transfer_digit),
        ] {
            if crate::media::dtmf::event_to_digit_code(digit).is_none() {
                return Err(invalid(key, format!("{digit:?}"), "one of 0-9, *, #, A-D"));
            }
        }
        if self.call.transfer_digit == self.call.hangup_digit {
            return Err(invalid(
                "call.transfer_digit",
                format!("{:?}", self.call.transfer_digit),
                "a key other than call.hangup_digit",
            ));
        }
        self.validate_knowledge(origin)?;
        let cc = &self.store.country_code;
        if cc.is_empty()
            || cc.len() > 3
            || !cc.bytes().all(|b| b.is_ascii_digit())
            || cc.starts_with('0')
        {
            return Err(invalid(
                "store.country_code",
                format!("{cc:?}"),
                "the country calling code, 1 to 3 digits, e.g. \"33\"",
            ));
        }
        if self.operations.drain_secs > 3600 {
            return Err(invalid(
                "operations.drain_secs",
                self.operations.drain_secs.to_string(),
                "seconds calls may go on after SIGTERM, at most 3600",
            ));
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "store.url",
                scheme_only(&self.store.url),
                "sqlite://path/to/file.db or postgres://user@host/database",
            ));
        }
        for (key, days) in [
            ("retention.recordings_days", self.retention.recordings_days),
            (
                "retention.transcripts_days",
                self.retention.transcripts_days,
            ),
            ("retention.timelines_days", self.retention.timelines_days),
        ] {
            if days == Some(0) {
                return Err(invalid(key, "0".into(), "at least 1 day (absent: kept)"));
            }
        }
        if let Some(url) = &self.crm.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "crm.webhook_url",
                    scheme_only(url),
                    "an http:// or https:// URL",
                ));
            }
        }
        if self.crm.timeout_ms == 0
            || self.crm.timeout_ms as i64 * 2 >= crate::store::outbox::LEASE_MS
        {
            return Err(invalid(
                "crm.timeout_ms",
                self.crm.timeout_ms.to_string(),
                "1 to 29999 (an event is claimed for 60 s)",
            ));
        }
        if self.crm.retry_min_ms == 0 || self.crm.retry_min_ms > self.crm.retry_max_ms {
            return Err(invalid(
                "crm.retry_min_ms",
                format!("{}..{}", self.crm.retry_min_ms, self.crm.retry_max_ms),
                "1 <= retry_min_ms <= retry_max_ms",
            ));
        }
        if let Some(target) = &self.call.transfer_to {
            if !(target.starts_with("sip:")
                || target.starts_with("sips:")
                || target.starts_with("tel:"))
            {
                return Err(invalid(
                    "call.transfer_to",
                    format!("{target:?}"),
                    "a SIP or tel URI, e.g. \"sip:support@pbx.example.com\"",
                ));
            }
        }
        Ok(())
    }

    /// DTMF keys are upper case once loaded (`a` is the key the wire calls
    /// `A`), so every comparison of keys is a plain `==`.
    fn normalise_keys(&mut self) {
        let call = &mut self.call;
        let flow = &mut self.flow;
        for digit in [
            &mut call.hangup_digit,
            &mut call.transfer_digit,
            &mut flow.yes_digit,
            &mut flow.no_digit,
        ]
        .into_iter()
        .chain(self.problems.iter_mut().filter_map(|p| p.digit.as_mut()))
        {
            *digit = digit.to_ascii_uppercase();
        }
    }

    /// Hybrid speech (fillers, the fallback, turn-taking) runs as soon as
    /// any of `[stt]`, `[llm]`, `[tts]` is set; each adds what it can do
    /// (listen, classify and generate, speak).
    pub fn speech_enabled(&self) -> bool {
        self.llm.is_some() || self.tts.is_some() || self.stt.is_some()
    }

    /// Every phrase the guided flow says is in the cache; problem keys and
    /// menu keys are unique and clash with no other key.
    fn validate_knowledge(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, value: String, expected| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            value,
            expected,
        };
        if self.problems.is_empty() {
            return Ok(());
        }
        let phrases = &self.cache.phrases;
        let flow = &self.flow;
        for (key, phrase) in [
            ("flow.menu", &flow.menu),
            ("flow.problem_unknown", &flow.problem_unknown),
            ("flow.verify", &flow.verify),
            ("flow.reprompt", &flow.reprompt),
            ("flow.congratulations", &flow.congratulations),
            ("flow.congratulation_filler", &flow.congratulation_filler),
            ("flow.callback", &flow.callback),
        ] {
            if !phrases.contains_key(phrase) {
                return Err(invalid(
                    key.into(),
                    format!("{phrase:?}"),
                    "a phrase of [cache.phrases]",
                ));
            }
        }
        for (key, text) in [
            ("flow.known_greeting", &flow.known_greeting),
            (
                "flow.known_greeting_no_ticket",
                &flow.known_greeting_no_ticket,
            ),
            ("flow.congratulation_prompt", &flow.congratulation_prompt),
            ("flow.classifier_prompt", &flow.classifier_prompt),
        ] {
            if text.trim().is_empty() {
                return Err(invalid(
                    key.into(),
                    "\"\"".into(),
                    "a text (the guided flow needs it)",
                ));
            }
        }
        for (key, list) in [
            ("flow.positive", &flow.positive),
            ("flow.negative", &flow.negative),
            ("flow.agent", &flow.agent),
        ] {
            if list.iter().all(|w| w.trim().is_empty()) {
                return Err(invalid(
                    key.into(),
                    "[]".into(),
                    "at least one word or phrase",
                ));
            }
        }
        if flow.yes_digit == flow.no_digit {
            return Err(invalid(
                "flow.no_digit".into(),
                format!("{:?}", flow.no_digit),
                "a key other than yes_digit",
            ));
        }
        for (key, digit) in [
            ("flow.yes_digit", flow.yes_digit),
            ("flow.no_digit", flow.no_digit),
        ] {
            if crate::media::dtmf::event_to_digit_code(digit).is_none()
                || digit == self.call.hangup_digit
                || digit == self.call.transfer_digit
            {
                return Err(invalid(
                    key.into(),
                    format!("{digit:?}"),
                    "a DTMF key (0-9, *, #, A-D) other than the hang-up and transfer keys",
                ));
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        let mut digits = std::collections::BTreeSet::new();
        for (i, problem) in self.problems.iter().enumerate() {
            let at = |field: &str| format!("problems[{i}].{field}");
            if problem.key.trim().is_empty() || !keys.insert(problem.key.to_lowercase()) {
                return Err(invalid(
                    at("key"),
                    format!("{:?}", problem.key),
                    "a non-empty key, unique among the problems",
                ));
            }
            if problem.steps.is_empty() {
                return Err(invalid(
                    at("steps"),
                    "[]".into(),
                    "at least one fix step (a phrase key)",
                ));
            }
            if let Some(step) = problem.steps.iter().find(|s| !phrases.contains_key(*s)) {
                return Err(invalid(
                    at("steps"),
                    format!("{step:?}"),
                    "phrases of [cache.phrases]",
                ));
            }
            if let Some(digit) = problem.digit {
                if crate::media::dtmf::event_to_digit_code(digit).is_none()
                    || digit == self.call.hangup_digit
                    || digit == self.call.transfer_digit
                    || !digits.insert(digit)
                {
                    return Err(invalid(
                        at("digit"),
                        format!("{digit:?}"),
                        "a DTMF key unique among the problems, other than the hang-up and transfer keys",
                    ));
                }
            }
        }
        Ok(())
    }

    /// This instance's name in the store.
    pub fn instance(&self) -> String {
        self.store
            .instance
            .clone()
            .unwrap_or_else(|| format!("sav@{}", self.sip.listen))
    }
}

fn is_phrase_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A URL that may hold a secret, shown in an error by its scheme alone.
fn scheme_only(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("\"{scheme}://…\" (the rest not shown)"),
        None => "a value without a scheme (not shown: it may hold a secret)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::load(None).expect("embedded sav.toml is valid");
        assert_eq!(config.sip.listen, "127.0.0.1:5060".parse().unwrap());
        assert_eq!(config.sip.transports, vec![Transport::Udp, Transport::Tcp]);
        assert_eq!(
            (config.media.rtp_port_min, config.media.rtp_port_max),
            (20000, 20999)
        );
        assert_eq!(config.media.rtp_timeout_secs, 30);
        for key in [
            "greet",
            "welcome",
            "filler_hum",
            "filler_ok",
            "filler_one_moment",
            "filler_let_me_see",
        ] {
            assert!(config.cache.phrases.contains_key(key), "{key}");
        }
    }

    fn with(replace: &str, by: &str) -> Result<Config, ConfigError> {
        assert!(EMBEDDED_DEFAULT.contains(replace), "{replace}");
        Config::from_toml(
            &EMBEDDED_DEFAULT.replacen(replace, by, 1),
            "test",
            Path::new("."),
        )
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let err = with("rtp_port_min = 20000", "rtp_port_min = 30000").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("media.rtp_port_min") && text.contains("30000..=20999"),
            "{text}"
        );

        let err = with("goodbye = \"goodbye\"", "goodbye = \"ciao\"").unwrap_err();
        assert!(err.to_string().contains("\"ciao\""), "{err}");

        let err = with("listen = \"127.0.0.1:5060\"", "listen = \"nowhere\"").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("listen"), "{err}");

        let err = with("max_calls = 50", "max_calls = 50\nmax_callz = 3").unwrap_err();
        assert!(err.to_string().contains("max_callz"), "{err}");

        let err = with("hangup_digit = \"#\"", "hangup_digit = \"x\"").unwrap_err();
        assert!(err.to_string().contains("hangup_digit"), "{err}");

        let err = with(
            "[cache.phrases]\n",
            "[cache.phrases]\n\"../evil\" = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("../evil"), "{err}");
    }

    #[test]
    fn traces_are_off_by_default_and_need_an_http_endpoint() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.traces.traces_url(), None);
        let on = with(
            "show_caller_numbers = false\n",
            "show_caller_numbers = false\n[traces]\nendpoint = \"http://127.0.0.1:4318/\"\n",
        )
        .unwrap();
        assert_eq!(
            on.traces.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(on.traces.service_name, "sav");
        let err = with(
            "show_caller_numbers = false\n",
            "show_caller_numbers = false\n[traces]\nendpoint = \"grpc://user:pw@collector\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("traces.endpoint"), "{err}");
        assert!(
            !err.contains("pw@"),
            "the URL's credentials are not shown: {err}"
        );
    }

    #[test]
    fn mandatory_srtp_needs_tls_or_keys_allowed_in_clear() {
        let err = with("srtp = \"off\"", "srtp = \"mandatory\"").unwrap_err();
        assert!(
            err.to_string().contains("media.srtp") && err.to_string().contains("tls"),
            "{err}"
        );
        let allowed = with(
            "srtp = \"off\"\nsrtp_without_tls = false",
            "srtp = \"mandatory\"\nsrtp_without_tls = true",
        );
        assert!(allowed.is_ok(), "{:?}", allowed.err());
        let optional = with("srtp = \"off\"", "srtp = \"optional\"");
        assert!(optional.is_ok(), "{:?}", optional.err());
        let err = with("srtp = \"off\"", "srtp = \"sometimes\"").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn keys_are_upper_case_once_loaded_and_a_lower_case_key_answers_the_wire() {
        let config = with("hangup_digit = \"#\"", "hangup_digit = \"d\"").unwrap();
        assert_eq!(config.call.hangup_digit, 'D');
        // RFC 4733 and INFO give upper-case letters: `d` in the file hangs up.
        let mut call = crate::conversation::Conversation::new(config.call.clone());
        call.handle(crate::conversation::CallEvent::Established);
        let actions = call.handle(crate::conversation::CallEvent::Dtmf('D'));
        assert!(
            actions.contains(&crate::conversation::CallAction::Play("goodbye".into())),
            "{actions:?}"
        );
        // Keys that differ only in case are the same key.
        let text = EMBEDDED_DEFAULT
            .replacen("hangup_digit = \"#\"", "hangup_digit = \"d\"", 1)
            .replacen("transfer_digit = \"0\"", "transfer_digit = \"D\"", 1);
        let err = Config::from_toml(&text, "test", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("call.transfer_digit"), "{err}");
    }

    #[test]
    fn any_one_provider_turns_speech_on_and_its_phrases_are_checked() {
        let tts_only = "\n[tts]\nbase_url = \"http://127.0.0.1:9\"\nvoice_id = \"v\"\n";
        let config = Config::from_toml(
            &format!("{EMBEDDED_DEFAULT}{tts_only}"),
            "test",
            Path::new("."),
        )
        .unwrap();
        assert!(config.speech_enabled());
        let text = EMBEDDED_DEFAULT.replacen("fallback = \"sorry\"", "fallback = \"sorri\"", 1);
        assert!(text != EMBEDDED_DEFAULT, "sav.toml sets [hybrid] fallback");
        let err =
            Config::from_toml(&format!("{text}{tts_only}"), "test", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("\"sorri\""), "{err}");
        assert!(!Config::load(None).unwrap().speech_enabled());
    }

    #[test]
    fn a_typo_in_greeting_dtmf_is_refused_at_start() {
        let err = with(
            "greeting_dtmf = [\"greet\", \"menu\"]",
            "greeting_dtmf = [\"greet\", \"mneu\"]",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("call.greeting_dtmf") && text.contains("\"mneu\""),
            "{text}"
        );
    }

    #[test]
    fn allow_takes_cidrs_and_addresses() {
        let config = with(
            "allow = []",
            "allow = [\"10.1.2.0/24\", \"192.0.2.7\", \"2001:db8::/32\"]",
        )
        .unwrap();
        let allowed = |ip: &str| {
            config
                .sip
                .allow
                .iter()
                .any(|a| a.contains(ip.parse().unwrap()))
        };
        assert!(allowed("10.1.2.200"));
        assert!(!allowed("10.1.3.1"));
        assert!(allowed("192.0.2.7"));
        assert!(!allowed("192.0.2.8"));
        assert!(allowed("2001:db8::1"));
        assert!(allowed("::ffff:10.1.2.3"), "IPv4-mapped IPv6");
        let err = with("allow = []", "allow = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn relative_cache_dir_follows_the_config_file() {
        let config = Config::from_toml(EMBEDDED_DEFAULT, "t", Path::new("/etc/sav")).unwrap();
        assert_eq!(config.cache.dir, Path::new("/etc/sav/cache"));
    }

    #[test]
    fn secrets_come_from_files_beside_the_config_or_from_the_environment() {
        let base = std::env::temp_dir().join(format!("sav-config-secrets-{}", std::process::id()));
        std::fs::create_dir_all(base.join("credentials")).unwrap();
        std::fs::write(
            base.join("credentials/store-url"),
            "postgres://sav:s3cret@db/sav\n",
        )
        .unwrap();
        std::fs::write(base.join("credentials/webhook-key"), "whsec_1\n").unwrap();
        let text = EMBEDDED_DEFAULT.replace(
            "url = \"sqlite://sav.db\"",
            "url = \"sqlite://sav.db\"\nurl_file = \"credentials/store-url\"",
        ) + "\n[crm]\nwebhook_url_file = \"credentials/hook\"\nsigning_secret_file = \"credentials/webhook-key\"\n";
        std::fs::write(base.join("credentials/hook"), "https://crm/h?token=t0k\n").unwrap();
        let config = Config::from_toml(&text, "t", &base).unwrap();
        assert_eq!(config.store.url, "postgres://sav:s3cret@db/sav");
        assert_eq!(config.crm.signing_secret.as_deref(), Some("whsec_1"));
        assert_eq!(
            config.crm.webhook_url.as_deref(),
            Some("https://crm/h?token=t0k")
        );
        // A URL of the wrong kind is refused without showing it.
        std::fs::write(base.join("credentials/hook"), "crm/h?token=t0k").unwrap();
        let error = Config::from_toml(&text, "t", &base)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("crm.webhook_url") && !error.contains("t0k"),
            "{error}"
        );
        // A variable that is not set is an error naming the key and the variable.
        let unset = text.replace(
            "webhook_url_file = \"credentials/hook\"",
            "webhook_url_env = \"SAV_TEST_UNSET_HOOK\"",
        );
        let error = Config::from_toml(&unset, "t", &base)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("crm.webhook_url_env") && error.contains("SAV_TEST_UNSET_HOOK"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
