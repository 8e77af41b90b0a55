//! The calls as the console lists them: filtered (day, outcome, problem,
//! transferred, duration, cost) and searched (number, name, record or SIP Call-ID),
//! newest first, a page at a time, on SQLite and PostgreSQL alike.

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Store, StoreError};

/// Rows a page holds at most.
pub const MAX_PAGE: i64 = 200;

/// Which calls.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    /// Started in `[from, to)`, ms since the epoch.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub outcome: Option<String>,
    pub problem: Option<String>,
    pub transferred: Option<bool>,
    /// Lasted at least this long (ended calls only), ms.
    pub min_duration_ms: Option<i64>,
    /// Cost at least this much (calls whose timeline is kept).
    pub min_cost: Option<f64>,
    /// Part of the caller's number, a customer's name, or a call's id.
    pub search: Option<String>,
    /// Rows (at most [`MAX_PAGE`]) and rows skipped.
    pub limit: i64,
    pub offset: i64,
}

/// One call of the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallItem {
    /// The record's id.
    pub id: String,
    pub sip_call_id: String,
    pub caller: String,
    /// The customer's name when the store knows the caller.
    pub customer: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub problem: Option<String>,
    pub transferred: bool,
    /// The call's estimated cost, while its timeline is kept.
    pub cost: Option<f64>,
}

/// One ended call of a day, for the day's figures.
#[derive(Debug, Clone)]
pub struct DayCall {
    pub started_at: i64,
    pub outcome: Option<String>,
    pub transferred: bool,
    /// The timeline's JSON, while retention keeps it.
    pub timeline: Option<String>,
}

/// Calls a day's figures read at most (the newest).
pub const MAX_DAY_CALLS: i64 = 5000;

impl Store {
    /// A page of the calls `query` asks for, newest first.
    pub async fn list_calls(&self, query: &CallQuery) -> Result<Vec<CallItem>, StoreError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        // Parameters are numbered in the order they are bound: the texts
        // first, then the numbers.
        let mut text = |clauses: &mut Vec<String>, template: &str, value: String| {
            texts.push(value);
            clauses.push(template.replace('?', &format!("${}", texts.len())));
        };
        if let Some(outcome) = &query.outcome {
            text(&mut clauses, "c.outcome = ?", outcome.clone());
        }
        if let Some(problem) = &query.problem {
            text(&mut clauses, "c.problem = ?", problem.clone());
        }
        if let Some(search) = query
            .search
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let pattern = format!(
                "%{}%",
                search
                    .to_lowercase()
                    .replace('\\', "")
                    .replace(['%', '_'], "")
            );
            text(
                &mut clauses,
                "(LOWER(c.caller) LIKE ? OR LOWER(COALESCE(u.last_name, '')) LIKE ? \
                 OR LOWER(COALESCE(u.first_name, '')) LIKE ? OR LOWER(c.id) LIKE ? \
                 OR LOWER(c.sip_call_id) LIKE ?)",
                pattern,
            );
        }
        match query.transferred {
            Some(true) => clauses.push("c.transfer_target IS NOT NULL".into()),
            Some(false) => clauses.push("c.transfer_target IS NULL".into()),
            None => {}
        }
        let texts_bound = texts.len();
        for (bound, column) in [(query.from_ms, ">="), (query.to_ms, "<")] {
            if let Some(ms) = bound {
                numbers.push(ms);
                clauses.push(format!(
                    "c.started_at {column} ${}",
                    texts_bound + numbers.len()
                ));
            }
        }
        if let Some(ms) = query.min_duration_ms {
            numbers.push(ms);
            clauses.push(format!(
                "(c.ended_at - c.started_at) >= ${}",
                texts_bound + numbers.len()
            ));
        }
        // The cost is in the timeline's JSON (a text column on both).
        let cost = match self.backend() {
            Backend::Sqlite => "CAST(json_extract(c.timeline, '$.cost') AS REAL)",
            Backend::Postgres => "CAST(CAST(c.timeline AS json)->>'cost' AS DOUBLE PRECISION)",
        };
        let mut floats: Vec<f64> = Vec::new();
        if let Some(min) = query.min_cost {
            floats.push(min);
            clauses.push(format!(
                "{cost} >= ${}",
                texts_bound + numbers.len() + floats.len()
            ));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let limit = query.limit.clamp(1, MAX_PAGE);
        let offset = query.offset.max(0);
        let sql = format!(
            "SELECT c.id, c.sip_call_id, c.caller, c.started_at, c.ended_at, c.outcome, \
             c.problem, c.transfer_target, u.first_name, u.last_name, {cost} AS cost \
             FROM calls c LEFT JOIN customers u ON u.id = c.customer_id {filter} \
             ORDER BY c.started_at DESC, c.id DESC LIMIT {limit} OFFSET {offset}"
        );
        // Built from fixed fragments; every value is bound.
        let mut statement = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in texts {
            statement = statement.bind(value);
        }
        for value in numbers {
            statement = statement.bind(value);
        }
        for value in floats {
            statement = statement.bind(value);
        }
        let rows = statement.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let started_at: i64 = row.try_get("started_at")?;
                let ended_at: Option<i64> = row.try_get("ended_at")?;
                let first: Option<String> = row.try_get("first_name")?;
                let last: Option<String> = row.try_get("last_name")?;
                Ok(CallItem {
                    id: row.try_get("id")?,
                    sip_call_id: row.try_get("sip_call_id")?,
                    caller: row.try_get("caller")?,
                    customer: match (first, last) {
                        (Some(first), Some(last)) => Some(format!("{first} {last}")),
                        _ => None,
                    },
                    started_at,
                    ended_at,
                    duration_ms: ended_at.map(|end| end - started_at),
                    outcome: row.try_get("outcome")?,
                    problem: row.try_get("problem")?,
                    transferred: row
                        .try_get::<Option<String>, _>("transfer_target")?
                        .is_some(),
                    cost: row.try_get("cost")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// Where a call's CRM event stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrmDelivery {
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

impl Store {
    /// The CRM event of call `id` (none when the call has not ended).
    pub async fn crm_delivery(&self, id: &str) -> Result<Option<CrmDelivery>, StoreError> {
        let row = sqlx::query(
            "SELECT attempts, delivered_at, last_error FROM outbox WHERE call_id = $1 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(CrmDelivery {
                attempts: row.try_get("attempts")?,
                delivered_at: row.try_get("delivered_at")?,
                last_error: row.try_get("last_error")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| StoreError::from(e))
    }
}

impl Store {
    /// Keeps that `user` did `action` on call `id` (the console's audit).
    pub async fn audit(&self, user: &str, action: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_audit (at, user_name, action, call_id) VALUES ($1, $2, $3, $4)",
        )
        .bind(super::now_ms())
        .bind(user)
        .bind(action)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The audit, newest first: (at, user, action, call).
    pub async fn audit_trail(
        &self,
        limit: i64,
    ) -> Result<Vec<(i64, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, user_name, action, call_id FROM console_audit ORDER BY at DESC LIMIT $1",
        )
        .bind(limit.clamp(1, MAX_PAGE))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    r.try_get("user_name")?,
                    r.try_get("action")?,
                    r.try_get("call_id")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

impl Store {
    /// The calls started in `[from_ms, to_ms)`, newest first, at most
    /// [`MAX_DAY_CALLS`].
    pub async fn day_calls(&self, from_ms: i64, to_ms: i64) -> Result<Vec<DayCall>, StoreError> {
        let rows = sqlx::query(
            "SELECT started_at, outcome, transfer_target, timeline FROM calls \
             WHERE started_at >= $1 AND started_at < $2 \
             ORDER BY started_at DESC LIMIT $3",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(MAX_DAY_CALLS)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DayCall {
                    started_at: row.try_get("started_at")?,
                    outcome: row.try_get("outcome")?,
                    transferred: row
                        .try_get::<Option<String>, _>("transfer_target")?
                        .is_some(),
                    timeline: row.try_get("timeline")?,
                })
            })
            .collect()
    }
}
