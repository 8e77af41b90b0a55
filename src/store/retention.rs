//! How long what a call leaves behind is kept (`[retention]`): recordings,
//! transcripts (the call's turns, and the CRM events that carried them once
//! delivered) and timelines, each for its own number of days counted from
//! the call's start; absent, kept. The purge touches ended calls only, and
//! nothing else: a call's record itself (who called, when, the outcome)
//! stays. It runs once a day in `sav serve` (every instance may: it is
//! idempotent) and as `sav purge [--dry-run]`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sqlx::Row;

use super::{Store, StoreError};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// `[retention]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days a call's recording is kept.
    pub recordings_days: Option<u32>,
    /// Days a call's transcript is kept (its turns; delivered CRM events).
    pub transcripts_days: Option<u32>,
    /// Days a call's timeline is kept.
    pub timelines_days: Option<u32>,
}

impl RetentionConfig {
    pub fn is_set(&self) -> bool {
        self.recordings_days.is_some()
            || self.transcripts_days.is_some()
            || self.timelines_days.is_some()
    }
}

/// What a purge removed (or, dry, would remove).
#[derive(Debug, Default, PartialEq)]
pub struct Purged {
    pub recordings: Vec<PathBuf>,
    /// Turns of calls past the transcripts' retention.
    pub turns: u64,
    /// Delivered CRM events past it (they hold the transcript too).
    pub events: u64,
    pub timelines: u64,
}

impl std::fmt::Display for Purged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} recordings, {} transcript turns, {} delivered CRM events, {} timelines",
            self.recordings.len(),
            self.turns,
            self.events,
            self.timelines
        )
    }
}

/// The instant `days` before `now_ms`: what started before it is past.
fn cutoff(now_ms: i64, days: u32) -> i64 {
    now_ms - i64::from(days) * DAY_MS
}

/// A recording's record id: `<32 hex digits>.wav`.
fn recording_id(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let id = name.strip_suffix(".wav")?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

impl Store {
    /// Removes (or with `dry_run` counts) what `retention` says is past at
    /// `now_ms`. `recordings` is where recordings are written.
    pub async fn purge(
        &self,
        retention: &RetentionConfig,
        recordings: Option<&Path>,
        now_ms: i64,
        dry_run: bool,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        if let Some(days) = retention.transcripts_days {
            let before = cutoff(now_ms, days);
            purged.turns = self
                .count_or_apply(
                    "SELECT COUNT(*) AS n FROM turns WHERE call_id IN \
                     (SELECT id FROM calls WHERE started_at < $1 AND ended_at IS NOT NULL)",
                    "DELETE FROM turns WHERE call_id IN \
                     (SELECT id FROM calls WHERE started_at < $1 AND ended_at IS NOT NULL)",
                    before,
                    dry_run,
                )
                .await?;
            purged.events = self
                .count_or_apply(
                    "SELECT COUNT(*) AS n FROM outbox \
                     WHERE delivered_at IS NOT NULL AND created_at < $1",
                    "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND created_at < $1",
                    before,
                    dry_run,
                )
                .await?;
        }
        if let Some(days) = retention.timelines_days {
            purged.timelines = self
                .count_or_apply(
                    "SELECT COUNT(*) AS n FROM calls \
                     WHERE started_at < $1 AND ended_at IS NOT NULL AND timeline IS NOT NULL",
                    "UPDATE calls SET timeline = NULL \
                     WHERE started_at < $1 AND ended_at IS NOT NULL AND timeline IS NOT NULL",
                    cutoff(now_ms, days),
                    dry_run,
                )
                .await?;
        }
        if let (Some(days), Some(dir)) = (retention.recordings_days, recordings) {
            let before = cutoff(now_ms, days);
            purged.recordings = self.old_recordings(dir, before).await?;
            if !dry_run {
                for path in &purged.recordings {
                    if let Err(error) = std::fs::remove_file(path) {
                        tracing::warn!(path = %path.display(), %error, "recording not removed");
                    }
                }
            }
        }
        Ok(purged)
    }

    /// Dry: the rows `count` (a `COUNT(*) AS n`) finds; else the rows
    /// `apply` changes. Both take the cutoff as $1.
    async fn count_or_apply(
        &self,
        count: &'static str,
        apply: &'static str,
        before: i64,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        if dry_run {
            let row = sqlx::query(count)
                .bind(before)
                .fetch_one(self.pool())
                .await?;
            Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
        } else {
            let done = sqlx::query(apply).bind(before).execute(self.pool()).await?;
            Ok(done.rows_affected())
        }
    }

    /// The recordings in `dir` of ended calls that started before `before`
    /// (a file whose record is gone: by its own modification time). Files
    /// not named as recordings are left alone.
    async fn old_recordings(&self, dir: &Path, before: i64) -> Result<Vec<PathBuf>, StoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(StoreError::Corrupt(format!(
                    "recordings directory {}: {error}",
                    dir.display()
                )))
            }
        };
        let mut old = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = recording_id(&path) else {
                continue;
            };
            let row = sqlx::query("SELECT started_at, ended_at FROM calls WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
            let past = match row {
                Some(row) => {
                    let started: i64 = row.try_get("started_at")?;
                    let ended: Option<i64> = row.try_get("ended_at")?;
                    ended.is_some() && started < before
                }
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .is_some_and(|age| (age.as_millis() as i64) < before),
            };
            if past {
                old.push(path);
            }
        }
        old.sort();
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_named_as_recordings_are_considered() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(recording_id(Path::new(&format!("/r/{id}.wav"))), Some(id));
        assert_eq!(recording_id(Path::new("/r/notes.wav")), None);
        assert_eq!(recording_id(Path::new(&format!("/r/{id}.txt"))), None);
        assert_eq!(cutoff(10 * DAY_MS, 3), 7 * DAY_MS);
    }
}
