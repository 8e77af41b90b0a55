//! `sav cache build`: synthesise the missing and stale phrases with espeak-ng
//! (the local TTS), resample to 8 kHz, encode to μ-law, and leave the phrases
//! that are up to date alone.

use std::path::Path;
use std::process::Command;

use crate::cache::config::CacheConfig;
use crate::cache::{
    audio_hash, check, clip_path, text_hash, write_atomically, CacheError, Manifest, ManifestEntry,
    PhraseAudio, PhraseProblem, PHRASE_RATE,
};
use crate::media::resample;

/// Samples below this magnitude count as silence when trimming the clip's
/// ends, so that a phrase starts speaking in its first frame.
const TRIM_THRESHOLD: i16 = 300;
/// Silence kept at each end after trimming: 10 ms at 8 kHz.
/// 10 ms of the phrase rate kept either side of the speech.
const TRIM_MARGIN: usize = PHRASE_RATE as usize / 100;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthesisError {
    #[error("cannot run espeak-ng (install the Debian package `espeak-ng`): {0}")]
    Spawn(std::io::Error),
    #[error("espeak-ng failed for phrase `{key}`: {stderr}")]
    Failed { key: String, stderr: String },
    #[error("espeak-ng output for `{key}` is not a readable WAV: {source}")]
    Wav { key: String, source: hound::Error },
    #[error("espeak-ng output for `{key}` is {channels}-channel {bits}-bit; expected mono 16-bit")]
    Format {
        key: String,
        channels: u16,
        bits: u16,
    },
    #[error("espeak-ng produced no audio for `{key}`")]
    Empty { key: String },
    #[error(transparent)]
    Resample(#[from] resample::ResampleError),
}

/// What `build` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// Phrases synthesised, with the problem that made them due.
    pub built: Vec<(String, PhraseProblem)>,
    /// Phrases already up to date.
    pub unchanged: Vec<String>,
    /// Manifest entries of phrases no longer in the table, dropped.
    pub removed: Vec<String>,
}

/// Synthesises what is missing or stale; up-to-date phrases are not touched.
pub fn build(config: &CacheConfig) -> Result<BuildReport, CacheError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| CacheError::Io {
        path: config.dir.clone(),
        source,
    })?;
    let due = check(config)?;
    let mut manifest = Manifest::load(&config.dir)?;
    let mut report = BuildReport::default();
    for (key, problem) in due {
        let text = &config.phrases[&key];
        tracing::info!(phrase = %key, reason = %problem, "synthesising");
        let phrase = synthesise(config, &key, text)?;
        let audio = phrase.to_wav();
        write_atomically(&clip_path(&config.dir, &key), &audio)?;
        // The older layout's μ-law clip, superseded.
        let _ = std::fs::remove_file(config.dir.join(format!("{key}.raw")));
        manifest.phrases.insert(
            key.clone(),
            ManifestEntry {
                text_sha256: text_hash(config, text),
                audio_sha256: audio_hash(&audio),
                samples: phrase.samples.len() as u64,
                rate: phrase.rate,
            },
        );
        // Save after each phrase: an interrupted build keeps what it made.
        manifest.save(&config.dir)?;
        report.built.push((key, problem));
    }
    let stale_keys: Vec<String> = manifest
        .phrases
        .keys()
        .filter(|k| !config.phrases.contains_key(*k))
        .cloned()
        .collect();
    for key in stale_keys {
        manifest.phrases.remove(&key);
        report.removed.push(key);
    }
    if !report.removed.is_empty() {
        manifest.save(&config.dir)?;
    }
    report.unchanged = config
        .phrases
        .keys()
        .filter(|k| !report.built.iter().any(|(b, _)| b == *k))
        .cloned()
        .collect();
    Ok(report)
}

/// espeak-ng → WAV → 8 kHz → trimmed → μ-law.
fn synthesise(config: &CacheConfig, key: &str, text: &str) -> Result<PhraseAudio, SynthesisError> {
    let wav_path = config.dir.join(format!(".{key}.synth.wav"));
    let result = run_espeak(config, key, text, &wav_path).and_then(|()| read_wav(key, &wav_path));
    let _ = std::fs::remove_file(&wav_path);
    let (samples, rate) = result?;
    let wide = resample::resample(&samples, rate, PHRASE_RATE)?;
    let trimmed = trim_silence(&wide);
    if trimmed.is_empty() {
        return Err(SynthesisError::Empty {
            key: key.to_string(),
        });
    }
    // An even number of samples: a whole number of 8 kHz samples and of
    // G.722 octets.
    let even = trimmed.len() & !1;
    Ok(PhraseAudio {
        rate: PHRASE_RATE,
        samples: trimmed[..even].to_vec(),
    })
}

fn run_espeak(
    config: &CacheConfig,
    key: &str,
    text: &str,
    out: &Path,
) -> Result<(), SynthesisError> {
    let output = Command::new("espeak-ng")
        .arg("-v")
        .arg(&config.voice)
        .arg("-s")
        .arg(config.speed.to_string())
        .arg("-w")
        .arg(out)
        // Text after `--` so a phrase starting with '-' is not an option.
        .arg("--")
        .arg(text)
        .output()
        .map_err(SynthesisError::Spawn)?;
    if !output.status.success() {
        return Err(SynthesisError::Failed {
            key: key.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn read_wav(key: &str, path: &Path) -> Result<(Vec<i16>, u32), SynthesisError> {
    let wav_err = |source| SynthesisError::Wav {
        key: key.to_string(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(wav_err)?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 {
        return Err(SynthesisError::Format {
            key: key.to_string(),
            channels: spec.channels,
            bits: spec.bits_per_sample,
        });
    }
    let samples = reader
        .samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(wav_err)?;
    Ok((samples, spec.sample_rate))
}

/// Cuts leading and trailing near-silence, keeping a short margin.
fn trim_silence(samples: &[i16]) -> &[i16] {
    let loud = |s: &i16| s.unsigned_abs() >= TRIM_THRESHOLD as u16;
    let Some(first) = samples.iter().position(loud) else {
        return &[];
    };
    let last = samples.iter().rposition(loud).unwrap_or(first);
    let start = first.saturating_sub(TRIM_MARGIN);
    let end = (last + 1 + TRIM_MARGIN).min(samples.len());
    &samples[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_speech_and_a_margin() {
        let mut s = vec![0i16; 1000];
        s[500] = 1000;
        s[600] = -2000;
        let t = trim_silence(&s);
        assert_eq!(t.len(), 101 + 2 * TRIM_MARGIN);
        assert_eq!(t[TRIM_MARGIN], 1000);
        assert!(trim_silence(&[0, 5, -5]).is_empty());
        let loud = [4000i16; 10];
        assert_eq!(trim_silence(&loud).len(), 10);
    }
}
