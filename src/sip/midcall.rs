//! Mid-call signalling that is ours to implement (pure functions): session
//! timers (RFC 4028) and DTMF carried in INFO (`application/dtmf-relay`,
//! `application/dtmf`).

use std::time::{Duration, Instant};

/// Every value of a header, comma lists split, over all its occurrences
/// (RFC 3261 §7.3.1: several headers equal one comma-separated list).
pub fn header_tokens(request: &rsipstack::sip::Request, names: &[&str]) -> Vec<String> {
    request
        .headers
        .iter()
        .filter(|h| names.iter().any(|n| h.name().eq_ignore_ascii_case(n)))
        .flat_map(|h| {
            h.value()
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Smallest session interval we accept (RFC 4028 §4: Min-SE default 90 s).
pub const MIN_SE: u32 = 90;

/// Who refreshes the session (RFC 4028 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller sends the refreshes; we BYE when one does not come.
    Uac,
    /// We send the refreshes (re-INVITE or UPDATE at half the interval).
    Uas,
}

/// The session timer agreed for a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub interval: u32,
    pub refresher: Refresher,
    /// The caller supports the extension: our 2xx may `Require: timer`.
    pub uac_supports: bool,
}

/// What a request says about session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimer {
    /// No Session-Expires: no timer.
    None,
    /// The interval is below our Min-SE: answer 422 with `Min-SE: 90`.
    TooSmall(u32),
    Active(Negotiated),
}

/// Reads a request's session-timer headers (RFC 4028 §9): Session-Expires
/// (compact `x`) with its refresher, Min-SE, and whether `timer` is in
/// Supported (compact `k`) or Require.
pub fn session_timer(request: &rsipstack::sip::Request) -> SessionTimer {
    let expires = header_tokens(request, &["Session-Expires", "x"]);
    let Some(value) = expires.first() else {
        return SessionTimer::None;
    };
    let mut params = value.split(';');
    let Some(interval) = params.next().and_then(|v| v.trim().parse::<u32>().ok()) else {
        return SessionTimer::None;
    };
    let asked_refresher = params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    let their_min = header_tokens(request, &["Min-SE"])
        .first()
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if interval < MIN_SE {
        return SessionTimer::TooSmall(interval);
    }
    let uac_supports = header_tokens(request, &["Supported", "k", "Require"])
        .iter()
        .any(|t| t.eq_ignore_ascii_case("timer"));
    // A caller without the extension cannot refresh: we do. One that asked
    // for a refresher gets it; otherwise the caller refreshes.
    let refresher = if !uac_supports || asked_refresher.as_deref() == Some("uas") {
        Refresher::Uas
    } else {
        Refresher::Uac
    };
    SessionTimer::Active(Negotiated {
        interval: interval.max(their_min),
        refresher,
        uac_supports,
    })
}

/// The headers of our 2xx (RFC 4028 §9): `Session-Expires: N;refresher=…`,
/// and `Require: timer` only to a caller that supports it.
pub fn session_timer_headers(timer: &Negotiated) -> Vec<(&'static str, String)> {
    let refresher = match timer.refresher {
        Refresher::Uac => "uac",
        Refresher::Uas => "uas",
    };
    let mut headers = vec![(
        "Session-Expires",
        format!("{};refresher={refresher}", timer.interval),
    )];
    if timer.uac_supports {
        headers.push(("Require", "timer".to_string()));
    }
    headers
}

/// When we send our refresh, as the refresher: half the interval (§7.4).
pub fn refresh_at(now: Instant, interval: u32) -> Instant {
    now + Duration::from_secs(u64::from(interval)) / 2
}

/// When to give up on a refresh that has not come: the interval minus the
/// smaller of 32 s and a third of it (RFC 4028 §10), after which we BYE.
pub fn expiry(now: Instant, interval: u32) -> Instant {
    let interval = Duration::from_secs(u64::from(interval));
    now + interval - (interval / 3).min(Duration::from_secs(32))
}

/// The key of a DTMF INFO body, by its Content-Type.
pub fn info_dtmf(content_type: &str, body: &[u8]) -> Result<Option<char>, InfoError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|_| InfoError::Malformed)?;
    let signal = match media_type.as_str() {
        // "Signal=5\r\nDuration=160\r\n"
        "application/dtmf-relay" => text
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("signal")
                    .then(|| value.trim())
            })
            .ok_or(InfoError::Malformed)?,
        // "5"
        "application/dtmf" => text.trim(),
        _ => return Err(InfoError::UnsupportedType(media_type)),
    };
    let mut chars = signal.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if crate::media::dtmf::event_to_digit_code(c).is_some() => {
            Ok(Some(c.to_ascii_uppercase()))
        }
        // RFC 4733 event numbers for * and # ("10", "11") in some stacks.
        _ => match signal.parse::<u8>() {
            Ok(code) => Ok(crate::media::dtmf::event_to_digit(code)),
            Err(_) => Err(InfoError::Malformed),
        },
    }
}

/// How long a blind transfer may take to report success or failure.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(32);

/// The status code of a `message/sipfrag` NOTIFY body (RFC 3515 §2.4.5):
/// its first line, `SIP/2.0 200 OK`.
pub fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split_whitespace();
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|code| (100..700).contains(code))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum InfoError {
    #[error("INFO body type {0} is not DTMF")]
    UnsupportedType(String),
    #[error("INFO DTMF body is malformed")]
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[&str]) -> rsipstack::sip::Request {
        let mut text = String::from("INVITE sip:sav@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:sav@127.0.0.1>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n");
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        match rsipstack::sip::SipMessage::try_from(text.as_str()).unwrap() {
            rsipstack::sip::SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn session_timer_negotiation_follows_rfc4028_section_9() {
        assert_eq!(session_timer(&request(&[])), SessionTimer::None);
        let active = |h: &[&str]| match session_timer(&request(h)) {
            SessionTimer::Active(n) => n,
            other => panic!("{other:?}"),
        };
        // Supported, no refresher asked: the caller refreshes.
        let n = active(&["Supported: timer", "Session-Expires: 1800"]);
        assert_eq!(
            (n.interval, n.refresher, n.uac_supports),
            (1800, Refresher::Uac, true)
        );
        assert_eq!(
            session_timer_headers(&n),
            vec![
                ("Session-Expires", "1800;refresher=uac".to_string()),
                ("Require", "timer".to_string())
            ]
        );
        // The caller asked us to refresh.
        assert_eq!(
            active(&["Supported: timer", "Session-Expires: 600;refresher=uas"]).refresher,
            Refresher::Uas
        );
        // No Supported: timer (a proxy put Session-Expires in): we refresh, no Require.
        let n = active(&["Session-Expires: 90"]);
        assert_eq!((n.refresher, n.uac_supports), (Refresher::Uas, false));
        assert_eq!(
            session_timer_headers(&n),
            vec![("Session-Expires", "90;refresher=uas".to_string())]
        );
        // Compact forms, Min-SE, several Supported headers.
        let n = active(&["k: 100rel", "k: timer", "x: 600", "Min-SE: 900"]);
        assert_eq!((n.interval, n.refresher), (900, Refresher::Uac));
        assert_eq!(
            session_timer(&request(&["Session-Expires: 30"])),
            SessionTimer::TooSmall(30)
        );
        assert_eq!(
            session_timer(&request(&["Session-Expires: soon"])),
            SessionTimer::None
        );
    }

    #[test]
    fn expiry_leaves_a_margin() {
        let t = Instant::now();
        assert_eq!(refresh_at(t, 90) - t, Duration::from_secs(45));
        assert_eq!(expiry(t, 90) - t, Duration::from_secs(60));
        assert_eq!(expiry(t, 1800) - t, Duration::from_secs(1768));
    }

    #[test]
    fn sipfrag_status_line() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"\r\nSIP/2.0 100 Trying"), Some(100));
        assert_eq!(
            sipfrag_status(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n"),
            Some(486)
        );
        assert_eq!(sipfrag_status(b"SIP/2.0 9999 Odd"), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn dtmf_in_info() {
        assert_eq!(
            info_dtmf("application/dtmf-relay", b"Signal=#\r\nDuration=160\r\n"),
            Ok(Some('#'))
        );
        assert_eq!(
            info_dtmf("Application/DTMF-Relay; x=y", b"signal= 5\nduration=100"),
            Ok(Some('5'))
        );
        assert_eq!(info_dtmf("application/dtmf", b"*"), Ok(Some('*')));
        assert_eq!(
            info_dtmf("application/dtmf-relay", b"Signal=11\r\n"),
            Ok(Some('#'))
        );
        assert_eq!(
            info_dtmf("application/dtmf-relay", b"Duration=160"),
            Err(InfoError::Malformed)
        );
        assert_eq!(
            info_dtmf("application/dtmf", b"xy"),
            Err(InfoError::Malformed)
        );
        assert_eq!(
            info_dtmf("application/dtmf", &[0xff]),
            Err(InfoError::Malformed)
        );
        assert!(matches!(
            info_dtmf("text/plain", b"5"),
            Err(InfoError::UnsupportedType(_))
        ));
    }
}
