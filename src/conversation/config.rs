//! `[call]`: the phrases and keys of every call (greeting, goodbye, transfer).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallConfig {
    /// What a new caller hears on answer, from the cache.
    pub greeting: Vec<String>,
    /// The same when there is no STT: the caller answers with keys only.
    #[serde(default = "default_greeting_dtmf")]
    pub greeting_dtmf: Vec<String>,
    #[serde(default = "default_hangup_digit")]
    pub hangup_digit: char,
    pub goodbye: String,
    /// Blind transfer target (REFER's Refer-To), e.g. the support queue;
    /// no transfer when absent.
    pub transfer_to: Option<String>,
    /// Key that asks for a human.
    #[serde(default = "default_transfer_digit")]
    pub transfer_digit: char,
    /// Said before the REFER.
    #[serde(default = "default_transfer_phrase")]
    pub transfer: String,
    /// Said when the transfer failed; the call goes on.
    #[serde(default = "default_transfer_failed_phrase")]
    pub transfer_failed: String,
}

fn default_transfer_digit() -> char {
    '0'
}

fn default_transfer_phrase() -> String {
    "transfer".into()
}

fn default_transfer_failed_phrase() -> String {
    "transfer_failed".into()
}

fn default_greeting_dtmf() -> Vec<String> {
    vec!["greet".into(), "menu".into()]
}

fn default_hangup_digit() -> char {
    '#'
}
