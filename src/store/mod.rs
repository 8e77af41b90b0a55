//! The store: customers and their tickets, call records with their turns,
//! and the outbox of events for the CRM.
//!
//! One interface over sqlx's `Any` driver: queries are written once (`$1`
//! placeholders, `RETURNING`, `ON CONFLICT`, integer milliseconds for time),
//! and the few places a backend differs (its migrations; how the outbox is
//! claimed) are chosen by [`Backend`]. SQLite (`sqlite://…`) is the embedded
//! default; PostgreSQL (`postgres://…`) is for several instances sharing
//! customers, call records and one outbox.
//!
//! Calls write through a [`Recorder`]: its writes go, in order, to one writer
//! task that commits them in transactions as they come (a few milliseconds
//! behind the call), so a crash loses at most the turn in progress. At start,
//! the calls this instance left open are closed as `interrupted` and their
//! events queued.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

pub mod browse;
pub mod config;
pub mod import;
pub mod outbox;
pub mod phone;
pub mod retention;

mod schema;

/// Longest text kept for one turn (a runaway transcript is cut).
pub const MAX_TURN_TEXT: usize = 4096;
/// Writes queued from calls to the writer task.
const WRITE_QUEUE: usize = 4096;
/// Writes committed together at most.
const WRITE_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store URL {0:?}: expected sqlite://path or postgres://user@host/database")]
    Url(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migration {version}: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error("the store's schema is version {found}, newer than this sav knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("unreadable data in the store: {0}")]
    Corrupt(String),
}

/// The database behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A customer as the call needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub phone: String,
    /// "Monsieur", "Madame", or empty.
    pub title: String,
    pub first_name: String,
    pub last_name: String,
    /// Open tickets, newest first.
    pub tickets: Vec<Ticket>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: i64,
    pub product: String,
    pub problem: String,
}

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    Caller,
    Bot,
}

impl Speaker {
    fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Bot => "bot",
        }
    }
}

/// What a turn was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnKind {
    /// The caller's words (a transcript).
    Speech,
    /// The caller's key.
    Dtmf,
    /// A phrase from the cache.
    Cached,
    /// Text spoken through TTS.
    Generated,
    /// Something the flow noted about the call (not said by anyone).
    Note,
}

impl TurnKind {
    fn as_str(self) -> &'static str {
        match self {
            TurnKind::Speech => "speech",
            TurnKind::Dtmf => "dtmf",
            TurnKind::Cached => "cached",
            TurnKind::Generated => "generated",
            TurnKind::Note => "note",
        }
    }
}

/// One write of a call record.
#[derive(Debug)]
enum Write {
    Begin {
        id: String,
        sip_call_id: String,
        caller: String,
        customer_id: Option<i64>,
        at: i64,
    },
    Answered {
        id: String,
        at: i64,
    },
    Turn {
        id: String,
        seq: i64,
        at: i64,
        speaker: Speaker,
        kind: TurnKind,
        text: String,
    },
    Problem {
        id: String,
        key: String,
    },
    Steps {
        id: String,
        steps: Vec<String>,
    },
    Transfer {
        id: String,
        target: String,
    },
    End {
        id: String,
        at: i64,
        outcome: String,
        /// The call's timeline (JSON), kept with the record.
        timeline: Option<String>,
    },
    /// Answered once every write queued before it is committed.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The store: a pool and the writer task's queue.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// This instance's name (its calls are recovered by it alone).
    instance: String,
    writes: mpsc::Sender<Write>,
    /// Woken when an event is queued in the outbox.
    pub outbox_ready: std::sync::Arc<Notify>,
}

impl Store {
    /// Opens (creating when needed) and migrates the store at `url` and
    /// starts its writer task. The server then calls
    /// [`Store::recover_interrupted`]; other commands (an import while the
    /// server runs) must not.
    pub async fn open(url: &str, base: &Path, instance: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = resolve_url(url, base)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(10))
            // Connections a busy hour opened are closed once idle for a
            // minute (their files, or their server sessions, and their
            // caches); one stays.
            .min_connections(1)
            .idle_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend != Backend::Sqlite {
                        return Ok(());
                    }
                    // WAL: readers never wait for the writer, and a commit is
                    // on disk before it returns (a kill -9 loses nothing
                    // committed). Calls and the outbox worker write at once.
                    for pragma in [
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA busy_timeout = 5000",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        schema::migrate(&pool, backend).await?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let store = Store {
            pool,
            backend,
            instance: instance.to_string(),
            writes,
            outbox_ready: std::sync::Arc::new(Notify::new()),
        };
        tokio::spawn(writer(store.clone(), queue));
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The customer with this E.164 number and their open tickets.
    pub async fn find_customer(&self, phone: &str) -> Result<Option<Customer>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT id, phone, title, first_name, last_name FROM customers WHERE phone = $1",
        )
        .bind(phone)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let tickets = sqlx::query(
            "SELECT id, product, problem FROM tickets \
             WHERE customer_id = $1 AND status = 'open' ORDER BY opened_at DESC, id DESC",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|t| {
            Ok(Ticket {
                id: t.try_get("id")?,
                product: t.try_get("product")?,
                problem: t.try_get("problem")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(Customer {
            id,
            phone: row.try_get("phone")?,
            title: row.try_get("title")?,
            first_name: row.try_get("first_name")?,
            last_name: row.try_get("last_name")?,
            tickets,
        }))
    }

    /// Starts the record of a call; its writes go through the recorder.
    pub fn record_call(
        &self,
        sip_call_id: &str,
        caller: &str,
        customer_id: Option<i64>,
    ) -> Recorder {
        let id = new_id();
        let recorder = Recorder {
            id: id.clone(),
            writes: self.writes.clone(),
            seq: 0,
            steps: Vec::new(),
            started_ms: now_ms(),
            clock0: tokio::time::Instant::now(),
        };
        recorder.send_surely(Write::Begin {
            id,
            sip_call_id: sip_call_id.to_string(),
            caller: caller.to_string(),
            customer_id,
            at: recorder.started_ms,
        });
        recorder
    }

    /// Waits until every write queued so far is committed.
    /// The timeline of a call, by its record id or its SIP Call-ID (the
    /// latest call with that Call-ID): (record id, timeline). `Ok(None)` when
    /// there is no such call; a call still in progress or one a crash closed
    /// has no timeline (an empty one is returned with its outcome).
    pub async fn call_timeline(
        &self,
        call: &str,
    ) -> Result<Option<(String, crate::timeline::CallTimeline)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, sip_call_id, outcome, timeline FROM calls \
             WHERE id = $1 OR sip_call_id = $1 ORDER BY started_at DESC LIMIT 1",
        )
        .bind(call)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.try_get("id")?;
        let timeline: Option<String> = row.try_get("timeline")?;
        let parsed = match timeline {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("timeline of call {id}: {e}")))?,
            None => crate::timeline::CallTimeline {
                call_id: row.try_get("sip_call_id")?,
                outcome: row
                    .try_get::<Option<String>, _>("outcome")?
                    .unwrap_or_else(|| "in progress".into()),
                ..Default::default()
            },
        };
        Ok(Some((id, parsed)))
    }

    pub async fn flush(&self) {
        let (done, committed) = tokio::sync::oneshot::channel();
        if self.writes.send(Write::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }

    /// Closes the calls this instance left open (a crash, a kill -9): outcome
    /// `interrupted`, ended at their last sign of life, event queued. Only
    /// the server calls it, at start, before it takes calls.
    pub async fn recover_interrupted(&self) -> Result<usize, StoreError> {
        let open = sqlx::query("SELECT id FROM calls WHERE instance = $1 AND ended_at IS NULL")
            .bind(&self.instance)
            .fetch_all(&self.pool)
            .await?;
        for row in &open {
            let id: String = row.try_get("id")?;
            let mut tx = self.pool.begin().await?;
            let last = sqlx::query(
                "SELECT COALESCE(MAX(t.at), MAX(c.answered_at), MAX(c.started_at)) AS last \
                 FROM calls c LEFT JOIN turns t ON t.call_id = c.id WHERE c.id = $1",
            )
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            let at: i64 = last
                .try_get::<Option<i64>, _>("last")?
                .unwrap_or_else(now_ms);
            end_call(&mut tx, &id, at, "interrupted", None).await?;
            tx.commit().await?;
            info!(call = %id, "call record closed as interrupted");
        }
        if !open.is_empty() {
            warn!(
                calls = open.len(),
                "calls left open by a previous run closed as interrupted"
            );
            self.outbox_ready.notify_one();
        }
        Ok(open.len())
    }

    /// A call record with its turns, as the outbox event carries it.
    pub async fn call_event(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        call_payload(&mut conn, id).await
    }
}

/// Writes of one call's record, in order. Never blocks the call: a full
/// queue drops the write with a warning.
#[derive(Debug)]
pub struct Recorder {
    id: String,
    writes: mpsc::Sender<Write>,
    seq: i64,
    steps: Vec<String>,
    /// When the record began (ms since the epoch), and the same instant on
    /// the call's monotonic clock: every later time of the record is taken
    /// on that clock from there, when the write is made (a phrase's turn
    /// when its first frame went out), not when the store commits it.
    started_ms: i64,
    clock0: tokio::time::Instant,
}

impl Recorder {
    /// Now, in ms since the epoch, on the call's clock.
    fn now_ms(&self) -> i64 {
        self.started_ms + self.clock0.elapsed().as_millis() as i64
    }

    /// The record's id (not the SIP Call-ID, which callers may reuse).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Queues a turn's write; a full queue (the store far behind) drops it
    /// rather than hold up the call.
    fn send(&self, write: Write) {
        if let Err(error) = self.writes.try_send(write) {
            warn!(%error, "call record write dropped: the store is behind");
        }
    }

    /// Queues a write the record cannot do without (its begin, its end):
    /// when the queue is full it waits for room in a task of its own.
    fn send_surely(&self, write: Write) {
        match self.writes.try_send(write) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(write)) => {
                let writes = self.writes.clone();
                tokio::spawn(async move {
                    let _ = writes.send(write).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!("call record write lost: the store writer stopped");
            }
        }
    }

    pub fn answered(&self) {
        self.send(Write::Answered {
            id: self.id.clone(),
            at: self.now_ms(),
        });
    }

    /// One turn of the transcript.
    pub fn turn(&mut self, speaker: Speaker, kind: TurnKind, text: &str) {
        self.seq += 1;
        self.send(Write::Turn {
            id: self.id.clone(),
            seq: self.seq,
            at: self.now_ms(),
            speaker,
            kind,
            text: crate::text::cut(text, MAX_TURN_TEXT).to_string(),
        });
    }

    /// A note of the flow's, in the transcript at its time (kind `note`).
    pub fn note(&mut self, text: &str) {
        self.turn(Speaker::Bot, TurnKind::Note, text);
    }

    pub fn problem(&self, key: &str) {
        self.send(Write::Problem {
            id: self.id.clone(),
            key: key.to_string(),
        });
    }

    /// A fix step was given to the caller.
    pub fn step(&mut self, key: &str) {
        self.steps.push(key.to_string());
        self.send(Write::Steps {
            id: self.id.clone(),
            steps: self.steps.clone(),
        });
    }

    pub fn transfer(&self, target: &str) {
        self.send(Write::Transfer {
            id: self.id.clone(),
            target: target.to_string(),
        });
    }

    /// Ends the record and queues its event.
    pub fn end(self, outcome: &str) {
        self.end_with(outcome, None);
    }

    /// Closes the record with its outcome and the call's timeline.
    pub fn end_with(self, outcome: &str, timeline: Option<&crate::timeline::CallTimeline>) {
        let timeline = timeline.and_then(|t| serde_json::to_string(t).ok());
        self.send_surely(Write::End {
            id: self.id.clone(),
            at: self.now_ms(),
            outcome: outcome.to_string(),
            timeline,
        });
    }
}

/// A random 128-bit id in hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn resolve_url(url: &str, base: &Path) -> Result<(Backend, String), StoreError> {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        if rest.is_empty() {
            return Err(StoreError::Url(url.to_string()));
        }
        return Ok((Backend::Postgres, url.to_string()));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::Url(url.to_string()));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return Err(StoreError::Url(url.to_string()));
    }
    if path == ":memory:" {
        return Ok((Backend::Sqlite, "sqlite::memory:".into()));
    }
    let path = Path::new(path);
    let path = if path.is_relative() {
        base.join(path)
    } else {
        path.to_path_buf()
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let query = if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        query.to_string()
    };
    Ok((
        Backend::Sqlite,
        format!("sqlite://{}?{query}", path.display()),
    ))
}

/// The writer task: commits the calls' writes in order, a batch per
/// transaction.
async fn writer(store: Store, mut queue: mpsc::Receiver<Write>) {
    let mut pending = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut pending, WRITE_BATCH).await > 0 {
        let (flushes, batch): (Vec<Write>, Vec<Write>) = std::mem::take(&mut pending)
            .into_iter()
            .partition(|w| matches!(w, Write::Flush(_)));
        let ended = batch.iter().any(|w| matches!(w, Write::End { .. }));
        if let Err(error) = apply(&store.pool, &store.instance, &batch).await {
            // One bad write must not lose the others: retry them one by one.
            warn!(%error, writes = batch.len(), "store batch failed; writing one by one");
            for write in &batch {
                if let Err(error) =
                    apply(&store.pool, &store.instance, std::slice::from_ref(write)).await
                {
                    warn!(%error, ?write, "store write lost");
                }
            }
        }
        if ended {
            store.outbox_ready.notify_one();
        }
        for flush in flushes {
            if let Write::Flush(done) = flush {
                let _ = done.send(());
            }
        }
    }
    debug!("store writer stopped");
}

async fn apply(pool: &AnyPool, instance: &str, writes: &[Write]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for write in writes {
        match write {
            Write::Begin {
                id,
                sip_call_id,
                caller,
                customer_id,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO calls (id, sip_call_id, instance, caller, customer_id, started_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(sip_call_id)
                .bind(instance)
                .bind(caller)
                .bind(*customer_id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
            }
            Write::Answered { id, at } => {
                sqlx::query("UPDATE calls SET answered_at = $1 WHERE id = $2")
                    .bind(*at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::Turn {
                id,
                seq,
                at,
                speaker,
                kind,
                text,
            } => {
                sqlx::query(
                    "INSERT INTO turns (call_id, seq, at, speaker, kind, text) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(*seq)
                .bind(*at)
                .bind(speaker.as_str())
                .bind(kind.as_str())
                .bind(text)
                .execute(&mut *tx)
                .await?;
            }
            Write::Problem { id, key } => {
                sqlx::query("UPDATE calls SET problem = $1 WHERE id = $2")
                    .bind(key)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::Steps { id, steps } => {
                let json = serde_json::to_string(steps).unwrap_or_else(|_| "[]".into());
                sqlx::query("UPDATE calls SET steps = $1 WHERE id = $2")
                    .bind(json)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::Transfer { id, target } => {
                sqlx::query("UPDATE calls SET transfer_target = $1 WHERE id = $2")
                    .bind(target)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Write::End {
                id,
                at,
                outcome,
                timeline,
            } => end_call(&mut tx, id, *at, outcome, timeline.as_deref()).await?,
            Write::Flush(_) => {}
        }
    }
    tx.commit().await
}

/// Closes a call record and queues its event (in the caller's transaction).
async fn end_call(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    at: i64,
    outcome: &str,
    timeline: Option<&str>,
) -> Result<(), sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE calls SET ended_at = $1, outcome = $2, timeline = $3 \
         WHERE id = $4 AND ended_at IS NULL",
    )
    .bind(at)
    .bind(outcome)
    .bind(timeline)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        // Ended already (or never begun): one event per call.
        return Ok(());
    }
    let Some(payload) = call_payload(tx, id).await.map_err(|e| match e {
        StoreError::Db(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })?
    else {
        return Ok(());
    };
    let event_id = format!("call-{id}");
    sqlx::query(
        "INSERT INTO outbox (id, call_id, created_at, payload, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, 0, $3) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event_id)
    .bind(id)
    .bind(now_ms())
    .bind(payload.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The event of a call: the record, its customer and its transcript.
async fn call_payload(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(call) = sqlx::query(
        "SELECT c.id, c.sip_call_id, c.caller, c.customer_id, c.started_at, c.answered_at, \
         c.ended_at, c.outcome, c.problem, c.steps, c.transfer_target, \
         u.first_name, u.last_name, u.title \
         FROM calls c LEFT JOIN customers u ON u.id = c.customer_id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let turns = sqlx::query(
        "SELECT seq, at, speaker, kind, text FROM turns WHERE call_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let transcript = turns
        .iter()
        .map(|t: &AnyRow| {
            Ok(serde_json::json!({
                "at": t.try_get::<i64, _>("at")?,
                "speaker": t.try_get::<String, _>("speaker")?,
                "kind": t.try_get::<String, _>("kind")?,
                "text": t.try_get::<String, _>("text")?,
            }))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let customer = match call.try_get::<Option<i64>, _>("customer_id")? {
        Some(customer_id) => serde_json::json!({
            "id": customer_id,
            "title": call.try_get::<Option<String>, _>("title")?,
            "first_name": call.try_get::<Option<String>, _>("first_name")?,
            "last_name": call.try_get::<Option<String>, _>("last_name")?,
        }),
        None => serde_json::Value::Null,
    };
    let steps: serde_json::Value =
        serde_json::from_str(&call.try_get::<String, _>("steps")?).unwrap_or_default();
    let record_id: String = call.try_get("id")?;
    Ok(Some(serde_json::json!({
        "id": format!("call-{record_id}"),
        "type": "call.ended",
        "call": record_id,
        "sip_call_id": call.try_get::<String, _>("sip_call_id")?,
        "caller": call.try_get::<String, _>("caller")?,
        "customer": customer,
        "started_at": call.try_get::<i64, _>("started_at")?,
        "answered_at": call.try_get::<Option<i64>, _>("answered_at")?,
        "ended_at": call.try_get::<Option<i64>, _>("ended_at")?,
        "outcome": call.try_get::<Option<String>, _>("outcome")?,
        "problem": call.try_get::<Option<String>, _>("problem")?,
        "steps": steps,
        "transfer_target": call.try_get::<Option<String>, _>("transfer_target")?,
        "transcript": transcript,
    })))
}
