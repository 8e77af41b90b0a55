//! Final responses outside a dialog, kept alive for their retransmissions.

use std::time::Duration;

use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::Transaction;
use tracing::warn;

/// A transaction we answered is kept alive this long (64 × T1) so that its
/// final response is retransmitted and the ACK absorbed.
const TRANSACTION_LINGER: Duration = Duration::from_secs(32);

/// Answers a transaction with a final response and keeps it alive long
/// enough for retransmissions and the ACK of a failed INVITE.
pub fn spawn_reply(mut tx: Transaction, status: StatusCode, headers: Vec<Header>) {
    tokio::spawn(async move {
        reply_and_linger(&mut tx, status, headers).await;
    });
}

pub async fn reply_and_linger(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status, headers, None).await {
        warn!(error = %e, "cannot send response");
        return;
    }
    let _ = tokio::time::timeout(TRANSACTION_LINGER, async {
        while tx.receive().await.is_some() {}
    })
    .await;
}
