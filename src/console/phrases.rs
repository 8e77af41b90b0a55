//! The cached phrases: each key with its text, its length, whether its
//! audio is stale (what `sav cache check` says, checked on a blocking
//! thread and reused for [`MEMO`]: it reads and hashes every clip), and a
//! player for its audio. Only keys of the phrase table name a file:
//! nothing from the request reaches a path otherwise.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::{layout, Console, Page};

/// How long a check of the cache is reused.
pub const MEMO: Duration = Duration::from_secs(10);

/// The last check: when, of which table, what it found.
#[derive(Default)]
pub struct Memo {
    last: Mutex<Option<(Instant, Arc<Checked>)>>,
}

/// The phrases of a table, their problems and lengths.
pub struct Checked {
    config: crate::cache::config::CacheConfig,
    problems: Vec<(String, crate::cache::PhraseProblem)>,
    seconds: Vec<Option<f64>>,
}

async fn checked(console: &Console) -> Result<Arc<Checked>, Response> {
    let config = console.services.live().config.cache.clone();
    {
        let last = console
            .phrases
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((at, checked)) = last.as_ref() {
            if at.elapsed() < MEMO
                && checked.config.phrases == config.phrases
                && checked.config.dir == config.dir
            {
                return Ok(checked.clone());
            }
        }
    }
    let made = tokio::task::spawn_blocking(move || {
        let problems = crate::cache::check(&config);
        let seconds: Vec<Option<f64>> = config
            .phrases
            .keys()
            .map(|key| {
                crate::cache::read_phrase(&config.dir, key)
                    .ok()
                    .flatten()
                    .map(|audio| audio.seconds())
            })
            .collect();
        (config, problems, seconds)
    })
    .await;
    let Ok((config, problems, seconds)) = made else {
        return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
    };
    let problems = problems.map_err(|error| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the phrase cache cannot be read: {error}\n"),
        )
            .into_response()
    })?;
    let checked = Arc::new(Checked {
        config,
        problems,
        seconds,
    });
    *console
        .phrases
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), checked.clone()));
    Ok(checked)
}

pub(super) async fn page(State(console): State<Arc<Console>>, Page(caller): Page) -> Response {
    let checked = match checked(&console).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let Checked {
        config,
        problems,
        seconds,
    } = checked.as_ref();
    let stale = problems.len();
    let body = html! {
        h1 { "Phrases" }
        p { (config.phrases.len()) " phrases, voix " code { (config.voice) } ". "
            @if stale == 0 { "Toutes à jour." }
            @else { strong { (stale) " à refaire" } " (" code { "sav cache build" } ")." }
        }
        table #phrases {
            thead { tr { th { "Clé" } th { "Texte" } th { "Durée" } th { "État" } th { "Écouter" } } }
            tbody {
                @for ((key, text), seconds) in config.phrases.iter().zip(seconds) {
                    @let problem = problems.iter().find(|(k, _)| k == key).map(|(_, p)| p.to_string());
                    tr data-phrase=(key) data-stale=(problem.is_some()) {
                        td { code { (key) } }
                        td { (text) }
                        td { (seconds.map(|s| format!("{s:.1} s")).unwrap_or_default()) }
                        td.state { (problem.clone().unwrap_or_else(|| "à jour".into())) }
                        td {
                            @if seconds.is_some() {
                                audio controls preload="none" src=(format!("/phrases/{key}/audio")) aria-label=(format!("Écouter {key}")) {}
                            }
                        }
                    }
                }
            }
        }
    };
    layout("Phrases", Some(&caller), body).into_response()
}

/// A phrase's audio as WAV.
pub(super) async fn audio(
    State(console): State<Arc<Console>>,
    Page(_): Page,
    Path(key): Path<String>,
) -> Response {
    let config = console.services.live().config.cache.clone();
    if !config.phrases.contains_key(&key) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let read =
        tokio::task::spawn_blocking(move || crate::cache::read_phrase(&config.dir, &key)).await;
    match read {
        Ok(Ok(Some(audio))) => {
            ([(header::CONTENT_TYPE, "audio/wav")], audio.to_wav()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
