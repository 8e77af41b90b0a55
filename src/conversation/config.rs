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

impl CallConfig {
    /// Every phrase key this section names, with its field: the greetings,
    /// the goodbye, and the transfer phrases when there is a transfer target.
    pub fn phrase_keys(&self) -> impl Iterator<Item = (&'static str, &String)> {
        let transfer = self.transfer_to.as_ref().map(|_| {
            [
                ("transfer", &self.transfer),
                ("transfer_failed", &self.transfer_failed),
            ]
        });
        self.greeting
            .iter()
            .map(|k| ("greeting", k))
            .chain(self.greeting_dtmf.iter().map(|k| ("greeting_dtmf", k)))
            .chain([("goodbye", &self.goodbye)])
            .chain(transfer.into_iter().flatten())
    }
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
