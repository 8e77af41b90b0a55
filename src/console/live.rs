//! The live view: the calls in progress from the call board, as a page
//! that server-sent events keep current, as a JSON snapshot, and as the
//! event stream itself. A stream sends the board when it changed, at most
//! [`MAX_RATE`] times a second whatever the calls do, and a comment every
//! [`KEEP_ALIVE`] so proxies keep it open; at most [`MAX_STREAMS`] are open
//! at once (more get 503).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, PreEscaped};

use super::auth::Role;
use super::{error, layout, number, Api, Console, Page};
use crate::call::board::LiveCall;

/// Event streams open at once at most.
pub const MAX_STREAMS: usize = 64;
/// A stream's updates per second at most.
pub const MAX_RATE: u64 = 4;
/// A comment this often keeps an idle stream open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The open event streams.
#[derive(Default)]
pub struct Streams {
    open: Arc<AtomicUsize>,
}

/// A stream's place, given back when it closes.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Streams {
    fn take(&self) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| Slot(self.open.clone()))
    }
}

/// The board as `role` may see it.
fn shown(console: &Console, role: Role) -> Vec<LiveCall> {
    let mut calls = console.services.board.snapshot();
    for call in &mut calls {
        call.caller = number(role, &call.caller);
    }
    calls
}

pub(super) async fn snapshot(State(console): State<Arc<Console>>, Api(caller): Api) -> Response {
    Json(serde_json::json!({ "calls": shown(&console, caller.role) })).into_response()
}

pub(super) async fn events(State(console): State<Arc<Console>>, Api(caller): Api) -> Response {
    let Some(slot) = console.live.take() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} live streams are open already"),
        );
    };
    let changes = console.services.board.watch();
    let role = caller.role;
    let gap = Duration::from_millis(1000 / MAX_RATE);
    // The first event is the board as it is; then one per change, spaced.
    let stream = futures_util::stream::unfold(
        (console, changes, true, slot),
        move |(console, mut changes, first, slot)| async move {
            if !first {
                tokio::time::sleep(gap).await;
                changes.changed().await.ok()?;
            }
            changes.mark_unchanged();
            let calls = shown(&console, role);
            let event = Event::default()
                .event("calls")
                .json_data(&calls)
                .unwrap_or_else(|_| Event::default().comment("unencodable"));
            Some((Ok::<_, Infallible>(event), (console, changes, false, slot)))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

pub(super) async fn page(State(console): State<Arc<Console>>, Page(caller): Page) -> Response {
    let calls = shown(&console, caller.role);
    let body = html! {
        h1 { "En direct" }
        p #live-state role="status" aria-live="polite" { (calls.len()) " appel(s) en cours" }
        table #live {
            caption { "Appels en cours (mis à jour en direct)" }
            thead { tr { th { "Appelant" } th { "Client" } th { "Phase" } th { "Parole" } th { "Durée" } th { "Latence du tour" } } }
            tbody {
                @for call in &calls {
                    tr data-call=(call.call_id) {
                        td.caller { (call.caller) }
                        td { (call.customer.clone().unwrap_or_default()) }
                        td.phase { (call.phase) }
                        td.speaking { (speaking(call)) }
                        td.duration { (format!("{} s", call.duration_ms / 1000)) }
                        td.latency { (call.turn_latency_ms.map(|ms| format!("{ms} ms")).unwrap_or_default()) }
                    }
                }
            }
        }
        script { (PreEscaped(SCRIPT)) }
    };
    layout("En direct", Some(&caller), body).into_response()
}

fn speaking(call: &LiveCall) -> &'static str {
    match call.speaking {
        crate::call::board::Speaking::Nobody => "—",
        crate::call::board::Speaking::Caller => "appelant",
        crate::call::board::Speaking::Bot => "bot",
        crate::call::board::Speaking::Both => "les deux",
    }
}

/// Rebuilds the table from each event (text only, never HTML from the
/// data), and counts the durations on between events.
const SCRIPT: &str = r#"
(function () {
  var body = document.querySelector('#live tbody');
  var state = document.getElementById('live-state');
  var calls = [], at = Date.now();
  var who = {nobody: '—', caller: 'appelant', bot: 'bot', both: 'les deux'};
  function cell(tr, cls, text) { var td = document.createElement('td'); td.className = cls; td.textContent = text; tr.appendChild(td); }
  function draw() {
    var rows = [];
    calls.forEach(function (c) {
      var tr = document.createElement('tr');
      tr.dataset.call = c.call_id;
      cell(tr, 'caller', c.caller);
      cell(tr, '', c.customer || '');
      cell(tr, 'phase', c.phase);
      cell(tr, 'speaking', who[c.speaking] || c.speaking);
      cell(tr, 'duration', Math.floor((c.duration_ms + Date.now() - at) / 1000) + ' s');
      cell(tr, 'latency', c.turn_latency_ms == null ? '' : c.turn_latency_ms + ' ms');
      rows.push(tr);
    });
    body.replaceChildren.apply(body, rows);
  }
  var source = new EventSource('/api/live/events');
  source.addEventListener('calls', function (e) {
    calls = JSON.parse(e.data); at = Date.now();
    state.textContent = calls.length + ' appel(s) en cours';
    draw();
  });
  source.onerror = function () { state.textContent = 'Connexion perdue, nouvelle tentative…'; };
  setInterval(function () { if (calls.length) draw(); }, 1000);
})();
"#;
