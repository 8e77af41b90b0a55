//! The store on both backends, a real SQLite file and a real PostgreSQL
//! database: migrations, customers from CSV (bad rows reported with their
//! line numbers, good rows kept), call records written through the recorder,
//! calls left open closed as interrupted at the next start, the outbox
//! delivered to a webhook with retries, once per event, also when two
//! instances poll one outbox.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sav::store::import::import_customers;
use sav::store::outbox::{self, CrmConfig};
use sav::store::{Speaker, Store, TurnKind};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

/// Where a test's store is: a SQLite file in its work directory, or a
/// PostgreSQL database of its own.
#[derive(Clone)]
struct Db {
    url: String,
    dir: std::path::PathBuf,
}

impl Db {
    fn sqlite(name: &str) -> Db {
        Db {
            url: "sqlite://store.db".into(),
            dir: support::workdir(name),
        }
    }

    fn postgres(name: &str) -> Db {
        Db {
            url: support::postgres_db(&name.replace('-', "_")),
            dir: support::workdir(name),
        }
    }
}

async fn open(db: &Db, instance: &str) -> Store {
    Store::open(&db.url, &db.dir, instance)
        .await
        .unwrap_or_else(|e| panic!("open the store {}: {e}", db.url))
}

/// Each test on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite(concat!("store-sqlite-", stringify!($name)))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::postgres(concat!("store_pg_", stringify!($name)))).await;
                }
            )*
        }
    };
}

on_both_backends!(
    csv_import_keeps_good_rows_and_reports_bad_ones_by_line,
    a_call_record_holds_its_turns_and_queues_one_event,
    calls_left_open_are_closed_as_interrupted_by_their_instance_only,
    the_outbox_is_delivered_once_per_event_with_retries,
    two_instances_polling_one_outbox_deliver_each_event_once,
    two_processes_migrating_a_fresh_store_at_once_both_succeed,
    the_retention_purge_removes_what_is_past_and_nothing_else,
    the_console_s_list_filters_searches_and_pages_newest_first,
);

async fn the_console_s_list_filters_searches_and_pages_newest_first(dir: Db) {
    use sav::store::browse::CallQuery;
    let store = open(&dir, "a").await;
    import_customers(
        &store,
        "phone,first_name,last_name\n+33612345678,Jean,Dupont\n".as_bytes(),
        "33",
    )
    .await
    .unwrap();
    let jean = store.find_customer("+33612345678").await.unwrap().unwrap();
    // Five calls a minute apart: Jean's resolved, then others'.
    let mut ids = Vec::new();
    for (n, (number, outcome, customer)) in [
        ("+33612345678", "resolved", Some(jean.id)),
        ("+33700000001", "transferred", None),
        ("+33700000002", "resolved", None),
        ("+33700000003", "abandoned", None),
        ("+33612345678", "callback", Some(jean.id)),
    ]
    .into_iter()
    .enumerate()
    {
        let call = store.record_call(&format!("list{n}@host"), number, customer);
        call.answered();
        if outcome == "transferred" {
            call.transfer("sip:human@pbx");
        }
        ids.push(call.id().to_string());
        call.end(outcome);
    }
    store.flush().await;
    let t0 = 1_800_000_000_000_i64;
    for (n, id) in ids.iter().enumerate() {
        sqlx::query("UPDATE calls SET started_at = $1, ended_at = $2 WHERE id = $3")
            .bind(t0 + n as i64 * 60_000)
            .bind(t0 + n as i64 * 60_000 + 30_000)
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let list = |query: CallQuery| {
        let store = store.clone();
        async move {
            store
                .list_calls(&CallQuery {
                    limit: if query.limit == 0 { 50 } else { query.limit },
                    ..query
                })
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list(CallQuery::default()).await, newest_first);
    let all = store
        .list_calls(&CallQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all[0].customer.as_deref(), Some("Jean Dupont"));
    assert_eq!(all[0].duration_ms, Some(30_000));
    assert!(all[3].transferred && !all[0].transferred);
    // Search: the number's end, the name (any case), the SIP Call-ID.
    for (search, expected) in [
        ("5678", vec![&ids[4], &ids[0]]),
        ("dupont", vec![&ids[4], &ids[0]]),
        ("list2@", vec![&ids[2]]),
        ("nobody", vec![]),
        ("%", vec![&ids[4], &ids[3], &ids[2], &ids[1], &ids[0]]),
    ] {
        let found = list(CallQuery {
            search: Some(search.into()),
            ..Default::default()
        })
        .await;
        assert_eq!(
            found.iter().collect::<Vec<_>>(),
            expected,
            "search {search:?}"
        );
    }
    let resolved = list(CallQuery {
        outcome: Some("resolved".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(resolved, [ids[2].clone(), ids[0].clone()]);
    let transferred = list(CallQuery {
        transferred: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(transferred, [ids[1].clone()]);
    // A time range, and pages of two.
    let window = list(CallQuery {
        from_ms: Some(t0 + 60_000),
        to_ms: Some(t0 + 180_000),
        ..Default::default()
    })
    .await;
    assert_eq!(window, [ids[2].clone(), ids[1].clone()]);
    let page2 = list(CallQuery {
        limit: 2,
        offset: 2,
        ..Default::default()
    })
    .await;
    assert_eq!(page2, [ids[2].clone(), ids[1].clone()]);
    // Durations: the first call made longer.
    sqlx::query("UPDATE calls SET ended_at = started_at + 90000 WHERE id = $1")
        .bind(&ids[0])
        .execute(store.pool())
        .await
        .unwrap();
    let long = list(CallQuery {
        min_duration_ms: Some(60_000),
        ..Default::default()
    })
    .await;
    assert_eq!(long, [ids[0].clone()]);
    // Costs, from the timelines kept: at least 0.10.
    for (id, cost) in [(&ids[1], 0.25), (&ids[2], 0.05)] {
        sqlx::query("UPDATE calls SET timeline = $1 WHERE id = $2")
            .bind(format!(
                "{{\"call_id\":\"x\",\"cost\":{cost},\"events\":[]}}"
            ))
            .bind(id)
            .execute(store.pool())
            .await
            .unwrap();
    }
    let dear = list(CallQuery {
        min_cost: Some(0.10),
        ..Default::default()
    })
    .await;
    assert_eq!(dear, [ids[1].clone()]);
    let costs: Vec<Option<f64>> = store
        .list_calls(&CallQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|c| c.cost)
        .collect();
    assert_eq!(costs, [None, None, Some(0.05), Some(0.25), None]);
    // A day's calls for its figures: newest first, within the window.
    let day = store.day_calls(t0 + 60_000, t0 + 240_000).await.unwrap();
    let outcomes: Vec<_> = day.iter().map(|c| c.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("abandoned"), Some("resolved"), Some("transferred")]
    );
    assert!(day[2].transferred && !day[1].transferred && !day[0].transferred);
    let kept: Vec<bool> = day.iter().map(|c| c.timeline.is_some()).collect();
    assert_eq!(kept, [false, true, true]);
}

async fn csv_import_keeps_good_rows_and_reports_bad_ones_by_line(dir: Db) {
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

async fn a_call_record_holds_its_turns_and_queues_one_event(dir: Db) {
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
    call.note("asked for a human");
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
    assert_eq!(transcript.len(), 4);
    assert_eq!(transcript[2]["kind"], "dtmf");
    assert_eq!(transcript[3]["kind"], "note");
    assert_eq!(transcript[3]["text"], "asked for a human");
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

async fn calls_left_open_are_closed_as_interrupted_by_their_instance_only(dir: Db) {
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

const WEBHOOK_KEY: &str = "whsec_store_test";

/// The receiver's check: `t=<unix>,v1=<hex>` is HMAC-SHA256 of "t.body"
/// under the key, and t is within 5 minutes of now.
fn signed_now(header: &str, key: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expected = outbox::signature(key.as_bytes(), t, body.as_bytes());
    now.abs_diff(t) <= 300 && expected == format!("t={t},v1={v1}")
}

#[test]
fn a_signature_is_refused_when_altered_or_stale() {
    let body = r#"{"id":"e1"}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = outbox::signature(WEBHOOK_KEY.as_bytes(), now, body.as_bytes());
    assert!(signed_now(&good, WEBHOOK_KEY, body));
    assert!(
        !signed_now(&good, WEBHOOK_KEY, r#"{"id":"e2"}"#),
        "body altered"
    );
    assert!(!signed_now(&good, "another key", body));
    let old = outbox::signature(WEBHOOK_KEY.as_bytes(), now - 3600, body.as_bytes());
    assert!(
        !signed_now(&old, WEBHOOK_KEY, body),
        "replayed an hour later"
    );
    assert!(!signed_now("", WEBHOOK_KEY, body));
}

async fn the_outbox_is_delivered_once_per_event_with_retries(dir: Db) {
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
                    // A CRM that checks the signature as the README says.
                    let signed = headers
                        .get(outbox::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !signed_now(signed, WEBHOOK_KEY, &body) {
                        return axum::http::StatusCode::UNAUTHORIZED;
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
        signing_secret: Some(WEBHOOK_KEY.into()),
        ..CrmConfig::default()
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

/// A webhook on loopback that answers 200 to every event and keeps their
/// idempotency keys, in order of arrival.
async fn counting_webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    let key = headers["idempotency-key"].to_str().unwrap().to_string();
                    seen.lock().unwrap().push(key);
                    // A little time in the CRM, so that deliveries overlap.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/events"), seen)
}

async fn two_instances_polling_one_outbox_deliver_each_event_once(dir: Db) {
    const EVENTS: usize = 60;
    let a = open(&dir, "a").await;
    let b = open(&dir, "b").await;
    for n in 0..EVENTS {
        // Calls ended on both instances.
        let store = if n % 2 == 0 { &a } else { &b };
        let call = store.record_call(&format!("{n}@host"), "+33612345678", None);
        call.end("resolved");
    }
    a.flush().await;
    b.flush().await;
    assert_eq!(a.pending_events().await.unwrap(), EVENTS as i64);

    let (url, seen) = counting_webhook().await;
    sav::install_crypto_provider();
    let config = CrmConfig {
        webhook_url: Some(url),
        timeout_ms: 2000,
        retry_min_ms: 50,
        retry_max_ms: 200,
        ..CrmConfig::default()
    };
    let stop = CancellationToken::new();
    // Two workers per instance: four pollers on one outbox.
    let workers: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .map(|store| tokio::spawn(outbox::run(store.clone(), config.clone(), stop.clone())))
        .collect();
    for _ in 0..400 {
        if a.pending_events().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.pending_events().await.unwrap(), 0, "all delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), EVENTS, "one request per event, no more");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), EVENTS, "each event once");
    let delivered: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NOT NULL AND attempts = 1",
    )
    .fetch_one(a.pool())
    .await
    .unwrap()
    .try_get("n")
    .unwrap();
    assert_eq!(
        delivered, EVENTS as i64,
        "each delivered at its first attempt"
    );
}

async fn two_processes_migrating_a_fresh_store_at_once_both_succeed(dir: Db) {
    let (first, second) = tokio::join!(open(&dir, "a"), open(&dir, "b"));
    let versions: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(first.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("version").unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4], "each migration applied once");
    // Both work on the one schema.
    let call = second.record_call("x@host", "+33612345678", None);
    call.end("resolved");
    second.flush().await;
    assert_eq!(first.pending_events().await.unwrap(), 1);
}

async fn the_retention_purge_removes_what_is_past_and_nothing_else(dir: Db) {
    use sav::store::retention::RetentionConfig;
    const DAY: i64 = 24 * 3600 * 1000;
    let store = open(&dir, "a").await;
    let now = sav::store::now_ms();
    // Four calls: 40 days old, 10 days old, today (all ended), and one
    // 40 days old still open (an instance down since: never touched).
    let mut ids = Vec::new();
    for (n, ended) in [(0, true), (1, true), (2, true), (3, false)] {
        let mut call = store.record_call(&format!("{n}@host"), "+33612345678", None);
        call.answered();
        call.turn(Speaker::Bot, TurnKind::Cached, "greet");
        call.turn(Speaker::Caller, TurnKind::Dtmf, "1");
        ids.push(call.id().to_string());
        if ended {
            call.end("resolved");
        } else {
            std::mem::forget(call);
        }
    }
    store.flush().await;
    let pool = store.pool();
    for (id, age_days) in ids.iter().zip([40, 10, 0, 40]) {
        let started = now - age_days * DAY;
        sqlx::query("UPDATE calls SET started_at = $1, timeline = '{}' WHERE id = $2")
            .bind(started)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
        // Their CRM events, delivered when they ended.
        sqlx::query("UPDATE outbox SET created_at = $1, delivered_at = $1 WHERE call_id = $2")
            .bind(started)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    // An old event never delivered: still owed to the CRM, kept.
    sqlx::query(
        "INSERT INTO outbox (id, call_id, created_at, payload, next_attempt_at) \
         VALUES ('undelivered', $1, $2, '{}', $2)",
    )
    .bind(&ids[0])
    .bind(now - 40 * DAY)
    .execute(pool)
    .await
    .unwrap();
    // Recordings, a file that is not one, and an orphan recording (no record)
    // last written 40 days ago.
    let recordings = dir.dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    for id in &ids {
        std::fs::write(recordings.join(format!("{id}.wav")), b"RIFF").unwrap();
    }
    std::fs::write(recordings.join("notes.txt"), b"kept").unwrap();
    let orphan = recordings.join(format!("{}.wav", "ab".repeat(16)));
    let file = std::fs::File::create(&orphan).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(40 * 86_400))
        .unwrap();
    drop(file);
    let fresh_orphan = recordings.join(format!("{}.wav", "cd".repeat(16)));
    std::fs::write(&fresh_orphan, b"RIFF").unwrap();

    let retention = RetentionConfig {
        recordings_days: Some(30),
        transcripts_days: Some(30),
        timelines_days: Some(7),
    };
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get::<i64, _>("n")
            .unwrap()
    };
    // Dry: says what, removes nothing.
    let dry = store
        .purge(&retention, Some(&recordings), now, true)
        .await
        .unwrap();
    let mut expected_files = vec![recordings.join(format!("{}.wav", ids[0])), orphan.clone()];
    expected_files.sort();
    assert_eq!(dry.recordings, expected_files);
    assert_eq!((dry.turns, dry.events, dry.timelines), (2, 1, 2), "{dry}");
    assert!(orphan.exists());
    assert_eq!(count("SELECT COUNT(*) AS n FROM turns").await, 8);

    let purged = store
        .purge(&retention, Some(&recordings), now, false)
        .await
        .unwrap();
    assert_eq!(purged, dry, "the purge did what the dry run said");
    let left: Vec<String> = {
        let mut names: Vec<String> = std::fs::read_dir(&recordings)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    let mut expected_left: Vec<String> = ids[1..]
        .iter()
        .map(|id| format!("{id}.wav"))
        .chain([format!("{}.wav", "cd".repeat(16)), "notes.txt".to_string()])
        .collect();
    expected_left.sort();
    assert_eq!(
        left, expected_left,
        "only the ended 40-day-old call's and the old orphan"
    );
    // Transcripts: the 40-day-old ended call's turns only.
    for (id, turns) in ids.iter().zip([0, 2, 2, 2]) {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM turns WHERE call_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(n, turns, "turns of {id}");
    }
    // Timelines: past 7 days, ended: the first two.
    for (id, kept) in ids.iter().zip([false, false, true, true]) {
        let timeline: Option<String> = sqlx::query("SELECT timeline FROM calls WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
            .try_get("timeline")
            .unwrap();
        assert_eq!(timeline.is_some(), kept, "timeline of {id}");
    }
    // The records themselves stay; the undelivered event stays.
    assert_eq!(count("SELECT COUNT(*) AS n FROM calls").await, 4);
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM outbox WHERE id = 'undelivered'").await,
        1
    );
    // Again: nothing more.
    let again = store
        .purge(&retention, Some(&recordings), now, false)
        .await
        .unwrap();
    assert_eq!(again, sav::store::retention::Purged::default());
}
