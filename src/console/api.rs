//! The console's JSON API: the calls list and one call (the live view,
//! the day's figures and callbacks are in their own modules), and the
//! OpenAPI document that describes all of it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tracing::warn;

use super::auth::Role;
use super::{day_start_ms, error, number, Api, Console};
use crate::store::browse::{CallItem, CallQuery, MAX_PAGE};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    pub search: Option<String>,
    pub outcome: Option<String>,
    pub problem: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    pub day: Option<String>,
    pub transferred: Option<String>,
    /// At least this many seconds long.
    /// Numbers as text: a form sends its empty fields as empty strings.
    pub min_duration_s: Option<String>,
    /// At least this cost (the currency of `[costs]`).
    pub min_cost: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// A whole number of the query; an empty field is none.
fn whole(name: &str, value: &Option<String>) -> Result<Option<i64>, String> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} {text:?}: expected a whole number")),
    }
}

impl Filters {
    /// `/calls` with these filters at another offset.
    pub fn page_link(&self, offset: i64) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        let pairs = [
            ("search", self.search.clone()),
            ("outcome", self.outcome.clone()),
            ("problem", self.problem.clone()),
            ("day", self.day.clone()),
            ("transferred", self.transferred.clone()),
            ("min_duration_s", self.min_duration_s.clone()),
            ("min_cost", self.min_cost.clone()),
            ("limit", self.limit.clone()),
        ];
        for (key, value) in pairs {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                query.append_pair(key, &value);
            }
        }
        query.append_pair("offset", &offset.to_string());
        format!("/calls?{}", query.finish())
    }

    pub fn query(&self) -> Result<CallQuery, String> {
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
            min_duration_ms: whole("min_duration_s", &self.min_duration_s)?
                .filter(|s| *s > 0)
                .map(|s| s.saturating_mul(1000)),
            min_cost: match non_empty(&self.min_cost) {
                Some(text) => Some(
                    text.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|c| c.is_finite())
                        .ok_or(format!("min_cost {text:?}: expected a number"))?,
                ),
                None => None,
            },
            search: non_empty(&self.search),
            limit: whole("limit", &self.limit)?
                .unwrap_or(50)
                .clamp(1, MAX_PAGE),
            offset: whole("offset", &self.offset)?.unwrap_or(0).max(0),
        })
    }
}

/// Midnight UTC of `YYYY-MM-DD`, in ms since the epoch.
fn shown(role: Role, mut call: CallItem) -> CallItem {
    call.caller = number(role, &call.caller);
    call
}

pub(super) async fn calls(
    State(console): State<Arc<Console>>,
    Api(caller): Api,
    Query(filters): Query<Filters>,
) -> Response {
    let query = match filters.query() {
        Ok(query) => query,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    match console.services.store.list_calls(&query).await {
        Ok(calls) => Json(serde_json::json!({
            "calls": calls.into_iter().map(|c| shown(caller.role, c)).collect::<Vec<_>>(),
            "limit": query.limit,
            "offset": query.offset,
        }))
        .into_response(),
        Err(e) => {
            warn!(error = %e, "console: calls not listed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not answering",
            )
        }
    }
}

pub(super) async fn call(
    State(console): State<Arc<Console>>,
    Api(caller): Api,
    Path(id): Path<String>,
) -> Response {
    let store = &console.services.store;
    match tokio::try_join!(store.call_event(&id), store.call_timeline(&id)) {
        Ok((Some(mut call), timeline)) => {
            if let Some(number_field) = call.get_mut("caller") {
                if let Some(text) = number_field.as_str() {
                    *number_field = serde_json::Value::String(number(caller.role, text));
                }
            }
            // The timeline (what `sav report --json` gives), while kept.
            let timeline = timeline
                .map(|(_, t)| t)
                .filter(|t| !t.events.is_empty())
                .and_then(|t| serde_json::to_value(t).ok())
                .unwrap_or(serde_json::Value::Null);
            if let Some(fields) = call.as_object_mut() {
                fields.insert("timeline".into(), timeline);
            }
            Json(call).into_response()
        }
        Ok((None, _)) => error(StatusCode::NOT_FOUND, format!("no call {id}")),
        Err(e) => {
            warn!(error = %e, "console: call not read");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not answering",
            )
        }
    }
}
