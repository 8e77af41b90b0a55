//! WAV of 16-bit PCM, through hound: the speech-to-text upload, what
//! `sav call` heard, call recordings (stereo), all at 8 kHz, and the phrase
//! cache's files (at their rate).

use std::io::{Seek, Write};
use std::path::Path;

/// The line's sample rate.
const RATE: u32 = 8000;

fn spec(rate: u32, channels: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Writes `samples` (interleaved when `channels` > 1) as an 8 kHz WAV to
/// `out`.
pub fn write<W: Write + Seek>(out: W, channels: u16, samples: &[i16]) -> Result<(), hound::Error> {
    write_at(out, RATE, channels, samples)
}

/// Writes `samples` at `rate` as a WAV to `out`.
pub fn write_at<W: Write + Seek>(
    out: W,
    rate: u32,
    channels: u16,
    samples: &[i16],
) -> Result<(), hound::Error> {
    let mut writer = hound::WavWriter::new(out, spec(rate, channels))?;
    for &sample in samples {
        writer.write_sample(sample)?;
    }
    writer.finalize()
}

/// Writes a WAV file (blocking), creating its directory.
pub fn write_file(path: &Path, channels: u16, samples: &[i16]) -> Result<(), hound::Error> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    write(file, channels, samples)
}

/// A mono 8 kHz WAV in memory.
pub fn mono_bytes(samples: &[i16]) -> Vec<u8> {
    mono_bytes_at(RATE, samples)
}

/// A mono WAV at `rate` in memory.
pub fn mono_bytes_at(rate: u32, samples: &[i16]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    // Writing into memory fails only if hound refuses the spec (16-bit
    // integer PCM, which it takes at any rate).
    let _ = write_at(&mut out, rate, 1, samples);
    out.into_inner()
}

/// A phrase of the repository's cache (`cache/<key>.wav`) at 8 kHz: real
/// speech for the media tests.
#[cfg(test)]
pub(crate) fn cached_phrase_8k(key: &str) -> Vec<i16> {
    let path = format!("{}/cache/{key}.wav", env!("CARGO_MANIFEST_DIR"));
    let mut reader = hound::WavReader::open(&path).expect("a cached phrase");
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    crate::media::resample::resample(&samples, rate, RATE).expect("resample")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mono_wav_reads_back_as_written() {
        let pcm: Vec<i16> = (0..800).map(|i| (i * 37 % 2000 - 1000) as i16).collect();
        let bytes = mono_bytes(&pcm);
        assert_eq!(bytes.len(), 44 + pcm.len() * 2);
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let back: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(back, pcm);
        // A phrase's rate is kept.
        let wide = mono_bytes_at(16_000, &pcm);
        let reader = hound::WavReader::new(std::io::Cursor::new(wide)).unwrap();
        assert_eq!(reader.spec().sample_rate, 16_000);
        let back: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(back, pcm);
    }
}
