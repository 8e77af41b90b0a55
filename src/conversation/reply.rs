//! Generating a reply: the LLM's text streamed, cut into sentences, each
//! sentence spoken by the TTS as soon as it is complete, the audio streamed
//! back chunk by chunk. Runs as a task per reply; the call task turns its
//! messages into playout (streams behind the filler) and conversation events.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, Instrument};

use crate::providers::llm::{ChatMessage, LlmClient, Usage};
use crate::providers::sentences::SentenceSplitter;
use crate::providers::stt::SpeechToText;
use crate::providers::tts::TextToSpeech;
use crate::providers::ProviderError;

/// The providers a call talks with.
#[derive(Clone)]
pub struct Providers {
    pub llm: Arc<LlmClient>,
    pub tts: Arc<dyn TextToSpeech>,
    pub stt: Arc<dyn SpeechToText>,
    pub system_prompt: String,
    pub history_turns: usize,
}

/// What background speech work reports to the call.
#[derive(Debug)]
pub enum SpeechMsg {
    /// The transcript of the caller's turn `turn` (only the latest counts).
    Transcript {
        turn: u64,
        result: Result<String, ProviderError>,
    },
    /// Sentence `index` of reply `reply` is complete and goes to TTS.
    Sentence {
        reply: u64,
        index: usize,
        text: String,
    },
    Audio {
        reply: u64,
        index: usize,
        chunk: Vec<u8>,
    },
    SentenceDone {
        reply: u64,
        index: usize,
    },
    /// The reply is generated; `sentences` were spoken (0: nothing to say).
    Done {
        reply: u64,
        text: String,
        sentences: usize,
        usage: Option<Usage>,
    },
    Failed {
        reply: u64,
        error: ProviderError,
    },
}

/// Starts transcribing the caller's turn `turn`.
pub fn transcribe(
    providers: &Providers,
    turn: u64,
    utterance: &[i16],
    out: mpsc::Sender<SpeechMsg>,
) {
    let mut session = providers.stt.session();
    session.push(utterance);
    tokio::spawn(
        async move {
            let result = session.finish().await;
            let _ = out.send(SpeechMsg::Transcript { turn, result }).await;
        }
        .in_current_span(),
    );
}

/// Starts generating reply `reply` to the conversation so far.
pub fn generate(
    providers: &Providers,
    reply: u64,
    messages: Vec<ChatMessage>,
    out: mpsc::Sender<SpeechMsg>,
) -> tokio::task::JoinHandle<()> {
    let (llm, tts) = (providers.llm.clone(), providers.tts.clone());
    tokio::spawn(
        async move {
            if let Err(error) = run(reply, &llm, tts.as_ref(), &messages, &out).await {
                let _ = out.send(SpeechMsg::Failed { reply, error }).await;
            }
        }
        .in_current_span(),
    )
}

async fn run(
    reply: u64,
    llm: &LlmClient,
    tts: &dyn TextToSpeech,
    messages: &[ChatMessage],
    out: &mpsc::Sender<SpeechMsg>,
) -> Result<(), ProviderError> {
    let mut stream = llm.stream(messages).await?;
    let mut splitter = SentenceSplitter::new();
    let mut text = String::new();
    let mut index = 0;
    while let Some(piece) = stream.next_text().await? {
        text.push_str(&piece);
        for sentence in splitter.push(&piece) {
            match speak(reply, index, &sentence, tts, out).await? {
                Spoken::Yes => index += 1,
                Spoken::Nothing => {}
                Spoken::Cancelled => return Ok(()),
            }
        }
    }
    if let Some(rest) = splitter.finish() {
        match speak(reply, index, &rest, tts, out).await? {
            Spoken::Yes => index += 1,
            Spoken::Nothing => {}
            Spoken::Cancelled => return Ok(()),
        }
    }
    debug!(reply, first_token_ms = ?stream.first_token.map(|t| (t - stream.started).as_millis()), "reply generated");
    let _ = out
        .send(SpeechMsg::Done {
            reply,
            text,
            sentences: index,
            usage: stream.usage(),
        })
        .await;
    Ok(())
}

/// What became of a sentence.
enum Spoken {
    Yes,
    /// Nothing speakable in it (markdown, emoji): no index used.
    Nothing,
    /// The call is gone: stop generating (and paying for) the reply.
    Cancelled,
}

async fn speak(
    reply: u64,
    index: usize,
    sentence: &str,
    tts: &dyn TextToSpeech,
    out: &mpsc::Sender<SpeechMsg>,
) -> Result<Spoken, ProviderError> {
    let text = speakable(sentence);
    if text.is_empty() {
        return Ok(Spoken::Nothing);
    }
    let announce = SpeechMsg::Sentence {
        reply,
        index,
        text: text.clone(),
    };
    if out.send(announce).await.is_err() {
        return Ok(Spoken::Cancelled);
    }
    let mut audio = tts.synthesize(text);
    while let Some(chunk) = audio.recv().await {
        let chunk = chunk?;
        if out
            .send(SpeechMsg::Audio {
                reply,
                index,
                chunk,
            })
            .await
            .is_err()
        {
            return Ok(Spoken::Cancelled);
        }
    }
    if out
        .send(SpeechMsg::SentenceDone { reply, index })
        .await
        .is_err()
    {
        return Ok(Spoken::Cancelled);
    }
    Ok(Spoken::Yes)
}

/// Text the TTS can say: no markdown, no lists, no emoji, one line.
pub fn speakable(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '*' | '#' | '`' | '_' | '~' | '>' | '|' | '[' | ']'))
        .filter(|c| c.len_utf8() < 4) // emoji and other astral symbols
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let mut out = String::with_capacity(cleaned.len());
    for word in cleaned.split_whitespace() {
        // List bullets at the start of an item.
        if out.is_empty() && (word == "-" || word == "•") {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    // Only punctuation left is nothing to say.
    if out.chars().all(|c| !c.is_alphanumeric()) {
        out.clear();
    }
    out
}

/// The conversation for the LLM: the system prompt and the last turns.
pub fn messages(system_prompt: &str, history: &[ChatMessage], keep: usize) -> Vec<ChatMessage> {
    let mut all = vec![ChatMessage::system(system_prompt)];
    let start = history.len().saturating_sub(keep * 2);
    all.extend_from_slice(&history[start..]);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_emoji_are_not_spoken() {
        assert_eq!(
            speakable("**Redémarrez** la `box` 😀 !"),
            "Redémarrez la box !"
        );
        assert_eq!(
            speakable("- Débranchez\n- Attendez"),
            "Débranchez - Attendez"
        );
        assert_eq!(speakable("  "), "");
        assert_eq!(speakable("😀 !"), "");
    }

    #[test]
    fn history_keeps_the_last_turns_after_the_prompt() {
        let history: Vec<ChatMessage> = (0..10)
            .map(|i| {
                if i % 2 == 0 {
                    ChatMessage::user(format!("u{i}"))
                } else {
                    ChatMessage::assistant(format!("a{i}"))
                }
            })
            .collect();
        let m = messages("prompt", &history, 2);
        let contents: Vec<&str> = m.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, vec!["prompt", "u6", "a7", "u8", "a9"]);
    }
}
