//! WAV of 8 kHz 16-bit PCM, through hound: the speech-to-text upload, what
//! `sav call` heard, and call recordings (stereo).

use std::io::{Seek, Write};
use std::path::Path;

/// The line's sample rate.
const RATE: u32 = 8000;

fn spec(channels: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

/// Writes `samples` (interleaved when `channels` > 1) as a WAV to `out`.
pub fn write<W: Write + Seek>(out: W, channels: u16, samples: &[i16]) -> Result<(), hound::Error> {
    let mut writer = hound::WavWriter::new(out, spec(channels))?;
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

/// A mono WAV in memory.
pub fn mono_bytes(samples: &[i16]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    // Writing into memory fails only if hound refuses the spec, which is fixed.
    let _ = write(&mut out, 1, samples);
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
    }
}
