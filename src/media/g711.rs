//! G.711 by table lookup: μ-law (PCMU) and A-law (PCMA).
//!
//! Decoding is one 256-entry table per law; encoding is one table indexed by
//! the value G.711 actually quantises (the top 14 bits of a 16-bit sample
//! for μ-law, the top 13 for A-law). Every table is computed at compile time
//! from the segment/quantisation rules of G.711 §3 (μ-law) and §2 (A-law),
//! so there is no per-sample branching on the media path. Two more 256-entry
//! tables turn one law into the other (through linear) for a clip or a
//! recording made in the other law.

/// μ-law code of digital silence (linear 0): what the line carries when the bot
/// has nothing to say.
pub const SILENCE: u8 = 0xFF;

/// Bias added before segment search (G.711 μ-law, 0x84 on the 16-bit scale).
const BIAS: i32 = 0x84;
/// Largest magnitude μ-law represents on the 14-bit scale (8159 = 32635 >> 2).
const CLIP_14: i32 = 8159;
/// Upper end of each of the 8 segments on the 14-bit scale.
const SEG_END_14: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];

const fn decode_code(code: u8) -> i16 {
    let u = !code;
    let mantissa = ((u & 0x0F) as i32) << 3;
    let exponent = ((u & 0x70) >> 4) as u32;
    let magnitude = ((mantissa + BIAS) << exponent) - BIAS;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// `value14` is a signed 14-bit sample (-8192..=8191).
const fn encode_14(value14: i32) -> u8 {
    let (mut magnitude, mask): (i32, i32) = if value14 < 0 {
        (-value14, 0x7F)
    } else {
        (value14, 0xFF)
    };
    if magnitude > CLIP_14 {
        magnitude = CLIP_14;
    }
    magnitude += BIAS >> 2;
    let mut segment = 0;
    while segment < 8 && magnitude > SEG_END_14[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let code = ((segment as i32) << 4) | ((magnitude >> (segment + 1)) & 0x0F);
    (code ^ mask) as u8
}

const DECODE_TABLE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = decode_code(code as u8);
        code += 1;
    }
    table
};

/// Indexed by the 14-bit sample reinterpreted as unsigned (`(pcm >> 2) & 0x3FFF`).
const ENCODE_TABLE: [u8; 16384] = {
    let mut table = [0u8; 16384];
    let mut index = 0;
    while index < 16384 {
        // Sign-extend the 14-bit index back to a signed value.
        let value14 = if index >= 8192 {
            index as i32 - 16384
        } else {
            index as i32
        };
        table[index] = encode_14(value14);
        index += 1;
    }
    table
};

/// μ-law code → linear 16-bit PCM.
#[inline]
pub fn decode(code: u8) -> i16 {
    DECODE_TABLE[code as usize]
}

/// Linear 16-bit PCM → μ-law code.
#[inline]
pub fn encode(sample: i16) -> u8 {
    ENCODE_TABLE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// Decode a μ-law buffer into `out` (which must be at least as long).
pub fn decode_into(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = decode(c);
    }
}

/// Encode linear samples to μ-law, appending to `out`.
pub fn encode_extend(samples: &[i16], out: &mut Vec<u8>) {
    out.extend(samples.iter().map(|&s| encode(s)));
}

/// A-law code of digital silence (linear +8, the smallest positive step).
pub const ALAW_SILENCE: u8 = 0xD5;
/// Upper end of each of the 8 A-law segments on the 13-bit scale.
const ALAW_SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn alaw_decode_code(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as u32;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (segment - 1),
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

/// `value13` is a signed 13-bit sample (-4096..=4095).
const fn alaw_encode_13(value13: i32) -> u8 {
    let (magnitude, mask) = if value13 >= 0 {
        (value13, 0xD5)
    } else {
        (-value13 - 1, 0x55)
    };
    let mut segment = 0;
    while segment < 8 && magnitude > ALAW_SEG_END[segment] {
        segment += 1;
    }
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let quantised = if segment < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> segment) & 0x0F
    };
    (((segment as i32) << 4) | quantised) as u8 ^ mask
}

const ALAW_DECODE_TABLE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = alaw_decode_code(code as u8);
        code += 1;
    }
    table
};

/// Indexed by the 13-bit sample reinterpreted as unsigned (`(pcm >> 3) & 0x1FFF`).
const ALAW_ENCODE_TABLE: [u8; 8192] = {
    let mut table = [0u8; 8192];
    let mut index = 0;
    while index < 8192 {
        let value13 = if index >= 4096 {
            index as i32 - 8192
        } else {
            index as i32
        };
        table[index] = alaw_encode_13(value13);
        index += 1;
    }
    table
};

/// μ-law code → the A-law code of the same linear value.
const ULAW_TO_ALAW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        let linear = DECODE_TABLE[code] as i32;
        table[code] = ALAW_ENCODE_TABLE[((linear >> 3) & 0x1FFF) as usize];
        code += 1;
    }
    table
};

/// A-law code → the μ-law code of the same linear value.
const ALAW_TO_ULAW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        let linear = ALAW_DECODE_TABLE[code] as i32;
        table[code] = ENCODE_TABLE[((linear >> 2) & 0x3FFF) as usize];
        code += 1;
    }
    table
};

/// A-law code → linear 16-bit PCM.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE_TABLE[code as usize]
}

/// Linear 16-bit PCM → A-law code.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE_TABLE[((sample >> 3) as u16 & 0x1FFF) as usize]
}

/// A μ-law code as A-law (one lookup).
#[inline]
pub fn ulaw_to_alaw(code: u8) -> u8 {
    ULAW_TO_ALAW[code as usize]
}

/// An A-law code as μ-law (one lookup).
#[inline]
pub fn alaw_to_ulaw(code: u8) -> u8 {
    ALAW_TO_ULAW[code as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A-law decoder outputs of ITU-T G.711 Table 1a on the 16-bit scale (the
    /// table's 13-bit values × 8): the first codes of the space, both ends,
    /// and the two smallest steps.
    #[test]
    fn alaw_decodes_itu_reference_values() {
        let reference: [(u8, i16); 14] = [
            (0x00, -5504),
            (0x01, -5248),
            (0x02, -6016),
            (0x03, -5760),
            (0x04, -4480),
            (0x05, -4224),
            (0x06, -4992),
            (0x07, -4736),
            (0x08, -7552),
            (0x09, -7296),
            (0x55, -8),
            (0xD5, 8),
            (0x2A, -32256),
            (0xAA, 32256),
        ];
        for (code, linear) in reference {
            assert_eq!(alaw_decode(code), linear, "code {code:#04x}");
        }
    }

    #[test]
    fn every_alaw_code_survives_a_round_trip() {
        for code in 0u8..=255 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
        assert_eq!(alaw_encode(0), ALAW_SILENCE);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn alaw_encoding_is_monotonic_and_within_half_a_step() {
        let mut previous = i16::MIN;
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let decoded = alaw_decode(alaw_encode(sample));
            assert!(decoded >= previous, "sample {sample}");
            previous = decoded;
            let error = (i32::from(decoded) - i32::from(sample)).abs();
            // The widest A-law step (segment 7) is 1024 on the 16-bit scale.
            let bound = i32::from(sample).abs() / 16 + 16;
            assert!(error <= bound, "sample {sample} decoded {decoded}");
        }
    }

    #[test]
    fn one_law_turns_into_the_other_at_the_nearest_value() {
        for code in 0u8..=255 {
            let linear = i32::from(decode(code));
            let via = i32::from(alaw_decode(ulaw_to_alaw(code)));
            let direct = i32::from(alaw_decode(alaw_encode(decode(code))));
            assert_eq!(via, direct, "μ-law {code:#04x}");
            let bound = linear.abs() / 16 + 16;
            assert!(
                (via - linear).abs() <= bound,
                "μ-law {code:#04x}: {linear} → {via}"
            );
            let back = i32::from(decode(alaw_to_ulaw(ulaw_to_alaw(code))));
            assert!(
                (back - linear).abs() <= bound,
                "μ-law {code:#04x} there and back"
            );
        }
    }

    /// Reference decoder outputs of ITU-T G.711 Table 2a (μ-law), on the
    /// 16-bit scale (the table's 14-bit values × 4), at segment boundaries and
    /// both ends of the code space.
    #[test]
    fn decodes_itu_reference_values() {
        let reference: [(u8, i16); 14] = [
            (0x00, -32124),
            (0x01, -31100),
            (0x0F, -16764),
            (0x10, -15996),
            (0x1F, -8316),
            (0x20, -7932),
            (0x5F, -396),
            (0x60, -372),
            (0x70, -120),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0xF0, 120),
            (0xFF, 0),
        ];
        for (code, linear) in reference {
            assert_eq!(decode(code), linear, "code {code:#04x}");
        }
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for code in 0u8..=255 {
            let back = encode(decode(code));
            // Negative zero (0x7F) and positive zero (0xFF) decode alike;
            // the encoder picks positive zero.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(back, expected, "code {code:#04x}");
        }
    }

    #[test]
    fn encodes_extremes_and_zero() {
        assert_eq!(encode(0), SILENCE);
        assert_eq!(encode(i16::MAX), 0x80);
        assert_eq!(encode(i16::MIN), 0x00);
        assert_eq!(decode(SILENCE), 0);
    }

    #[test]
    fn encoding_is_monotonic() {
        // Larger input never decodes to a smaller value.
        let mut previous = i16::MIN;
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let decoded = decode(encode(sample));
            assert!(decoded >= previous, "sample {sample}");
            previous = decoded;
        }
    }

    #[test]
    fn quantisation_error_is_within_half_a_step() {
        for sample in (-32000i16..=32000).step_by(13) {
            let decoded = decode(encode(sample)) as i32;
            let error = (decoded - sample as i32).abs();
            // The widest step (segment 7) is 1024 on the 16-bit scale.
            let bound = (sample as i32).abs() / 16 + 16;
            assert!(error <= bound, "sample {sample} decoded {decoded}");
        }
    }
}
