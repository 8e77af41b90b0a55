//! RFC 4733 telephone-events ↔ DTMF digits (sans-IO): the decoder of the
//! caller's key presses, and [`KeyPress`], the packets of one press we send
//! (`sav call --dtmf`).
//!
//! A key press arrives as a run of RTP packets sharing one timestamp (the
//! event's start, RFC 4733 §2.5.1.2), the last three with the E bit set. The
//! digit is reported once, on the first packet of the event, so the bot can
//! react before the key is released. Packets of an event already seen, and
//! late or reordered packets of older events (a timestamp not newer than the
//! last event's, in serial arithmetic), are ignored; so is an event starting
//! less than [`MIN_EVENT_SPACING`] after the previous one, which no keypad can
//! produce but a flood can.

/// One RFC 4733 event payload is 4 bytes (§2.3).
const EVENT_PAYLOAD_LEN: usize = 4;

/// Shortest spacing between two key presses we accept: 40 ms (ITU-T Q.24
/// needs at least 40 ms of tone and 40 ms of pause), here at 8 kHz; the
/// decoder scales it to the stream's clock.
pub const MIN_EVENT_SPACING: u32 = 320;

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
    /// RTP clock ticks per 8 kHz sample (0 until set means 1; 6 at 48 kHz).
    ticks_per_sample: u32,
}

impl DtmfDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The events' clock runs at `rate` Hz (the audio's: 48 kHz beside
    /// Opus).
    pub fn set_clock_rate(&mut self, rate: u32) {
        self.ticks_per_sample = (rate / 8000).max(1);
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
        if let Some(last) = self.last_reported {
            // Serial-number arithmetic (RFC 1982): not newer means old.
            let age = timestamp.wrapping_sub(last) as i32;
            let spacing = MIN_EVENT_SPACING * self.ticks_per_sample.max(1);
            if age < spacing as i32 {
                return Ok(None);
            }
        }
        self.last_reported = Some(timestamp);
        Ok(Some(DtmfDigit { digit, timestamp }))
    }
}

/// Frames of one key press we send: 100 ms of tone (ITU-T Q.24 asks 40
/// at least; phones send 80 to 160).
pub const PRESS_FRAMES: u32 = 5;

/// The end packet is sent this many times (RFC 4733 §2.5.1.4).
const END_PACKETS: u32 = 3;

/// The power level we say the tone has: -10 dBm0 (§2.3.4).
const VOLUME: u8 = 10;

/// One key press being sent: one telephone-event packet per 20 ms frame,
/// in place of that frame's audio, all with the timestamp of the press's
/// first frame (§2.5.1.2), the first marked, the duration growing by a
/// frame each time, the last sent [`END_PACKETS`] times with the E bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPress {
    event: u8,
    payload_type: u8,
    start: Option<u32>,
    sent: u32,
}

/// A telephone-event packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    pub payload: [u8; EVENT_PAYLOAD_LEN],
    pub payload_type: u8,
    pub timestamp: u32,
    pub marker: bool,
}

impl KeyPress {
    /// `digit` (`0`-`9`, `*`, `#`, `A`-`D`) sent with `payload_type` (the
    /// peer's telephone-event); `None` for anything else.
    pub fn new(digit: char, payload_type: u8) -> Option<Self> {
        Some(Self {
            event: event_to_digit_code(digit)?,
            payload_type,
            start: None,
            sent: 0,
        })
    }

    /// The packet for the frame at `timestamp` (`step` ticks a frame);
    /// `None` once the press is over.
    pub fn next_packet(&mut self, timestamp: u32, step: u32) -> Option<EventPacket> {
        if self.sent >= PRESS_FRAMES + END_PACKETS - 1 {
            return None;
        }
        let start = *self.start.get_or_insert(timestamp);
        let n = self.sent;
        self.sent += 1;
        let end = n + 1 >= PRESS_FRAMES;
        let duration = ((n + 1).min(PRESS_FRAMES) * step).min(u32::from(u16::MAX)) as u16;
        let [high, low] = duration.to_be_bytes();
        Some(EventPacket {
            payload: [self.event, u8::from(end) << 7 | VOLUME, high, low],
            payload_type: self.payload_type,
            timestamp: start,
            marker: n == 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_press_we_send_is_one_digit_to_the_decoder_at_every_clock_rate() {
        for step in [160u32, 960] {
            let mut decoder = DtmfDecoder::new();
            decoder.set_clock_rate(step * 50);
            let mut digits = Vec::new();
            let mut packets = Vec::new();
            for (n, key) in ['1', '#', '1'].into_iter().enumerate() {
                let mut press = KeyPress::new(key, 101).unwrap();
                // Each press 0.5 s after the last (frame numbers 25 apart).
                let mut frame = 1000 + 25 * n as u32;
                while let Some(packet) = press.next_packet(frame * step, step) {
                    if let Some(d) = decoder
                        .handle_packet(packet.timestamp, &packet.payload)
                        .unwrap()
                    {
                        digits.push(d.digit);
                    }
                    packets.push(packet);
                    frame += 1;
                }
            }
            assert_eq!(digits, ['1', '#', '1']);
            let first: Vec<EventPacket> = packets[..7].to_vec();
            assert!(first
                .iter()
                .all(|p| p.timestamp == 1000 * step && p.payload_type == 101));
            assert_eq!(
                first.iter().map(|p| p.marker).collect::<Vec<_>>(),
                [true, false, false, false, false, false, false]
            );
            let ends: Vec<bool> = first.iter().map(|p| p.payload[1] & 0x80 != 0).collect();
            assert_eq!(ends, [false, false, false, false, true, true, true]);
            let durations: Vec<u32> = first
                .iter()
                .map(|p| u32::from(u16::from_be_bytes([p.payload[2], p.payload[3]])) / step)
                .collect();
            assert_eq!(durations, [1, 2, 3, 4, 5, 5, 5]);
        }
        assert_eq!(KeyPress::new('x', 101), None);
    }

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
    fn late_packets_of_an_older_event_are_not_new_digits() {
        let mut d = DtmfDecoder::new();
        let mut digits = String::new();
        let mut feed = |d: &mut DtmfDecoder, ts: u32, event: u8, end: bool| {
            if let Some(x) = d.handle_packet(ts, &payload(event, end, 160)).unwrap() {
                digits.push(x.digit);
            }
        };
        feed(&mut d, 8000, 1, false);
        feed(&mut d, 8000, 1, true);
        feed(&mut d, 9600, 2, false);
        feed(&mut d, 8000, 1, true); // late end packet of '1'
        feed(&mut d, 9600, 2, true);
        assert_eq!(digits, "12");
    }

    #[test]
    fn timestamps_wrap_and_floods_are_thinned() {
        let mut d = DtmfDecoder::new();
        assert!(d
            .handle_packet(u32::MAX - 100, &payload(5, false, 160))
            .unwrap()
            .is_some());
        // 1000 samples later, across the u32 wrap: a new key.
        assert!(d
            .handle_packet(899, &payload(6, false, 160))
            .unwrap()
            .is_some());
        // A new "event" every sample: at most one per 40 ms gets through.
        let accepted = (1..=8000u32)
            .filter(|i| {
                d.handle_packet(899 + i, &payload(7, false, 160))
                    .unwrap()
                    .is_some()
            })
            .count();
        assert_eq!(accepted, 25);
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
