//! The console's pages: sign-in, the calls list, a call, its recording.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use tracing::{info, warn};

use super::api::Filters;
use super::auth::Role;
use super::{format_ms, layout, number, Console, Page, COOKIE};

pub(super) async fn login_page() -> Markup {
    sign_in_form(None)
}

fn sign_in_form(refused: Option<&str>) -> Markup {
    layout(
        "Connexion",
        None,
        html! {
            h1 { "Connexion" }
            @if let Some(why) = refused {
                p.error role="alert" { (why) }
            }
            form method="post" action="/login" {
                label { "Utilisateur" input name="user" autocomplete="username" required; }
                label { "Mot de passe" input name="password" type="password" autocomplete="current-password" required; }
                button type="submit" { "Se connecter" }
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    user: String,
    password: String,
}

pub(super) async fn login(
    State(console): State<Arc<Console>>,
    Form(form): Form<LoginForm>,
) -> Response {
    // argon2 takes tens of milliseconds of a core: off the runtime's
    // workers, and only a few at once (a burst of sign-ins must not take
    // the machine from the calls).
    let Ok(permit) = console.sign_ins.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_form(Some("Trop de connexions en même temps : réessayez.")),
        )
            .into_response();
    };
    let checked = tokio::task::spawn_blocking(move || {
        let id = console
            .access
            .login(&form.user, &form.password, Instant::now());
        drop(permit);
        (id, form.user)
    })
    .await;
    match checked {
        Ok((Ok(id), user)) => {
            info!(user, "console sign-in");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/live".to_string()),
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
            (
                StatusCode::UNAUTHORIZED,
                sign_in_form(Some("Utilisateur ou mot de passe incorrect.")),
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    csrf: String,
}

pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !caller.vouched(Some(&form.csrf)) {
        return (StatusCode::FORBIDDEN, "bad or missing CSRF token\n").into_response();
    }
    let Some((id, _)) = caller.session else {
        return Redirect::to("/login").into_response();
    };
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
pub(super) async fn calls_page(
    State(console): State<Arc<Console>>,
    Page(caller): Page,
    Query(filters): Query<Filters>,
) -> Response {
    let query = match filters.query() {
        Ok(query) => query,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let calls = match console.services.store.list_calls(&query).await {
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
            label { "Transféré"
                select name="transferred" {
                    option value="" selected[value(&filters.transferred).is_empty()] { "tous" }
                    option value="yes" selected[value(&filters.transferred) == "yes"] { "oui" }
                    option value="no" selected[value(&filters.transferred) == "no"] { "non" }
                }
            }
            label { "Durée min. (s)" input name="min_duration_s" type="number" min="0" value=(value(&filters.min_duration_s)); }
            label { "Coût min." input name="min_cost" type="number" min="0" step="0.001" value=(value(&filters.min_cost)); }
            button type="submit" { "Filtrer" }
        }
        table {
            caption { (calls.len()) " appels" }
            thead { tr { th { "Début" } th { "Appelant" } th { "Client" } th { "Issue" } th { "Problème" } th { "Durée" } th { "Transféré" } th { "Coût" } } }
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
                        td { (call.cost.map(|c| format!("{c:.3}")).unwrap_or_default()) }
                    }
                }
            }
        }
        nav aria-label="pages" {
            @if query.offset > 0 {
                a href=(filters.page_link((query.offset - query.limit).max(0))) { "← Plus récents" }
                " "
            }
            @if calls.len() as i64 == query.limit {
                a href=(filters.page_link(query.offset + query.limit)) { "Plus anciens →" }
            }
        }
    };
    layout("Appels", Some(&caller), body).into_response()
}

pub(super) async fn call_page(
    State(console): State<Arc<Console>>,
    Page(caller): Page,
    Path(id): Path<String>,
) -> Response {
    let store = &console.services.store;
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
    // The recording starts with the media, at the answer: the transcript's
    // times are counted from there, so that they are the audio's.
    let answered = call["answered_at"].as_i64().unwrap_or(started);
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
            audio #recording controls preload="metadata" src=(format!("/calls/{id}/recording")) aria-label="Enregistrement de l'appel" {}
            p.hint { "La transcription suit la lecture ; un clic (ou Entrée) sur une ligne y mène l'enregistrement." }
        }
        h2 { "Transcription" }
        table.transcript #transcript {
            thead { tr { th { "Entendu à" } th { "Qui" } th { "Quoi" } th { "Texte" } } }
            tbody {
                @for turn in turns {
                    @let offset = (turn["at"].as_i64().unwrap_or(answered) - answered).max(0) as f64 / 1000.0;
                    tr data-speaker=(turn["speaker"].as_str().unwrap_or_default()) data-offset=(format!("{offset:.2}")) {
                        td { (format!("{offset:.1} s")) }
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
            @let requests = crate::timeline::report::Layout::of(t).requests;
            @if !requests.is_empty() {
                table #requests {
                    caption { "Requêtes aux fournisseurs (temps depuis le début de l'appel)" }
                    thead { tr { th { "Fournisseur" } th { "Requête" } th { "À" } th { "Premier octet" } th { "Durée" } th { "Issue" } } }
                    tbody {
                        @for (provider, span, first, ok) in &requests {
                            tr data-provider=(provider.as_str()) {
                                td { (provider.as_str()) }
                                td { (span.label) }
                                td { (format!("{:.1} s", span.start_ms as f64 / 1000.0)) }
                                td { (first.map(|f| format!("{} ms", f.saturating_sub(span.start_ms))).unwrap_or_default()) }
                                td { (format!("{} ms", span.end_ms.saturating_sub(span.start_ms))) }
                                td { (if *ok { "ok" } else { "erreur" }) }
                            }
                        }
                    }
                }
            }
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
    let body = html! { (body) script { (PreEscaped(FOLLOW)) } };
    layout("Appel", Some(&caller), body).into_response()
}

/// A call's recording: supervisors only; each access audited first (no
/// audit, no audio).
pub(super) async fn recording(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(caller) = console.caller(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if caller.role != Role::Supervisor {
        return (StatusCode::FORBIDDEN, "recordings are for supervisors\n").into_response();
    }
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
    if let Err(error) = console
        .services
        .store
        .audit(&caller.name, "recording", &id)
        .await
    {
        warn!(%error, "console: recording access not audited; refused");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    info!(user = caller.name, call = id, "console: recording opened");
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The transcript follows the recording: the row being heard is marked
/// (and scrolled to); a row's click or Enter takes the audio there.
const FOLLOW: &str = r#"
(function () {
  var audio = document.getElementById('recording');
  var rows = Array.prototype.slice.call(document.querySelectorAll('#transcript tr[data-offset]'));
  if (!audio || !rows.length) return;
  var current = null;
  audio.addEventListener('timeupdate', function () {
    var t = audio.currentTime, at = null;
    rows.forEach(function (r) { if (parseFloat(r.dataset.offset) <= t) at = r; });
    if (at === current) return;
    if (current) { current.classList.remove('current'); current.removeAttribute('aria-current'); }
    current = at;
    if (at) { at.classList.add('current'); at.setAttribute('aria-current', 'true'); at.scrollIntoView({block: 'nearest'}); }
  });
  rows.forEach(function (r) {
    r.tabIndex = 0;
    var seek = function () { audio.currentTime = parseFloat(r.dataset.offset); audio.play(); };
    r.addEventListener('click', seek);
    r.addEventListener('keydown', function (e) { if (e.key === 'Enter') seek(); });
  });
})();
"#;
