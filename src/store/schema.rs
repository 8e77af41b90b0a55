//! Schema migrations, applied at start in order, each in its own transaction
//! with its version recorded in `schema_migrations`. A migration is never
//! edited once released: changes are new migrations.

use sqlx::{AnyPool, Row};
use tracing::info;

use super::{now_ms, Backend, StoreError};

/// SQLite's migrations: version, statements.
const SQLITE: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            phone TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL DEFAULT '',
            first_name TEXT NOT NULL,
            last_name TEXT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
            "CREATE TABLE tickets (
            id INTEGER PRIMARY KEY,
            customer_id BIGINT NOT NULL REFERENCES customers(id),
            product TEXT NOT NULL,
            problem TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open',
            opened_at BIGINT NOT NULL,
            UNIQUE (customer_id, product, problem)
        )",
            "CREATE TABLE calls (
            id TEXT PRIMARY KEY,
            sip_call_id TEXT NOT NULL,
            instance TEXT NOT NULL,
            caller TEXT NOT NULL,
            customer_id BIGINT REFERENCES customers(id),
            started_at BIGINT NOT NULL,
            answered_at BIGINT,
            ended_at BIGINT,
            outcome TEXT,
            problem TEXT,
            steps TEXT NOT NULL DEFAULT '[]',
            transfer_target TEXT
        )",
            "CREATE INDEX calls_open ON calls (instance, ended_at)",
            "CREATE INDEX calls_sip_call_id ON calls (sip_call_id)",
            "CREATE TABLE turns (
            call_id TEXT NOT NULL REFERENCES calls(id),
            seq BIGINT NOT NULL,
            at BIGINT NOT NULL,
            speaker TEXT NOT NULL,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            PRIMARY KEY (call_id, seq)
        )",
            "CREATE TABLE outbox (
            id TEXT PRIMARY KEY,
            call_id TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            payload TEXT NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            next_attempt_at BIGINT NOT NULL,
            claimed_until BIGINT,
            delivered_at BIGINT,
            last_error TEXT
        )",
            "CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at)",
        ],
    ),
    (
        2,
        &[
            // The call's timeline (JSON), drawn by `sav report`.
            "ALTER TABLE calls ADD COLUMN timeline TEXT",
        ],
    ),
];

fn migrations(backend: Backend) -> &'static [(i64, &'static [&'static str])] {
    match backend {
        Backend::Sqlite => SQLITE,
    }
}

/// The latest version this build knows.
pub fn latest(backend: Backend) -> i64 {
    migrations(backend).last().map_or(0, |(v, _)| *v)
}

/// Brings the schema to the latest version.
pub async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(pool)
        .await?
        .try_get("v")?;
    let known = latest(backend);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for (version, statements) in migrations(backend) {
        if *version <= current {
            continue;
        }
        let failed = |source| StoreError::Migration {
            version: *version,
            source,
        };
        let mut tx = pool.begin().await.map_err(failed)?;
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        info!(version, "store schema migrated");
    }
    Ok(())
}
