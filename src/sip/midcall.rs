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

/// What a request says about session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimer {
    /// No Session-Expires: no timer.
    None,
    /// The caller asks for this interval (seconds); it refreshes (we answer
    /// `refresher=uac`).
    Interval(u32),
    /// The interval is below our Min-SE: answer 422 with `Min-SE: 90`.
    TooSmall(u32),
}

/// Reads `Session-Expires` (or its compact form `x`) and `Min-SE`.
pub fn session_timer(session_expires: Option<&str>, min_se: Option<&str>) -> SessionTimer {
    let Some(value) = session_expires else {
        return SessionTimer::None;
    };
    let Some(interval) = value
        .split(';')
        .next()
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return SessionTimer::None;
    };
    let their_min = min_se
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if interval < MIN_SE {
        return SessionTimer::TooSmall(interval);
    }
    SessionTimer::Interval(interval.max(their_min))
}

/// The header values of our 2xx for a session-timer interval (RFC 4028 §9):
/// `Session-Expires: N;refresher=uac` and `Require: timer`.
pub fn session_timer_headers(interval: u32) -> [(&'static str, String); 2] {
    [
        ("Session-Expires", format!("{interval};refresher=uac")),
        ("Require", "timer".to_string()),
    ]
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

    #[test]
    fn session_expires_and_min_se() {
        assert_eq!(session_timer(None, None), SessionTimer::None);
        assert_eq!(
            session_timer(Some("1800;refresher=uac"), None),
            SessionTimer::Interval(1800)
        );
        assert_eq!(
            session_timer(Some("600"), Some("900")),
            SessionTimer::Interval(900)
        );
        assert_eq!(session_timer(Some("30"), None), SessionTimer::TooSmall(30));
        assert_eq!(session_timer(Some("soon"), None), SessionTimer::None);
        let h = session_timer_headers(1800);
        assert_eq!(h[0], ("Session-Expires", "1800;refresher=uac".to_string()));
        assert_eq!(h[1].1, "timer");
    }

    #[test]
    fn expiry_leaves_a_margin() {
        let t = Instant::now();
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
