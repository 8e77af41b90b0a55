//! What the caller hears on answer: the cached greeting, or for a known
//! customer the hello, their name and ticket through TTS, then the rest.

use crate::conversation::config::CallConfig;
use crate::conversation::guide;

/// What the caller hears on answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting {
    /// Cached phrases, at once.
    pub phrases: Vec<String>,
    /// Text spoken through TTS behind them (a known customer by name), with
    /// the cached phrase said instead when the TTS fails.
    pub speak: Option<(String, Option<String>)>,
    /// Cached phrases after the spoken text.
    pub then: Vec<String>,
}

/// A known customer, as the greeting needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownCaller {
    pub title: String,
    pub first_name: String,
    pub last_name: String,
    /// The newest open ticket: product, problem.
    pub ticket: Option<(String, String)>,
}

/// The greeting for this call: the cached one (`[call] greeting`, or
/// `greeting_dtmf` when the caller can only use keys); a known customer,
/// when TTS is there, gets `greet` and their name and ticket behind it
/// (the seed's `say_hybrid("greet", "Monsieur Dupont, je vois votre ticket…")`).
pub fn greeting(
    call: &CallConfig,
    flow: &guide::FlowConfig,
    caller: Option<&KnownCaller>,
    listens: bool,
    speaks: bool,
) -> Greeting {
    let mut greeting = greeting_proper(call, flow, caller, listens, speaks);
    // The disclosure comes first, whoever calls.
    if let Some(disclosure) = &call.disclosure {
        greeting.phrases.insert(0, disclosure.clone());
    }
    greeting
}

fn greeting_proper(
    call: &CallConfig,
    flow: &guide::FlowConfig,
    caller: Option<&KnownCaller>,
    listens: bool,
    speaks: bool,
) -> Greeting {
    let standard = if listens {
        call.greeting.clone()
    } else {
        call.greeting_dtmf.clone()
    };
    let Some(caller) = caller.filter(|_| speaks) else {
        return Greeting {
            phrases: standard,
            ..Greeting::default()
        };
    };
    let template = match &caller.ticket {
        Some(_) => &flow.known_greeting,
        None => &flow.known_greeting_no_ticket,
    };
    let (product, problem) = caller.ticket.clone().unwrap_or_default();
    let text = template
        .replace("{title}", &caller.title)
        .replace("{first_name}", &caller.first_name)
        .replace("{last_name}", &caller.last_name)
        .replace("{product}", &product)
        .replace("{problem}", &problem);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = text.trim_start_matches([',', ' ']).to_string();
    // The first cached phrase (the hello) at once; the rest of the standard
    // greeting is what the spoken text replaces, and what is said if it fails.
    let mut phrases = standard;
    let rest = if phrases.len() > 1 {
        phrases.split_off(1)
    } else {
        Vec::new()
    };
    if listens {
        Greeting {
            phrases,
            speak: Some((text, rest.first().cloned())),
            then: Vec::new(),
        }
    } else {
        // Without STT the menu is still said: keys are the only way in.
        Greeting {
            phrases,
            speak: Some((text, None)),
            then: rest,
        }
    }
}
