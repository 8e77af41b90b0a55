//! The store on a real SQLite file: migrations, customers from CSV (bad rows
//! reported with their line numbers, good rows kept), call records written
//! through the recorder, calls left open closed as interrupted at the next
//! start, and the outbox delivered to a webhook with retries, once per event.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sav::store::import::import_customers;
use sav::store::outbox::{self, CrmConfig};
use sav::store::{Speaker, Store, TurnKind};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

async fn open(dir: &std::path::Path, instance: &str) -> Store {
    Store::open("sqlite://store.db", dir, instance)
        .await
        .expect("open the store")
}

#[tokio::test]
async fn csv_import_keeps_good_rows_and_reports_bad_ones_by_line() {
    let dir = support::workdir("store-import");
    let store = open(&dir, "a").await;
    let csv = "phone,title,first_name,last_name,product,problem\n\
               06 12 34 56 78,Monsieur,Jean,Dupont,box internet,plus de connexion\n\
               bonjour,Madame,Ada,Lovelace,,\n\
               +33 7 00 00 00 01,Madame,Marie,Curie,,\n\
               0612,,Paul,Court,,\n\
               0700000002,,,,tv,écran noir\n\
               +33612345678,Monsieur,Jean,Dupont,box internet,plus de connexion\n";
    let report = import_customers(&store, csv.as_bytes(), "33")
        .await
        .unwrap();
    assert_eq!(report.rows, 6);
    let lines: Vec<u64> = report.rejected.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 5, 6], "{:?}", report.rejected);
    assert!(
        report.rejected[0].1.contains("bonjour"),
        "{:?}",
        report.rejected
    );
    assert!(report.rejected[2].1.contains("first_name"));
    assert_eq!(report.customers, 2, "Dupont twice is one customer, updated");
    assert_eq!(report.tickets, 1, "the same ticket twice is one ticket");

    let dupont = store.find_customer("+33612345678").await.unwrap().unwrap();
    assert_eq!(
        (dupont.title.as_str(), dupont.last_name.as_str()),
        ("Monsieur", "Dupont")
    );
    assert_eq!(dupont.tickets.len(), 1);
    assert_eq!(dupont.tickets[0].product, "box internet");
    assert!(store
        .find_customer("+33700000001")
        .await
        .unwrap()
        .unwrap()
        .tickets
        .is_empty());
    assert!(store.find_customer("+33600000000").await.unwrap().is_none());

    // A file without the required columns is refused as a whole.
    let error = import_customers(&store, "name,tel\nx,y\n".as_bytes(), "33")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("phone"), "{error}");
}

#[tokio::test]
async fn a_call_record_holds_its_turns_and_queues_one_event() {
    let dir = support::workdir("store-record");
    let store = open(&dir, "a").await;
    import_customers(
        &store,
        "phone,first_name,last_name\n+33612345678,Jean,Dupont\n".as_bytes(),
        "33",
    )
    .await
    .unwrap();
    let customer = store.find_customer("+33612345678").await.unwrap().unwrap();
    let mut call = store.record_call("abc@host", "+33612345678", Some(customer.id));
    call.answered();
    call.turn(Speaker::Bot, TurnKind::Cached, "greet");
    call.turn(Speaker::Caller, TurnKind::Speech, &"é".repeat(10_000));
    call.problem("internet");
    call.step("internet_restart");
    call.step("internet_cables");
    call.turn(Speaker::Caller, TurnKind::Dtmf, "1");
    let id = call.id().to_string();
    call.end("resolved");
    store.flush().await;

    let event = store.call_event(&id).await.unwrap().expect("the record");
    assert_eq!(event["outcome"], "resolved");
    assert_eq!(event["problem"], "internet");
    assert_eq!(event["customer"]["last_name"], "Dupont");
    assert_eq!(
        event["steps"],
        serde_json::json!(["internet_restart", "internet_cables"])
    );
    let transcript = event["transcript"].as_array().unwrap();
    assert_eq!(transcript.len(), 3);
    assert_eq!(transcript[2]["kind"], "dtmf");
    let long = transcript[1]["text"].as_str().unwrap();
    assert!(long.len() <= sav::store::MAX_TURN_TEXT && long.len() > 4000);
    assert_eq!(store.pending_events().await.unwrap(), 1);

    // The outbox holds exactly that event.
    let claimed = store.claim_event().await.unwrap().expect("due at once");
    assert_eq!(claimed.id, format!("call-{id}"));
    let payload: serde_json::Value = serde_json::from_str(&claimed.payload).unwrap();
    assert_eq!(payload, event);
    assert!(
        store.claim_event().await.unwrap().is_none(),
        "a claimed event is not handed out twice"
    );
}

#[tokio::test]
async fn calls_left_open_are_closed_as_interrupted_by_their_instance_only() {
    let dir = support::workdir("store-recover");
    {
        let store = open(&dir, "a").await;
        let mut call = store.record_call("one@host", "+33612345678", None);
        call.answered();
        call.turn(Speaker::Caller, TurnKind::Speech, "ma box ne marche plus");
        let other = open(&dir, "b").await;
        let _theirs = other.record_call("two@host", "+33700000001", None);
        store.flush().await;
        other.flush().await;
        // The process dies here: no end written.
        std::mem::forget(call);
    }
    let store = open(&dir, "a").await;
    assert_eq!(store.recover_interrupted().await.unwrap(), 1);
    let rows = sqlx::query("SELECT instance, outcome, ended_at FROM calls ORDER BY instance")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let outcome = |i: usize| rows[i].try_get::<Option<String>, _>("outcome").unwrap();
    assert_eq!(outcome(0).as_deref(), Some("interrupted"));
    assert_eq!(outcome(1), None, "instance b's call is b's business");
    assert_eq!(store.pending_events().await.unwrap(), 1);
    let event: serde_json::Value =
        serde_json::from_str(&store.claim_event().await.unwrap().unwrap().payload).unwrap();
    assert_eq!(event["outcome"], "interrupted");
    assert_eq!(event["transcript"][0]["text"], "ma box ne marche plus");
    // Recovering again queues nothing more.
    drop(store);
    let store = open(&dir, "a").await;
    assert_eq!(store.recover_interrupted().await.unwrap(), 0);
    assert_eq!(store.pending_events().await.unwrap(), 1);
}

#[tokio::test]
async fn the_outbox_is_delivered_once_per_event_with_retries() {
    let dir = support::workdir("store-outbox");
    let store = open(&dir, "a").await;
    for n in 0..3 {
        let call = store.record_call(&format!("{n}@host"), "+33612345678", None);
        call.end("caller_hung_up");
    }
    store.flush().await;

    // A webhook that fails its first two requests, then counts events.
    let requests = Arc::new(AtomicU32::new(0));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = {
        let (requests, seen) = (requests.clone(), seen.clone());
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (requests, seen) = (requests.clone(), seen.clone());
                async move {
                    if requests.fetch_add(1, Ordering::SeqCst) < 2 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    assert_eq!(event["id"], key.as_str());
                    seen.lock().unwrap().push(key);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    sav::install_crypto_provider();
    let stop = CancellationToken::new();
    let config = CrmConfig {
        webhook_url: Some(format!("http://{addr}/events")),
        timeout_ms: 2000,
        retry_min_ms: 50,
        retry_max_ms: 200,
    };
    let worker = tokio::spawn(outbox::run(store.clone(), config, stop.clone()));
    for _ in 0..200 {
        if store.pending_events().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.pending_events().await.unwrap(), 0, "all delivered");
    // Nothing is sent again once delivered.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    worker.await.unwrap();
    let mut seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "each event once");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        5,
        "2 refused + 3 delivered"
    );
    let attempts: Vec<i64> = sqlx::query("SELECT attempts FROM outbox ORDER BY created_at, id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("attempts").unwrap())
        .collect();
    assert_eq!(attempts.iter().sum::<i64>(), 5, "{attempts:?}");
}
