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
    /// Name of the environment variable that holds the password.
    pub password_env: String,
    #[serde(default = "default_register_expires")]
    pub expires: u32,
    /// Send REGISTERs to this proxy (`sip:host:port`) instead of the registrar.
    pub outbound_proxy: Option<String>,
    #[serde(default = "default_retry_min")]
    pub retry_min_secs: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
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
