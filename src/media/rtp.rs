//! RTP packet writing and reading for one audio stream (RFC 3550), on top of
//! rtp-rs. No allocation: packets are written into a caller's buffer and read
//! in place.

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

use crate::media::codec::MAX_FRAME_PAYLOAD;

/// Fixed RTP header (no CSRC, no extension): RFC 3550 §5.1.
pub const HEADER_LEN: usize = 12;
/// Room for one audio packet we send: the header and the largest frame.
pub const PACKET_LEN: usize = HEADER_LEN + MAX_FRAME_PAYLOAD;
/// Largest datagram we read; bigger ones are truncated by the socket and
/// rejected by the parser.
pub const MAX_DATAGRAM: usize = 1500;

/// Static payload type of PCMU (RFC 3551 §6).
pub const PT_PCMU: u8 = 0;
/// Static payload type of PCMA (RFC 3551 §6).
pub const PT_PCMA: u8 = 8;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtpError {
    #[error("datagram of {0} bytes is shorter than an RTP header")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("RTP header claims {header_len} bytes but the datagram has {datagram_len}")]
    HeaderTruncated {
        header_len: usize,
        datagram_len: usize,
    },
    #[error("RTP padding length {0} is invalid")]
    BadPadding(u8),
    #[error("unexpected payload type {0}")]
    UnexpectedPayloadType(u8),
}

/// The negotiated payload types of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypes {
    /// PCMU (always 0 in practice; static).
    pub audio: u8,
    /// telephone-event, when the peer offered it (dynamic, RFC 4733 §7.1.1).
    pub telephone_event: Option<u8>,
}

/// What an inbound packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    Audio {
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &'a [u8],
    },
    TelephoneEvent {
        seq: u16,
        timestamp: u32,
        ssrc: u32,
        payload: &'a [u8],
    },
}

/// Parses a datagram and classifies it against the negotiated payload types.
pub fn parse_inbound<'a>(datagram: &'a [u8], pts: &PayloadTypes) -> Result<Inbound<'a>, RtpError> {
    let reader = RtpReader::new(datagram).map_err(|e| match e {
        RtpReaderError::BufferTooShort(n) => RtpError::TooShort(n),
        RtpReaderError::UnsupportedVersion(v) => RtpError::BadVersion(v),
        RtpReaderError::HeadersTruncated {
            header_len,
            buffer_len,
        } => RtpError::HeaderTruncated {
            header_len,
            datagram_len: buffer_len,
        },
        RtpReaderError::PaddingLengthInvalid(p) => RtpError::BadPadding(p),
    })?;
    let pt = reader.payload_type();
    let seq = u16::from(reader.sequence_number());
    let timestamp = reader.timestamp();
    let ssrc = reader.ssrc();
    let payload = reader.payload();
    if pt == pts.audio {
        Ok(Inbound::Audio {
            seq,
            timestamp,
            ssrc,
            payload,
        })
    } else if Some(pt) == pts.telephone_event {
        Ok(Inbound::TelephoneEvent {
            seq,
            timestamp,
            ssrc,
            payload,
        })
    } else {
        Err(RtpError::UnexpectedPayloadType(pt))
    }
}

/// Writes one audio packet into `out`; returns its length. A payload is
/// at most [`MAX_FRAME_PAYLOAD`] octets (more is cut).
pub fn write_audio_packet(
    out: &mut [u8; PACKET_LEN],
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    marker: bool,
    payload: &[u8],
) -> usize {
    let payload = &payload[..payload.len().min(MAX_FRAME_PAYLOAD)];
    let builder = RtpPacketBuilder::new()
        .payload_type(payload_type)
        .ssrc(ssrc)
        .sequence(Seq::from(seq))
        .timestamp(timestamp)
        .marked(marker)
        .payload(payload);
    // A 12-byte header plus at most MAX_FRAME_PAYLOAD fits PACKET_LEN, and
    // the payload type comes from SDP negotiation (0..=127).
    builder.build_into_unchecked(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::FRAME_BYTES;

    const PTS: PayloadTypes = PayloadTypes {
        audio: 0,
        telephone_event: Some(101),
    };

    #[test]
    fn written_packet_parses_back() {
        let mut buf = [0u8; PACKET_LEN];
        let payload = [0x55; FRAME_BYTES];
        let n = write_audio_packet(&mut buf, 0, 0xDEADBEEF, 65535, u32::MAX, true, &payload);
        assert_eq!(n, HEADER_LEN + FRAME_BYTES);
        assert_eq!(buf[0], 0x80, "V=2, no padding/extension/CSRC");
        assert_eq!(buf[1], 0x80, "marker set, PT 0");
        match parse_inbound(&buf[..n], &PTS).unwrap() {
            Inbound::Audio {
                seq,
                timestamp,
                ssrc,
                payload: p,
            } => {
                assert_eq!((seq, timestamp, ssrc), (65535, u32::MAX, 0xDEADBEEF));
                assert_eq!(p, &payload[..]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_header_is_malformed() {
        assert_eq!(
            parse_inbound(&[0x80, 0, 0, 1], &PTS),
            Err(RtpError::TooShort(4))
        );
        assert_eq!(parse_inbound(&[], &PTS), Err(RtpError::TooShort(0)));
        assert_eq!(
            parse_inbound(&[0x40; 12], &PTS),
            Err(RtpError::BadVersion(1))
        );
        // CSRC count 15 claims 60 more header bytes than there are.
        let mut lying = [0u8; 20];
        lying[0] = 0x8F;
        assert_eq!(
            parse_inbound(&lying, &PTS),
            Err(RtpError::HeaderTruncated {
                header_len: 72,
                datagram_len: 20
            })
        );
    }

    /// Random datagrams of every length up to 64 bytes (seeded) are either
    /// parsed or refused, never a panic; a parsed payload lies inside the
    /// datagram.
    #[test]
    fn random_datagrams_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3550);
        for _ in 0..50_000 {
            let len = rng.gen_range(0..64);
            let mut datagram: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            if len > 0 && rng.gen_bool(0.7) {
                datagram[0] = 0x80 | (datagram[0] & 0x3F); // mostly version 2
            }
            match parse_inbound(&datagram, &PTS) {
                Ok(Inbound::Audio { payload, .. })
                | Ok(Inbound::TelephoneEvent { payload, .. }) => {
                    assert!(payload.len() <= datagram.len());
                }
                Err(_) => {}
            }
        }
    }

    #[test]
    fn wrong_payload_type_is_rejected() {
        let mut buf = [0u8; PACKET_LEN];
        write_audio_packet(&mut buf, PT_PCMA, 1, 1, 1, false, &[0xD5; FRAME_BYTES]);
        assert_eq!(
            parse_inbound(&buf, &PTS),
            Err(RtpError::UnexpectedPayloadType(8))
        );
    }

    #[test]
    fn telephone_event_is_classified() {
        let mut buf = [0u8; 16];
        buf[0] = 0x80;
        buf[1] = 101;
        buf[12..].copy_from_slice(&[11, 0x8A, 0, 160]);
        assert!(
            matches!(parse_inbound(&buf, &PTS), Ok(Inbound::TelephoneEvent { payload, .. }) if payload == [11, 0x8A, 0, 160])
        );
    }
}
