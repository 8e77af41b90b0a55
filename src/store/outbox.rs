//! Delivery of the outbox to the CRM's webhook.
//!
//! Each event is POSTed as JSON with its id in the body and in an
//! `Idempotency-Key` header. A 2xx marks it delivered; anything else (an
//! error status, no answer in time, no connection) schedules another try
//! after a back-off that doubles from `retry_min_ms` up to `retry_max_ms`
//! (±20 % jitter). Events are claimed with a lease before they are sent, so
//! two workers on one store never send the same event at once, and an event
//! whose worker died is taken up again when its lease runs out. The events
//! live in the store: they survive restarts.
//!
//! With `[crm] signing_secret_env` or `_file`, each request carries
//! `X-Sav-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 under the key
//! of `"<t>.<body>"`, made when the request is sent (so a retry has a fresh
//! timestamp). The receiver recomputes it, compares in constant time and
//! refuses a timestamp too far from its clock (5 minutes, say): a captured
//! request cannot be replayed later, nor its body altered.
//!
//! Delivery is once per event id, with one window left: a crash between the
//! webhook's 2xx and the commit that records it sends the event again after
//! the restart. The event id is there for the receiver to recognise it.

use std::time::Duration;

use serde::Deserialize;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{now_ms, Backend, Store, StoreError};

/// How long a send in flight may finish when the outbox stops (the
/// process waits 2 s for the outbox).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a claimed event is ours before another worker may take it
/// (`[crm] timeout_ms` is held to less than half of it).
pub const LEASE_MS: i64 = 60_000;
/// How often due retries are looked for when nothing wakes the worker.
const POLL: Duration = Duration::from_millis(500);
/// Response bodies read at most (for the error message).
const MAX_ERROR_BODY: usize = 512;

/// `[crm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmConfig {
    /// Where events are POSTed; without it they stay in the outbox.
    pub webhook_url: Option<String>,
    /// The URL (a token in it) from an environment variable instead…
    #[serde(default)]
    pub webhook_url_env: Option<String>,
    /// …or from a file.
    #[serde(default)]
    pub webhook_url_file: Option<std::path::PathBuf>,
    /// The key each event is signed with (`X-Sav-Signature`: HMAC-SHA256
    /// over the timestamp and the body), from an environment variable…
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// …or a file. Neither: events are sent unsigned.
    #[serde(default)]
    pub signing_secret_file: Option<std::path::PathBuf>,
    /// The signing key as read when the configuration was loaded.
    #[serde(skip)]
    pub signing_secret: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_retry_min")]
    pub retry_min_ms: u64,
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_url_env: None,
            webhook_url_file: None,
            signing_secret_env: None,
            signing_secret_file: None,
            signing_secret: None,
            timeout_ms: default_timeout(),
            retry_min_ms: default_retry_min(),
            retry_max_ms: default_retry_max(),
        }
    }
}

fn default_timeout() -> u64 {
    10_000
}
fn default_retry_min() -> u64 {
    2_000
}
fn default_retry_max() -> u64 {
    600_000
}

/// An event taken from the outbox for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub payload: String,
    pub attempts: i64,
}

/// The wait before try number `attempts + 1`, without jitter.
pub fn backoff(attempts: i64, min_ms: u64, max_ms: u64) -> u64 {
    let doublings = attempts.clamp(0, 30) as u32;
    min_ms.saturating_mul(1u64 << doublings).min(max_ms)
}

impl Store {
    /// Takes the oldest due event, if any, for `LEASE_MS`.
    pub async fn claim_event(&self) -> Result<Option<Claimed>, StoreError> {
        let now = now_ms();
        let sql = match self.backend() {
            // SQLite runs one write at a time: the sub-select and the update
            // are one atomic statement.
            Backend::Sqlite => {
                "UPDATE outbox SET claimed_until = $1 WHERE id = (\
                   SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                   AND (claimed_until IS NULL OR claimed_until <= $2) \
                   ORDER BY created_at, id LIMIT 1) \
                 RETURNING id, payload, attempts"
            }
            // Several instances poll one outbox: a row another instance is
            // claiming right now is skipped, not waited for, and the claim
            // is committed before the event is sent (exactly one sender per
            // lease).
            Backend::Postgres => {
                "UPDATE outbox SET claimed_until = $1 WHERE id = (\
                   SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                   AND (claimed_until IS NULL OR claimed_until <= $2) \
                   ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, payload, attempts"
            }
        };
        let row = sqlx::query(sql)
            .bind(now + LEASE_MS)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
        Ok(match row {
            Some(row) => Some(Claimed {
                id: row.try_get("id")?,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
            }),
            None => None,
        })
    }

    pub async fn mark_delivered(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, claimed_until = NULL, \
             last_error = NULL WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn mark_failed(
        &self,
        id: &str,
        retry_in_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, \
             claimed_until = NULL, last_error = $2 WHERE id = $3",
        )
        .bind(now_ms() + retry_in_ms as i64)
        .bind(crate::text::cut(error, MAX_ERROR_BODY))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives a claimed event back without counting an attempt.
    pub async fn release_event(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET claimed_until = NULL WHERE id = $1 AND delivered_at IS NULL",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Events not delivered yet.
    pub async fn pending_events(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(self.pool())
                .await?
                .try_get("n")?,
        )
    }
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("webhook answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("webhook unreachable: {0}")]
    Http(#[from] reqwest::Error),
}

/// Delivers the outbox until `stop`.
pub async fn run(store: Store, config: CrmConfig, stop: CancellationToken) {
    let Some(url) = config.webhook_url.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "CRM webhook client cannot be built; events stay in the outbox");
            return;
        }
    };
    info!("delivering CRM events to the webhook");
    loop {
        if stop.is_cancelled() {
            return;
        }
        match store.claim_event().await {
            Ok(Some(event)) => {
                let sending = send(&client, &url, config.signing_secret.as_deref(), &event);
                tokio::pin!(sending);
                let outcome = tokio::select! {
                    outcome = &mut sending => outcome,
                    _ = stop.cancelled() => {
                        // Stopping mid-send: a request on its way may have
                        // reached the webhook, so it is let finish for a
                        // moment and marked; only then is it given back
                        // (another instance would send it again).
                        match tokio::time::timeout(STOP_GRACE, &mut sending).await {
                            Ok(outcome) => outcome,
                            Err(_) => {
                                if let Err(error) = store.release_event(&event.id).await {
                                    warn!(%error, "outbox release failed");
                                }
                                return;
                            }
                        }
                    }
                };
                let result = match outcome {
                    Ok(()) => {
                        info!(event = %event.id, attempt = event.attempts + 1, "CRM event delivered");
                        store.mark_delivered(&event.id).await
                    }
                    Err(error) => {
                        let wait =
                            backoff(event.attempts, config.retry_min_ms, config.retry_max_ms);
                        let jitter = 0.8 + 0.4 * rand::random::<f64>();
                        let wait = (wait as f64 * jitter) as u64;
                        warn!(event = %event.id, attempt = event.attempts + 1, %error, retry_in_ms = wait, "CRM event not delivered");
                        store.mark_failed(&event.id, wait, &error.to_string()).await
                    }
                };
                if let Err(error) = result {
                    warn!(%error, "outbox update failed");
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "outbox claim failed"),
        }
        tokio::select! {
            _ = store.outbox_ready.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The name of the signature's header.
pub const SIGNATURE_HEADER: &str = "X-Sav-Signature";

/// The signature of `body` sent at `timestamp` (Unix seconds) under `key`:
/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes a key of any length.
    let mut mac = match <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts every key length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    signing_key: Option<&str>,
    event: &Claimed,
) -> Result<(), DeliveryError> {
    debug!(event = %event.id, "POST CRM event");
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", &event.id);
    if let Some(key) = signing_key {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        request = request.header(
            SIGNATURE_HEADER,
            signature(key.as_bytes(), now, event.payload.as_bytes()),
        );
    }
    let response = request.body(event.payload.clone()).send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = crate::providers::read_error_body(response).await;
    Err(DeliveryError::Status {
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        // Computed independently: Python's
        // hmac.new(b"whsec_test", b"1700000000.{\"id\":\"e1\"}", "sha256").hexdigest()
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, br#"{"id":"e1"}"#),
            "t=1700000000,v1=6a85cb117c993612a34c72b4cfb5a16baed25a80d26e298ce0e6671320fd07c8"
        );
        // Another key, another body or another time: another signature.
        let base = signature(b"k", 1, b"body");
        assert_ne!(base, signature(b"K", 1, b"body"));
        assert_ne!(base, signature(b"k", 1, b"bodY"));
        assert_ne!(base, signature(b"k", 2, b"body"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n, 1000, 20_000)).collect();
        assert_eq!(waits, [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000]);
        assert_eq!(backoff(1000, 1000, 20_000), 20_000, "no overflow");
        assert_eq!(backoff(-1, 1000, 20_000), 1000);
    }
}
