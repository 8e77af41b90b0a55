//! `[cache]`: where the phrase cache lives, its voice, and the phrases.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub dir: PathBuf,
    #[serde(default = "default_voice")]
    pub voice: String,
    #[serde(default = "default_speed")]
    pub speed: u32,
    pub phrases: BTreeMap<String, String>,
    /// Code the phrases in the codecs made on demand (G.722, Opus) that
    /// `[media] codecs` lists, in the background as soon as the cache
    /// loads, so no call rings longer while they are made.
    #[serde(default = "default_code_at_start")]
    pub code_at_start: bool,
}

fn default_code_at_start() -> bool {
    true
}

fn default_voice() -> String {
    "fr".into()
}

fn default_speed() -> u32 {
    165
}
