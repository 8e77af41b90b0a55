//! Callbacks: `POST /api/calls` places an outbound call through the same
//! code as `sav call` ([`crate::call::outbound::place_call`]: its own SIP
//! endpoint, the `[sip]` account's credentials, the `[media]` codecs) and
//! says a cached phrase to whoever answers. Supervisors only; a session
//! must send its CSRF token in `X-CSRF-Token`. At most [`MAX_AT_ONCE`] are
//! under way (more get 429); the last [`KEPT`] are kept for
//! `GET /api/callbacks/{id}`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::auth::Role;
use super::{error, Api, Console, CSRF_HEADER};
use crate::call::outbound::{place_call, CallRequest};

/// Callbacks under way at once at most.
pub const MAX_AT_ONCE: usize = 4;
/// Callbacks remembered (the newest).
pub const KEPT: usize = 100;

/// What a callback says when no phrase is named.
pub const DEFAULT_PHRASE: &str = "callback";

#[derive(Debug, Deserialize)]
pub(super) struct PlaceRequest {
    /// A SIP URI (`sip:0612345678@pbx.example`).
    target: String,
    /// The cached phrase said to the callee (default [`DEFAULT_PHRASE`]).
    phrase: Option<String>,
}

/// A callback and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Callback {
    pub id: u64,
    pub target: String,
    pub phrase: String,
    /// Who asked for it.
    pub by: String,
    /// `dialing`, `ended` or `failed`.
    pub state: &'static str,
    /// The SIP Call-ID, once answered.
    pub call_id: Option<String>,
    /// The final SIP status of the INVITE.
    pub status: Option<u16>,
    pub duration_s: Option<f64>,
    pub error: Option<String>,
}

pub struct Callbacks {
    /// One permit per callback under way.
    under_way: Arc<tokio::sync::Semaphore>,
    next: AtomicU64,
    kept: Mutex<VecDeque<Callback>>,
}

impl Default for Callbacks {
    fn default() -> Self {
        Self {
            under_way: Arc::new(tokio::sync::Semaphore::new(MAX_AT_ONCE)),
            next: AtomicU64::default(),
            kept: Mutex::default(),
        }
    }
}

impl Callbacks {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Callback>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Callback)) {
        if let Some(callback) = self.lock().iter_mut().find(|c| c.id == id) {
            change(callback);
        }
    }
}

/// Down to [`KEPT`]: the oldest that has ended makes room (one still
/// dialing stays where its task and `GET /api/callbacks/{id}` find it; at
/// most [`MAX_AT_ONCE`] are).
fn make_room(kept: &mut VecDeque<Callback>) {
    while kept.len() > KEPT {
        match kept.iter().position(|c| c.state != "dialing") {
            Some(oldest) => kept.remove(oldest),
            None => break,
        };
    }
}

pub(super) async fn place(
    State(console): State<Arc<Console>>,
    Api(caller): Api,
    headers: HeaderMap,
    Json(request): Json<PlaceRequest>,
) -> Response {
    if caller.role != Role::Supervisor {
        return error(StatusCode::FORBIDDEN, "callbacks are for supervisors");
    }
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !caller.vouched(token) {
        return error(StatusCode::FORBIDDEN, "bad or missing X-CSRF-Token");
    }
    let target = request.target.trim().to_string();
    let is_sip = target.starts_with("sip:") || target.starts_with("sips:");
    if !is_sip || target.len() > 256 || target.chars().any(char::is_whitespace) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("target {target:?}: expected a SIP URI (sip:user@host)"),
        );
    }
    let live = console.services.live();
    let phrase = request.phrase.unwrap_or_else(|| DEFAULT_PHRASE.into());
    if !live.config.cache.phrases.contains_key(&phrase) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("phrase {phrase:?} is not in [cache.phrases]"),
        );
    }
    let wav = crate::cache::clip_path(&live.config.cache.dir, &phrase);
    let codecs = match console.services.config.media.codec_choice() {
        Ok(codecs) => codecs,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let callbacks = &console.callbacks;
    // Held by the callback's task until it ends.
    let Ok(permit) = callbacks.under_way.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_AT_ONCE} callbacks are under way already"),
        );
    };
    let callback = {
        let mut kept = callbacks.lock();
        let callback = Callback {
            id: callbacks.next.fetch_add(1, Ordering::Relaxed) + 1,
            target: target.clone(),
            phrase: phrase.clone(),
            by: caller.name.clone(),
            state: "dialing",
            call_id: None,
            status: None,
            duration_s: None,
            error: None,
        };
        kept.push_back(callback.clone());
        make_room(&mut kept);
        callback
    };
    info!(by = caller.name, id = callback.id, %phrase, "console: callback placed");
    let id = callback.id;
    let console_for_task = console.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let request = CallRequest {
            target,
            play: Some(wav),
            record: None,
            duration: None,
            turns: Vec::new(),
            codecs,
        };
        let placed = place_call(&console_for_task.services.config.sip, request).await;
        console_for_task.callbacks.update(id, |c| match placed {
            Ok(summary) => {
                c.state = "ended";
                c.call_id = Some(summary.call_id);
                c.status = Some(summary.status);
                c.duration_s = Some(summary.duration.as_secs_f64());
            }
            Err(e) => {
                warn!(error = %e, id, "console: callback failed");
                c.state = "failed";
                c.error = Some(e.to_string());
            }
        });
    });
    (StatusCode::ACCEPTED, Json(callback)).into_response()
}

pub(super) async fn state(
    State(console): State<Arc<Console>>,
    Api(_): Api,
    Path(id): Path<u64>,
) -> Response {
    match console.callbacks.lock().iter().find(|c| c.id == id) {
        Some(callback) => Json(callback.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no callback {id}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(id: u64, state: &'static str) -> Callback {
        Callback {
            id,
            target: "sip:x@example.com".into(),
            phrase: DEFAULT_PHRASE.into(),
            by: "ana".into(),
            state,
            call_id: None,
            status: None,
            duration_s: None,
            error: None,
        }
    }

    #[test]
    fn a_callback_still_dialing_is_kept_when_room_is_made() {
        let mut kept: VecDeque<Callback> = (1..=KEPT as u64 + 1)
            .map(|id| callback(id, if id == 1 { "dialing" } else { "ended" }))
            .collect();
        make_room(&mut kept);
        let ids: Vec<u64> = kept.iter().map(|c| c.id).take(3).collect();
        assert_eq!(kept.len(), KEPT);
        // The oldest is still dialing: the next oldest, ended, went.
        assert_eq!(ids, [1, 3, 4]);
    }
}
