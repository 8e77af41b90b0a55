//! Our Contact URI, formatted one way for dialogs, REGISTER and `sav call`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use crate::sip::config::SipConfig;

/// Where we are reachable for SIP, as last learned from the registrar
/// (rport/received); `None` means "as configured".
pub type LearnedAddress = Arc<RwLock<Option<SocketAddr>>>;

/// `sip:user@host:port` with `;transport=…` when `transport_param` is not
/// empty (IPv6 hosts in brackets, RFC 3261 §19.1.1).
pub fn format(user: &str, addr: SocketAddr, transport_param: &str) -> String {
    let host = match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    format!("sip:{user}@{host}{transport_param}")
}

/// The user part of our Contact: the extension when registering, else `sav`.
pub fn user(sip: &SipConfig) -> &str {
    sip.register
        .as_ref()
        .map(|r| r.username.as_str())
        .unwrap_or("sav")
}

/// Our Contact URI for dialogs on `transport`: the same user and address as
/// in REGISTER (on UDP, what the registrar saw of us, RFC 3581).
pub fn for_dialog(
    sip: &SipConfig,
    learned: &LearnedAddress,
    transport: rsipstack::sip::Transport,
) -> String {
    let ip = sip.advertised_ip();
    let addr = match transport {
        rsipstack::sip::Transport::Tls => SocketAddr::new(ip, sip.tls_listen().port()),
        rsipstack::sip::Transport::Udp => {
            let configured = SocketAddr::new(ip, sip.listen.port());
            learned.read().ok().and_then(|a| *a).unwrap_or(configured)
        }
        _ => SocketAddr::new(ip, sip.listen.port()),
    };
    format(user(sip), addr, &transport_param(transport))
}

/// The URI parameter that names `transport` in our Contact (none for UDP,
/// the default).
pub fn transport_param(transport: rsipstack::sip::Transport) -> String {
    match transport {
        rsipstack::sip::Transport::Udp => String::new(),
        other => format!(";transport={}", other.to_string().to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_and_transport_follows() {
        let v6: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert_eq!(format("sav", v6, ""), "sip:sav@[2001:db8::1]:5060");
        let v4: SocketAddr = "192.0.2.7:5061".parse().unwrap();
        assert_eq!(
            format("201", v4, ";transport=tls"),
            "sip:201@192.0.2.7:5061;transport=tls"
        );
    }
}
