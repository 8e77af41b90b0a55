//! The phrase cache: each phrase key of `[cache.phrases]` → a μ-law 8 kHz
//! clip, loaded once at start and shared by every call (`Arc`).
//!
//! On disk: `cache/<key>.raw` (headerless μ-law 8 kHz) and
//! `cache/manifest.toml`, which records for each phrase the SHA-256 of the
//! text and voice it was synthesised from and of the audio written. A phrase
//! is *missing* when it has no audio, *stale* when its text or voice changed
//! since it was built or its audio is not what was built.

mod build;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use build::{build, BuildReport, SynthesisError};

use crate::cache::config::CacheConfig;
use crate::media::codec::{Codec, Decoder, Encoder, SUPPORTED};
use crate::media::playout::Clip;

pub mod config;

pub const MANIFEST_FILE: &str = "manifest.toml";
/// Clips longer than this (a minute of audio) are refused: a phrase is a
/// sentence, and the cache lives in memory.
pub const MAX_CLIP_BYTES: u64 = 8000 * 60;

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
    #[error("cache is not usable ({problems}); run `sav cache build`")]
    Unusable { problems: String },
    #[error(transparent)]
    Synthesis(#[from] SynthesisError),
}

/// One phrase's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// SHA-256 of the voice settings and text the audio was made from.
    pub text_sha256: String,
    /// SHA-256 of the `.raw` file written.
    pub audio_sha256: String,
    /// Length of the audio in bytes (= samples at 8 kHz).
    pub bytes: u64,
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
    hasher.update(format!("espeak-ng\0{}\0{}\0", config.voice, config.speed));
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
    dir.join(format!("{key}.raw"))
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
    /// The audio file is over [`MAX_CLIP_BYTES`].
    TooLong(u64),
}

impl fmt::Display for PhraseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhraseProblem::Missing => write!(f, "no audio"),
            PhraseProblem::StaleText => write!(f, "stale audio (text or voice changed)"),
            PhraseProblem::AudioMismatch => write!(f, "audio differs from the manifest"),
            PhraseProblem::TooLong(n) => write!(f, "audio of {n} bytes is over {MAX_CLIP_BYTES}"),
        }
    }
}

/// Checks every phrase of the table against the files and the manifest.
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
    if audio.len() as u64 > MAX_CLIP_BYTES {
        return Ok(Some(PhraseProblem::TooLong(audio.len() as u64)));
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
    if meta.len() > MAX_CLIP_BYTES {
        // Do not read a huge file into memory just to refuse it.
        return Ok(Some(vec![0; (MAX_CLIP_BYTES + 1) as usize]));
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

/// The loaded cache: every phrase's audio, in memory once per codec (the
/// files' μ-law, and each other codec encoded from it when the cache
/// loads), shared by every call.
#[derive(Debug, Clone, Default)]
pub struct PhraseCache {
    clips: BTreeMap<String, Clip>,
}

impl PhraseCache {
    /// Loads every phrase of the table. Fails when one has no audio (a call
    /// would otherwise go silent where the phrase should be); stale audio is
    /// loaded and reported so the caller can warn.
    pub fn load(config: &CacheConfig) -> Result<(Self, Vec<(String, PhraseProblem)>), CacheError> {
        let problems = check(config)?;
        let fatal: Vec<String> = problems
            .iter()
            .filter(|(_, p)| matches!(p, PhraseProblem::Missing | PhraseProblem::TooLong(_)))
            .map(|(key, p)| format!("{key}: {p}"))
            .collect();
        if !fatal.is_empty() {
            return Err(CacheError::Unusable {
                problems: fatal.join(", "),
            });
        }
        let mut clips = BTreeMap::new();
        for key in config.phrases.keys() {
            let path = clip_path(&config.dir, key);
            let audio = read_clip(&path)?.unwrap_or_default();
            let mut linear = vec![0i16; audio.len()];
            Decoder::new(Codec::Pcmu).decode(&audio, &mut linear);
            let encodings = SUPPORTED
                .iter()
                .map(|&codec| {
                    let coded: Arc<[u8]> = if codec == Codec::Pcmu {
                        Arc::from(audio.as_slice())
                    } else {
                        let mut coded = Vec::with_capacity(linear.len());
                        Encoder::new(codec).encode_extend(&linear, &mut coded);
                        Arc::from(coded)
                    };
                    (codec, coded)
                })
                .collect();
            if let Some(clip) = Clip::with_encodings(key.as_str(), encodings) {
                clips.insert(key.clone(), clip);
            }
        }
        Ok((Self { clips }, problems))
    }

    /// The clip of a phrase, in every codec; cloning it shares the audio.
    pub fn clip(&self, key: &str) -> Option<&Clip> {
        self.clips.get(key)
    }

    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Total audio held, in bytes (every codec).
    pub fn audio_bytes(&self) -> usize {
        self.clips
            .values()
            .map(|clip| clip.len() * clip.codecs().count())
            .sum()
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
        }
    }

    /// Writes a phrase as `sav cache build` would, without a TTS.
    fn put(config: &CacheConfig, key: &str, audio: &[u8]) {
        let mut manifest = Manifest::load(&config.dir).unwrap();
        std::fs::write(clip_path(&config.dir, key), audio).unwrap();
        manifest.phrases.insert(
            key.to_string(),
            ManifestEntry {
                text_sha256: text_hash(config, &config.phrases[key]),
                audio_sha256: audio_hash(audio),
                bytes: audio.len() as u64,
            },
        );
        manifest.save(&config.dir).unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sav-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn check_reports_missing_stale_and_tampered_audio() {
        let dir = tempdir("check");
        let mut cfg = config(&dir);
        assert_eq!(
            check(&cfg).unwrap(),
            vec![
                ("bye".into(), PhraseProblem::Missing),
                ("greet".into(), PhraseProblem::Missing)
            ]
        );
        put(&cfg, "greet", &[1, 2, 3]);
        put(&cfg, "bye", &[4, 5]);
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

        std::fs::write(clip_path(&dir, "bye"), [9, 9]).unwrap();
        assert_eq!(
            check(&cfg).unwrap(),
            vec![("bye".into(), PhraseProblem::AudioMismatch)]
        );
        std::fs::write(clip_path(&dir, "bye"), []).unwrap();
        assert_eq!(
            check(&cfg).unwrap(),
            vec![("bye".into(), PhraseProblem::Missing)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_shares_audio_and_refuses_missing_phrases() {
        let dir = tempdir("load");
        let cfg = config(&dir);
        put(&cfg, "greet", &[7; 480]);
        let err = PhraseCache::load(&cfg).unwrap_err();
        assert!(err.to_string().contains("bye: no audio"), "{err}");
        put(&cfg, "bye", &[8; 160]);
        let (cache, problems) = PhraseCache::load(&cfg).unwrap();
        assert!(problems.is_empty());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.audio_bytes(), 640 * SUPPORTED.len());
        let a = cache.clip("greet").unwrap().clone();
        let b = cache.clip("greet").unwrap().clone();
        for codec in SUPPORTED {
            assert!(
                Arc::ptr_eq(a.audio(codec).unwrap(), b.audio(codec).unwrap()),
                "{codec}: clips are shared, not copied"
            );
            assert_eq!(a.audio(codec).unwrap().len(), 480, "{codec}");
        }
        assert_eq!(
            &a.audio(Codec::Pcmu).unwrap()[..],
            &[7; 480][..],
            "μ-law as on disk"
        );
        // A-law: encoded once at load, the same sound.
        assert_eq!(
            &a.audio(Codec::Pcma).unwrap()[..],
            &[crate::media::g711::ulaw_to_alaw(7); 480][..]
        );
        // G.722: encoded once at load from the same linear audio.
        let mut linear = [0i16; 480];
        Decoder::new(Codec::Pcmu).decode(&[7; 480], &mut linear);
        let mut g722 = Vec::new();
        Encoder::new(Codec::G722).encode_extend(&linear, &mut g722);
        assert_eq!(&a.audio(Codec::G722).unwrap()[..], &g722[..]);
        assert!(cache.clip("nope").is_none());
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
