//! A call's set-up: the configuration in force and the caller, turned into
//! what the cores take (the conversation with its greeting, hybrid speech
//! and guide; the VAD; the playout's stream policy) and the caller's
//! identity (E.164 number, customer record).

use std::time::Duration;

use tracing::warn;

use crate::call::Live;
use crate::conversation::guide::Guide;
use crate::conversation::{self, Conversation, HybridConfig, KnownCaller};
use crate::media::playout::StreamPolicy;
use crate::media::vad::VadConfig;
use crate::store::{Customer, Store};

/// The store's answer to "who is this caller" is waited for this long.
const CUSTOMER_LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// What the configured providers let the call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Abilities {
    /// Speech-to-text: the caller may answer by voice.
    pub listens: bool,
    /// The recogniser takes the caller's audio as they speak.
    pub streams: bool,
    /// Text-to-speech: the bot may say what is not cached.
    pub speaks: bool,
    /// An LLM: problems can be classified.
    pub classifies: bool,
    /// Some provider is configured: turn-taking with fillers runs.
    pub hybrid: bool,
}

impl Abilities {
    pub fn of(providers: Option<&crate::call::reply::Providers>) -> Abilities {
        Abilities {
            listens: providers.is_some_and(|p| p.stt.is_some()),
            streams: providers.is_some_and(|p| p.stt.as_ref().is_some_and(|s| s.streaming())),
            speaks: providers.is_some_and(|p| p.tts.is_some()),
            classifies: providers.is_some_and(|p| p.llm.is_some()),
            hybrid: providers.is_some(),
        }
    }
}

/// A known customer, as the greeting and the guide need them.
pub fn known_caller(customer: &Customer) -> KnownCaller {
    KnownCaller {
        title: customer.title.clone(),
        first_name: customer.first_name.clone(),
        last_name: customer.last_name.clone(),
        ticket: customer
            .tickets
            .first()
            .map(|t| (t.product.clone(), t.problem.clone())),
    }
}

/// The call's conversation: its greeting, hybrid speech when providers are
/// configured, and the guided flow when the knowledge base has problems.
pub fn conversation(live: &Live, known: Option<&KnownCaller>, can: Abilities) -> Conversation {
    let config = &live.config;
    let mut conversation = Conversation::new(config.call.clone()).with_greeting(
        conversation::greeting(&config.call, &config.flow, known, can.listens, can.speaks),
    );
    if can.hybrid {
        conversation = conversation.with_hybrid(HybridConfig {
            fillers: config.hybrid.fillers.clone(),
            fallback: config.hybrid.fallback.clone(),
            backchannel: config
                .hybrid
                .backchannel
                .iter()
                .map(|w| w.to_lowercase())
                .collect(),
            not_understood: config.hybrid.not_understood.clone(),
        });
    }
    if let Some(knowledge) = &live.knowledge {
        let first_name = known.map(|k| k.first_name.as_str()).unwrap_or("");
        let ticket = known
            .and_then(|k| k.ticket.as_ref())
            .map(|(product, problem)| format!("{product} {problem}"))
            .unwrap_or_default();
        let guide = Guide::new(
            knowledge.clone(),
            can.classifies,
            can.speaks && can.classifies,
        )
        .with_first_name(first_name)
        .with_ticket(&ticket);
        conversation = conversation.with_guide(guide);
    }
    conversation
}

/// The jitter-buffer settings of generated speech.
pub fn stream_policy(live: &Live) -> StreamPolicy {
    let hybrid = &live.config.hybrid;
    StreamPolicy {
        preroll_frames: (hybrid.preroll_ms as usize).div_ceil(20),
        starve_grace_frames: (hybrid.filler_grace_ms / 20).max(1) as u32,
    }
}

/// Voice activity and end of turn, when the call listens.
pub fn vad(live: &Live, can: Abilities) -> Option<VadConfig> {
    let listen = &live.config.listen;
    can.listens.then(|| VadConfig {
        threshold: listen.vad_threshold,
        min_speech: Duration::from_millis(listen.min_speech_ms),
        hangover: Duration::from_millis(listen.hangover_ms),
        end_of_turn: listen.end_of_turn_from_voice.then(|| {
            (
                Duration::from_millis(listen.finished_hangover_ms),
                Duration::from_millis(listen.unfinished_hangover_ms),
            )
        }),
        max_utterance: Duration::from_millis(listen.max_utterance_ms),
        echo_cancelling: listen.echo_cancelling,
        stream_audio: can.streams,
        ..VadConfig::default()
    })
}

/// The caller's number in E.164: the asserted identity's URI when there is
/// one, else the From user.
pub fn caller_number(
    asserted: Option<&str>,
    from_user: &str,
    country_code: &str,
) -> Option<String> {
    let asserted = asserted.map(|value| {
        // `"Name" <sip:+33…@host>` or a bare URI; the first of a list.
        let value = value.split(',').next().unwrap_or_default();
        match (value.find('<'), value.find('>')) {
            (Some(open), Some(close)) if open < close => value[open + 1..close].to_string(),
            _ => value.trim().to_string(),
        }
    });
    asserted
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(from_user))
        .find_map(|candidate| crate::store::phone::normalise(candidate, country_code).ok())
}

/// The customer with this number, if the store answers in time.
pub async fn lookup_customer(store: &Store, number: &str) -> Option<Customer> {
    match tokio::time::timeout(CUSTOMER_LOOKUP_TIMEOUT, store.find_customer(number)).await {
        Ok(Ok(customer)) => customer,
        Ok(Err(error)) => {
            warn!(%error, "customer lookup failed");
            None
        }
        Err(_) => {
            warn!("customer lookup timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asserted_identity_wins_over_from_and_national_numbers_complete() {
        assert_eq!(
            caller_number(Some("\"Dupont\" <sip:+33612345678@pbx>"), "anonymous", "33"),
            Some("+33612345678".into())
        );
        assert_eq!(
            caller_number(None, "0612345678", "33"),
            Some("+33612345678".into())
        );
        assert_eq!(caller_number(None, "anonymous", "33"), None);
    }
}
