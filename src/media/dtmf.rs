//! RFC 4733 telephone-events → DTMF digits (sans-IO).
//!
//! A key press arrives as a run of RTP packets sharing one timestamp (the
//! event's start, RFC 4733 §2.5.1.2), the last three with the E bit set. The
//! digit is reported once, on the first packet of the event, so the bot can
//! react before the key is released; retransmitted end packets and reordered
//! packets of an event already reported are ignored.

/// One RFC 4733 event payload is 4 bytes (§2.3).
const EVENT_PAYLOAD_LEN: usize = 4;

/// A decoded key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// RTP timestamp of the event's start.
    pub timestamp: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DtmfError {
    #[error("telephone-event payload of {0} bytes, expected at least {EVENT_PAYLOAD_LEN}")]
    Truncated(usize),
}

/// Maps an RFC 4733 §3.2 event code to its DTMF key.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The RFC 4733 event code of a DTMF key (the inverse of [`event_to_digit`]).
pub fn event_to_digit_code(digit: char) -> Option<u8> {
    (0..=15).find(|&code| event_to_digit(code) == Some(digit.to_ascii_uppercase()))
}

/// Per-stream decoder state.
#[derive(Debug, Default)]
pub struct DtmfDecoder {
    /// Timestamp of the last event reported.
    last_reported: Option<u32>,
}

impl DtmfDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet; returns the digit if this packet
    /// starts a new key press. Non-DTMF events (flash, tones) are ignored.
    pub fn handle_packet(
        &mut self,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<DtmfDigit>, DtmfError> {
        if payload.len() < EVENT_PAYLOAD_LEN {
            return Err(DtmfError::Truncated(payload.len()));
        }
        let Some(digit) = event_to_digit(payload[0]) else {
            return Ok(None);
        };
        if self.last_reported == Some(timestamp) {
            return Ok(None);
        }
        self.last_reported = Some(timestamp);
        Ok(Some(DtmfDigit { digit, timestamp }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn maps_every_dtmf_event() {
        let keys: String = (0..=15).filter_map(event_to_digit).collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(event_to_digit(16), None, "flash is not a digit");
        assert_eq!(event_to_digit_code('#'), Some(11));
        assert_eq!(event_to_digit_code('d'), Some(15));
        assert_eq!(event_to_digit_code('x'), None);
    }

    #[test]
    fn one_digit_per_key_press_including_end_retransmissions() {
        let mut d = DtmfDecoder::new();
        let ts = 48_000;
        let mut digits = Vec::new();
        for (end, dur) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ] {
            if let Some(digit) = d.handle_packet(ts, &payload(11, end, dur)).unwrap() {
                digits.push(digit.digit);
            }
        }
        assert_eq!(digits, vec!['#']);
        // The same key again is a new event with a new timestamp.
        let again = d
            .handle_packet(ts + 1600, &payload(11, false, 160))
            .unwrap();
        assert_eq!(again.map(|x| x.digit), Some('#'));
    }

    #[test]
    fn truncated_payload_is_an_error_not_a_panic() {
        let mut d = DtmfDecoder::new();
        assert_eq!(
            d.handle_packet(0, &[11, 0x80]),
            Err(DtmfError::Truncated(2))
        );
        assert_eq!(d.handle_packet(0, &[]), Err(DtmfError::Truncated(0)));
    }

    #[test]
    fn non_dtmf_events_are_ignored() {
        let mut d = DtmfDecoder::new();
        assert_eq!(d.handle_packet(0, &payload(16, false, 160)), Ok(None));
    }
}
