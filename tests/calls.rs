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
    for digit in ['1', '2', '1', '1'] {
        call.press(digit).await;
        call.wait(3 * SECOND).await;
    }
    let ended = call.ended(60 * SECOND).await;
    assert_eq!(ended.end.outcome, "resolved");
    assert_eq!(ended.end.ending, Ending::Local);
    assert_eq!(
        phrases_heard(&ended.heard, PHRASES),
        [
            "greet",
            "menu",
            "internet_restart",
            "internet_cables",
            "verify",
            "congratulations",
            "goodbye"
        ]
    );
    assert_eq!(
        ended.record["steps"],
        serde_json::json!(["internet_restart", "internet_cables"])
    );
    assert_eq!(
        caller_turns(&ended.record),
        ["1", "2", "1", "1"].map(|k| ("dtmf".to_string(), k.to_string()))
    );
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
    assert_eq!(ended.end.outcome, "caller_ended");
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
    call.peer
        .events
        .send(LegEvent::Transfer { ok: false })
        .await
        .unwrap();
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
    call.peer
        .events
        .send(LegEvent::Transfer { ok: true })
        .await
        .unwrap();
    let ended = call.ended(10 * SECOND).await;
    assert_eq!(ended.end.outcome, "transferred");
    assert_eq!(ended.end.ending, Ending::Local);
    assert!(phrases_heard(&ended.heard, PHRASES).contains(&"transfer".to_string()));
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
    assert!(first_audio <= Duration::from_millis(40), "{first_audio:?}");
    assert!(fillers.len() >= 2, "{fillers:?}");
    assert!(silent <= 700, "{silent} ms of dead air");
    assert_eq!(frames_missing(&ended.heard), 0);
}

#[tokio::test]
async fn talking_over_the_reply_stops_it_and_a_backchannel_resumes_it() {
    let call = TestCall::start(Setup {
        name: "calls_barge_in",
        providers: Some(FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            tts_ttfb: Duration::from_millis(100),
            llm_reply: "Je comprends votre souci avec la box. Redémarrez-la, puis attendez deux minutes avant de tester à nouveau.".into(),
            stt_transcripts: ["Ma box internet ne marche plus.", "mhm"]
                .map(String::from)
                .into(),
            ..Default::default()
        }),
        free_conversation: true,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    call.says(2 * SECOND).await;
    assert!(
        call.until(10 * SECOND, |h| h
            .iter()
            .rev()
            .take(1)
            .any(|(_, p)| is_generated(p)))
            .await
    );
    call.wait(SECOND).await;
    // The caller coughs over the reply: it stops within 100 ms.
    call.starts_talking().await;
    let barged = call.now();
    call.wait(400 * Duration::from_millis(1)).await;
    let stopped = {
        let heard = call.heard.lock().unwrap();
        heard
            .iter()
            .filter(|(at, p)| *at > barged + Duration::from_millis(100) && is_generated(p))
            .count()
    };
    assert_eq!(stopped, 0, "generated audio after the barge-in");
    call.stops_talking(Duration::from_millis(400)).await;
    let resumed_from = call.now();
    assert!(
        call.until(5 * SECOND, |h| h
            .iter()
            .any(|(at, p)| *at > resumed_from && is_generated(p)))
            .await,
        "the reply did not resume"
    );
    let counts = call.fakes.as_ref().unwrap().counts();
    let ended = call.hang_up().await;
    assert_eq!(counts.llm, 1, "a backchannel makes no new reply");
    assert_eq!(counts.stt, 2);
    assert_eq!(
        caller_turns(&ended.record),
        [
            (
                "speech".to_string(),
                "Ma box internet ne marche plus.".to_string()
            ),
            ("speech".to_string(), "mhm".to_string())
        ]
    );
}

#[tokio::test]
async fn an_llm_500_ends_in_the_fallback_and_the_call_goes_on() {
    let call = TestCall::start(Setup {
        name: "calls_llm_500",
        providers: Some(FakeBehaviour {
            llm_fault: Some(Fault::Status(500)),
            ..Default::default()
        }),
        free_conversation: true,
        ..Setup::default()
    })
    .await;
    assert!(call.until(30 * SECOND, |h| quiet_for(h, 1000)).await);
    call.says(2 * SECOND).await;
    let end_of_turn = call.now();
    call.wait(8 * SECOND).await;
    let ended = call.hang_up().await;
    let after: Vec<_> = ended
        .heard
        .iter()
        .filter(|(at, _)| *at >= end_of_turn)
        .cloned()
        .collect();
    let starts = phrase_starts(&after, PHRASES);
    let sorry = starts
        .iter()
        .find(|(_, k)| k == "sorry")
        .unwrap_or_else(|| panic!("no fallback: {starts:?}"))
        .0;
    assert!(!after.iter().any(|(_, p)| is_generated(p)));
    // Fillers, then the fallback, with no dead air over 700 ms.
    let waiting: Vec<_> = after
        .iter()
        .filter(|(at, _)| *at < sorry)
        .cloned()
        .collect();
    let silent = longest_silence_after(&waiting, end_of_turn);
    assert!(silent <= 700, "{silent} ms of dead air before the fallback");
    assert_eq!(ended.end.ending, Ending::Remote);
    assert_eq!(ended.end.outcome, "abandoned");
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
async fn a_hold_stops_our_audio_and_the_resume_brings_it_back() {
    let call = TestCall::start(Setup {
        name: "calls_hold",
        ..Setup::default()
    })
    .await;
    call.wait(SECOND).await;
    let phone = call.phone;
    let remote = |sending: bool| {
        LegEvent::MediaChanged(sav::media::handle::RemoteMedia {
            addr: phone,
            payload_type: 0,
            receive: sav::media::rtp::PayloadTypes {
                audio: 0,
                telephone_event: Some(101),
            },
            sending,
            quiet_allowed: !sending,
        })
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
    assert_eq!(ended.end.outcome, "abandoned");
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
    assert_eq!(ended.end.outcome, "interrupted");
    assert_eq!(ended.end.ending, Ending::Local);
}
