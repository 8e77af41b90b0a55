//! `[sip]`: listeners, transports, admission, TLS and registration settings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS (`sips:`, `transport=tls`) on `[sip.tls] listen`.
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: SocketAddr,
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    pub public_address: Option<IpAddr>,
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// Ring this long (180 Ringing) before answering.
    #[serde(default)]
    pub answer_after_ms: u64,
    /// When not empty, only these sources (CIDRs or addresses) may call;
    /// others get 403 Forbidden.
    #[serde(default)]
    pub allow: Vec<AllowedSource>,
    /// TLS listener settings, used when `transports` has "tls".
    #[serde(default)]
    pub tls: TlsConfig,
    /// Register as an extension on a PBX; absent for trunk mode.
    pub register: Option<RegisterConfig>,
    /// Who may knock, and how often.
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// The users (Request-URI user parts) sav answers INVITEs for; empty:
    /// any (a trunk's numbers). The registered extension is always one.
    #[serde(default)]
    pub users: Vec<String>,
    /// Idle TCP/TLS connections are closed after this long without a byte.
    #[serde(default = "default_tcp_idle_secs")]
    pub tcp_idle_secs: u64,
}

/// What a refused request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalAnswer {
    /// Nothing: the request is dropped (a scanner learns nothing, and is
    /// not sent a retransmitted response).
    Silence,
    /// 403 Forbidden.
    Forbidden,
    /// 404 Not Found.
    NotFound,
}

/// Who is answered OPTIONS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionsPolicy {
    /// Anyone whose packets are admitted (a load balancer's probe).
    Everyone,
    /// Only trusted sources; others get silence.
    Trusted,
}

/// `[sip.admission]`: the limits in front of the SIP stack. Trusted sources
/// (these and `[sip] allow`'s) pass without them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Sources exempt from every limit: the PBX, the trunk's proxies.
    #[serde(default)]
    pub trusted: Vec<AllowedSource>,
    /// Datagrams and new connections a second from one source, and the
    /// burst allowed above that rate.
    #[serde(default = "default_source_rate")]
    pub source_rate: f64,
    #[serde(default = "default_source_burst")]
    pub source_burst: u32,
    /// New INVITEs a second from one source, and their burst.
    #[serde(default = "default_invite_rate")]
    pub invite_rate: f64,
    #[serde(default = "default_invite_burst")]
    pub invite_burst: u32,
    /// Calls one untrusted source may hold at once (ringing, waiting for
    /// its ACK or up).
    #[serde(default = "default_calls_per_source")]
    pub calls_per_source: u32,
    /// Datagrams and connections a second from every untrusted source
    /// together, and their burst.
    #[serde(default = "default_global_rate")]
    pub global_rate: f64,
    #[serde(default = "default_global_burst")]
    pub global_burst: u32,
    /// Refusals (within a minute of each other) after which a source is
    /// banned; 0: never.
    #[serde(default = "default_ban_after")]
    pub ban_after: u32,
    /// How long a ban lasts; 0: no bans.
    #[serde(default = "default_ban_secs")]
    pub ban_secs: u64,
    /// User agents of known scanners (case-insensitive substrings): banned
    /// at their first request.
    #[serde(default = "default_scanner_agents")]
    pub scanner_agents: Vec<String>,
    /// What a scanner, a source over its limits and an INVITE for a user
    /// that is not ours get.
    #[serde(default = "default_refusal_answer")]
    pub refusal_answer: RefusalAnswer,
    /// Who is answered OPTIONS.
    #[serde(default = "default_options_policy")]
    pub options: OptionsPolicy,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            source_rate: default_source_rate(),
            source_burst: default_source_burst(),
            invite_rate: default_invite_rate(),
            invite_burst: default_invite_burst(),
            calls_per_source: default_calls_per_source(),
            global_rate: default_global_rate(),
            global_burst: default_global_burst(),
            ban_after: default_ban_after(),
            ban_secs: default_ban_secs(),
            scanner_agents: default_scanner_agents(),
            refusal_answer: default_refusal_answer(),
            options: default_options_policy(),
        }
    }
}

fn default_source_rate() -> f64 {
    20.0
}
fn default_source_burst() -> u32 {
    60
}
fn default_invite_rate() -> f64 {
    2.0
}
fn default_invite_burst() -> u32 {
    10
}
fn default_calls_per_source() -> u32 {
    10
}
fn default_global_rate() -> f64 {
    2_000.0
}
fn default_global_burst() -> u32 {
    4_000
}
fn default_ban_after() -> u32 {
    200
}
fn default_ban_secs() -> u64 {
    600
}
fn default_scanner_agents() -> Vec<String> {
    [
        "friendly-scanner",
        "sipvicious",
        "sipcli/",
        "sip-scan",
        "sipscan",
        "iWar",
        "sundayddr",
        "VaxSIPUserAgent",
        "pplsip",
    ]
    .map(String::from)
    .to_vec()
}
fn default_refusal_answer() -> RefusalAnswer {
    RefusalAnswer::Silence
}
fn default_options_policy() -> OptionsPolicy {
    OptionsPolicy::Everyone
}
/// Above the refresh of a registration over TCP/TLS at the default expiry
/// (85 % of 300 s): our own flow to the registrar stays open.
fn default_tcp_idle_secs() -> u64 {
    300
}

/// `[sip.tls]`: where SIP over TLS listens and with which certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Defaults to the SIP listen address with port + 1 (5061 by default).
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain, leaf first. Relative to the config file.
    #[serde(default = "default_tls_cert")]
    pub cert: PathBuf,
    /// PEM private key, PKCS#8 (or PKCS#1 RSA). Relative to the config file.
    #[serde(default = "default_tls_key")]
    pub key: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            cert: default_tls_cert(),
            key: default_tls_key(),
        }
    }
}

fn default_tls_cert() -> PathBuf {
    PathBuf::from("certs/sav.crt")
}

fn default_tls_key() -> PathBuf {
    PathBuf::from("certs/sav.key")
}

/// One entry of `[sip] allow`: `10.0.0.0/8`, `2001:db8::/32` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSource(pub ipnet::IpNet);

impl AllowedSource {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 caller may show up as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl<'de> Deserialize<'de> for AllowedSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Self(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|ip| Self(ipnet::IpNet::from(ip)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an address or CIDR (expected e.g. \"10.0.0.0/8\" or \"192.0.2.7\")"
                ))
            })
    }
}

/// `[sip.register]`: the extension's account on the PBX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Request-URI of the REGISTER, e.g. `sip:pbx.example.com`; its host is
    /// the domain of our address of record.
    pub registrar: String,
    /// The extension: user part of the address of record and of Contact.
    pub username: String,
    /// Digest username, when it differs from `username`.
    pub auth_username: Option<String>,
    /// Name of the environment variable that holds the password…
    #[serde(default)]
    pub password_env: Option<String>,
    /// …or a file that holds it (a container secret, a systemd credential).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default = "default_register_expires")]
    pub expires: u32,
    /// Send REGISTERs to this proxy (`sip:host:port`) instead of the registrar.
    pub outbound_proxy: Option<String>,
    #[serde(default = "default_retry_min")]
    pub retry_min_secs: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
}

impl RegisterConfig {
    /// The extension's password, from `password_env` or `password_file`
    /// (one of them is required).
    pub fn password(&self) -> Result<String, crate::secret::SecretError> {
        crate::secret::read(
            "sip.register.password",
            self.password_env.as_deref(),
            self.password_file.as_deref(),
        )?
        .ok_or_else(|| crate::secret::SecretError::Missing {
            key: "sip.register.password".into(),
        })
    }
}

fn default_transports() -> Vec<Transport> {
    vec![Transport::Udp, Transport::Tcp]
}

/// No version: what a scanner reads must not say which flaws we have.
fn default_user_agent() -> String {
    "sav".to_string()
}

fn default_max_calls() -> usize {
    50
}

fn default_register_expires() -> u32 {
    300
}

fn default_retry_min() -> u64 {
    2
}

fn default_retry_max() -> u64 {
    300
}

impl SipConfig {
    /// Where SIP over TLS listens.
    pub fn tls_listen(&self) -> SocketAddr {
        self.tls.listen.unwrap_or_else(|| {
            SocketAddr::new(self.listen.ip(), self.listen.port().saturating_add(1))
        })
    }

    /// The address we write into Contact and SDP.
    pub fn advertised_ip(&self) -> IpAddr {
        self.public_address.unwrap_or_else(|| self.listen.ip())
    }
}
