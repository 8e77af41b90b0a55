//! The after-sales team's console: server-rendered pages (maud, compiled
//! into the binary; a few lines of plain JavaScript, no build step) and the
//! JSON API they and a CRM use, behind the same access ([`auth`]): a
//! sign-in with an argon2 password and a session cookie, or a bearer token
//! for scripts; CSRF tokens on every action a session takes; roles
//! (`viewer`: callers' numbers masked; `supervisor`: in full, recordings,
//! callbacks). Off the 20 ms path: its own listener and tasks, each request
//! a bounded query on the store (a page is at most [`MAX_PAGE`] calls, a
//! day's figures read at most [`MAX_DAY_CALLS`] calls), the live view a
//! snapshot of the call board per change.
//!
//! Pages ([`pages`], [`live`], [`today`], [`phrases`]):
//! - `GET /login`, `POST /login`, `POST /logout`;
//! - `GET /live`: the calls in progress, kept current by server-sent events;
//! - `GET /calls`: the calls, newest first, with filters and search;
//! - `GET /calls/{id}`: one call: what was said and pressed, turn by turn,
//!   the guide's steps and outcome, the timeline drawing (`sav report`'s),
//!   the recording with the transcript following it, the API usage and
//!   cost, and the CRM event's delivery;
//! - `GET /calls/{id}/recording`: the call's stereo WAV (caller left, bot
//!   right), for supervisors only, each access kept in the audit table;
//! - `GET /today`: the day's figures, with a chart per hour;
//! - `GET /phrases`: the cached phrases, their text, their audio, which are
//!   stale.
//!
//! The JSON API ([`api`], described by `GET /api/openapi.json`):
//! `GET /api/calls`, `GET /api/calls/{id}`, `GET /api/live`,
//! `GET /api/live/events` (SSE), `GET /api/today`, `POST /api/calls` (a
//! callback, [`callback`]) and `GET /api/callbacks/{id}`.

pub mod api;
pub mod auth;
pub mod callback;
pub mod live;
mod pages;
pub mod phrases;
pub mod today;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::{html, Markup, DOCTYPE};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::call::Services;
pub use crate::store::browse::{MAX_DAY_CALLS, MAX_PAGE};
use auth::{Access, Role, Session};

/// The session cookie's name.
const COOKIE: &str = "sav_console";

/// The header a session's scripted action (the pages' `fetch`) carries its
/// CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What every request of the console sees.
pub struct Console {
    access: Access,
    services: Arc<Services>,
    /// Where the calls' recordings are, when they are made.
    recordings: Option<std::path::PathBuf>,
    callbacks: callback::Callbacks,
    today: today::Memo,
    phrases: phrases::Memo,
    live: live::Streams,
    /// Sign-ins checked at once at most (argon2 is costly by design).
    sign_ins: Arc<tokio::sync::Semaphore>,
}

/// Passwords checked at once at most; more sign-ins meanwhile get 429.
pub const MAX_SIGN_INS_AT_ONCE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen for the console on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::console::ConsoleConfigError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Starts the console when `[console] listen` is set; it stops with `stop`.
pub async fn spawn(
    config: &crate::config::console::ConsoleConfig,
    base: &std::path::Path,
    services: Arc<Services>,
    stop: CancellationToken,
) -> Result<Option<SocketAddr>, ConsoleError> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    let users = config.users(base)?;
    let tokens = config.tokens(base)?;
    let access = Access::new(users, tokens, config.session_ttl())?;
    let console = Arc::new(Console {
        access,
        recordings: services.config.recordings_dir(),
        services,
        callbacks: callback::Callbacks::default(),
        today: today::Memo::default(),
        phrases: phrases::Memo::default(),
        live: live::Streams::default(),
        sign_ins: Arc::new(tokio::sync::Semaphore::new(MAX_SIGN_INS_AT_ONCE)),
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ConsoleError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    info!(%addr, "console on http://{addr}/");
    tokio::spawn(async move {
        let served = axum::serve(listener, router(console))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            warn!(%error, "console stopped");
        }
    });
    Ok(Some(addr))
}

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/live") }))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/live", get(live::page))
        .route("/calls", get(pages::calls_page))
        .route("/calls/{id}", get(pages::call_page))
        .route("/calls/{id}/recording", get(pages::recording))
        .route("/today", get(today::page))
        .route("/phrases", get(phrases::page))
        .route("/phrases/{key}/audio", get(phrases::audio))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/calls", get(api::calls).post(callback::place))
        .route("/api/calls/{id}", get(api::call))
        .route("/api/callbacks/{id}", get(callback::state))
        .route("/api/live", get(live::snapshot))
        .route("/api/live/events", get(live::events))
        .route("/api/today", get(today::api))
        .with_state(console)
}

/// Who asks: a session's user, a script's token, or (nothing configured:
/// a console on loopback only) an anonymous viewer.
pub struct Caller {
    role: Role,
    /// The user's or the token's name; empty when anonymous.
    name: String,
    session: Option<(String, Session)>,
}

impl Caller {
    /// Whether an action carries the proof that it comes from our page: a
    /// session's CSRF token in the form or the header. Tokens and the
    /// anonymous console have no cookie to ride on, so no cross-site
    /// request can act as them.
    fn vouched(&self, token: Option<&str>) -> bool {
        match &self.session {
            Some((_, session)) => token.is_some_and(|t| auth::same(t, &session.csrf)),
            None => true,
        }
    }
}

impl Console {
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if !self.access.required() {
            return Some(Caller {
                role: Role::Viewer,
                name: String::new(),
                session: None,
            });
        }
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            let (name, role) = self.access.bearer(token.trim())?;
            return Some(Caller {
                role,
                name: name.to_string(),
                session: None,
            });
        }
        let id = cookie(headers, COOKIE)?;
        let session = self.access.session(&id, Instant::now())?;
        Some(Caller {
            role: session.role,
            name: session.user.clone(),
            session: Some((id, session)),
        })
    }
}

/// A page's caller: without access, to the sign-in page.
pub struct Page(pub Caller);

/// An API request's caller: without access, 401.
pub struct Api(pub Caller);

impl FromRequestParts<Arc<Console>> for Page {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console
            .caller(&parts.headers)
            .map(Page)
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

impl FromRequestParts<Arc<Console>> for Api {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console
            .caller(&parts.headers)
            .map(Api)
            .ok_or_else(unauthorized)
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"sav console\", Cookie realm=\"sav console\"",
        )],
        Json(serde_json::json!({"error": "sign in first (POST /login) or send a bearer token"})),
    )
        .into_response()
}

/// A JSON error.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

/// The caller's number as `role` may see it.
fn number(role: Role, number: &str) -> String {
    match role {
        Role::Supervisor => number.to_string(),
        Role::Viewer => crate::redact::tail(number, 3),
    }
}

fn layout(title: &str, caller: Option<&Caller>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="fr" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — sav" }
                style { (STYLE) }
            }
            body {
                a.skip href="#main" { "Aller au contenu" }
                header {
                    nav aria-label="console" {
                        a href="/live" { "En direct" }
                        a href="/calls" { "Appels" }
                        a href="/today" { "Aujourd'hui" }
                        a href="/phrases" { "Phrases" }
                    }
                    @if let Some(Caller { session: Some((_, session)), .. }) = caller {
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span { (session.user) " (" (session.role.as_str()) ") " }
                            button type="submit" { "Se déconnecter" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b}\
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;top:.5rem;background:#fff;padding:.3rem}\
header{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;padding:.5rem 1rem;background:#263238;color:#fff}\
header nav a{color:#fff;margin-right:1rem}main{padding:1rem;max-width:72rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}\
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}label{display:flex;flex-direction:column;font-size:.9rem}\
tr.current{background:#fff59d}.figures{display:flex;flex-wrap:wrap;gap:1rem}.figures div{border:1px solid #ccc;padding:.5rem 1rem;border-radius:.3rem}\
.figures strong{display:block;font-size:1.4rem}.error{color:#b71c1c;font-weight:bold}figure.timeline{overflow-x:auto;margin:0}figure.chart{margin:0}figure.chart svg{max-height:10rem}figure.timeline svg{min-width:48rem}\
a:focus,button:focus,input:focus{outline:3px solid #ffb300}\
@media(max-width:40rem){td:nth-child(n+5),th:nth-child(n+5){display:none}}";

/// `YYYY-MM-DD HH:MM:SS` UTC of ms since the epoch.
fn format_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => String::new(),
    }
}

/// Midnight UTC of `YYYY-MM-DD`, in ms since the epoch.
fn day_start_ms(day: &str) -> Option<i64> {
    let date = chrono::NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Today (UTC), `YYYY-MM-DD`.
fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_round_trip_in_utc() {
        let start = day_start_ms("2026-12-02").unwrap();
        assert_eq!(format_ms(start), "2026-12-02 00:00:00");
        assert_eq!(format_ms(start + 86_399_000), "2026-12-02 23:59:59");
        assert_eq!(
            day_start_ms("2024-02-29").map(format_ms).as_deref(),
            Some("2024-02-29 00:00:00")
        );
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        for bad in [
            "2026-13-01",
            "2026-12",
            "x-1-1",
            "2026-12-02-1",
            "2025-02-29",
        ] {
            assert_eq!(day_start_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_viewer_sees_the_last_three_digits() {
        assert_eq!(number(Role::Viewer, "+33612345678"), "…678");
        assert_eq!(number(Role::Supervisor, "+33612345678"), "+33612345678");
        assert_eq!(number(Role::Viewer, "12"), "…12");
    }
}
