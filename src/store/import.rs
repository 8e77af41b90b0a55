//! `sav customers import file.csv`: customers and their open tickets from a
//! CSV with a header row. Columns, by name, in any order: `phone`,
//! `first_name`, `last_name` (required), `title`, `product`, `problem`
//! (optional; a ticket is opened when `problem` is set). A bad row is
//! reported with its line number and skipped; the good rows are kept. A
//! customer already known (same E.164 number) is updated; the same ticket
//! twice is one ticket.

use std::io::Read;

use serde::Serialize;
use sqlx::Row;

use super::phone::normalise;
use super::{now_ms, Store, StoreError};

/// Rows written per transaction.
const IMPORT_CHUNK: usize = 500;
/// Longest value of one field.
const MAX_FIELD: usize = 256;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows read (the header not counted).
    pub rows: usize,
    /// Distinct customers created or updated.
    pub customers: usize,
    /// Tickets opened (new ones only).
    pub tickets: usize,
    /// (line, why) of each row left out.
    pub rejected: Vec<(u64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("CSV header: {0}")]
    Header(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Store(StoreError::Db(e))
    }
}

struct GoodRow {
    phone: String,
    title: String,
    first_name: String,
    last_name: String,
    ticket: Option<(String, String)>,
}

/// Reads the CSV; keeps the good rows; numbers are made E.164 with
/// `country_code`.
pub async fn import_customers(
    store: &Store,
    input: impl Read,
    country_code: &str,
) -> Result<ImportReport, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Header(e.to_string()))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(phone), Some(first), Some(last)) =
        (column("phone"), column("first_name"), column("last_name"))
    else {
        return Err(ImportError::Header(format!(
            "needs phone, first_name and last_name columns; found {:?}",
            headers.iter().collect::<Vec<_>>()
        )));
    };
    let (title, product, problem) = (column("title"), column("product"), column("problem"));

    let mut report = ImportReport::default();
    let mut good = Vec::new();
    for record in reader.records() {
        report.rows += 1;
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                report
                    .rejected
                    .push((line, format!("unreadable row: {error}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").to_string();
        let row = (|| {
            let values = [
                field(Some(phone)),
                field(Some(first)),
                field(Some(last)),
                field(title),
                field(product),
                field(problem),
            ];
            if let Some(long) = values.iter().find(|v| v.len() > MAX_FIELD) {
                return Err(format!(
                    "a field of {} bytes (at most {MAX_FIELD})",
                    long.len()
                ));
            }
            let [raw_phone, first_name, last_name, title, product, problem] = values;
            let phone = normalise(&raw_phone, country_code)
                .map_err(|e| format!("phone {raw_phone:?}: {e}"))?;
            if first_name.is_empty() && last_name.is_empty() {
                return Err("no first_name nor last_name".into());
            }
            let ticket = (!problem.is_empty()).then_some((product, problem));
            Ok(GoodRow {
                phone,
                title,
                first_name,
                last_name,
                ticket,
            })
        })();
        match row {
            Ok(row) => good.push(row),
            Err(why) => report.rejected.push((line, why)),
        }
    }

    let now = now_ms();
    report.customers = good
        .iter()
        .map(|row| row.phone.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // Committed in chunks: calls in progress write between them.
    for chunk in good.chunks(IMPORT_CHUNK) {
        let mut tx = store.pool().begin().await?;
        for row in chunk {
            let id: i64 = sqlx::query(
                "INSERT INTO customers (phone, title, first_name, last_name, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (phone) DO UPDATE SET title = excluded.title, \
             first_name = excluded.first_name, last_name = excluded.last_name, \
             updated_at = excluded.updated_at RETURNING id",
            )
            .bind(&row.phone)
            .bind(&row.title)
            .bind(&row.first_name)
            .bind(&row.last_name)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
            if let Some((product, problem)) = &row.ticket {
                let opened = sqlx::query(
                    "INSERT INTO tickets (customer_id, product, problem, status, opened_at) \
                 VALUES ($1, $2, $3, 'open', $4) \
                 ON CONFLICT (customer_id, product, problem) DO NOTHING",
                )
                .bind(id)
                .bind(product)
                .bind(problem)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                report.tickets += opened.rows_affected() as usize;
            }
        }
        tx.commit().await?;
    }
    Ok(report)
}
