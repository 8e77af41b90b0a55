//! Small helpers for the tokio timers of the shells.

use tokio::time::Instant;

/// Sleeps until `deadline`, or forever when there is none (a `select!` arm
/// that is off until a deadline is set).
pub async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
