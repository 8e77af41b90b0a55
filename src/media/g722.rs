//! G.722 at 64 kbit/s (mode 1): 16 kHz linear audio in, one octet per pair
//! of samples out (bits 7–6 the higher sub-band's 2-bit code, bits 5–0 the
//! lower sub-band's 6-bit code), and back.
//!
//! G.722 is a bit-exact Recommendation: the quadrature mirror filters split
//! the signal into two 8 kHz sub-bands, each coded by its own adaptive
//! differential PCM (a 6-bit quantiser below 4 kHz, a 2-bit one above), all
//! in 16-bit fixed point with saturation. The arithmetic below is the
//! Recommendation's (its block names — QUANTL, INVQAL, LOGSCL, SCALEL, UPZERO,
//! UPPOL1/2, FILTEZ/P — are kept as function names), and the tests check it
//! octet for octet and sample for sample against the ITU-T reference
//! sequences distributed with G.191 (`tests/data/g722`).
//!
//! Both coders are stateful: one encoder per outgoing stream, one decoder
//! per incoming stream. Neither allocates; a 20 ms frame is 320 samples ↔
//! 160 octets, and RTP carries it on an 8 kHz clock (RFC 3551 §4.5.2).

/// Samples of 16 kHz audio in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 320;
/// Octets of G.722 in one 20 ms frame (one per pair of samples).
pub const FRAME_OCTETS: usize = 160;
/// The octet a G.722 encoder makes of digital silence from its initial
/// state (lower band: the smallest positive step; higher band: the smallest
/// positive step): sent while the bot has nothing to say. A decoder that was
/// playing speech settles on it within ~50 ms to a constant (inaudible)
/// offset: the test below measures it.
pub const SILENCE: u8 = 0xFA;

/// 16-bit saturation, as the Recommendation's basic operators do it.
fn sat(value: i32) -> i16 {
    value.clamp(i16::MIN as i32, i16::MAX as i32) as i16
}

fn add(a: i16, b: i16) -> i16 {
    sat(a as i32 + b as i32)
}

fn sub(a: i16, b: i16) -> i16 {
    sat(a as i32 - b as i32)
}

/// Fractional multiply: (a·b) >> 15, saturated.
fn mult(a: i16, b: i16) -> i16 {
    sat((a as i32 * b as i32) >> 15)
}

fn shl(a: i16, n: u32) -> i16 {
    sat((a as i32) << n)
}

/// 0 for a value ≥ 0, -1 for a negative one (the sign "bit" of the blocks).
fn sign(a: i16) -> i16 {
    a >> 15
}

/// Quantiser decision levels of the 6-bit lower-band quantiser (Table 6/G.722).
const Q6: [i16; 31] = [
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940,
    1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 3200,
];
/// Lower-band code for a negative (row 0) or positive (row 1) difference in
/// interval `mil`.
const LOW_CODE: [[u8; 32]; 2] = [
    [
        0x00, 0x3F, 0x3E, 0x1F, 0x1E, 0x1D, 0x1C, 0x1B, 0x1A, 0x19, 0x18, 0x17, 0x16, 0x15, 0x14,
        0x13, 0x12, 0x11, 0x10, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 0x09, 0x08, 0x07, 0x06, 0x05,
        0x04, 0x00,
    ],
    [
        0x00, 0x3D, 0x3C, 0x3B, 0x3A, 0x39, 0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31, 0x30,
        0x2F, 0x2E, 0x2D, 0x2C, 0x2B, 0x2A, 0x29, 0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21,
        0x20, 0x00,
    ],
];
/// 4-bit truncated lower-band code → magnitude index, and its sign.
const RIL4: [usize; 16] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const NEGATIVE4: [bool; 16] = [
    false, true, true, true, true, true, true, true, false, false, false, false, false, false,
    false, false,
];
/// Output levels of the 4-bit inverse quantiser (the predictor's input).
const OQ4: [i16; 8] = [0, 150, 323, 530, 786, 1121, 1612, 2557];
/// 6-bit lower-band code → magnitude index, and its sign (mode 1's decoder).
const RIL6: [usize; 64] = [
    1, 1, 1, 1, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
    9, 8, 7, 6, 5, 4, 3, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13,
    12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 2, 1,
];
const NEGATIVE6: [bool; 64] = {
    let mut table = [false; 64];
    let mut code = 0;
    while code < 64 {
        table[code] = code < 32 || code >= 62;
        code += 1;
    }
    table
};
/// Output levels of the 6-bit inverse quantiser.
const OQ6: [i16; 31] = [
    0, 17, 54, 91, 130, 170, 211, 254, 300, 347, 396, 447, 501, 558, 618, 682, 750, 822, 899, 982,
    1072, 1170, 1279, 1399, 1535, 1689, 1873, 2088, 2376, 2738, 3101,
];
/// Log-scale factor increments of the lower band, by 4-bit magnitude index.
const WL: [i16; 8] = [-60, -30, 58, 172, 334, 538, 1198, 3042];

/// Higher-band 2-bit code → magnitude index, sign, and output levels.
const IH2: [usize; 4] = [2, 1, 2, 1];
const HIGH_NEGATIVE: [bool; 4] = [true, true, false, false];
const OQ2: [i16; 3] = [0, 202, 926];
const WH: [i16; 3] = [0, -214, 798];
/// Quantiser decision level of the higher band.
const Q2: i16 = 564;

/// Inverse logarithm table of the scale factor adaptation (ILA, 353 entries).
const ILA: [i16; 353] = [
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6,
    7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 13,
    13, 13, 13, 14, 14, 15, 15, 15, 16, 16, 16, 17, 17, 18, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22,
    23, 23, 24, 24, 25, 25, 26, 27, 27, 28, 28, 29, 30, 31, 31, 32, 33, 33, 34, 35, 36, 37, 37, 38,
    39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 54, 55, 56, 57, 58, 60, 61, 63, 64, 65,
    67, 68, 70, 71, 73, 75, 76, 78, 80, 82, 83, 85, 87, 89, 91, 93, 95, 97, 99, 102, 104, 106, 109,
    111, 113, 116, 118, 121, 124, 127, 129, 132, 135, 138, 141, 144, 147, 151, 154, 157, 161, 165,
    168, 172, 176, 180, 184, 188, 192, 196, 200, 205, 209, 214, 219, 223, 228, 233, 238, 244, 249,
    255, 260, 266, 272, 278, 284, 290, 296, 303, 310, 316, 323, 331, 338, 345, 353, 361, 369, 377,
    385, 393, 402, 411, 420, 429, 439, 448, 458, 468, 478, 489, 500, 511, 522, 533, 545, 557, 569,
    582, 594, 607, 621, 634, 648, 663, 677, 692, 707, 723, 739, 755, 771, 788, 806, 823, 841, 860,
    879, 898, 918, 938, 958, 979, 1001, 1023, 1045, 1068, 1092, 1115, 1140, 1165, 1190, 1216, 1243,
    1270, 1298, 1327, 1356, 1386, 1416, 1447, 1479, 1511, 1544, 1578, 1613, 1648, 1684, 1721, 1759,
    1797, 1837, 1877, 1918, 1960, 2003, 2047, 2092, 2138, 2185, 2232, 2281, 2331, 2382, 2434, 2488,
    2542, 2598, 2655, 2713, 2773, 2833, 2895, 2959, 3024, 3090, 3157, 3227, 3297, 3370, 3443, 3519,
    3596, 3675, 3755, 3837, 3921, 4007, 4095,
];

/// QMF coefficients (Table 11/G.722), doubled as the reference arithmetic uses them.
const QMF: [i32; 24] = [
    6, -22, -22, 106, 24, -312, 64, 724, -420, -1610, 1902, 7752, 7752, 1902, -1610, -420, 724, 64,
    -312, 24, 106, -22, -22, 6,
];

/// One sub-band's ADPCM state: the adaptive predictor (two poles, six zeros)
/// and the quantiser scale factor. Encoder and decoder each keep one per band
/// and update them identically, which is what keeps them in step.
#[derive(Debug, Clone)]
struct Band {
    /// Quantiser scale factor (DETL / DETH).
    det: i16,
    /// Log of the scale factor (NBL / NBH).
    nb: i16,
    /// Predicted signal (SL / SH) and its zero / pole parts.
    s: i16,
    sz: i16,
    /// Pole coefficients a1, a2 (index 0 unused).
    a: [i16; 3],
    /// Zero coefficients b1…b6 (index 0 unused).
    b: [i16; 7],
    /// Quantised differences, newest first.
    d: [i16; 7],
    /// Partially reconstructed signal, newest first.
    p: [i16; 3],
    /// Reconstructed signal, newest first.
    r: [i16; 3],
}

impl Band {
    fn new(det: i16) -> Self {
        Self {
            det,
            nb: 0,
            s: 0,
            sz: 0,
            a: [0; 3],
            b: [0; 7],
            d: [0; 7],
            p: [0; 3],
            r: [0; 3],
        }
    }

    /// Everything after the quantised difference `d[0]` is known: the
    /// reconstruction, the predictor's adaptation and the next prediction
    /// (PARREC, RECONS, UPZERO, UPPOL2, UPPOL1, FILTEZ, FILTEP, PREDIC).
    fn adapt(&mut self) {
        self.p[0] = add(self.d[0], self.sz);
        self.r[0] = add(self.s, self.d[0]);
        self.upzero();
        self.uppol2();
        self.uppol1();
        self.sz = self.filtez();
        let sp = self.filtep();
        self.s = add(sp, self.sz);
    }

    fn upzero(&mut self) {
        let step: i16 = if self.d[0] == 0 { 0 } else { 128 };
        let sign0 = sign(self.d[0]);
        for i in (1..=6).rev() {
            let wd2 = if sign(self.d[i]) == sign0 {
                step
            } else {
                -step
            };
            self.b[i] = add(wd2, mult(self.b[i], 32640));
            self.d[i] = self.d[i - 1];
        }
    }

    fn uppol2(&mut self) {
        let (s0, s1, s2) = (sign(self.p[0]), sign(self.p[1]), sign(self.p[2]));
        let wd1 = shl(self.a[1], 2);
        let wd2 = (if s0 == s1 { sub(0, wd1) } else { wd1 }) >> 7;
        let wd3: i16 = if s0 == s2 { 128 } else { -128 };
        let a2 = add(add(wd2, wd3), mult(self.a[2], 32512));
        self.a[2] = a2.clamp(-12288, 12288);
    }

    fn uppol1(&mut self) {
        let wd1: i16 = if sign(self.p[0]) == sign(self.p[1]) {
            192
        } else {
            -192
        };
        let mut a1 = add(wd1, mult(self.a[1], 32640));
        let limit = sub(15360, self.a[2]);
        if a1 > limit {
            a1 = limit;
        } else if add(a1, limit) < 0 {
            a1 = sub(0, limit);
        }
        self.p[2] = self.p[1];
        self.p[1] = self.p[0];
        self.a[1] = a1;
    }

    fn filtez(&self) -> i16 {
        let mut sz = 0i16;
        for i in (1..=6).rev() {
            sz = add(sz, mult(add(self.d[i], self.d[i]), self.b[i]));
        }
        sz
    }

    fn filtep(&mut self) -> i16 {
        self.r[2] = self.r[1];
        self.r[1] = self.r[0];
        let wd1 = mult(self.a[1], add(self.r[1], self.r[1]));
        let wd2 = mult(self.a[2], add(self.r[2], self.r[2]));
        add(wd1, wd2)
    }

    /// Lower band: the quantised difference (4-bit truncated code, INVQAL)
    /// and the new scale factor (LOGSCL, SCALEL).
    fn adapt_low(&mut self, code: u8) {
        let ril = (code >> 2) as usize;
        let level = shl(OQ4[RIL4[ril]], 3);
        self.d[0] = mult(self.det, if NEGATIVE4[ril] { sub(0, level) } else { level });
        let nb = add(mult(self.nb, 32512), WL[RIL4[ril]]).clamp(0, 18432);
        self.nb = nb;
        self.det = scale(((nb >> 6) & 511) as usize + 64);
        self.adapt();
    }

    /// Higher band: INVQAH, LOGSCH, SCALEH.
    fn adapt_high(&mut self, code: u8) {
        let code = code as usize & 3;
        let level = shl(OQ2[IH2[code]], 3);
        self.d[0] = mult(
            if HIGH_NEGATIVE[code] {
                sub(0, level)
            } else {
                level
            },
            self.det,
        );
        let nb = add(mult(self.nb, 32512), WH[IH2[code]]).clamp(0, 22528);
        self.nb = nb;
        self.det = scale(((nb >> 6) & 511) as usize);
        self.adapt();
    }
}

fn scale(index: usize) -> i16 {
    shl(ILA[index] + 1, 2)
}

/// LIMIT: the reconstructed sub-band signal stays on 15 bits.
fn limit(value: i16) -> i16 {
    value.clamp(-16384, 16383)
}

/// The magnitude the quantisers compare with their decision levels: |e| for
/// e ≥ 0, |e| - 1 for e < 0 (one's complement, as the Recommendation does).
fn magnitude(e: i16) -> i16 {
    if e < 0 {
        sub(i16::MAX, e & i16::MAX)
    } else {
        e
    }
}

/// QUANTL: the 6-bit lower-band code of the difference `e`.
fn quantl(e: i16, det: i16) -> u8 {
    let wd = magnitude(e);
    let mut mil = 0;
    while mult(shl(Q6[mil], 3), det) <= wd {
        if mil == 30 {
            break;
        }
        mil += 1;
    }
    LOW_CODE[usize::from(e >= 0)][mil]
}

/// QUANTH: the 2-bit higher-band code of the difference `e`.
fn quanth(e: i16, det: i16) -> u8 {
    let wd = magnitude(e);
    let outer = wd >= mult(shl(Q2, 3), det);
    match (e >= 0, outer) {
        (false, false) => 1,
        (false, true) => 0,
        (true, false) => 3,
        (true, true) => 2,
    }
}

/// The 24-tap QMF delay line shared by the analysis and synthesis filters:
/// `x[0]` and `x[1]` are the newest pair; each call shifts it by two.
#[derive(Debug, Clone)]
struct Qmf {
    x: [i16; 24],
}

impl Qmf {
    fn new() -> Self {
        Self { x: [0; 24] }
    }

    /// Pushes a pair and returns the even- and odd-tap accumulations.
    fn filter(&mut self, newest: i16, older: i16) -> (i32, i32) {
        self.x[0] = newest;
        self.x[1] = older;
        let mut even = 0i32;
        let mut odd = 0i32;
        for i in 0..12 {
            even = even.saturating_add(QMF[2 * i] * self.x[2 * i] as i32);
            odd = odd.saturating_add(QMF[2 * i + 1] * self.x[2 * i + 1] as i32);
        }
        self.x.copy_within(0..22, 2);
        (even, odd)
    }
}

/// Encodes 16 kHz linear audio into G.722 at 64 kbit/s.
#[derive(Debug, Clone)]
pub struct G722Encoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for G722Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Encoder {
    pub fn new() -> Self {
        Self {
            qmf: Qmf::new(),
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Encodes pairs of samples from `pcm` into `out` (one octet per pair)
    /// and returns how many octets were written: `min(pcm.len() / 2,
    /// out.len())`. An odd last sample is left out.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut written = 0;
        for (pair, octet) in pcm.chunks_exact(2).zip(out.iter_mut()) {
            *octet = self.encode_pair(pair[0], pair[1]);
            written += 1;
        }
        written
    }

    /// Encodes 8 kHz audio (one octet per sample) the way G.722 interworks
    /// with narrowband: each sample, halved, is the lower sub-band's input
    /// (the scale of the analysis filter) and the higher band is silent, so
    /// the far end decodes exactly the 0–4 kHz signal without a resampler.
    pub fn encode_narrowband(&mut self, pcm: &[i16], out: &mut [u8]) -> usize {
        let mut written = 0;
        for (&sample, octet) in pcm.iter().zip(out.iter_mut()) {
            *octet = self.encode_bands(limit(sample >> 1), 0);
            written += 1;
        }
        written
    }

    fn encode_pair(&mut self, first: i16, second: i16) -> u8 {
        let (even, odd) = self.qmf.filter(second, first);
        let low_sum = even.saturating_add(odd).saturating_mul(2);
        let high_sum = even.saturating_sub(odd).saturating_mul(2);
        let xl = limit((low_sum >> 16) as i16);
        let xh = limit((high_sum >> 16) as i16);
        self.encode_bands(xl, xh)
    }

    fn encode_bands(&mut self, xl: i16, xh: i16) -> u8 {
        let el = sub(xl, self.low.s);
        let il = quantl(el, self.low.det);
        self.low.adapt_low(il);

        let eh = sub(xh, self.high.s);
        let ih = quanth(eh, self.high.det);
        self.high.adapt_high(ih);

        (ih << 6) | il
    }
}

/// Decodes G.722 at 64 kbit/s into 16 kHz linear audio.
#[derive(Debug, Clone)]
pub struct G722Decoder {
    qmf: Qmf,
    low: Band,
    high: Band,
}

impl Default for G722Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl G722Decoder {
    pub fn new() -> Self {
        Self {
            qmf: Qmf::new(),
            low: Band::new(32),
            high: Band::new(8),
        }
    }

    /// Decodes `octets` into `out` (two samples per octet) and returns how
    /// many samples were written: `2 · min(octets.len(), out.len() / 2)`.
    pub fn decode(&mut self, octets: &[u8], out: &mut [i16]) -> usize {
        let mut written = 0;
        for (&octet, pair) in octets.iter().zip(out.chunks_exact_mut(2)) {
            let (first, second) = self.decode_octet(octet);
            pair[0] = first;
            pair[1] = second;
            written += 2;
        }
        written
    }

    /// Decodes `octets` into 8 kHz audio (one sample per octet): the lower
    /// sub-band alone, doubled back to the input's scale — the 0–4 kHz part
    /// of the signal, which is all a narrowband listener (the voice activity
    /// detector, speech recognition at 8 kHz, a G.711 recording) can use.
    /// The higher band is not decoded; a decoder is used for one or the
    /// other output, not both.
    pub fn decode_narrowband(&mut self, octets: &[u8], out: &mut [i16]) -> usize {
        let mut written = 0;
        for (&octet, sample) in octets.iter().zip(out.iter_mut()) {
            *sample = shl(self.decode_low(octet & 0x3F), 1);
            written += 1;
        }
        written
    }

    fn decode_octet(&mut self, octet: u8) -> (i16, i16) {
        let rl = self.decode_low(octet & 0x3F);
        self.high.adapt_high(octet >> 6);
        let rh = limit(self.high.r[0]);

        let (even, odd) = self.qmf.filter(sub(rl, rh), add(rl, rh));
        let first = (even.saturating_mul(16) >> 16) as i16;
        let second = (odd.saturating_mul(16) >> 16) as i16;
        (first, second)
    }

    /// The lower band's reconstructed sample for its 6-bit code.
    fn decode_low(&mut self, il: u8) -> i16 {
        // INVQBL (mode 1: all six bits) gives the output; the predictor
        // adapts on the 4-bit truncated code, exactly as the encoder's did.
        let ril = il as usize;
        let level = shl(OQ6[RIL6[ril]], 3);
        let dl = mult(
            self.low.det,
            if NEGATIVE6[ril] { sub(0, level) } else { level },
        );
        let rl = limit(add(self.low.s, dl));
        self.low.adapt_low(il);
        rl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ITU-T G.191 reference sequences for G.722 (see tests/data/g722/README.md):
    // 16 kHz input, its 64 kbit/s coding (one code per 16-bit word), and the
    // mode-1 decoding of that coding. Little-endian 16-bit words.
    const INPUT: &[u8] = include_bytes!("../../tests/data/g722/inpsp.bin");
    const CODES: &[u8] = include_bytes!("../../tests/data/g722/codspw.cod");
    const OUTPUT: &[u8] = include_bytes!("../../tests/data/g722/outsp1.bin");

    fn words(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    #[test]
    fn the_encoder_gives_the_reference_coding_octet_for_octet() {
        let input = words(INPUT);
        let expected: Vec<u8> = words(CODES).iter().map(|&w| w as u8).collect();
        assert_eq!(input.len(), 2 * expected.len());
        let mut encoder = G722Encoder::new();
        let mut coded = vec![0u8; expected.len()];
        let mut at = 0;
        // In 20 ms frames, as the media path feeds it.
        for frame in input.chunks(FRAME_SAMPLES) {
            at += encoder.encode(frame, &mut coded[at..]);
        }
        assert_eq!(at, expected.len());
        let first_difference = coded.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "{} octets compared", expected.len());
    }

    #[test]
    fn the_decoder_gives_the_reference_output_sample_for_sample() {
        let codes: Vec<u8> = words(CODES).iter().map(|&w| w as u8).collect();
        let expected = words(OUTPUT);
        let mut decoder = G722Decoder::new();
        let mut decoded = vec![0i16; expected.len()];
        let mut at = 0;
        for frame in codes.chunks(FRAME_OCTETS) {
            at += decoder.decode(frame, &mut decoded[at..]);
        }
        assert_eq!(at, expected.len());
        let first_difference = decoded.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(
            first_difference,
            None,
            "{} samples compared",
            expected.len()
        );
    }

    fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
        let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
        let noise: f64 = reference
            .iter()
            .zip(test)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        10.0 * (signal / noise.max(1.0)).log10()
    }

    /// A vowel-like 8 kHz test signal: harmonics of 140 Hz under 3.4 kHz.
    fn voice_8k(samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let t = n as f64 / 8000.0;
                let v: f64 = (1..=20)
                    .map(|h| (2.0 * std::f64::consts::PI * 140.0 * h as f64 * t).sin() / h as f64)
                    .sum();
                (v * 6000.0) as i16
            })
            .collect()
    }

    #[test]
    fn narrowband_audio_goes_through_the_lower_band_and_comes_back() {
        let voice = voice_8k(8000);
        let mut encoder = G722Encoder::new();
        let mut coded = vec![0u8; voice.len()];
        assert_eq!(encoder.encode_narrowband(&voice, &mut coded), voice.len());
        let mut decoder = G722Decoder::new();
        let mut back = vec![0i16; voice.len()];
        assert_eq!(decoder.decode_narrowband(&coded, &mut back), voice.len());
        // ADPCM settles in the first milliseconds; compare after 50 ms.
        let snr = snr_db(&voice[400..], &back[400..]);
        assert!(snr > 20.0, "narrowband round trip SNR {snr:.1} dB");

        // The same octets through the full 16 kHz decoder carry the same
        // signal: every other wideband sample tracks the narrowband one.
        let mut wide_decoder = G722Decoder::new();
        let mut wide = vec![0i16; 2 * coded.len()];
        wide_decoder.decode(&coded, &mut wide);
        let level: f64 = wide[800..].iter().map(|&s| f64::from(s).abs()).sum::<f64>()
            / (wide.len() - 800) as f64;
        let narrow: f64 = voice[400..]
            .iter()
            .map(|&s| f64::from(s).abs())
            .sum::<f64>()
            / (voice.len() - 400) as f64;
        assert!(
            (level / narrow - 1.0).abs() < 0.15,
            "wideband level {level:.0} against narrowband {narrow:.0}"
        );
    }

    #[test]
    fn the_silence_octet_quiets_a_decoder_that_was_playing_speech() {
        let voice = voice_8k(4000);
        let mut encoder = G722Encoder::new();
        let mut coded = vec![0u8; voice.len()];
        encoder.encode_narrowband(&voice, &mut coded);
        coded.extend(std::iter::repeat_n(SILENCE, 4000));
        let mut decoder = G722Decoder::new();
        let mut wide = vec![0i16; 2 * coded.len()];
        decoder.decode(&coded, &mut wide);
        // 100 ms after speech stops nothing is audible: what is left is a
        // constant offset (no sound; phones and trunks block DC).
        let tail = &wide[2 * (4000 + 800)..];
        let mean = tail.iter().map(|&s| f64::from(s)).sum::<f64>() / tail.len() as f64;
        let ac_rms = (tail
            .iter()
            .map(|&s| (f64::from(s) - mean).powi(2))
            .sum::<f64>()
            / tail.len() as f64)
            .sqrt();
        assert!(
            ac_rms < 2.0,
            "{ac_rms:.1} rms after 100 ms of silence octets"
        );
        assert!(mean.abs() < 1000.0, "offset {mean:.0}");
        let speech_peak = wide[..8000]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(speech_peak > 3000, "speech peak {speech_peak}");
    }

    #[test]
    fn a_short_output_buffer_bounds_the_work_instead_of_panicking() {
        let mut encoder = G722Encoder::new();
        let mut out = [0u8; 3];
        assert_eq!(encoder.encode(&[100; 11], &mut out), 3);
        let mut decoder = G722Decoder::new();
        let mut pcm = [0i16; 5];
        assert_eq!(decoder.decode(&[0x12, 0x34, 0x56], &mut pcm), 4);
    }

    #[test]
    fn extreme_input_saturates_instead_of_overflowing() {
        let mut encoder = G722Encoder::new();
        let mut decoder = G722Decoder::new();
        let loud: Vec<i16> = (0..FRAME_SAMPLES * 50)
            .map(|n| if (n / 3) % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        let mut coded = vec![0u8; loud.len() / 2];
        encoder.encode(&loud, &mut coded);
        let mut back = vec![0i16; loud.len()];
        decoder.decode(&coded, &mut back);
        // Every octet value decodes without panicking, too.
        let all: Vec<u8> = (0..=255u8).cycle().take(FRAME_OCTETS * 10).collect();
        let mut out = vec![0i16; all.len() * 2];
        assert_eq!(decoder.decode(&all, &mut out), out.len());
    }
}
