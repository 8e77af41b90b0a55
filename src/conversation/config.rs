//! `[call]`: the phrases and keys of every call (greeting, goodbye, transfer).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallConfig {
    /// What a new caller hears on answer, from the cache.
    pub greeting: Vec<String>,
    /// A phrase every caller hears before the greeting (that the call is
    /// recorded, that an automated assistant answers); none when absent.
    #[serde(default)]
    pub disclosure: Option<String>,
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
    /// A caller who says and presses nothing: reprompt, then escalation.
    #[serde(default)]
    pub no_input: NoInputConfig,
}

/// `[call.no_input]`: the line is open (the bot said its piece and waits)
/// and the caller says and presses nothing. After `reprompt_after_s` (or
/// `step_reprompt_after_s` while they carry out a fix step of the guide)
/// the bot says `reprompt` and asks its last question again; after
/// `escalate_after_s` more of silence, the call escalates: a transfer to
/// `[call] transfer_to` when there is one (and it has not failed in this
/// call), else `callback` and the end of the call. Anything the caller
/// says or presses starts the count again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInputConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_reprompt_after")]
    pub reprompt_after_s: f64,
    #[serde(default = "default_step_reprompt_after")]
    pub step_reprompt_after_s: f64,
    #[serde(default = "default_escalate_after")]
    pub escalate_after_s: f64,
    /// Cached: "are you still there?"
    #[serde(default = "default_reprompt_phrase")]
    pub reprompt: String,
    /// How the call escalates: "transfer" (to `[call] transfer_to`, the
    /// default when there is one) or "callback".
    #[serde(default)]
    pub escalation: Option<NoInputEscalation>,
    /// Cached: a human will call back, goodbye (the call ends after it).
    #[serde(default = "default_callback_phrase")]
    pub callback: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoInputEscalation {
    Transfer,
    Callback,
}

impl Default for NoInputConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            reprompt_after_s: default_reprompt_after(),
            step_reprompt_after_s: default_step_reprompt_after(),
            escalate_after_s: default_escalate_after(),
            reprompt: default_reprompt_phrase(),
            escalation: None,
            callback: default_callback_phrase(),
        }
    }
}

impl NoInputConfig {
    /// The first wait that is not a number of seconds in (0, 3600]: its
    /// field and value.
    pub fn bad_wait(&self) -> Option<(&'static str, f64)> {
        [
            ("call.no_input.reprompt_after_s", self.reprompt_after_s),
            (
                "call.no_input.step_reprompt_after_s",
                self.step_reprompt_after_s,
            ),
            ("call.no_input.escalate_after_s", self.escalate_after_s),
        ]
        .into_iter()
        .find(|(_, value)| !(value.is_finite() && *value > 0.0 && *value <= 3600.0))
    }
}

fn default_true() -> bool {
    true
}

fn default_reprompt_after() -> f64 {
    10.0
}

fn default_step_reprompt_after() -> f64 {
    180.0
}

fn default_escalate_after() -> f64 {
    10.0
}

fn default_reprompt_phrase() -> String {
    "still_there".into()
}

fn default_callback_phrase() -> String {
    "callback".into()
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
        let no_input = self.no_input.enabled.then_some({
            [
                ("no_input.reprompt", &self.no_input.reprompt),
                ("no_input.callback", &self.no_input.callback),
            ]
        });
        self.disclosure
            .iter()
            .map(|k| ("disclosure", k))
            .chain(self.greeting.iter().map(|k| ("greeting", k)))
            .chain(self.greeting_dtmf.iter().map(|k| ("greeting_dtmf", k)))
            .chain([("goodbye", &self.goodbye)])
            .chain(transfer.into_iter().flatten())
            .chain(no_input.into_iter().flatten())
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

/// The turn-taking settings, present when STT, LLM and TTS are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridConfig {
    /// Cached phrases that cover the wait, used in turn, never the same
    /// twice in a row.
    pub fillers: Vec<String>,
    /// Said when a provider fails.
    pub fallback: String,
    /// Words that are no real interruption ("mhm", "oui"…), lower case.
    pub backchannel: Vec<String>,
    /// Said when the caller's words could not be made out (empty transcript).
    pub not_understood: Option<String>,
}

impl HybridConfig {
    /// No words, or only backchannel words: not a turn of its own.
    pub fn is_backchannel(&self, transcript: &str) -> bool {
        let words: Vec<String> = transcript
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        words
            .iter()
            .all(|w| self.backchannel.iter().any(|b| b == w))
    }
}
