//! OpenTelemetry traces end to end: a voice call (sipp speaks after the
//! greeting; fake STT, LLM and TTS speak the providers' wire formats) is
//! exported by OTLP over HTTP to a collector in this test, which decodes
//! the protobuf the way a real one does. The call is one trace: the call's
//! span (its Call-ID) at the root, the greeting's segments under it, the
//! caller's turn under it, and the turn's STT, LLM (first token), TTS
//! (first audio) and playout segments under the turn.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::fake_providers::{FakeBehaviour, FakeProviders};
use support::*;

/// What the collector received: the spans, and the resources' attributes.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resource: Vec<KeyValue>,
    posts: usize,
    content_types: Vec<String>,
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces`, protobuf.
struct Collector {
    port: u16,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    fn start() -> Collector {
        let received = Arc::new(Mutex::new(Received::default()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let store = received.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                            let store = store.clone();
                            async move {
                                let request = match ExportTraceServiceRequest::decode(body) {
                                    Ok(request) => request,
                                    Err(_) => return axum::http::StatusCode::BAD_REQUEST,
                                };
                                let mut received = store.lock().unwrap();
                                received.posts += 1;
                                received.content_types.push(
                                    headers
                                        .get("content-type")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string(),
                                );
                                for resource_spans in request.resource_spans {
                                    if let Some(resource) = resource_spans.resource {
                                        received.resource = resource.attributes;
                                    }
                                    for scope in resource_spans.scope_spans {
                                        received.spans.extend(scope.spans);
                                    }
                                }
                                axum::http::StatusCode::OK
                            }
                        },
                    ),
                );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the collector listens");
        Collector { port, received }
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(attributes: &[KeyValue], key: &str) -> Option<f64> {
    match attribute(attributes, key)? {
        Value::DoubleValue(v) => Some(*v),
        Value::IntValue(v) => Some(*v as f64),
        _ => None,
    }
}

#[test]
fn a_voice_call_is_one_trace_of_turns_requests_and_playout() {
    let dir = workdir("traces_voice");
    let ports = Ports::slot(83);
    speech_wav(
        &dir,
        "speaks",
        "Bonjour, ma box internet ne marche plus depuis ce matin.",
        "0",
        "5",
    );
    let collector = Collector::start();
    let fake = FakeProviders::start(
        0,
        FakeBehaviour {
            llm_ttfb: Duration::from_millis(300),
            tts_ttfb: Duration::from_millis(100),
            stt_latency: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let base = fake.base_url();
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let mut sav = Sav::start_with_env(
        &dir,
        ports,
        move |c| {
            format!(
                "{}{}\n[traces]\nendpoint = \"{endpoint}\"\nservice_name = \"sav-test\"\n",
                free_conversation(&c),
                fake_providers_config(
                    &base,
                    "model = \"fake\"\nfirst_token_timeout_ms = 6000\n",
                    "output_format = \"ulaw_8000\"\n",
                    "model = \"whisper\"\n"
                ),
            )
        },
        // No batch leaves on its own during the test (the SDK's delay is
        // 5 s): only the flush at exit can deliver the call's spans.
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    // The greeting lasts about 6.5 s: the caller speaks after it.
    let output = sipp(
        &dir,
        "uac_speaks.xml",
        ports,
        &["-m", "1", "-d", "7000"],
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "call failed:\n{}\n{}",
        sipp_report(&dir, &output),
        sav.log_text()
    );
    sav.wait_for_log("call outcome", Duration::from_secs(10));
    assert_eq!(
        collector.received.lock().unwrap().posts,
        0,
        "nothing sent before the exit"
    );
    // The exporter sends what is left when sav exits.
    assert!(sav.terminate().success(), "{}", sav.log_text());
    let received = collector.received.lock().unwrap();
    let log = sav.log_text();
    assert!(received.posts > 0, "nothing reached the collector\n{log}");
    assert!(
        received
            .content_types
            .iter()
            .all(|t| t == "application/x-protobuf"),
        "{:?}",
        received.content_types
    );
    assert_eq!(
        text(&received.resource, "service.name").as_deref(),
        Some("sav-test")
    );

    // The call: one root span, keyed by the SIP Call-ID; everything of the
    // call in its trace.
    let calls: Vec<&Span> = received.spans.iter().filter(|s| s.name == "call").collect();
    assert_eq!(
        calls.len(),
        1,
        "one call span: {:?}",
        received.spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let call = calls[0];
    assert!(call.parent_span_id.is_empty(), "the call's span is a root");
    let call_id = text(&call.attributes, "call_id").expect("call_id on the call's span");
    assert!(
        log.contains(&call_id),
        "{call_id} is the call's SIP Call-ID"
    );
    let in_call: Vec<&Span> = received
        .spans
        .iter()
        .filter(|s| s.trace_id == call.trace_id)
        .collect();
    assert_eq!(
        in_call.len(),
        received.spans.len(),
        "a span outside the call's trace: {:?}",
        received
            .spans
            .iter()
            .filter(|s| s.trace_id != call.trace_id)
            .map(|s| &s.name)
            .collect::<Vec<_>>()
    );
    let by_id: HashMap<&[u8], &Span> = in_call.iter().map(|s| (&s.span_id[..], *s)).collect();
    let parent = |span: &Span| -> &str {
        by_id
            .get(&span.parent_span_id[..])
            .map_or("?", |p| p.name.as_str())
    };
    let of =
        |name: &str| -> Vec<&Span> { in_call.iter().copied().filter(|s| s.name == name).collect() };

    // The caller's turn, under the call.
    let turns = of("turn");
    assert!(!turns.is_empty(), "no turn: {:?}", names(&in_call));
    assert!(turns.iter().all(|t| parent(t) == "call"));
    assert_eq!(text(&turns[0].attributes, "by").as_deref(), Some("voice"));

    // Its transcription, reply (first token) and speech (first audio).
    for provider in ["stt", "llm", "tts"] {
        let requests = of(provider);
        assert!(
            !requests.is_empty(),
            "no {provider} span: {:?}",
            names(&in_call)
        );
        for request in &requests {
            assert_eq!(parent(request), "turn", "{provider} under the turn");
            assert!(request.end_time_unix_nano >= request.start_time_unix_nano);
        }
        assert!(
            requests
                .iter()
                .any(|r| matches!(attribute(&r.attributes, "ok"), Some(Value::BoolValue(true)))),
            "{provider} answered"
        );
    }
    let llm = of("llm")[0];
    let first_token = number(&llm.attributes, "first_byte_ms").expect("the LLM's first token");
    let total_ms = (llm.end_time_unix_nano - llm.start_time_unix_nano) as f64 / 1e6;
    assert!(
        first_token >= 250.0 && first_token <= total_ms,
        "first token {first_token} ms (the fake waits 300), total {total_ms} ms"
    );
    let tts_first =
        number(&of("tts")[0].attributes, "first_byte_ms").expect("the TTS's first audio");
    assert!(
        tts_first >= 80.0,
        "the fake's TTS waits 100 ms: {tts_first}"
    );

    // Playout: the greeting's phrases under the call, the filler and the
    // generated reply under the turn.
    let playout = of("playout");
    let source = |s: &Span| text(&s.attributes, "source").unwrap_or_default();
    assert!(
        playout
            .iter()
            .any(|s| parent(s) == "call" && source(s) == "cache"),
        "the greeting's segments: {:?}",
        segments(&playout)
    );
    assert!(
        playout
            .iter()
            .any(|s| parent(s) == "turn" && source(s) == "filler"),
        "a filler in the turn: {:?}",
        segments(&playout)
    );
    assert!(
        playout
            .iter()
            .any(|s| parent(s) == "turn" && source(s) == "generated"),
        "the generated reply in the turn: {:?}",
        segments(&playout)
    );
    write_report(
        "traces-report.txt",
        &format!(
            "OTLP trace of a voice call: {} spans ({} turns, {} playout), LLM first token {first_token:.0} ms of {total_ms:.0} ms, TTS first audio {tts_first:.0} ms\n",
            in_call.len(),
            turns.len(),
            playout.len()
        ),
    );
}

fn names(spans: &[&Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

fn segments(spans: &[&Span]) -> Vec<(String, String)> {
    spans
        .iter()
        .map(|s| {
            (
                text(&s.attributes, "segment").unwrap_or_default(),
                text(&s.attributes, "source").unwrap_or_default(),
            )
        })
        .collect()
}
