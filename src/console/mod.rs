//! The after-sales team's console: server-rendered pages (maud, compiled
//! into the binary; no JavaScript build) and the JSON API they and a CRM
//! use, behind the same access ([`auth`]): a sign-in with an argon2
//! password and a session cookie, CSRF tokens on every form that changes
//! something, roles (`viewer`: callers' numbers masked; `supervisor`: in
//! full). Off the 20 ms path: its own listener and tasks, each request a
//! bounded query on the store (a page is at most [`MAX_PAGE`] calls).
//!
//! - `GET /login`, `POST /login`, `POST /logout`;
//! - `GET /calls`: the calls, newest first, with filters and search;
//! - `GET /api/calls`: the same as JSON (`?search=&outcome=&problem=&day=YYYY-MM-DD&limit=&offset=`);
//! - `GET /calls/{id}`: one call: what was said and pressed, turn by turn,
//!   the guide's steps and outcome, the timeline drawing (`sav report`'s),
//!   the API usage and cost, and the CRM event's delivery;
//! - `GET /calls/{id}/recording`: the call's stereo WAV (caller left, bot
//!   right), for supervisors only, each access kept in the audit table;
//! - `GET /api/calls/{id}`: one call with its transcript.

pub mod auth;
pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::browse::{CallItem, CallQuery, MAX_PAGE};
use crate::store::Store;
use auth::{Access, Role, Session};

/// The session cookie's name.
const COOKIE: &str = "sav_console";

/// What every request of the console sees.
pub struct Console {
    access: Access,
    store: Store,
    /// Where the calls' recordings are, when they are made.
    recordings: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen for the console on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] config::ConsoleConfigError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// Starts the console when `[console] listen` is set; it stops with `stop`.
pub async fn spawn(
    config: &config::ConsoleConfig,
    base: &std::path::Path,
    store: Store,
    recordings: Option<std::path::PathBuf>,
    stop: CancellationToken,
) -> Result<Option<SocketAddr>, ConsoleError> {
    let Some(listen) = config.listen else {
        return Ok(None);
    };
    let users = config.users(base)?;
    let access = Access::new(users, config.session_ttl())?;
    let console = Arc::new(Console {
        access,
        store,
        recordings,
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
        .route("/", get(|| async { Redirect::to("/calls") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/calls", get(calls_page))
        .route("/calls/{id}", get(call_page))
        .route("/calls/{id}/recording", get(recording))
        .route("/api/calls", get(calls_api))
        .route("/api/calls/{id}", get(call_api))
        .with_state(console)
}

/// Who asks: a session's user, or (no users configured: a console on
/// loopback only) an anonymous viewer.
struct Caller {
    role: Role,
    session: Option<(String, Session)>,
}

impl Console {
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        if !self.access.required() {
            return Some(Caller {
                role: Role::Viewer,
                session: None,
            });
        }
        let id = cookie(headers, COOKIE)?;
        let session = self.access.session(&id, Instant::now())?;
        Some(Caller {
            role: session.role,
            session: Some((id, session)),
        })
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

fn unauthorized_api() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Cookie realm=\"sav console\"")],
        Json(serde_json::json!({"error": "sign in first (POST /login)"})),
    )
        .into_response()
}

/// The caller's number as `role` may see it.
fn number(role: Role, number: &str) -> String {
    match role {
        Role::Supervisor => number.to_string(),
        Role::Viewer => {
            let chars: Vec<char> = number.chars().collect();
            let keep = chars.len().min(3);
            format!(
                "…{}",
                chars[chars.len() - keep..].iter().collect::<String>()
            )
        }
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
                header {
                    nav aria-label="console" {
                        a href="/calls" { "Appels" }
                    }
                    @if let Some(Caller { session: Some((_, session)), .. }) = caller {
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span { (session.user) " (" (session.role.as_str()) ") " }
                            button type="submit" { "Se déconnecter" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b}\
header{display:flex;justify-content:space-between;align-items:center;padding:.5rem 1rem;background:#263238;color:#fff}\
header a{color:#fff}main{padding:1rem;max-width:72rem}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}\
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}label{display:flex;flex-direction:column;font-size:.9rem}\
@media(max-width:40rem){td:nth-child(n+5),th:nth-child(n+5){display:none}}";

async fn login_page() -> Markup {
    layout(
        "Connexion",
        None,
        html! {
            h1 { "Connexion" }
            form method="post" action="/login" {
                label { "Utilisateur" input name="user" autocomplete="username" required; }
                label { "Mot de passe" input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Se connecter" }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    // argon2 takes tens of milliseconds: off the runtime's workers.
    let checked = tokio::task::spawn_blocking(move || {
        let id = console
            .access
            .login(&form.user, &form.password, Instant::now());
        (id, form.user)
    })
    .await;
    match checked {
        Ok((Ok(id), user)) => {
            info!(user, "console sign-in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/calls".to_string()),
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/"),
                    ),
                ],
            )
                .into_response()
        }
        Ok((Err(_), user)) => {
            warn!(user, "console sign-in refused");
            (StatusCode::UNAUTHORIZED, login_page().await).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(Caller {
        session: Some((id, session)),
        ..
    }) = console.caller(&headers)
    else {
        return Redirect::to("/login").into_response();
    };
    if !auth::same(&form.csrf, &session.csrf) {
        return (StatusCode::FORBIDDEN, "bad or missing CSRF token\n").into_response();
    }
    console.access.logout(&id);
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

/// The list's filters, as the page's form and the API take them.
#[derive(Debug, Default, Deserialize)]
struct Filters {
    search: Option<String>,
    outcome: Option<String>,
    problem: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    day: Option<String>,
    transferred: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl Filters {
    fn query(&self) -> Result<CallQuery, String> {
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let (from_ms, to_ms) = match non_empty(&self.day) {
            Some(day) => {
                let start =
                    day_start_ms(&day).ok_or(format!("day {day:?}: expected YYYY-MM-DD"))?;
                (Some(start), Some(start + 86_400_000))
            }
            None => (None, None),
        };
        Ok(CallQuery {
            from_ms,
            to_ms,
            outcome: non_empty(&self.outcome),
            problem: non_empty(&self.problem),
            transferred: match non_empty(&self.transferred).as_deref() {
                Some("yes" | "true") => Some(true),
                Some("no" | "false") => Some(false),
                _ => None,
            },
            search: non_empty(&self.search),
            limit: self.limit.unwrap_or(50).clamp(1, MAX_PAGE),
            offset: self.offset.unwrap_or(0).max(0),
        })
    }
}

/// Midnight UTC of `YYYY-MM-DD`, in ms since the epoch.
fn day_start_ms(day: &str) -> Option<i64> {
    let mut parts = day.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

fn shown(role: Role, mut call: CallItem) -> CallItem {
    call.caller = number(role, &call.caller);
    call
}

async fn calls_api(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return unauthorized_api();
    };
    let query = match filters.query() {
        Ok(query) => query,
        Err(reason) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": reason})),
            )
                .into_response()
        }
    };
    match console.store.list_calls(&query).await {
        Ok(calls) => Json(serde_json::json!({
            "calls": calls.into_iter().map(|c| shown(caller.role, c)).collect::<Vec<_>>(),
            "limit": query.limit,
            "offset": query.offset,
        }))
        .into_response(),
        Err(error) => {
            warn!(%error, "console: calls not listed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn call_api(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return unauthorized_api();
    };
    match console.store.call_event(&id).await {
        Ok(Some(mut call)) => {
            if let Some(number_field) = call.get_mut("caller") {
                if let Some(text) = number_field.as_str() {
                    *number_field = serde_json::Value::String(number(caller.role, text));
                }
            }
            Json(call).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            warn!(%error, "console: call not read");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn calls_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let query = match filters.query() {
        Ok(query) => query,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let calls = match console.store.list_calls(&query).await {
        Ok(calls) => calls,
        Err(error) => {
            warn!(%error, "console: calls not listed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        h1 { "Appels" }
        form.filters method="get" action="/calls" role="search" {
            label { "Recherche (numéro, nom, appel)" input name="search" type="search" value=(value(&filters.search)); }
            label { "Jour" input name="day" type="date" value=(value(&filters.day)); }
            label { "Issue" input name="outcome" value=(value(&filters.outcome)); }
            label { "Problème" input name="problem" value=(value(&filters.problem)); }
            button type="submit" { "Filtrer" }
        }
        table {
            caption { (calls.len()) " appels" }
            thead { tr { th { "Début" } th { "Appelant" } th { "Client" } th { "Issue" } th { "Problème" } th { "Durée" } th { "Transféré" } } }
            tbody {
                @for call in &calls {
                    tr data-call=(call.id) {
                        td { a href=(format!("/calls/{}", call.id)) { (format_ms(call.started_at)) } }
                        td.caller { (number(caller.role, &call.caller)) }
                        td { (call.customer.clone().unwrap_or_default()) }
                        td { (call.outcome.clone().unwrap_or_default()) }
                        td { (call.problem.clone().unwrap_or_default()) }
                        td { (call.duration_ms.map(|d| format!("{:.0} s", d as f64 / 1000.0)).unwrap_or_default()) }
                        td { (if call.transferred { "oui" } else { "" }) }
                    }
                }
            }
        }
        @if query.offset > 0 {
            a href=(format!("/calls?offset={}", (query.offset - query.limit).max(0))) { "← Plus récents" }
            " "
        }
        @if calls.len() as i64 == query.limit {
            a href=(format!("/calls?offset={}", query.offset + query.limit)) { "Plus anciens →" }
        }
    };
    layout("Appels", Some(&caller), body).into_response()
}

async fn call_page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return Redirect::to("/login").into_response();
    };
    let store = &console.store;
    let (call, timeline, crm) = match tokio::try_join!(
        store.call_event(&id),
        store.call_timeline(&id),
        store.crm_delivery(&id)
    ) {
        Ok((Some(call), timeline, crm)) => (call, timeline.map(|(_, t)| t), crm),
        Ok((None, ..)) => return StatusCode::NOT_FOUND.into_response(),
        Err(error) => {
            warn!(%error, "console: call not read");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let text = |key: &str| call[key].as_str().unwrap_or_default().to_string();
    let started = call["started_at"].as_i64().unwrap_or_default();
    let customer = match &call["customer"] {
        serde_json::Value::Null => String::new(),
        c => format!(
            "{} {} {}",
            c["title"].as_str().unwrap_or_default(),
            c["first_name"].as_str().unwrap_or_default(),
            c["last_name"].as_str().unwrap_or_default()
        )
        .trim()
        .to_string(),
    };
    let steps: Vec<String> = call["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let empty = Vec::new();
    let turns = call["transcript"].as_array().unwrap_or(&empty);
    let drawing = timeline
        .as_ref()
        .filter(|t| !t.events.is_empty())
        .map(crate::timeline::report::svg);
    let body = html! {
        h1 { "Appel " (number(caller.role, &text("caller"))) }
        dl {
            dt { "Début" } dd { (format_ms(started)) }
            dt { "Client" } dd { (customer) }
            dt { "Issue" } dd.outcome { (text("outcome")) }
            dt { "Problème" } dd { (text("problem")) }
            dt { "Étapes" } dd { (steps.join(", ")) }
            @if !text("transfer_target").is_empty() {
                dt { "Transféré à" } dd { (text("transfer_target")) }
            }
            dt { "Appel SIP" } dd { code { (text("sip_call_id")) } }
        }
        @if caller.role == Role::Supervisor && console.recordings.is_some() {
            h2 { "Enregistrement" }
            audio controls preload="none" src=(format!("/calls/{id}/recording")) aria-label="Enregistrement de l'appel" {}
        }
        h2 { "Transcription" }
        table.transcript {
            thead { tr { th { "Entendu à" } th { "Qui" } th { "Quoi" } th { "Texte" } } }
            tbody {
                @for turn in turns {
                    tr data-speaker=(turn["speaker"].as_str().unwrap_or_default()) {
                        td { (format!("{:.1} s", (turn["at"].as_i64().unwrap_or(started) - started) as f64 / 1000.0)) }
                        td { (turn["speaker"].as_str().unwrap_or_default()) }
                        td { (turn["kind"].as_str().unwrap_or_default()) }
                        td { (turn["text"].as_str().unwrap_or_default()) }
                    }
                }
            }
        }
        @if let Some(svg) = &drawing {
            h2 { "Chronologie" }
            figure.timeline { (maud::PreEscaped(svg)) }
        }
        @if let Some(t) = &timeline {
            h2 { "Fournisseurs" }
            p { "Coût estimé : " (format!("{:.4} {}", t.cost, t.currency))
                " — LLM " (t.usage.llm_prompt_tokens) " + " (t.usage.llm_completion_tokens) " jetons, TTS "
                (t.usage.tts_characters) " caractères, STT " (format!("{:.1}", t.usage.stt_seconds)) " s" }
        }
        h2 { "CRM" }
        p.crm {
            @match &crm {
                Some(d) if d.delivered_at.is_some() => { "Livré (" (d.attempts) " tentative(s)) le " (format_ms(d.delivered_at.unwrap_or_default())) }
                Some(d) => { "En attente (" (d.attempts) " tentative(s))" @if let Some(e) = &d.last_error { " : " (e) } }
                None => { "Pas d'événement (appel en cours)" }
            }
        }
    };
    layout("Appel", Some(&caller), body).into_response()
}

/// A call's recording: supervisors only; each access audited first (no
/// audit, no audio).
async fn recording(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let (Role::Supervisor, Some((_, session))) = (caller.role, &caller.session) else {
        return (StatusCode::FORBIDDEN, "recordings are for supervisors\n").into_response();
    };
    // Record ids are hex: nothing else names a file.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(dir) = console.recordings.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = dir.join(format!("{id}.wav"));
    if !path.is_file() {
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Err(error) = console.store.audit(&session.user, "recording", &id).await {
        warn!(%error, "console: recording access not audited; refused");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    info!(user = session.user, call = id, "console: recording opened");
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `YYYY-MM-DD HH:MM:SS` UTC of ms since the epoch.
fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
        for bad in ["2026-13-01", "2026-12", "x-1-1", "2026-12-02-1"] {
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
