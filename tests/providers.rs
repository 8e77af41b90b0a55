//! The real HTTP clients against the fake providers: the wire formats
//! (SSE chat chunks, chunked audio, transcriptions) and every fault.

mod support;

use std::time::Duration;

use sav::providers::llm::{ChatMessage, LlmClient, LlmConfig};
use sav::providers::stt::{OpenAiTranscriber, SpeechToText, SttConfig};
use sav::providers::stt_stream::{StreamingConfig, StreamingTranscriber};
use sav::providers::tts::{ElevenLabs, TextToSpeech, TtsConfig};
use sav::providers::ProviderError;
use support::fake_providers::{FakeBehaviour, FakeProviders, Fault};

fn llm_config(fake: &FakeProviders) -> LlmConfig {
    LlmConfig {
        base_url: format!("{}/v1", fake.base_url()),
        model: "fake".into(),
        api_key_env: None,
        api_key_file: None,
        temperature: 0.7,
        max_tokens: 100,
        connect_timeout_ms: 1000,
        first_token_timeout_ms: 2000,
        stall_timeout_ms: 500,
    }
}

fn llm(fake: &FakeProviders) -> LlmClient {
    LlmClient::new(llm_config(fake)).unwrap()
}

fn tts(fake: &FakeProviders, format: &str) -> ElevenLabs {
    ElevenLabs::new(TtsConfig {
        engine: "elevenlabs".into(),
        base_url: fake.base_url(),
        voice_id: "voice".into(),
        model: "eleven_flash_v2_5".into(),
        api_key_env: None,
        api_key_file: None,
        output_format: format.into(),
        first_byte_timeout_ms: 2000,
        stall_timeout_ms: 500,
        espeak_voice: "fr".into(),
        espeak_speed: 165,
    })
    .unwrap()
}

fn fast() -> FakeBehaviour {
    FakeBehaviour {
        llm_ttfb: Duration::from_millis(50),
        llm_token_interval: Duration::from_millis(5),
        tts_ttfb: Duration::from_millis(20),
        tts_speed: 20,
        stt_latency: Duration::from_millis(10),
        ..Default::default()
    }
}

async fn reply(
    client: &LlmClient,
) -> Result<(String, Option<sav::providers::llm::Usage>), ProviderError> {
    let mut stream = client
        .stream(&[ChatMessage::user("Ma box ne marche plus")])
        .await?;
    let mut text = String::new();
    while let Some(piece) = stream.next_text().await? {
        text.push_str(&piece);
    }
    Ok((text, stream.usage()))
}

async fn synthesize(engine: &dyn TextToSpeech, text: &str) -> Result<Vec<u8>, ProviderError> {
    let mut rx = engine.synthesize(text.into(), sav::media::codec::Codec::Pcmu);
    let mut audio = Vec::new();
    while let Some(chunk) = rx.recv().await {
        audio.extend(chunk?);
    }
    Ok(audio)
}

#[tokio::test]
async fn llm_streams_the_reply_and_counts_usage() {
    let fake = FakeProviders::start(0, fast());
    let client = llm(&fake);
    let (text, usage) = reply(&client).await.unwrap();
    assert_eq!(text, FakeBehaviour::default().llm_reply);
    let usage = usage.expect("usage chunk");
    assert_eq!(usage.prompt_tokens, 42);
    assert!(usage.completion_tokens > 5);
    let sent = fake.counts().last_chat.expect("request body");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["model"], "fake");
    assert_eq!(sent["messages"][0]["content"], "Ma box ne marche plus");
}

#[tokio::test]
async fn llm_faults_are_typed_errors() {
    let fake = FakeProviders::start(0, fast());
    let client = llm(&fake);
    let cases: [(Fault, &str); 5] = [
        (Fault::Status(500), "status"),
        (Fault::Status(429), "rate_limited"),
        (Fault::StallAfter(3), "timeout"),
        (Fault::DisconnectAfter(3), "disconnected"),
        (Fault::Garbage, "malformed"),
    ];
    for (fault, kind) in cases {
        fake.set(|b| b.llm_fault = Some(fault.clone()));
        let error = reply(&client).await.expect_err("a fault");
        assert_eq!(error.kind(), kind, "{fault:?}: {error}");
        if let ProviderError::RateLimited { retry_after, .. } = error {
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
    }
}

/// A provider that echoes the key it was sent in its error body: the key
/// is in neither the error nor its log line (both print the error).
#[tokio::test]
async fn a_key_a_provider_echoes_never_reaches_the_error_or_the_log() {
    const KEY: &str = "sk-proj-Zx81Qw72Er63Ty54Ui45";
    let fake = FakeProviders::start(0, fast());
    std::env::set_var("SAV_TEST_ECHOED_KEY", KEY);
    let config = LlmConfig {
        api_key_env: Some("SAV_TEST_ECHOED_KEY".into()),
        api_key_file: None,
        ..llm_config(&fake)
    };
    let client = LlmClient::new(config).unwrap();
    fake.set(|b| b.llm_fault = Some(Fault::Status(401)));
    let error = reply(&client).await.expect_err("a 401");
    let shown = format!("{error} {error:?}");
    assert_eq!(error.kind(), "status", "{shown}");
    assert!(!shown.contains("Zx81Qw72"), "{shown}");
    assert!(shown.contains("Incorrect API key provided"), "{shown}");
}

#[tokio::test]
async fn tts_streams_ulaw_or_resampled_pcm() {
    let fake = FakeProviders::start(0, fast());
    let text = "Redémarrez la box, puis attendez.";
    let expected = (text.chars().count() * 560).max(1600);
    let ulaw = synthesize(&tts(&fake, "ulaw_8000"), text).await.unwrap();
    assert_eq!(ulaw.len(), expected);
    let from_pcm = synthesize(&tts(&fake, "pcm_16000"), text).await.unwrap();
    assert!(
        (from_pcm.len() as i64 - expected as i64).abs() <= 2,
        "{} vs {expected}",
        from_pcm.len()
    );
    assert_eq!(
        fake.counts().tts_texts,
        vec![text.to_string(), text.to_string()]
    );
}

#[tokio::test]
async fn tts_faults_are_typed_errors() {
    let fake = FakeProviders::start(0, fast());
    let engine = tts(&fake, "ulaw_8000");
    let cases: [(Fault, &str); 4] = [
        (Fault::Status(500), "status"),
        (Fault::Garbage, "malformed"),
        (Fault::StallAfter(2), "timeout"),
        (Fault::DisconnectAfter(2), "disconnected"),
    ];
    for (fault, kind) in cases {
        fake.set(|b| b.tts_fault = Some(fault.clone()));
        let error = synthesize(&engine, "Bonjour à vous.")
            .await
            .expect_err("a fault");
        assert_eq!(error.kind(), kind, "{fault:?}: {error}");
    }
}

/// A turn of `chunks` × 100 ms said to a streaming session: its partial
/// transcripts as they came, and its final transcript.
async fn stream_turn(
    stt: &StreamingTranscriber,
    chunks: usize,
) -> (Vec<String>, Result<String, ProviderError>) {
    let mut session = stt.session();
    let mut partials = session
        .partials()
        .expect("a streaming session has partials");
    for _ in 0..chunks {
        session.push(&[500i16; 800]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = session.finish().await;
    let mut seen = Vec::new();
    while let Ok(partial) = partials.try_recv() {
        seen.push(partial);
    }
    (seen, text)
}

/// The batch recogniser on the fake.
fn batch_stt(fake: &FakeProviders) -> OpenAiTranscriber {
    OpenAiTranscriber::new(SttConfig {
        base_url: format!("{}/v1", fake.base_url()),
        model: "whisper".into(),
        api_key_env: None,
        api_key_file: None,
        language: "fr".into(),
        timeout_ms: 2000,
        streaming: None,
    })
    .unwrap()
}

#[tokio::test]
async fn streaming_stt_gives_partials_then_the_final_and_falls_back_when_the_stream_fails() {
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            stt_stream_first_partial: Duration::from_millis(20),
            stt_stream_word_interval: Duration::from_millis(40),
            ..fast()
        },
    );
    let batch = batch_stt(&fake);
    let stt = StreamingTranscriber::new(
        StreamingConfig {
            url: format!("ws://{}/v1/listen", fake.addr),
            model: "nova-3".into(),
            api_key_env: None,
            api_key_file: None,
            connect_timeout_ms: 2000,
            final_timeout_ms: 1500,
        },
        "fr".into(),
        batch,
    )
    .unwrap();
    assert!(stt.streaming());
    let (partials, text) = stream_turn(&stt, 10).await;
    assert_eq!(text.unwrap(), "Ma box internet ne marche plus.");
    // A word more each time, from the first word to the whole text.
    assert_eq!(
        partials,
        [
            "Ma",
            "Ma box",
            "Ma box internet",
            "Ma box internet ne",
            "Ma box internet ne marche",
            "Ma box internet ne marche plus."
        ]
    );
    let counts = fake.counts();
    assert_eq!((counts.stt_streams, counts.stt), (1, 0));
    assert_eq!(counts.stt_stream_bytes, 10 * 800 * 2);
    assert!(counts.stt_stream_queries[0].contains("model=nova-3&language=fr"));

    // A recogniser that had finalised everything already: no answer to
    // Finalize, the close brings the final result; not the batch.
    fake.set(|b| b.stt_stream_finalize_reply = false);
    let (_, text) = stream_turn(&stt, 5).await;
    assert_eq!(text.unwrap(), "Ma box internet ne marche plus.");
    assert_eq!((fake.counts().stt_streams, fake.counts().stt), (2, 0));

    // Dropped after three parts, or refused: the batch takes the turn.
    for fault in [Fault::DisconnectAfter(3), Fault::Status(500)] {
        fake.set(|b| b.stt_stream_fault = Some(fault.clone()));
        let before = fake.counts().stt;
        let (_, text) = stream_turn(&stt, 5).await;
        assert_eq!(
            text.unwrap(),
            "Ma box internet ne marche plus.",
            "{fault:?}"
        );
        assert_eq!(
            fake.counts().stt,
            before + 1,
            "{fault:?}: the batch answered"
        );
    }
    assert_eq!(fake.counts().stt_stream_attempts, 4);
}

#[tokio::test]
async fn stt_returns_the_scripted_transcripts_and_faults() {
    let mut behaviour = fast();
    behaviour.stt_transcripts = ["premier".to_string(), "second".to_string()].into();
    let fake = FakeProviders::start(0, behaviour);
    let stt = batch_stt(&fake);
    let transcript = |stt: &OpenAiTranscriber| {
        let mut session = stt.session();
        session.push(&vec![100i16; 8000]);
        session.finish()
    };
    assert_eq!(transcript(&stt).await.unwrap(), "premier");
    assert_eq!(transcript(&stt).await.unwrap(), "second");
    fake.set(|b| b.stt_fault = Some(Fault::Status(500)));
    assert_eq!(transcript(&stt).await.unwrap_err().kind(), "status");
    fake.set(|b| b.stt_fault = Some(Fault::Garbage));
    assert_eq!(transcript(&stt).await.unwrap_err().kind(), "malformed");
}

#[tokio::test]
async fn a_missing_api_key_is_a_clear_error() {
    let mut config = LlmConfig {
        base_url: "http://127.0.0.1:9".into(),
        model: "m".into(),
        api_key_env: Some("SAV_TEST_SURELY_UNSET_KEY".into()),
        api_key_file: None,
        temperature: 0.7,
        max_tokens: 1,
        connect_timeout_ms: 100,
        first_token_timeout_ms: 100,
        stall_timeout_ms: 100,
    };
    let error = LlmClient::new(config.clone()).err().expect("no key");
    assert!(
        error.to_string().contains("SAV_TEST_SURELY_UNSET_KEY"),
        "{error}"
    );
    // The key from a file (a container secret) instead: the client is made;
    // a missing file is an error naming it; both forms at once are refused.
    let dir = support::workdir("providers_key_file");
    let key_file = dir.join("llm-key");
    std::fs::write(&key_file, "sk-test\n").unwrap();
    config.api_key_file = Some(key_file.clone());
    let both = LlmClient::new(config.clone()).err().expect("both forms");
    assert!(both.to_string().contains("keep one"), "{both}");
    config.api_key_env = None;
    assert!(LlmClient::new(config.clone()).is_ok());
    config.api_key_file = Some(dir.join("absent"));
    let absent = LlmClient::new(config.clone()).err().expect("no file");
    assert!(absent.to_string().contains("absent"), "{absent}");
    config.api_key_file = None;
    let error = reply(&LlmClient::new(config).unwrap()).await.unwrap_err();
    assert_eq!(error.kind(), "connect");
}
