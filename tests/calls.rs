//! Whole calls in process on a paused clock (`support::call_harness`): the
//! real call with a hand-driven SIP leg, the real media driver on loopback,
//! the fake providers on the same clock. What only the wire proves (pacing,
//! SDP, SIP edge cases, RFC 4733 over RTP, real peers) stays in the sipp,
//! baresip and Kamailio tests.

mod support;

use std::time::Duration;

use sav::sip::leg::{Ending, LegCommand, LegEvent};
use support::call_harness::*;
use support::fake_providers::{FakeBehaviour, Fault};

const PHRASES: &[&str] = &[
    "greet",
    "welcome",
    "menu",
    "internet_restart",
    "internet_cables",
    "verify",
    "congratulations",
    "goodbye",
    "filler_hum",
    "filler_ok",
    "filler_one_moment",
    "filler_let_me_see",
    "sorry",
    "transfer",
    "transfer_failed",
    "not_understood",
];

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// What a caller who fixes the box at the second step with keys hears.
const FIXED_BY_KEYS: [&str; 7] = [
    "greet",
    "menu",
    "internet_restart",
    "internet_cables",
    "verify",
    "congratulations",
    "goodbye",
];

/// The keys of that call, 3 s apart: the internet problem, "no" to the
/// first step, "yes" to the second, "yes" it works.
async fn press_the_fix_keys(call: &TestCall) {
    for digit in ['1', '2', '1', '1'] {
        call.press(digit).await;
        call.wait(3 * SECOND).await;
    }
}

/// Some audio was heard and the last `ms` were silent: the bot is done
/// speaking.
fn quiet_for(heard: &[(Duration, Vec<u8>)], ms: usize) -> bool {
    let frames = ms / 20;
    heard.iter().any(|(_, p)| level(p) > 100)
        && heard.len() > frames
        && heard[heard.len() - frames..]
            .iter()
            .all(|(_, p)| level(p) <= 100)
}

fn with_transfer(c: String) -> String {
    c.replace(
        "# transfer_to = \"sip:support@pbx.example.com\"",
        "transfer_to = \"sip:support@pbx.example.com\"",
    )
}

#[tokio::test]
async fn a_guided_call_is_resolved_by_keys() {
    let call = TestCall::start(Setup {
        name: "calls_keys",
        ..Setup::default()
    })
    .await;
    // Keys answer every question: the first cuts the menu.
    call.wait(4 * SECOND).await;
    press_the_fix_keys(&call).await;
    let ended = call.ended(60 * SECOND).await;
    assert_eq!(ended.end.outcome.as_str(), "resolved");
    assert_eq!(ended.end.ending, Ending::Local);
    assert_eq!(phrases_heard(&ended.heard, PHRASES), FIXED_BY_KEYS);
    assert_eq!(
        ended.record["steps"],
        serde_json::json!(["internet_restart", "internet_cables"])
    );
    assert_eq!(
        caller_turns(&ended.record),
        ["1", "2", "1", "1"].map(|k| ("dtmf".to_string(), k.to_string()))
    );
    // The record says when each phrase was heard, not when it was queued:
    // its bot turns are as far apart as the phrases' first frames were
    // (greet and welcome are queued together, 2.4 s apart on the line).
    let heard_at: Vec<u64> = phrase_starts(&ended.heard, PHRASES)
        .iter()
        .map(|(at, _)| at.as_millis() as u64)
        .collect();
    let recorded_at: Vec<u64> = ended.record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["speaker"] == "bot" && t["kind"] == "cached")
        .map(|t| t["at"].as_u64().unwrap())
        .collect();
    assert_eq!(recorded_at.len(), heard_at.len(), "{:?}", ended.record);
    for (n, (recorded, heard)) in recorded_at.iter().zip(&heard_at).enumerate() {
        let recorded = recorded - recorded_at[0];
        let heard = heard - heard_at[0];
        assert!(
            recorded.abs_diff(heard) <= 40,
            "phrase {n}: recorded at +{recorded} ms, heard at +{heard} ms"
        );
    }
    assert!(recorded_at[1] - recorded_at[0] > 1000, "{recorded_at:?}");
    // The timeline is on the same clock: the keys 3 s apart, as pressed.
    let keys: Vec<u64> = ended
        .timeline
        .events
        .iter()
        .filter(|e| matches!(e.mark, sav::timeline::Mark::Dtmf { .. }))
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(keys.len(), 4, "{:?}", ended.timeline.events);
    assert!(
        keys.windows(2)
            .all(|w| (2990..=3010).contains(&(w[1] - w[0]))),
        "{keys:?}"
    );
    assert!(matches!(
        &ended.timeline.events.last().unwrap().mark,
        sav::timeline::Mark::Hangup { by } if by == "bot"
    ));
    // The outbound clock never stalled: one frame every 20 ms of the call.
    assert_eq!(frames_missing(&ended.heard), 0);
    let last = ended.heard.last().unwrap().0;
    assert_eq!(ended.heard.len() as u128, last.as_millis() / 20 + 1);
}

#[tokio::test]
async fn the_hang_up_key_says_goodbye_and_ends_the_call() {
    let call = TestCall::start(Setup {
        name: "calls_hangup_key",
        ..Setup::default()
    })
    .await;
    call.wait(SECOND).await;
    call.press('#').await;
    let ended = call.ended(30 * SECOND).await;
    assert_eq!(ended.end.outcome.as_str(), "caller_ended");
    assert_eq!(ended.end.ending, Ending::Local);
    assert_eq!(phrases_heard(&ended.heard, PHRASES), ["greet", "goodbye"]);
}

#[tokio::test]
async fn a_failed_transfer_says_so_and_the_call_goes_on() {
    let mut call = TestCall::start(Setup {
        name: "calls_transfer_failed",
        edit: with_transfer,
        ..Setup::default()
    })
    .await;
    call.wait(SECOND).await;
    call.press('0').await;
    let command = call.command(20 * SECOND).await;
    assert_eq!(
        command,
        Some(LegCommand::Transfer("sip:support@pbx.example.com".into()))
    );
    call.wait(SECOND).await;
    call.transfer_ends(false).await;
    call.wait(10 * SECOND).await;
    // The call goes on: a key still answers the menu.
    call.press('1').await;
    call.wait(5 * SECOND).await;
    let ended = call.hang_up().await;
    let heard = phrases_heard(&ended.heard, PHRASES);
    let failed = heard.iter().position(|k| k == "transfer_failed");
    assert!(failed.is_some(), "{heard:?}");
    assert!(
        heard[failed.unwrap()..].contains(&"internet_restart".to_string()),
        "{heard:?}"
    );
    assert_eq!(ended.end.ending, Ending::Remote);
    assert_eq!(
        ended.record["transfer_target"],
        "sip:support@pbx.example.com"
    );
}

#[tokio::test]
async fn a_successful_transfer_ends_the_call_as_transferred() {
    let mut call = TestCall::start(Setup {
        name: "calls_transfer_ok",
        edit: with_transfer,
        ..Setup::default()
    })
    .await;
    call.wait(SECOND).await;
    call.press('0').await;
    assert!(matches!(
        call.command(20 * SECOND).await,
        Some(LegCommand::Transfer(_))
    ));
    call.transfer_ends(true).await;
    let ended = call.ended(10 * SECOND).await;
    assert_eq!(ended.end.outcome.as_str(), "transferred");
    assert_eq!(ended.end.ending, Ending::Local);
    assert!(phrases_heard(&ended.heard, PHRASES).contains(&"transfer".to_string()));
}

/// The console's live view: the call's entry on the board follows the flow
/// (greeting, listening, the caller's turn, thinking), says who speaks and
/// the turn's latency, and leaves with the call.
#[tokio::test]
async fn the_call_board_follows_the_call_and_empties_when_it_ends() {
    use sav::call::board::Speaking;
    let call = TestCall::start(Setup {
        name: "calls_board",
        providers: Some(FakeBehaviour {
            llm_ttfb: Duration::from_millis(3000),
            ..Default::default()
        }),
        free_conversation: true,
        from: "0612345678",
        ..Setup::default()
    })
    .await;
    let board = call.services.board.clone();
    call.wait(500 * MS).await;
    let now = board.snapshot();
    assert_eq!(now.len(), 1);
    assert_eq!(
        (now[0].phase, now[0].speaking, now[0].caller.as_str()),
        ("greeting", Speaking::Bot, "+33612345678")
    );
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    let now = &board.snapshot()[0];
    assert_eq!(
        (now.phase, now.speaking, now.turns),
        ("listening", Speaking::Nobody, 0)
    );
    assert!(now.duration_ms >= 3000, "{now:?}");
    call.starts_talking().await;
    call.wait(SECOND).await;
    assert_eq!(board.snapshot()[0].speaking, Speaking::Caller);
    call.stops_talking(SECOND).await;
    let end_of_turn = call.now();
    assert!(
        call.until(5 * SECOND, |h| h
            .iter()
            .any(|(at, p)| *at > end_of_turn && level(p) > 100))
            .await
    );
    call.wait(100 * MS).await;
    let now = &board.snapshot()[0];
    assert_eq!(
        (now.phase, now.speaking, now.turns),
        ("thinking", Speaking::Bot, 1)
    );
    // A filler in the next frame: the turn's latency as the board says it.
    let latency = now.turn_latency_ms.expect("the turn's latency");
    assert!(latency <= 60, "{latency} ms");
    let ended = call.hang_up().await;
    assert_eq!(ended.end.ending, Ending::Remote);
    assert!(board.is_empty(), "{:?}", board.snapshot());
}

#[tokio::test]
async fn a_slow_llm_gets_fillers_and_no_silent_run_over_700_ms() {
    let call = TestCall::start(Setup {
        name: "calls_slow_llm",
        providers: Some(FakeBehaviour {
            llm_ttfb: Duration::from_millis(3000),
            tts_ttfb: Duration::from_millis(300),
            ..Default::default()
        }),
        free_conversation: true,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    call.says(2 * SECOND).await;
    let end_of_turn = call.now();
    assert!(
        call.until(20 * SECOND, |h| h
            .iter()
            .any(|(at, p)| *at > end_of_turn && is_generated(p)))
            .await,
        "the generated reply was never heard"
    );
    call.wait(2 * SECOND).await;
    let ended = call.hang_up().await;
    let after: Vec<_> = ended
        .heard
        .iter()
        .filter(|(at, _)| *at >= end_of_turn)
        .cloned()
        .collect();
    let first_audio = after.iter().find(|(_, p)| level(p) > 100).unwrap().0 - end_of_turn;
    let first_generated = after.iter().find(|(_, p)| is_generated(p)).unwrap().0;
    let waiting: Vec<_> = after
        .iter()
        .filter(|(at, _)| *at < first_generated)
        .cloned()
        .collect();
    let fillers: Vec<_> = phrases_heard(&waiting, PHRASES)
        .into_iter()
        .filter(|k| k.starts_with("filler_"))
        .collect();
    let silent = longest_silence_after(&waiting, end_of_turn);
    support::write_report(
        "hybrid-slow-report.txt",
        &format!(
            "hybrid_slow (in process, media clock): LLM 3 s, end of turn (VAD) → first bot audio {} ms, → first generated audio {} ms, longest silent run {silent} ms, fillers {}\n",
            first_audio.as_millis(),
            (first_generated - end_of_turn).as_millis(),
            fillers.len()
        ),
    );
    assert!(first_audio <= Duration::from_millis(40), "{first_audio:?}");
    assert!(fillers.len() >= 2, "{fillers:?}");
    assert!(silent <= 700, "{silent} ms of dead air");
    assert_eq!(frames_missing(&ended.heard), 0);
}

#[tokio::test]
async fn a_pcma_call_hears_its_phrases_and_its_generated_reply_in_a_law() {
    let call = TestCall::start(Setup {
        name: "calls_pcma",
        providers: Some(FakeBehaviour::default()),
        free_conversation: true,
        codec: sav::media::codec::Codec::Pcma,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    call.says(2 * SECOND).await;
    assert!(
        call.until(20 * SECOND, |h| h.iter().any(|(_, p)| is_generated(p)))
            .await,
        "the generated reply was never heard"
    );
    let formats = call.fakes.as_ref().unwrap().counts().tts_formats;
    let ended = call.hang_up().await;
    assert!(ended.payload_types.iter().all(|&pt| pt == 8));
    let heard = phrases_heard(&ended.heard, PHRASES);
    assert_eq!(&heard[..2], ["greet", "welcome"], "{heard:?}");
    assert!(heard.iter().any(|k| k.starts_with("filler_")), "{heard:?}");
    assert!(
        !formats.is_empty() && formats.iter().all(|f| f == "alaw_8000"),
        "{formats:?}"
    );
    assert_eq!(frames_missing(&ended.heard), 0);
}

/// Whether a frame heard through a codec that does not keep bytes (G.722)
/// is the fake voice: a 100 Hz square wave (80 samples a period), so each
/// half of the frame repeats the other and each half-period is the negative
/// of the one before; speech is neither so periodic nor so symmetric.
fn sounds_generated(frame: &[u8]) -> bool {
    let pcm: Vec<f64> = support::decode_ulaw(frame)
        .into_iter()
        .map(f64::from)
        .collect();
    if pcm.len() < 160 {
        return false;
    }
    let correlation = |a: &[f64], b: &[f64]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm =
            (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|y| y * y).sum::<f64>()).sqrt();
        if norm == 0.0 {
            0.0
        } else {
            dot / norm
        }
    };
    let loud = pcm.iter().map(|x| x.abs()).sum::<f64>() / 160.0 > 1000.0;
    loud && correlation(&pcm[..80], &pcm[80..160]) > 0.9
        && correlation(&pcm[..40], &pcm[40..80]) < -0.8
}

/// Signal-to-noise ratio (dB) of `heard` against `reference` (μ-law both).
fn snr_db(reference: &[u8], heard: &[u8]) -> f64 {
    let (a, b) = (support::decode_ulaw(reference), support::decode_ulaw(heard));
    let signal: f64 = a.iter().map(|&s| f64::from(s).powi(2)).sum();
    let noise: f64 = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1.0)).log10()
}

/// A call in `codec`: its greeting heard, then the caller speaks and a
/// generated reply is heard. Checks what every codec must give (the
/// offer's payload type all through, 20 ms frames with none missing, the
/// phrases before the caller spoke not taken for the fake voice); returns
/// what was heard and the formats TTS was asked for.
async fn greeting_and_a_reply_in(
    codec: sav::media::codec::Codec,
    name: &'static str,
) -> (Ended, Vec<String>) {
    let call = TestCall::start(Setup {
        name,
        providers: Some(FakeBehaviour::default()),
        free_conversation: true,
        codec,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    let heard_before = call.heard.lock().unwrap().len();
    call.says(2 * SECOND).await;
    assert!(
        call.until(20 * SECOND, |h| {
            h.iter().filter(|(_, p)| sounds_generated(p)).count() >= 10
        })
        .await,
        "the generated reply was never heard"
    );
    let formats = call.fakes.as_ref().unwrap().counts().tts_formats;
    let ended = call.hang_up().await;
    let pt = codec.offer_payload_type();
    assert!(
        ended.payload_types.iter().all(|&p| p == pt),
        "{codec} on payload type {pt}"
    );
    assert!(ended.heard.iter().all(|(_, p)| p.len() == 160));
    // The phrases before the caller spoke are not taken for the fake voice.
    assert!(heard_before > 100);
    assert!(ended.heard[..heard_before]
        .iter()
        .all(|(_, p)| !sounds_generated(p)));
    assert_eq!(frames_missing(&ended.heard), 0);
    (ended, formats)
}

/// The normalised cross-correlation of `heard` against `reference` over
/// `span`, at the best delay of `heard` up to `max_lag` samples.
fn delayed_correlation(
    reference: &[i16],
    heard: &[i16],
    span: std::ops::Range<usize>,
    max_lag: usize,
) -> f64 {
    (0..max_lag)
        .map(|lag| {
            let a = &reference[span.clone()];
            let b = &heard[span.start + lag..span.end + lag];
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            let norm = (a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>()
                * b.iter().map(|&y| f64::from(y).powi(2)).sum::<f64>())
            .sqrt();
            dot / norm.max(1.0)
        })
        .fold(f64::MIN, f64::max)
}

#[tokio::test]
async fn a_g722_call_hears_its_greeting_and_a_reply_coded_from_16_khz() {
    let (ended, formats) =
        greeting_and_a_reply_in(sav::media::codec::Codec::G722, "calls_g722").await;
    // The greeting, from the first frame, as the phone's lower sub-band
    // gives it at 8 kHz, against the phrase resampled to 8 kHz (after the
    // first 100 ms, while ADPCM settles, and a few samples late: the
    // analysis filter's delay). The sub-band is not a brick-wall filter
    // (what lies near 4 kHz aliases in it until the full 16 kHz synthesis
    // cancels it), so this is ~14 dB; a different phrase or noise is below
    // 0. The wire test decodes the full band against the 16 kHz phrase.
    let greet: Vec<u8> = support::cached_frames("greet").concat();
    let heard: Vec<u8> = ended.heard.iter().flat_map(|(_, p)| p.clone()).collect();
    let span = 800..greet.len().min(8000 * 3);
    let snr = (0..32)
        .map(|lag| {
            snr_db(
                &greet[span.clone()],
                &heard[span.start + lag..span.end + lag],
            )
        })
        .fold(f64::MIN, f64::max);
    eprintln!("G.722 call: greeting SNR {snr:.1} dB after decoding");
    assert!(snr > 10.0, "greeting through G.722: SNR {snr:.1} dB");
    // Generated speech was asked for as 16 kHz PCM, G.722's own rate.
    assert!(
        !formats.is_empty() && formats.iter().all(|f| f == "pcm_16000"),
        "{formats:?}"
    );
}

#[tokio::test]
async fn an_opus_call_hears_its_greeting_and_a_reply_on_a_48_khz_clock() {
    // (Every packet is 20 ms: the phone checked the 960-tick steps.)
    let (ended, formats) =
        greeting_and_a_reply_in(sav::media::codec::Codec::Opus, "calls_opus").await;
    // The greeting, from the first frame, as the phone's libopus decodes
    // it at 8 kHz: a perceptual coder keeps the sound, not each sample, so
    // compare by correlation (a few milliseconds late).
    let greet = support::decode_ulaw(&support::cached_frames("greet").concat());
    let heard: Vec<u8> = ended.heard.iter().flat_map(|(_, p)| p.clone()).collect();
    let heard = support::decode_ulaw(&heard);
    let correlation = delayed_correlation(&greet, &heard, 800..greet.len().min(8000 * 3), 160);
    eprintln!("Opus call: greeting correlation {correlation:.3} after decoding");
    assert!(correlation > 0.8, "greeting through Opus: {correlation:.3}");
    // Generated speech was asked for as 16 kHz PCM, what sav codes in Opus.
    assert!(
        !formats.is_empty() && formats.iter().all(|f| f == "pcm_16000"),
        "{formats:?}"
    );
}

#[tokio::test]
async fn a_known_customer_is_greeted_by_name() {
    let call = TestCall::start(Setup {
        name: "calls_known",
        providers: Some(FakeBehaviour {
            tts_ttfb: Duration::from_millis(100),
            tts_tag_by_text: false,
            ..Default::default()
        }),
        customers: Some(
            "phone,title,first_name,last_name,product,problem\n\
             06 12 34 56 78,Monsieur,Jean,Dupont,box internet,plus de connexion depuis hier\n",
        ),
        from: "0612345678",
        ..Setup::default()
    })
    .await;
    assert!(
        call.until(20 * SECOND, |h| h.iter().any(|(_, p)| is_generated(p)))
            .await
    );
    let texts = call.fakes.as_ref().unwrap().counts().tts_texts;
    let ended = call.hang_up().await;
    assert!(
        texts
            .first()
            .is_some_and(|t| t.starts_with("Monsieur Dupont")),
        "{texts:?}"
    );
    // The name follows the cached greeting at once.
    let heard = phrases_heard(&ended.heard, PHRASES);
    assert_eq!(heard.first().map(String::as_str), Some("greet"));
    let greet_frames = support::cached_frames("greet").len();
    let first_generated = ended
        .heard
        .iter()
        .position(|(_, p)| is_generated(p))
        .unwrap();
    assert!(
        first_generated <= greet_frames + 5,
        "the name at frame {first_generated}, greet is {greet_frames} frames"
    );
    assert_eq!(ended.record["customer"]["last_name"], "Dupont");
}

#[tokio::test]
async fn a_re_offer_in_a_law_changes_the_codec_mid_phrase_on_the_same_clock() {
    let call = TestCall::start(Setup {
        name: "calls_codec_change",
        ..Setup::default()
    })
    .await;
    // Half a second into the greeting, the caller re-offers PCMA only.
    call.wait(SECOND / 2).await;
    let changed_at = call.now();
    call.peer
        .events
        .send(LegEvent::MediaChanged(phone_media(
            call.phone,
            sav::media::codec::Codec::Pcma,
            true,
        )))
        .await
        .unwrap();
    call.wait(8 * SECOND).await;
    let ended = call.hang_up().await;
    let types = &ended.payload_types;
    let switch = types
        .iter()
        .position(|&pt| pt == 8)
        .expect("PCMA after the re-offer");
    assert!(types[..switch].iter().all(|&pt| pt == 0), "{types:?}");
    assert!(types[switch..].iter().all(|&pt| pt == 8), "{types:?}");
    let switched_at = ended.heard[switch].0;
    assert!(
        // One frame either side: the media clock starts with the first frame.
        switched_at + Duration::from_millis(20) >= changed_at
            && switched_at <= changed_at + Duration::from_millis(60),
        "PCMA from {switched_at:?}, re-offer at {changed_at:?}"
    );
    // The clock went on (the harness checked sequence and timestamps) and
    // the greeting and the menu (keys only) were heard whole across it.
    assert_eq!(frames_missing(&ended.heard), 0);
    let heard = phrases_heard(&ended.heard, PHRASES);
    assert_eq!(&heard[..2], ["greet", "menu"], "{heard:?}");
    let greet = support::cached_frames("greet");
    let (start, _) = phrase_starts(&ended.heard, &["greet"])[0];
    let from = ended.heard.iter().position(|(at, _)| *at == start).unwrap();
    let loud_after_switch = (switch..from + greet.len())
        .filter(|&i| level(&greet[i - from]) > 100)
        .count();
    assert!(loud_after_switch > 10, "the change came mid-phrase");
    for i in switch..from + greet.len() {
        assert!(
            same_audio(&ended.heard[i].1, &greet[i - from]),
            "greet frame {} differs after the change",
            i - from
        );
    }
}

/// A call in `from` that a re-offer moves to `to` after `after`, hung up
/// 8 s later: what was heard, and the frame where `to` began (checked to
/// be at the re-offer, give or take the frames already due, with every
/// frame before in `from` and every one after in `to`).
async fn re_offer(
    name: &'static str,
    from: sav::media::codec::Codec,
    to: sav::media::codec::Codec,
    after: Duration,
) -> (Ended, usize) {
    let call = TestCall::start(Setup {
        name,
        codec: from,
        ..Setup::default()
    })
    .await;
    call.wait(after).await;
    // The phrases in `to`, made here on the test's thread: the paused
    // clock stands still meanwhile (made by the call on a blocking thread,
    // the clock would run on for as long as they take).
    call.services.live().cache.prepare(to);
    let heard_at_change = call.heard.lock().unwrap().len();
    call.peer
        .events
        .send(LegEvent::MediaChanged(phone_media(call.phone, to, true)))
        .await
        .unwrap();
    call.wait(8 * SECOND).await;
    let ended = call.hang_up().await;
    let types = &ended.payload_types;
    let (before, now) = (from.offer_payload_type(), to.offer_payload_type());
    let switch = types
        .iter()
        .position(|&pt| pt == now)
        .unwrap_or_else(|| panic!("{to} after the re-offer"));
    assert!(types[..switch].iter().all(|&pt| pt == before), "{types:?}");
    assert!(types[switch..].iter().all(|&pt| pt == now), "{types:?}");
    assert!(
        switch + 1 >= heard_at_change && switch <= heard_at_change + 3,
        "{to} from frame {switch}, re-offer at frame {heard_at_change}"
    );
    (ended, switch)
}

#[tokio::test]
async fn a_re_offer_from_g722_to_a_law_keeps_the_phrase_and_the_clock() {
    // (The first G.722 call of the process has its phrases coded before it
    // starts, on a blocking thread, while the paused clock runs ahead:
    // frames are counted, not time.)
    let (ended, switch) = re_offer(
        "calls_codec_change_g722",
        sav::media::codec::Codec::G722,
        sav::media::codec::Codec::Pcma,
        SECOND / 2,
    )
    .await;
    assert_eq!(frames_missing(&ended.heard), 0);
    // The greeting started at frame 0 in G.722 and goes on in A-law from
    // where it was, frame for frame.
    let greet = support::cached_frames("greet");
    let loud_after_switch = (switch..greet.len())
        .filter(|&i| level(&greet[i]) > 100)
        .count();
    assert!(loud_after_switch > 10, "the change came mid-phrase");
    for (i, frame) in greet.iter().enumerate().skip(switch) {
        assert!(
            same_audio(&ended.heard[i].1, frame),
            "greet frame {i} differs after the change"
        );
    }
}

#[tokio::test]
async fn a_re_offer_from_mu_law_to_opus_moves_the_clock_to_48_khz_mid_phrase() {
    let (ended, switch) = re_offer(
        "calls_codec_change_opus",
        sav::media::codec::Codec::Pcmu,
        sav::media::codec::Codec::Opus,
        SECOND,
    )
    .await;
    // The phone checked every timestamp step on its packet's clock: 160
    // before, 960 after; no frame is missing across the change.
    assert_eq!(frames_missing(&ended.heard), 0);
    // The greeting goes on from where it was, now through Opus: each
    // second after the change correlates with the phrase at that place.
    let greet = support::decode_ulaw(&support::cached_frames("greet").concat());
    let heard: Vec<i16> = support::decode_ulaw(
        &ended
            .heard
            .iter()
            .flat_map(|(_, p)| p.clone())
            .collect::<Vec<u8>>(),
    );
    let from = (switch + 5) * 160;
    let to = greet.len().min(from + 8000);
    assert!(to > from + 4000, "the change came mid-phrase");
    let correlation = delayed_correlation(&greet, &heard, from..to, 160);
    assert!(
        correlation > 0.8,
        "the greeting after the change: correlation {correlation:.3}"
    );
    // Before the change, μ-law frame for frame.
    let frames = support::cached_frames("greet");
    for (i, frame) in frames.iter().enumerate().take(switch) {
        assert!(same_audio(&ended.heard[i].1, frame), "greet frame {i}");
    }
}

/// When (ms, the call's timeline) each mark `matches` was set.
fn marks_at(
    timeline: &sav::timeline::CallTimeline,
    matches: impl Fn(&sav::timeline::Mark) -> bool,
) -> Vec<u64> {
    timeline
        .events
        .iter()
        .filter(|e| matches(&e.mark))
        .map(|e| e.at_ms)
        .collect()
}

fn segment_ends(timeline: &sav::timeline::CallTimeline, key: &str) -> Vec<u64> {
    marks_at(
        timeline,
        |m| matches!(m, sav::timeline::Mark::SegmentEnd { label, .. } if label == key),
    )
}

fn no_input_after(reprompt: u32, escalate: u32) -> impl Fn(String) -> String {
    move |c: String| {
        let c = c.replace(
            "reprompt_after_s = 10\n",
            &format!("reprompt_after_s = {reprompt}\n"),
        );
        c.replace(
            "escalate_after_s = 10\n",
            &format!("escalate_after_s = {escalate}\n"),
        )
    }
}

#[tokio::test]
async fn a_caller_who_says_and_presses_nothing_is_asked_again_then_called_back() {
    let call = TestCall::start(Setup {
        name: "calls_no_input",
        edit: |c| no_input_after(6, 4)(c),
        ..Setup::default()
    })
    .await;
    let ended = call.ended(60 * SECOND).await;
    let keys = ["greet", "menu", "still_there", "callback"];
    assert_eq!(
        phrases_heard(&ended.heard, &keys),
        ["greet", "menu", "still_there", "menu", "callback"]
    );
    assert_eq!(ended.end.outcome.as_str(), "callback");
    assert_eq!(ended.end.ending, Ending::Local);
    // On the configured times, from the end of what the bot said: the
    // reprompt 6 s after the menu, the escalation 4 s after the menu said
    // again (a frame's worth of slack: the playout's end is seen on the
    // frame after the last one).
    use sav::timeline::Mark;
    let timeline = &ended.timeline;
    let menus = segment_ends(timeline, "menu");
    let reprompts = marks_at(timeline, |m| *m == Mark::NoInput { escalated: false });
    let escalations = marks_at(timeline, |m| *m == Mark::NoInput { escalated: true });
    assert_eq!((menus.len(), reprompts.len(), escalations.len()), (2, 1, 1));
    let waits = [reprompts[0] - menus[0], escalations[0] - menus[1]];
    assert!(
        (6000..=6040).contains(&waits[0]) && (4000..=4040).contains(&waits[1]),
        "{waits:?}"
    );
    let notes: Vec<&str> = ended.record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "note")
        .filter_map(|t| t["text"].as_str())
        .collect();
    assert_eq!(
        notes,
        ["no input: asked again", "no input: handed over"],
        "in the call record"
    );
    // The silence the caller left is not the bot's dead air.
    let report = sav::timeline::report::Layout::of(timeline);
    assert!(report.dead_air.is_empty(), "{:?}", report.dead_air);
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_no_input_reprompts_total"),
        Some(1.0)
    );
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_no_input_escalations_total"),
        Some(1.0)
    );
    assert_eq!(frames_missing(&ended.heard), 0);
}

#[tokio::test]
async fn a_silent_caller_with_a_human_to_go_to_is_transferred() {
    let mut call = TestCall::start(Setup {
        name: "calls_no_input_transfer",
        edit: |c| with_transfer(no_input_after(6, 4)(c)),
        ..Setup::default()
    })
    .await;
    let command = call.command(60 * SECOND).await;
    assert_eq!(
        command,
        Some(LegCommand::Transfer("sip:support@pbx.example.com".into()))
    );
    call.transfer_ends(true).await;
    let ended = call.ended(10 * SECOND).await;
    assert_eq!(ended.end.outcome.as_str(), "transferred");
    assert_eq!(
        phrases_heard(&ended.heard, &["greet", "menu", "still_there", "transfer"]),
        ["greet", "menu", "still_there", "menu", "transfer"]
    );
}

#[tokio::test]
async fn a_key_before_the_reprompt_keeps_the_call_going_without_one() {
    let call = TestCall::start(Setup {
        name: "calls_no_input_key",
        edit: |c| no_input_after(6, 4)(c),
        ..Setup::default()
    })
    .await;
    // The menu, then 5 s of silence (less than the 6 s), then a key: the
    // internet step; the caller carries it out (the long wait: no reprompt
    // in the next 60 s) then hangs up.
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 5000)).await);
    call.press('1').await;
    call.wait(60 * SECOND).await;
    let ended = call.hang_up().await;
    assert_eq!(
        phrases_heard(
            &ended.heard,
            &["greet", "menu", "still_there", "internet_restart"]
        ),
        ["greet", "menu", "internet_restart"]
    );
    assert!(!ended.metrics.contains("sav_no_input_reprompts_total 1"));
}

/// The fakes with a streaming recogniser (Deepgram-style WebSocket) in
/// front of the batch one.
fn streaming_stt(base: &str) -> String {
    let ws = base.replace("http://", "ws://");
    support::fake_providers_config(
        base,
        "model = \"fake\"\nfirst_token_timeout_ms = 6000\n",
        "output_format = \"ulaw_8000\"\n",
        &format!("model = \"whisper\"\n\n[stt.streaming]\nurl = \"{ws}/v1/listen\"\n"),
    )
}

/// ms from each caller's speech start to the first partial transcript after it.
fn first_partials(timeline: &sav::timeline::CallTimeline) -> Vec<u64> {
    use sav::timeline::Mark;
    let starts = marks_at(timeline, |m| *m == Mark::CallerSpeechStart);
    let partials = marks_at(timeline, |m| *m == Mark::Partial);
    starts
        .iter()
        .filter_map(|s| partials.iter().find(|p| *p >= s).map(|p| p - s))
        .collect()
}

/// A free-conversation call with a streaming recogniser: the caller says
/// one 1.5 s turn (streamed) and hears the generated reply; what the fakes
/// counted, and the ended call.
async fn one_streamed_turn(
    name: &'static str,
    behaviour: FakeBehaviour,
) -> (support::fake_providers::FakeCounts, Ended) {
    let call = TestCall::start(Setup {
        name,
        providers: Some(behaviour),
        provider_config: Some(streaming_stt),
        free_conversation: true,
        edit: short_greeting,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    call.says_streaming(1500 * MS).await;
    let end_of_turn = call.now();
    assert!(
        call.until(20 * SECOND, |h| h
            .iter()
            .any(|(at, p)| *at > end_of_turn && is_generated(p)))
            .await,
        "the generated reply was never heard"
    );
    let counts = call.fakes.as_ref().unwrap().counts();
    (counts, call.hang_up().await)
}

#[tokio::test]
async fn a_streaming_recogniser_hears_the_caller_as_they_speak() {
    let (counts, ended) = one_streamed_turn("calls_stt_stream", FakeBehaviour::default()).await;
    assert_eq!(
        (counts.stt_streams, counts.stt),
        (1, 0),
        "streamed, no batch"
    );
    // 200 ms of pre-roll and 1.5 s of speech, 16-bit at 8 kHz.
    assert_eq!(counts.stt_stream_bytes, (1600 + 15 * 800) * 2);
    assert!(
        counts.stt_stream_queries[0].contains("encoding=linear16&sample_rate=8000"),
        "{:?}",
        counts.stt_stream_queries
    );
    let first = first_partials(&ended.timeline);
    // The transcript's wait: from the end of the caller's turn to the
    // recogniser's answer.
    use sav::timeline::{Mark, Provider};
    let ends = marks_at(&ended.timeline, |m| *m == Mark::CallerSpeechEnd);
    let answered = marks_at(&ended.timeline, |m| {
        matches!(
            m,
            Mark::End {
                provider: Provider::Stt,
                ok: true,
                ..
            }
        )
    });
    let wait = answered[0] - ends[0];
    assert!(wait <= 200, "the transcript came {wait} ms after the turn");
    // The partial was stable when the turn ended: the reply was asked for
    // on it, before the final transcript, once.
    let asked = marks_at(&ended.timeline, |m| {
        matches!(
            m,
            Mark::Request {
                provider: Provider::Llm,
                ..
            }
        )
    });
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0] < answered[0],
        "LLM at {asked:?}, transcript at {answered:?}"
    );
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_speculative_replies_total"),
        Some(1.0)
    );
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_speculative_restarts_total"),
        Some(0.0)
    );
    support::write_report(
        "stt-stream-report.txt",
        &format!(
            "streaming STT (in process, fake Deepgram-style, first interim 150 ms after the first audio, final 60 ms after Finalize): first partial {} ms after the speech start, transcript {wait} ms after the end of the turn; speculative reply: LLM asked {} ms after the end of the turn, {} ms before the final transcript\n",
            first.first().copied().unwrap_or(u64::MAX),
            asked[0] - ends[0],
            answered[0] - asked[0]
        ),
    );
    assert!(
        first.len() == 1 && first[0] <= 300,
        "first partial {first:?} ms after the speech started"
    );
    assert_eq!(
        caller_turns(&ended.record),
        [(
            "speech".to_string(),
            "Ma box internet ne marche plus.".to_string()
        )]
    );
}

#[tokio::test]
async fn a_final_transcript_that_differs_asks_the_reply_again() {
    let corrected = "Ma box internet ne marche toujours pas.";
    let (counts, ended) = one_streamed_turn(
        "calls_stt_stream_corrected",
        FakeBehaviour {
            stt_stream_final_text: Some(corrected.into()),
            stt_stream_final_latency: Duration::from_millis(150),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(counts.llm, 2, "asked on the partial, then on the final");
    // The second request carries what the caller said, not the guess.
    let chat = counts.last_chat.unwrap().to_string();
    assert!(chat.contains(corrected), "{chat}");
    assert!(!chat.contains("marche plus"), "{chat}");
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_speculative_replies_total"),
        Some(1.0)
    );
    assert_eq!(
        support::metric_sample(&ended.metrics, "sav_speculative_restarts_total"),
        Some(1.0)
    );
    assert_eq!(
        caller_turns(&ended.record),
        [("speech".to_string(), corrected.to_string())]
    );
    use sav::timeline::{Mark, Provider};
    let cancelled = marks_at(&ended.timeline, |m| {
        matches!(
            m,
            Mark::Cancelled {
                provider: Provider::Llm,
                ..
            }
        )
    });
    assert_eq!(cancelled.len(), 1, "the first reply was dropped");
}

#[tokio::test]
async fn a_refused_stream_falls_back_to_the_batch_recogniser() {
    let (counts, ended) = one_streamed_turn(
        "calls_stt_stream_refused",
        FakeBehaviour {
            stt_stream_fault: Some(Fault::Status(503)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (counts.stt_stream_attempts, counts.stt_streams, counts.stt),
        (1, 0, 1),
        "a stream was asked for, refused, and the batch took the turn"
    );
    assert_eq!(
        caller_turns(&ended.record),
        [(
            "speech".to_string(),
            "Ma box internet ne marche plus.".to_string()
        )]
    );
}

#[tokio::test]
async fn a_caller_stream_with_loss_and_jitter_shows_in_the_metrics() {
    let call = TestCall::start(Setup {
        name: "calls_degraded",
        ..Setup::default()
    })
    .await;
    // 10 s of the caller's line: every 10th packet lost, every 5th one
    // 10 ms late (the next one on time).
    let silence = [0xFF; 160];
    for seq in 0..500u16 {
        let late = seq % 5 == 2;
        if late {
            call.wait(Duration::from_millis(10)).await;
        }
        if seq % 10 != 9 {
            call.send_rtp(seq, u32::from(seq) * 160, &silence).await;
        }
        let rest = if late { 10 } else { 20 };
        call.wait(Duration::from_millis(rest)).await;
    }
    let ended = call.hang_up().await;
    let metrics = &ended.metrics;
    assert_eq!(
        support::metric_sample(metrics, "sav_rtp_loss_ratio_count"),
        Some(1.0),
        "{metrics}"
    );
    // Sequence 0 to 498 expected, 49 of them lost.
    let loss = support::metric_sample(metrics, "sav_rtp_loss_ratio_sum").unwrap();
    assert!((loss - 49.0 / 499.0).abs() < 0.002, "loss {loss}");
    // 10 ms late every 100 ms: RFC 3550's estimator settles near 3 ms.
    let jitter = support::metric_sample(metrics, "sav_rtp_jitter_seconds_sum").unwrap();
    assert!((0.0015..0.006).contains(&jitter), "jitter {jitter} s");
    // And in the call's record.
    let media = ended.timeline.media.expect("the media in the timeline");
    assert_eq!((media.rtp_received, media.rtp_lost), (450, 49));
    assert_eq!(media.codec, "PCMU");
    assert!((media.jitter_ms / 1000.0 - jitter).abs() < 1e-9);
}

#[tokio::test]
async fn a_hold_stops_our_audio_and_the_resume_brings_it_back() {
    let call = TestCall::start(Setup {
        name: "calls_hold",
        ..Setup::default()
    })
    .await;
    call.wait(SECOND).await;
    let phone = call.phone;
    let remote = |sending: bool| {
        LegEvent::MediaChanged(phone_media(phone, sav::media::codec::Codec::Pcmu, sending))
    };
    // On hold (our answer recvonly): nothing is sent, the clock runs on.
    call.peer.events.send(remote(false)).await.unwrap();
    call.wait(SECOND).await;
    let before = call.heard.lock().unwrap().len();
    call.wait(3 * SECOND).await;
    assert_eq!(
        call.heard.lock().unwrap().len(),
        before,
        "audio sent on hold"
    );
    // Resumed: a frame every 20 ms again, and the first carries the marker
    // of a new talkspurt (not visible here: payloads only).
    call.peer.events.send(remote(true)).await.unwrap();
    call.wait(SECOND).await;
    let after = call.heard.lock().unwrap().len();
    assert!(
        (49..=51).contains(&(after - before)),
        "{} frames in 1 s",
        after - before
    );
    let ended = call.hang_up().await;
    assert_eq!(ended.end.outcome.as_str(), "abandoned");
}

#[tokio::test]
async fn a_shutdown_ends_the_call_as_interrupted() {
    let call = TestCall::start(Setup {
        name: "calls_shutdown",
        ..Setup::default()
    })
    .await;
    call.wait(2 * SECOND).await;
    call.services.shutdown.cancel();
    let ended = call.ended(5 * SECOND).await;
    assert_eq!(ended.end.outcome.as_str(), "interrupted");
    assert_eq!(ended.end.ending, Ending::Local);
}

// ---- Provider faults: each ends in the cached fallback, heard whole after
// the caller's turn with no dead air over 700 ms, and the call goes on.

fn short_timeouts(base: &str) -> String {
    support::fake_providers_config(
        base,
        "model = \"fake\"\nfirst_token_timeout_ms = 2000\nstall_timeout_ms = 1500\n",
        "first_byte_timeout_ms = 2000\nstall_timeout_ms = 1500\n",
        "timeout_ms = 2000\n",
    )
}

fn short_greeting(c: String) -> String {
    c.replace(
        "greeting = [\"greet\", \"welcome\"]",
        "greeting = [\"greet\"]",
    )
}

async fn fault_turn(name: &'static str, change: impl FnOnce(&mut FakeBehaviour)) {
    let mut behaviour = FakeBehaviour {
        llm_ttfb: Duration::from_millis(300),
        tts_ttfb: Duration::from_millis(100),
        ..Default::default()
    };
    change(&mut behaviour);
    let mut call = TestCall::start(Setup {
        name,
        providers: Some(behaviour),
        provider_config: Some(short_timeouts),
        free_conversation: true,
        edit: short_greeting,
        ..Setup::default()
    })
    .await;
    assert!(call.until(20 * SECOND, |h| quiet_for(h, 500)).await);
    call.says(2 * SECOND).await;
    let end_of_turn = call.now();
    call.wait(10 * SECOND).await;
    assert_eq!(call.command(Duration::ZERO).await, None, "the call goes on");
    let ended = call.hang_up().await;
    assert_eq!(ended.end.ending, Ending::Remote);
    let after: Vec<_> = ended
        .heard
        .iter()
        .filter(|(at, _)| *at >= end_of_turn)
        .cloned()
        .collect();
    // The whole fallback phrase, after the caller's turn...
    let sorry = support::cached_frames("sorry");
    let start = after
        .windows(sorry.len())
        .position(|w| w.iter().zip(&sorry).all(|((_, p), f)| p.starts_with(f)))
        .unwrap_or_else(|| {
            panic!(
                "{name}: the fallback was not heard whole: {:?}",
                phrase_starts(&after, PHRASES)
            )
        });
    // ...with no dead air before it.
    let silent = longest_silence_after(&after[..start], end_of_turn);
    println!(
        "{name}: fallback {} ms after the turn, longest silent run before it {silent} ms",
        (after[start].0 - end_of_turn).as_millis()
    );
    assert!(silent <= 700, "{name}: {silent} ms of dead air");
}

/// One whole call per fault, named after it.
macro_rules! faults_end_in_the_fallback {
    ($($name:ident: $field:ident = $fault:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                fault_turn(stringify!($name), |b| b.$field = Some($fault)).await;
            }
        )*
    };
}

faults_end_in_the_fallback! {
    llm_500_gets_the_fallback: llm_fault = Fault::Status(500);
    llm_429_gets_the_fallback: llm_fault = Fault::Status(429);
    llm_stall_gets_the_fallback: llm_fault = Fault::StallAfter(2);
    llm_disconnect_mid_stream_gets_the_fallback: llm_fault = Fault::DisconnectAfter(2);
    malformed_sse_gets_the_fallback: llm_fault = Fault::Garbage;
    tts_garbage_gets_the_fallback: tts_fault = Fault::Garbage;
    stt_failure_gets_the_fallback: stt_fault = Fault::Status(500);
    tts_500_gets_the_fallback: tts_fault = Fault::Status(500);
    tts_stall_gets_the_fallback: tts_fault = Fault::StallAfter(3);
    tts_disconnect_mid_stream_gets_the_fallback: tts_fault = Fault::DisconnectAfter(3);
}

// ---- Barge-in: a real interruption gets a new reply; a backchannel resumes
// the old one from the sentence it was cut in. (How fast the VAD stops the
// bot on real speech is measured on the wire: tests/barge_in.rs.)

const LONG_REPLY: &str = "Très bien, je vais vous aider à résoudre ce problème de connexion. Commencez par débrancher la box pendant dix secondes. Ensuite rebranchez-la et attendez que tous les voyants soient bien stabilisés. Dites-moi quand c'est fait.";
const SECOND_REPLY: &str = "Ah, c'est le téléphone alors. Vérifiez que le combiné est bien branché sur la prise grise de la box.";

/// Which TTS text a frame is (by its index in `texts`), when generated.
fn text_of(payload: &[u8], texts: &[String]) -> Option<usize> {
    texts.iter().position(|t| {
        let (low, high) = support::fake_providers::tts_codes(t);
        payload.iter().all(|b| *b == low || *b == high)
    })
}

/// A reply is playing when the caller talks over it for 600 ms and says
/// `second`; returns (texts, the index of the text interrupted, the texts
/// heard after the interruption in order of first frame with their frame
/// counts, LLM requests).
async fn barge(
    name: &'static str,
    second: &'static str,
) -> (Vec<String>, usize, Vec<(usize, usize)>, u32) {
    let call = TestCall::start(Setup {
        name,
        providers: Some(FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            tts_ttfb: Duration::from_millis(100),
            llm_replies: [LONG_REPLY.to_string(), SECOND_REPLY.to_string()].into(),
            llm_reply: SECOND_REPLY.into(),
            tts_tag_by_text: true,
            stt_transcripts: ["Ma box ne marche plus.".to_string(), second.to_string()].into(),
            ..Default::default()
        }),
        free_conversation: true,
        edit: short_greeting,
        ..Setup::default()
    })
    .await;
    assert!(call.until(20 * SECOND, |h| quiet_for(h, 500)).await);
    call.says(2 * SECOND).await;
    let fakes = call.fakes.as_ref().unwrap();
    // Into the reply's second sentence.
    assert!(
        call.until(20 * SECOND, |h| {
            let texts = fakes.counts().tts_texts;
            texts.len() >= 2 && h.last().and_then(|(_, p)| text_of(p, &texts)) == Some(1)
        })
        .await,
        "the reply's second sentence never played"
    );
    call.wait(Duration::from_millis(500)).await;
    call.starts_talking().await;
    let onset = call.now();
    call.wait(Duration::from_millis(600)).await;
    call.stops_talking(Duration::from_millis(600)).await;
    call.wait(8 * SECOND).await;
    let llm = fakes.counts().llm;
    let texts = fakes.counts().tts_texts;
    let ended = call.hang_up().await;
    let interrupted = ended
        .heard
        .iter()
        .rev()
        .filter(|(at, _)| *at < onset)
        .find_map(|(_, p)| text_of(p, &texts))
        .expect("a reply was playing");
    // Nothing generated while the caller talks (the media clock is exact
    // here: the next frame after the onset is already not the reply).
    let during = ended
        .heard
        .iter()
        .filter(|(at, p)| {
            *at > onset && *at <= onset + Duration::from_millis(600) && text_of(p, &texts).is_some()
        })
        .count();
    assert_eq!(during, 0, "{name}: the reply played over the caller");
    let mut after: Vec<(usize, usize)> = Vec::new();
    for (_, p) in ended.heard.iter().filter(|(at, _)| *at > onset) {
        if let Some(t) = text_of(p, &texts) {
            match after.iter_mut().find(|(i, _)| *i == t) {
                Some((_, n)) => *n += 1,
                None => after.push((t, 1)),
            }
        }
    }
    (texts, interrupted, after, llm)
}

#[tokio::test]
async fn a_real_interruption_stops_the_reply_and_gets_a_new_one() {
    let (texts, interrupted, after, llm) = barge(
        "calls_barge_real",
        "Non attendez, c'est le téléphone qui ne marche pas.",
    )
    .await;
    assert_eq!(llm, 2, "a real interruption gets a new reply");
    assert!(LONG_REPLY.contains(&texts[interrupted]));
    let new: usize = after
        .iter()
        .filter(|(t, _)| SECOND_REPLY.contains(texts[*t].as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(new > 50, "the new reply was not heard ({new} frames)");
    assert!(
        after
            .iter()
            .all(|(t, _)| SECOND_REPLY.contains(texts[*t].as_str())),
        "the old reply came back: {after:?}"
    );
}

#[tokio::test]
async fn a_backchannel_resumes_the_reply_from_the_sentence_it_was_cut_in() {
    let (texts, interrupted, after, llm) = barge("calls_barge_mhm", "mhm").await;
    assert_eq!(llm, 1, "the reply is resumed, not generated again");
    assert_eq!(
        after.first().map(|(t, _)| *t),
        Some(interrupted),
        "{after:?}"
    );
    let frames: usize = after.iter().map(|(_, n)| n).sum();
    assert!(frames > 50, "the reply did not go on ({frames} frames)");
    assert!(after
        .iter()
        .all(|(t, _)| LONG_REPLY.contains(texts[*t].as_str())));
}

// ---- The guided flow's other paths (the voice fix and the crash are on
// the wire in tests/sav_flow.rs).

fn tts_only(base: &str) -> String {
    format!("\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"voice\"\n")
}

fn llm_and_tts(base: &str) -> String {
    format!(
        "\n[llm]\nbase_url = \"{base}/v1\"\nmodel = \"fake\"\n\n[tts]\nbase_url = \"{base}\"\nvoice_id = \"voice\"\n"
    )
}

fn llm_tts_stt_to(base: &str) -> String {
    support::fake_providers_config(base, "model = \"fake\"\n", "", "")
}

fn short_greeting_and_transfer(c: String) -> String {
    with_transfer(short_greeting(c))
}

#[tokio::test]
async fn a_known_customer_hears_name_and_ticket_then_answers_with_keys() {
    let call = TestCall::start(Setup {
        name: "calls_known_keys",
        providers: Some(FakeBehaviour {
            tts_ttfb: Duration::from_millis(100),
            tts_speed: 4,
            tts_tag_by_text: true,
            ..Default::default()
        }),
        provider_config: Some(tts_only),
        customers: Some(
            "phone,title,first_name,last_name,product,problem\n\
             06 12 34 56 78,Monsieur,Jean,Dupont,box internet,plus de connexion depuis hier\n",
        ),
        from: "+33612345678",
        ..Setup::default()
    })
    .await;
    // Greet, the name and ticket through TTS, then the menu: the first key
    // while the menu plays.
    assert!(
        call.until(40 * SECOND, |h| phrases_heard(h, &["menu"]).len() == 1)
            .await
    );
    press_the_fix_keys(&call).await;
    let spoken = call.fakes.as_ref().unwrap().counts().tts_texts;
    let ended = call.ended(60 * SECOND).await;
    assert_eq!(
        spoken.join(" "),
        "Monsieur Dupont, je vois votre ticket concernant votre box internet : plus de connexion depuis hier. Est-ce pour cela que vous appelez ? Décrivez-moi ce qui se passe.",
    );
    assert_eq!(phrases_heard(&ended.heard, PHRASES), FIXED_BY_KEYS);
    // The name follows greet at once.
    let greet = support::cached_frames("greet").len();
    let name = ended
        .heard
        .iter()
        .position(|(_, p)| text_of(p, &spoken) == Some(0))
        .expect("the name was heard");
    assert!(
        name <= greet + 5,
        "the name at frame {name}, greet is {greet} frames"
    );
    assert_eq!(ended.record["customer"]["last_name"], "Dupont");
    assert_eq!(ended.end.outcome.as_str(), "resolved");
    assert_eq!(
        caller_turns(&ended.record),
        ["1", "2", "1", "1"].map(|k| ("dtmf".to_string(), k.to_string()))
    );
}

#[tokio::test]
async fn asking_for_a_human_by_voice_is_transferred_without_the_llm() {
    let mut call = TestCall::start(Setup {
        name: "calls_agent",
        providers: Some(FakeBehaviour {
            stt_latency: Duration::from_millis(100),
            stt_transcripts: ["Je voudrais parler à un conseiller.".to_string()].into(),
            ..Default::default()
        }),
        provider_config: Some(llm_tts_stt_to),
        edit: short_greeting_and_transfer,
        ..Setup::default()
    })
    .await;
    assert!(call.until(20 * SECOND, |h| quiet_for(h, 500)).await);
    call.says(2 * SECOND).await;
    assert_eq!(
        call.command(20 * SECOND).await,
        Some(LegCommand::Transfer("sip:support@pbx.example.com".into()))
    );
    call.transfer_ends(true).await;
    let llm = call.fakes.as_ref().unwrap().counts().llm;
    let ended = call.ended(10 * SECOND).await;
    assert_eq!(llm, 0, "asking for a human needs no LLM");
    assert_eq!(ended.end.outcome.as_str(), "transferred");
    assert_eq!(
        ended.record["transfer_target"],
        "sip:support@pbx.example.com"
    );
    assert!(ended.record["problem"].is_null());
}

#[tokio::test]
async fn with_the_llm_down_the_congratulation_is_the_cached_one() {
    let call = TestCall::start(Setup {
        name: "calls_llm_down",
        providers: Some(FakeBehaviour {
            llm_fault: Some(Fault::Status(500)),
            tts_ttfb: Duration::from_millis(100),
            ..Default::default()
        }),
        provider_config: Some(llm_and_tts),
        ..Setup::default()
    })
    .await;
    call.wait(4 * SECOND).await;
    press_the_fix_keys(&call).await;
    let llm = call.fakes.as_ref().unwrap().counts().llm;
    let ended = call.ended(60 * SECOND).await;
    assert_eq!(llm, 1, "the congratulation was asked for");
    let order = phrases_heard(&ended.heard, PHRASES);
    assert_eq!(
        order[order.len().saturating_sub(3)..],
        ["filler_ok", "congratulations", "goodbye"],
        "{order:?}"
    );
    assert_eq!(ended.end.outcome.as_str(), "resolved");
}

/// The congratulation's filler named by a phrase that is not in `[hybrid]
/// fillers`: the conversation queued it as a filler, so the timeline and the
/// phrase counts say filler (the source travels with the segment, it is not
/// guessed from the fillers list); the same phrase said for itself is cache.
#[tokio::test]
async fn a_filler_is_counted_as_one_whatever_its_key() {
    let call = TestCall::start(Setup {
        name: "calls_filler_source",
        providers: Some(FakeBehaviour {
            llm_fault: Some(Fault::Status(500)),
            tts_ttfb: Duration::from_millis(100),
            ..Default::default()
        }),
        provider_config: Some(llm_and_tts),
        edit: |c| {
            let edited = c.replace(
                "congratulation_filler = \"filler_ok\"",
                "congratulation_filler = \"internet_cables\"",
            );
            assert_ne!(edited, c, "sav.toml changed");
            edited
        },
        ..Setup::default()
    })
    .await;
    call.wait(4 * SECOND).await;
    press_the_fix_keys(&call).await;
    let ended = call.ended(60 * SECOND).await;
    let starts: Vec<(String, String)> = ended
        .timeline
        .events
        .iter()
        .filter_map(|entry| match &entry.mark {
            sav::timeline::Mark::SegmentStart { label, source } => {
                Some((label.clone(), format!("{source:?}")))
            }
            _ => None,
        })
        .collect();
    let cables: Vec<&str> = starts
        .iter()
        .filter(|(label, _)| label == "internet_cables")
        .map(|(_, source)| source.as_str())
        .collect();
    // The second fix step, then the same phrase covering the congratulation.
    assert_eq!(cables, ["cache", "filler"], "{starts:?}");
    assert!(
        starts.iter().all(|(_, source)| source != "generated"),
        "the LLM was down: {starts:?}"
    );
}

// ---- An echoing line: the caller's line returns the bot's own voice (a
// PSTN hybrid), with comfort noise, through the real receive path (jitter
// buffer, echo canceller, VAD). The bot speaks with a voice (espeak-ng), not
// a tone, so its echo sounds like speech to the VAD.

/// The generated replies' voice: the fake LLM's reply said by espeak-ng,
/// in μ-law (the fake TTS repeats it to each text's length).
fn bot_voice() -> std::sync::Arc<Vec<u8>> {
    let reply = FakeBehaviour::default().llm_reply;
    let pcm = support::turn_corpus::say(&reply, "fr");
    std::sync::Arc::new(pcm.iter().map(|&s| sav::media::g711::encode(s)).collect())
}

/// What a call on an echoing line came to.
struct EchoFigures {
    /// The bot's turns heard (the greeting, then one reply per caller turn).
    bot_turns: usize,
    /// Barge-ins counted, and those while the caller was silent (all but
    /// the caller's own when they talk over the bot).
    barge_ins: u64,
    false_barge_ins: u64,
    /// From the caller's voice over the last turn to the bot falling silent.
    stopped_after: Option<Duration>,
    /// Replies asked of the LLM, and the caller's turns spoken.
    llm: u32,
    spoken: usize,
    /// When (ms of the timeline) the bot was stopped, and when the caller's
    /// utterances began (ms of the media clock).
    barge_ins_at: Vec<u64>,
    utterances_at: Vec<u128>,
}

/// The caller answers each of the bot's turns once it is over (0.7 s of
/// quiet), `turns - 1` times; with `talk_over`, the caller then talks over
/// the last turn 1.5 s into it.
async fn echoing_line(
    name: &'static str,
    line: EchoLine,
    cancelling: bool,
    turns: usize,
    talk_over: bool,
) -> EchoFigures {
    let call = TestCall::start(Setup {
        name,
        providers: Some(FakeBehaviour {
            tts_audio: bot_voice(),
            ..Default::default()
        }),
        free_conversation: true,
        line: Some(line),
        edit: if cancelling {
            |c| c
        } else {
            |c| c.replace("echo_cancelling = true", "echo_cancelling = false")
        },
        ..Setup::default()
    })
    .await;
    let said: Vec<Vec<i16>> = support::turn_corpus::FINISHED
        .iter()
        .take(turns)
        .map(|text| support::turn_corpus::say(text, "fr+f3"))
        .collect();
    let audible = |p: &Vec<u8>| level(p) > 100;
    // The bot's turns: heard from `from` on, and over (`quiet` of silence).
    let over = |h: &[(Duration, Vec<u8>)], from: Duration, quiet: usize| {
        h.iter().any(|(at, p)| *at >= from && audible(p))
            && h.len() > quiet / 20
            && h[h.len() - quiet / 20..].iter().all(|(_, p)| !audible(p))
    };
    let mut bot_turns = 0;
    let mut from = Duration::ZERO;
    let mut spoken = 0;
    let mut onset = None;
    for (i, utterance) in said.iter().enumerate() {
        let last = i + 1 == turns;
        if last && talk_over {
            // 1.5 s into the bot's turn, and the bot speaking.
            let speaking = call
                .until(30 * SECOND, |h| {
                    h.iter().filter(|(at, p)| *at >= from && audible(p)).count() >= 75
                        && h.last().is_some_and(|(_, p)| audible(p))
                })
                .await;
            if !speaking {
                break;
            }
            bot_turns += 1;
            let voice = utterance
                .chunks(160)
                .position(|f| f.iter().map(|s| i32::from(*s).abs()).sum::<i32>() / 160 > 100)
                .expect("a voice");
            call.says_audio(utterance.clone());
            call.wait(Duration::from_millis(40)).await;
            let began = *call.utterances_began().last().expect("the caller began");
            onset = Some(began + Duration::from_millis(voice as u64 * 20));
        } else {
            if !call.until(30 * SECOND, |h| over(h, from, 700)).await {
                break;
            }
            bot_turns += 1;
            if last {
                break;
            }
            call.says_audio(utterance.clone());
        }
        spoken += 1;
        while call.caller_talking() {
            call.wait(Duration::from_millis(20)).await;
        }
        from = call.now();
    }
    if !talk_over {
        // The last turn heard out.
        call.until(30 * SECOND, |h| over(h, from, 700)).await;
    } else {
        call.wait(3 * SECOND).await;
    }
    let llm = call.fakes.as_ref().unwrap().counts().llm;
    let utterances_at = call
        .utterances_began()
        .iter()
        .map(Duration::as_millis)
        .collect();
    let ended = call.hang_up().await;
    let barge_ins_at = marks_at(&ended.timeline, |m| {
        matches!(m, sav::timeline::Mark::BargeIn)
    });
    let barge_ins =
        support::metric_sample(&ended.metrics, "sav_barge_ins_total").unwrap_or(0.0) as u64;
    let stopped_after = onset.and_then(|onset| {
        // Where the bot's silence that follows the caller's onset begins
        // (a run of at least 1 s: not a pause between two words).
        let frames: Vec<&(Duration, Vec<u8>)> =
            ended.heard.iter().filter(|(at, _)| *at >= onset).collect();
        let start = frames
            .windows(50)
            .position(|w| w.iter().all(|(_, p)| !audible(p)))?;
        Some(frames[start].0 - onset)
    });
    EchoFigures {
        bot_turns,
        barge_ins,
        false_barge_ins: barge_ins.saturating_sub(u64::from(talk_over)),
        stopped_after,
        llm,
        spoken,
        barge_ins_at,
        utterances_at,
    }
}

#[tokio::test]
async fn an_echoing_line_never_interrupts_the_bot_and_the_caller_still_does() {
    // Without the canceller the test can tell: the bot's echo cuts it.
    let line = EchoLine {
        delay: Duration::from_millis(60),
        loss_db: 12.0,
        noise_dbfs: -60.0,
    };
    let control = echoing_line("calls_echo_control", line, false, 2, false).await;
    assert!(
        control.false_barge_ins > 0,
        "without the canceller the echo never cut the bot: the test cannot fail"
    );
    let mut report = format!(
        "echo line (whole call: the caller answers 9 bot turns and talks over the 10th)\n\
         without the canceller, 60 ms −12 dB, noise −60 dBFS: {} false barge-ins in {} bot turns\n",
        control.false_barge_ins, control.bot_turns
    );
    // The two lines of the acceptance (a typical hybrid; the worst G.168
    // asks for) over comfort noise, and the first on a noisy line.
    for (name, delay, loss_db, noise_dbfs) in [
        ("calls_echo_60", 60, 12.0, -60.0),
        ("calls_echo_120", 120, 6.0, -60.0),
        ("calls_echo_noisy", 60, 12.0, -45.0),
    ] {
        let line = EchoLine {
            delay: Duration::from_millis(delay),
            loss_db,
            noise_dbfs,
        };
        let f = echoing_line(name, line, true, 10, true).await;
        report += &format!(
            "{delay} ms −{loss_db} dB, noise {noise_dbfs} dBFS: {} false barge-ins in {} bot turns \
             ({} replies for {} caller turns; barge-ins at {:?} ms, the caller began at {:?} ms); \
             the caller talking over the bot stopped it after {} ms\n",
            f.false_barge_ins,
            f.bot_turns,
            f.llm,
            f.spoken,
            f.barge_ins_at,
            f.utterances_at,
            f.stopped_after
                .map_or("(never)".to_string(), |d| d.as_millis().to_string()),
        );
        assert_eq!(f.bot_turns, 10, "{name}: {report}");
        assert_eq!(f.false_barge_ins, 0, "{name}: {report}");
        assert_eq!(
            f.barge_ins, 1,
            "{name}: the caller's own barge-in: {report}"
        );
        assert_eq!(
            f.llm as usize, f.spoken,
            "{name}: one reply per turn: {report}"
        );
        assert!(
            f.stopped_after
                .is_some_and(|d| d <= Duration::from_millis(300)),
            "{name}: the caller over the bot: {report}"
        );
    }
    support::write_report("echo-line-report.txt", &report);
}

// ---- The words so far: a streaming recogniser's partial transcript that
// leaves the turn open ("…la box euh") holds the turn for the unfinished
// hang-over, whatever the voice did.

/// The caller says one sentence on a quiet line (real VAD) while the
/// streaming recogniser's partial transcripts spell `words`; the turn's
/// length in the timeline (speech start to end, ms) and the end marks.
async fn turn_with_words(name: &'static str, words: &str) -> (u64, usize) {
    let call = TestCall::start(Setup {
        name,
        providers: Some(FakeBehaviour {
            tts_audio: bot_voice(),
            stt_transcripts: [words.to_string()].into(),
            ..Default::default()
        }),
        provider_config: Some(streaming_stt),
        free_conversation: true,
        line: Some(EchoLine {
            delay: Duration::from_millis(60),
            loss_db: 80.0,
            noise_dbfs: -60.0,
        }),
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 700)).await);
    call.says_audio(support::turn_corpus::say(
        "Le voyant de la box clignote en rouge.",
        "fr+f3",
    ));
    while call.caller_talking() {
        call.wait(Duration::from_millis(20)).await;
    }
    call.wait(3 * SECOND).await;
    let ended = call.hang_up().await;
    use sav::timeline::Mark;
    let starts = marks_at(&ended.timeline, |m| *m == Mark::CallerSpeechStart);
    let ends = marks_at(&ended.timeline, |m| *m == Mark::CallerSpeechEnd);
    assert!(!starts.is_empty() && !ends.is_empty(), "{name}: no turn");
    (ends[0] - starts[0], ends.len())
}

#[tokio::test]
async fn words_that_leave_the_turn_open_hold_it_longer() {
    let (closed, closed_turns) = turn_with_words(
        "calls_words_closed",
        "Le voyant de la box clignote en rouge",
    )
    .await;
    let (open, open_turns) = turn_with_words("calls_words_open", "Le voyant de la box euh").await;
    support::write_report(
        "turn-words-report.txt",
        &format!(
            "end of turn from the words so far (in process, real VAD, the same spoken sentence): \
             {closed} ms from speech start to end with the partials spelling it whole, \
             {open} ms with them ending on \"euh\" (+{} ms)\n",
            open.saturating_sub(closed)
        ),
    );
    assert_eq!((closed_turns, open_turns), (1, 1), "one turn each");
    // The same audio: only the words differ. Open words wait the
    // unfinished hang-over (1 s) instead of the voice's (0.2-0.5 s).
    assert!(
        open >= closed + 450,
        "turn with open words {open} ms, with closed ones {closed} ms"
    );
}

#[tokio::test]
async fn the_disclosure_comes_before_the_greeting() {
    let call = TestCall::start(Setup {
        name: "calls_disclosure",
        edit: |c| {
            c.replace(
                "# disclosure = \"disclosure\"",
                "disclosure = \"disclosure\"",
            )
        },
        ..Setup::default()
    })
    .await;
    call.wait(12 * SECOND).await;
    let ended = call.hang_up().await;
    let heard = phrases_heard(&ended.heard, &["disclosure", "greet", "menu"]);
    assert_eq!(heard, ["disclosure", "greet", "menu"]);
    let first_bot_turn = ended.record["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["speaker"] == "bot")
        .and_then(|t| t["text"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        first_bot_turn.starts_with("Cet appel est enregistré"),
        "{first_bot_turn}"
    );
}
