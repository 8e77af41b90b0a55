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
}

fn default_voice() -> String {
    "fr".into()
}

fn default_speed() -> u32 {
    165
}
