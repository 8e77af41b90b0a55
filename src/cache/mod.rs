//! The phrase cache: each phrase key of `[cache.phrases]` → its audio,
//! loaded once at start, encoded then in every codec a call may use, and
//! shared by every call (`Arc`): no call transcodes a phrase.
//!
//! On disk, each phrase is stored once at the best rate the synthesis gives:
//! `cache/<key>.wav`, 16-bit mono linear PCM at 16 kHz (wideband: G.722
//! carries it whole) or 8 kHz (narrowband). G.711 is made from it at 8 kHz,
//! G.722 from the 16 kHz audio itself. `cache/manifest.toml` records for each
//! phrase the SHA-256 of the text and voice it was synthesised from and of
//! the file written. A phrase is *missing* when it has no audio (a cache of
//! the older μ-law `.raw` layout has none: `sav cache build` rebuilds it),
//! *stale* when its text or voice changed since it was built or its audio is
//! not what was built, *unreadable* when the file is not such a WAV.

mod build;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use build::{build, BuildReport, SynthesisError};

use crate::cache::config::CacheConfig;
use crate::media::codec::{Codec, Encoder, SUPPORTED};
use crate::media::playout::Clip;
use crate::media::resample::{self, LINE_RATE};

pub mod config;

pub const MANIFEST_FILE: &str = "manifest.toml";
/// The rate phrases are built at: wideband, what G.722 carries.
pub const PHRASE_RATE: u32 = 16_000;
/// Clips longer than this (a minute of audio) are refused: a phrase is a
/// sentence, and the cache lives in memory.
pub const MAX_CLIP_SECONDS: u64 = 60;
/// The largest phrase file read: a minute at 16 kHz, and its header.
const MAX_CLIP_FILE_BYTES: u64 = MAX_CLIP_SECONDS * PHRASE_RATE as u64 * 2 + 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache manifest {path} is unreadable: {source}")]
    Manifest {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "the phrase cache directory {} does not exist (relative paths are taken from the \
         configuration file's directory; without --config or SAV_CONFIG, from the working \
         directory): point [cache] dir at it, or make it with `sav cache build`",
        path.display()
    )]
    NoDirectory { path: PathBuf },
    #[error("cache is not usable ({problems}); run `sav cache build`")]
    Unusable { problems: String },
    #[error("cache {path}: cannot resample: {source}")]
    Resample {
        path: PathBuf,
        source: resample::ResampleError,
    },
    #[error(transparent)]
    Synthesis(#[from] SynthesisError),
}

/// One phrase's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// SHA-256 of the voice settings and text the audio was made from.
    pub text_sha256: String,
    /// SHA-256 of the `.wav` file written.
    pub audio_sha256: String,
    /// Samples of audio, at `rate` Hz.
    #[serde(default)]
    pub samples: u64,
    #[serde(default)]
    pub rate: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub phrases: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self, CacheError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|source| CacheError::Manifest {
                path,
                source: Box::new(source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(CacheError::Io { path, source }),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), CacheError> {
        let path = dir.join(MANIFEST_FILE);
        let body = toml::to_string(self).expect("manifest serialises: plain strings and integers");
        let text = format!(
            "# Written by `sav cache build`: the text hash and audio hash of each phrase.\n{body}"
        );
        write_atomically(&path, text.as_bytes())
    }
}

/// The hash that says which text and voice a clip was made from.
pub fn text_hash(config: &CacheConfig, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "espeak-ng\0{}\0{}\0{PHRASE_RATE}\0",
        config.voice, config.speed
    ));
    hasher.update(text.as_bytes());
    hex(&hasher.finalize())
}

pub fn audio_hash(audio: &[u8]) -> String {
    hex(&Sha256::digest(audio))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn clip_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.wav"))
}

/// A phrase in one codec.
pub type Encoding = (Codec, Arc<[u8]>);

/// A phrase's audio as stored: linear PCM at its rate (8 or 16 kHz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhraseAudio {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl PhraseAudio {
    /// The audio as a WAV file's bytes (what the cache stores).
    pub fn to_wav(&self) -> Vec<u8> {
        crate::media::wav::mono_bytes_at(self.rate, &self.samples)
    }

    /// Reads a phrase file's header: its rate and length in samples, when
    /// it is mono 16-bit PCM at 8 or 16 kHz.
    pub fn probe(bytes: &[u8]) -> Result<(u32, u32), String> {
        let reader =
            hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
        Self::check_spec(reader.spec())?;
        Ok((reader.spec().sample_rate, reader.duration()))
    }

    fn check_spec(spec: hound::WavSpec) -> Result<(), String> {
        if spec.channels != 1
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
            || !matches!(spec.sample_rate, 8000 | 16_000)
        {
            return Err(format!(
                "{} channel(s), {}-bit at {} Hz; expected mono 16-bit at 8 or 16 kHz",
                spec.channels, spec.bits_per_sample, spec.sample_rate
            ));
        }
        Ok(())
    }

    /// Reads a phrase file: mono 16-bit PCM at 8 or 16 kHz.
    pub fn from_wav(bytes: &[u8]) -> Result<Self, String> {
        let reader =
            hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
        let spec = reader.spec();
        Self::check_spec(spec)?;
        let len = reader.duration() as usize;
        // The header read, the cursor stands at the samples: take them whole
        // (little-endian 16-bit) rather than one by one.
        let start = reader.into_inner().position() as usize;
        let data = bytes
            .get(start..start + 2 * len)
            .ok_or_else(|| format!("{len} samples announced, fewer in the file"))?;
        let samples = data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Self {
            rate: spec.sample_rate,
            samples,
        })
    }

    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }

    /// The audio at 8 kHz (what G.711 carries and the recording keeps).
    pub fn line(&self) -> Result<Vec<i16>, resample::ResampleError> {
        let mut line = resample::resample(&self.samples, self.rate, LINE_RATE)?;
        // One octet per 8 kHz sample in every codec: every encoding of the
        // phrase has this length.
        line.truncate(self.samples.len() * LINE_RATE as usize / self.rate as usize);
        Ok(line)
    }

    /// The phrase in every codec sav supports, each made once: G.711 from
    /// the 8 kHz audio, G.722 and Opus from the 16 kHz audio itself
    /// (wideband) or, for an 8 kHz phrase, from that. All the same frames.
    pub fn encodings(&self) -> Result<Vec<Encoding>, resample::ResampleError> {
        self.encodings_in(&SUPPORTED)
    }

    /// The phrase in `codecs`.
    pub fn encodings_in(&self, codecs: &[Codec]) -> Result<Vec<Encoding>, resample::ResampleError> {
        let line = self.line()?;
        Ok(codecs
            .iter()
            .map(|&codec| {
                let mut coded = Vec::with_capacity(line.len());
                let mut encoder = Encoder::new(codec);
                if codec.audio_rate() == self.rate && self.rate != LINE_RATE {
                    encoder.encode_audio_extend(&self.samples[..2 * line.len()], &mut coded);
                } else {
                    encoder.encode_extend(&line, &mut coded);
                }
                encoder.finish(&mut coded);
                (codec, Arc::from(coded))
            })
            .collect())
    }
}

/// A phrase's stored audio, `None` when it has none.
pub fn read_phrase(dir: &Path, key: &str) -> Result<Option<PhraseAudio>, CacheError> {
    let path = clip_path(dir, key);
    match read_clip(&path)? {
        Some(bytes) => Ok(PhraseAudio::from_wav(&bytes).ok()),
        None => Ok(None),
    }
}

/// What is wrong with one phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhraseProblem {
    /// No audio file, or an empty one.
    Missing,
    /// The text or voice changed since the audio was built.
    StaleText,
    /// The audio is not what the manifest says was built.
    AudioMismatch,
    /// The audio is over [`MAX_CLIP_SECONDS`] (its length in seconds).
    TooLong(u64),
    /// The file is not a mono 16-bit WAV at 8 or 16 kHz.
    Unreadable(String),
}

impl fmt::Display for PhraseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhraseProblem::Missing => write!(f, "no audio"),
            PhraseProblem::StaleText => write!(f, "stale audio (text or voice changed)"),
            PhraseProblem::AudioMismatch => write!(f, "audio differs from the manifest"),
            PhraseProblem::TooLong(n) => {
                write!(f, "audio of {n} s is over {MAX_CLIP_SECONDS} s")
            }
            PhraseProblem::Unreadable(why) => write!(f, "unreadable audio ({why})"),
        }
    }
}

/// Checks every phrase of the table against the files and the manifest.
/// Fails with the real cause when the cache directory is not there (every
/// phrase would otherwise be reported as having no audio).
pub fn require_dir(config: &CacheConfig) -> Result<(), CacheError> {
    if config.dir.is_dir() {
        Ok(())
    } else {
        Err(CacheError::NoDirectory {
            path: config.dir.clone(),
        })
    }
}

pub fn check(config: &CacheConfig) -> Result<Vec<(String, PhraseProblem)>, CacheError> {
    let manifest = Manifest::load(&config.dir)?;
    let mut problems = Vec::new();
    for (key, text) in &config.phrases {
        if let Some(problem) = check_phrase(config, &manifest, key, text)? {
            problems.push((key.clone(), problem));
        }
    }
    Ok(problems)
}

fn check_phrase(
    config: &CacheConfig,
    manifest: &Manifest,
    key: &str,
    text: &str,
) -> Result<Option<PhraseProblem>, CacheError> {
    let path = clip_path(&config.dir, key);
    let audio = match read_clip(&path)? {
        Some(audio) if !audio.is_empty() => audio,
        Some(_) | None => return Ok(Some(PhraseProblem::Missing)),
    };
    if audio.len() as u64 > MAX_CLIP_FILE_BYTES {
        let seconds = audio.len() as u64 / (2 * u64::from(PHRASE_RATE));
        return Ok(Some(PhraseProblem::TooLong(seconds)));
    }
    match PhraseAudio::probe(&audio) {
        Ok((_, 0)) => return Ok(Some(PhraseProblem::Missing)),
        Ok((rate, samples)) if u64::from(samples) > MAX_CLIP_SECONDS * u64::from(rate) => {
            return Ok(Some(PhraseProblem::TooLong(
                u64::from(samples) / u64::from(rate),
            )));
        }
        Ok(_) => {}
        Err(why) => return Ok(Some(PhraseProblem::Unreadable(why))),
    }
    let Some(entry) = manifest.phrases.get(key) else {
        return Ok(Some(PhraseProblem::StaleText));
    };
    if entry.text_sha256 != text_hash(config, text) {
        return Ok(Some(PhraseProblem::StaleText));
    }
    if entry.audio_sha256 != audio_hash(&audio) {
        return Ok(Some(PhraseProblem::AudioMismatch));
    }
    Ok(None)
}

fn read_clip(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_CLIP_FILE_BYTES {
        // Do not read a huge file into memory just to refuse it.
        return Ok(Some(vec![0; (MAX_CLIP_FILE_BYTES + 1) as usize]));
    }
    std::fs::read(path).map(Some).map_err(io)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension("tmp");
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The loaded cache: every phrase's audio, in memory once per codec,
/// shared by every call. G.711 is encoded when the cache loads (a table per
/// sample); G.722 and Opus, coders tens of times the work, each the first
/// time a call needs it ([`PhraseCache::prepare`]), so a line that never
/// sees them never pays for them.
#[derive(Debug, Clone, Default)]
pub struct PhraseCache {
    /// Every phrase in the codecs encoded at load.
    clips: BTreeMap<String, Clip>,
    /// The stored audio, for the codecs encoded on demand.
    sources: BTreeMap<String, Arc<PhraseAudio>>,
    /// Per codec encoded on demand: every phrase in the codecs of load and
    /// in it, once a call needed it.
    on_demand: Vec<(Codec, std::sync::OnceLock<BTreeMap<String, Clip>>)>,
}

/// The codecs a loaded cache holds at once.
fn at_load(codec: &Codec) -> bool {
    !codec.is_stateful()
}

impl PhraseCache {
    /// Loads every phrase of the table. Fails when one has no audio (a call
    /// would otherwise go silent where the phrase should be); stale audio is
    /// loaded and reported so the caller can warn.
    pub fn load(config: &CacheConfig) -> Result<(Self, Vec<(String, PhraseProblem)>), CacheError> {
        require_dir(config)?;
        let problems = check(config)?;
        let fatal: Vec<String> = problems
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p,
                    PhraseProblem::Missing
                        | PhraseProblem::TooLong(_)
                        | PhraseProblem::Unreadable(_)
                )
            })
            .map(|(key, p)| format!("{key}: {p}"))
            .collect();
        if !fatal.is_empty() {
            return Err(CacheError::Unusable {
                problems: fatal.join(", "),
            });
        }
        let now: Vec<Codec> = SUPPORTED.iter().copied().filter(at_load).collect();
        let mut clips = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for key in config.phrases.keys() {
            let path = clip_path(&config.dir, key);
            let Some(phrase) = read_phrase(&config.dir, key)? else {
                return Err(CacheError::Unusable {
                    problems: format!("{key}: no audio"),
                });
            };
            let encodings = phrase
                .encodings_in(&now)
                .map_err(|source| CacheError::Resample { path, source })?;
            if let Some(clip) = Clip::with_encodings(key.as_str(), encodings) {
                clips.insert(key.clone(), clip);
            }
            sources.insert(key.clone(), Arc::new(phrase));
        }
        let cache = Self {
            clips,
            sources,
            on_demand: SUPPORTED
                .iter()
                .filter(|c| !at_load(c))
                .map(|&c| (c, std::sync::OnceLock::new()))
                .collect(),
        };
        Ok((cache, problems))
    }

    /// The clip of a phrase for a call in `codec` (cloning it shares the
    /// audio): in the codecs of load, and in `codec` once
    /// [`Self::prepare`] made it.
    pub fn clip(&self, key: &str, codec: Codec) -> Option<&Clip> {
        match self.made(codec) {
            Some(clips) => clips.get(key),
            None => self.clips.get(key),
        }
    }

    /// The phrases made on demand in `codec`, once made.
    fn made(&self, codec: Codec) -> Option<&BTreeMap<String, Clip>> {
        self.on_demand
            .iter()
            .find(|(c, _)| *c == codec)
            .and_then(|(_, clips)| clips.get())
    }

    /// Whether the clips hold `codec` already (or it cannot be made: a
    /// cache that was not loaded).
    pub fn is_ready(&self, codec: Codec) -> bool {
        at_load(&codec)
            || self
                .on_demand
                .iter()
                .find(|(c, _)| *c == codec)
                .is_none_or(|(_, clips)| clips.get().is_some())
    }

    /// Encodes every phrase in `codec` when it is not made at load, once
    /// for the process (a call meanwhile waits for the first, then finds it
    /// made). CPU work of tens of milliseconds: call it off the async
    /// workers.
    pub fn prepare(&self, codec: Codec) {
        let Some((_, slot)) = self.on_demand.iter().find(|(c, _)| *c == codec) else {
            return;
        };
        slot.get_or_init(|| {
            let started = std::time::Instant::now();
            let all: BTreeMap<String, Clip> = self
                .clips
                .iter()
                .map(|(key, clip)| {
                    let mut encodings: Vec<Encoding> = clip
                        .codecs()
                        .filter_map(|c| clip.audio(c).map(|audio| (c, audio.clone())))
                        .collect();
                    if let Some(source) = self.sources.get(key) {
                        match source.encodings_in(&[codec]) {
                            Ok(more) => encodings.extend(more),
                            Err(error) => {
                                tracing::warn!(phrase = %key, %error, "phrase not encoded")
                            }
                        }
                    }
                    let clip = Clip::with_encodings(key.as_str(), encodings)
                        .unwrap_or_else(|| clip.clone());
                    (key.clone(), clip)
                })
                .collect();
            tracing::info!(
                %codec,
                took_ms = started.elapsed().as_millis() as u64,
                "phrase cache encoded for a call"
            );
            all
        });
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Total encoded audio held, in bytes (every codec made so far).
    pub fn audio_bytes(&self) -> usize {
        let at_load: usize = self.clips.values().map(Clip::size).sum();
        let on_demand: usize = self
            .on_demand
            .iter()
            .filter_map(|(codec, clips)| Some((*codec, clips.get()?)))
            .flat_map(|(codec, clips)| clips.values().filter_map(move |c| c.audio(codec)))
            .map(|audio| audio.len())
            .sum();
        at_load + on_demand
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> CacheConfig {
        CacheConfig {
            dir: dir.to_path_buf(),
            voice: "fr".into(),
            speed: 165,
            phrases: [
                ("greet".to_string(), "Bonjour".to_string()),
                ("bye".to_string(), "Au revoir".to_string()),
            ]
            .into_iter()
            .collect(),
            code_at_start: false,
        }
    }

    /// Writes a phrase as `sav cache build` would, without a TTS.
    fn put(config: &CacheConfig, key: &str, phrase: &PhraseAudio) {
        put_bytes(config, key, &phrase.to_wav());
    }

    fn put_bytes(config: &CacheConfig, key: &str, audio: &[u8]) {
        let mut manifest = Manifest::load(&config.dir).unwrap();
        std::fs::write(clip_path(&config.dir, key), audio).unwrap();
        manifest.phrases.insert(
            key.to_string(),
            ManifestEntry {
                text_sha256: text_hash(config, &config.phrases[key]),
                audio_sha256: audio_hash(audio),
                samples: 0,
                rate: PHRASE_RATE,
            },
        );
        manifest.save(&config.dir).unwrap();
    }

    /// `seconds` of a 300 Hz tone with a 5 kHz one over it, at `rate`.
    fn tone(rate: u32, seconds: f64) -> PhraseAudio {
        let samples = (f64::from(rate) * seconds) as usize;
        PhraseAudio {
            rate,
            samples: (0..samples)
                .map(|n| {
                    let t = n as f64 / f64::from(rate);
                    let low = (2.0 * std::f64::consts::PI * 300.0 * t).sin() * 6000.0;
                    let high = if rate > 10_000 {
                        (2.0 * std::f64::consts::PI * 5000.0 * t).sin() * 3000.0
                    } else {
                        0.0
                    };
                    (low + high) as i16
                })
                .collect(),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sav-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn check_reports_missing_stale_tampered_and_unreadable_audio() {
        let dir = tempdir("check");
        let mut cfg = config(&dir);
        assert_eq!(
            check(&cfg).unwrap(),
            vec![
                ("bye".into(), PhraseProblem::Missing),
                ("greet".into(), PhraseProblem::Missing)
            ]
        );
        put(&cfg, "greet", &tone(16_000, 0.5));
        put(&cfg, "bye", &tone(8000, 0.3));
        assert!(check(&cfg).unwrap().is_empty());

        cfg.phrases.insert("greet".into(), "Bonsoir".into());
        assert_eq!(
            check(&cfg).unwrap(),
            vec![("greet".into(), PhraseProblem::StaleText)]
        );
        cfg.voice = "fr-be".into();
        assert_eq!(
            check(&cfg).unwrap().len(),
            2,
            "a voice change makes every phrase stale"
        );
        cfg = config(&dir);

        std::fs::write(clip_path(&dir, "bye"), tone(8000, 0.2).to_wav()).unwrap();
        assert_eq!(
            check(&cfg).unwrap(),
            vec![("bye".into(), PhraseProblem::AudioMismatch)]
        );
        std::fs::write(clip_path(&dir, "bye"), []).unwrap();
        assert_eq!(
            check(&cfg).unwrap(),
            vec![("bye".into(), PhraseProblem::Missing)]
        );
        // The older layout's μ-law bytes under the new name: unreadable.
        put_bytes(&cfg, "bye", &[0xFF; 800]);
        assert!(matches!(
            &check(&cfg).unwrap()[..],
            [(key, PhraseProblem::Unreadable(_))] if key == "bye"
        ));
        put(&cfg, "bye", &tone(22_050, 0.3));
        assert!(matches!(
            &check(&cfg).unwrap()[..],
            [(key, PhraseProblem::Unreadable(why))] if key == "bye" && why.contains("22050 Hz")
        ));
        std::fs::remove_dir_all(&dir).unwrap();
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

    #[test]
    fn load_encodes_each_phrase_once_per_codec_and_shares_it() {
        let dir = tempdir("load");
        let cfg = config(&dir);
        let greet = tone(16_000, 0.5);
        put(&cfg, "greet", &greet);
        let err = PhraseCache::load(&cfg).unwrap_err();
        assert!(err.to_string().contains("bye: no audio"), "{err}");
        put(&cfg, "bye", &tone(8000, 0.3));
        let (cache, problems) = PhraseCache::load(&cfg).unwrap();
        assert!(problems.is_empty());
        assert_eq!(cache.len(), 2);
        // G.711 at load; G.722 and Opus each when a call first needs it.
        assert_eq!(cache.audio_bytes(), (4000 + 2400) * 2);
        let g722 = |cache: &PhraseCache| cache.clip("greet", Codec::G722).unwrap().clone();
        assert!(g722(&cache).audio(Codec::G722).is_none());
        assert!(cache.is_ready(Codec::Pcma) && !cache.is_ready(Codec::G722));
        let before = g722(&cache);
        cache.prepare(Codec::G722);
        assert!(cache.is_ready(Codec::G722) && !cache.is_ready(Codec::Opus));
        assert_eq!(cache.audio_bytes(), (4000 + 2400) * 3);
        assert!(cache
            .clip("greet", Codec::Opus)
            .unwrap()
            .audio(Codec::G722)
            .is_none());
        // The G.711 audio made at load is the same audio, not made again.
        assert!(Arc::ptr_eq(
            before.audio(Codec::Pcmu).unwrap(),
            g722(&cache).audio(Codec::Pcmu).unwrap()
        ));
        let (a, b) = (g722(&cache), g722(&cache));
        for codec in [Codec::Pcma, Codec::Pcmu, Codec::G722] {
            assert!(
                Arc::ptr_eq(a.audio(codec).unwrap(), b.audio(codec).unwrap()),
                "{codec}: clips are shared, not copied"
            );
            assert_eq!(a.audio(codec).unwrap().len(), 4000, "{codec}: 0.5 s");
        }
        cache.prepare(Codec::Opus);
        assert!(cache.is_ready(Codec::Opus));
        let opus = cache.clip("greet", Codec::Opus).unwrap().clone();
        let packets = opus.audio(Codec::Opus).unwrap();
        assert_eq!(Codec::Opus.count_frames(packets), Some(25), "0.5 s");
        assert!(cache.audio_bytes() > (4000 + 2400) * 3 + packets.len());
        // G.711 from the audio at 8 kHz: the 300 Hz tone (the 5 kHz one is
        // above what 8 kHz carries).
        let line = greet.line().unwrap();
        let mut pcmu = vec![0i16; 4000];
        crate::media::codec::Decoder::new(Codec::Pcmu)
            .decode(a.audio(Codec::Pcmu).unwrap(), &mut pcmu);
        assert!(snr_db(&line[400..], &pcmu[400..]) > 30.0);
        // G.722 from the 16 kHz audio itself: decoded wideband, the 5 kHz
        // tone is there too.
        let mut wide = vec![0i16; 8000];
        crate::media::g722::G722Decoder::new().decode(a.audio(Codec::G722).unwrap(), &mut wide);
        let snr = snr_db(&greet.samples[1600..7800], &wide[1600 + 22..7800 + 22]);
        let best = (0..64)
            .map(|lag| snr_db(&greet.samples[1600..7800], &wide[1600 + lag..7800 + lag]))
            .fold(snr, f64::max);
        assert!(best > 15.0, "wideband phrase through G.722: {best:.1} dB");
        assert!(cache.clip("nope", Codec::Pcma).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_manifest_is_a_clear_error() {
        let dir = tempdir("manifest");
        std::fs::write(dir.join(MANIFEST_FILE), "phrases = 3 [").unwrap();
        let err = check(&config(&dir)).unwrap_err();
        assert!(err.to_string().contains("manifest"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
