//! Memory freed by calls goes back to the system once sav is idle.
//!
//! The C allocator keeps what a burst of calls freed in its arenas (one
//! per worker thread), so after a busy hour the process stays at its peak
//! although nothing uses it: a monitor sees a leak, and a host running
//! other services loses that memory. Once a look (every 15 s) finds no
//! call in progress and no RTP sent since the last look, the free memory
//! is handed back (`malloc_trim`), at each look for the two minutes after
//! the last call (the calls' last transactions and the providers' idle
//! connections end within that). Not while calls are up: a call that
//! starts just as a trim runs waits for the allocator's lock that once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::metrics::Metrics;

/// How often the call count is looked at.
const TICK: Duration = Duration::from_secs(15);
/// Trims go on this long after the last call.
const AFTER_LAST_CALL: Duration = Duration::from_secs(120);

/// Watches the calls in progress and trims when idle, until the runtime
/// ends.
pub fn spawn_release_when_idle(metrics: Arc<Metrics>) {
    tokio::spawn(async move {
        // Nothing to give back before the first call.
        let mut last_busy: Option<Instant> = None;
        // Frames sent: a call that began and ended between two looks sent
        // some.
        let mut frames = metrics.rtp_frames_sent.get();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = Instant::now();
            let sent = metrics.rtp_frames_sent.get();
            if metrics.active_calls.get() > 0 || sent != frames {
                frames = sent;
                last_busy = Some(now);
                continue;
            }
            let Some(busy) = last_busy else { continue };
            if now.duration_since(busy) > AFTER_LAST_CALL {
                last_busy = None;
            }
            if let Ok(released) = tokio::task::spawn_blocking(release).await {
                debug!(released, "idle: free memory handed back to the system");
            }
        }
    });
}

/// Hands the allocator's free memory back to the system; whether any was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release() -> bool {
    // SAFETY: malloc_trim only walks the allocator's own free lists, under
    // its locks; any thread may call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release() -> bool {
    false
}
