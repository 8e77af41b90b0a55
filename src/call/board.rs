//! The calls in progress, as the console shows them: one entry per
//! established call, updated by the call's task when something a person
//! would notice changes (the flow's phase, who speaks, a turn's latency),
//! never per frame. Readers take a snapshot; a version number, watched,
//! tells them when to take the next.
//!
//! The board holds one entry per call the process admitted (admission
//! bounds it); an entry leaves when its [`Entry`] is dropped, whatever ends
//! the call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conversation::Phase;

/// Who is heard on the line now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaking {
    Nobody,
    Caller,
    Bot,
    /// Both: the caller talks over the bot.
    Both,
}

/// One call in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCall {
    /// The SIP Call-ID.
    pub call_id: String,
    /// The caller's number in full (the console masks it by role).
    pub caller: String,
    /// The customer's name, when the store knows them.
    pub customer: Option<String>,
    /// When the call was answered, ms since the epoch.
    pub started_at: i64,
    /// How long it has lasted, ms (at the snapshot).
    pub duration_ms: u64,
    /// The flow's phase (`greeting`, `listening`, `thinking`, …).
    pub phase: &'static str,
    pub speaking: Speaking,
    /// The caller's turns so far (speech or keys).
    pub turns: u32,
    /// The last turn's latency: from the end of the caller's turn to the
    /// first audio of the bot's answer, ms.
    pub turn_latency_ms: Option<u64>,
}

struct Slot {
    call: LiveCall,
    answered: Instant,
    caller_speaks: bool,
    bot_speaks: bool,
    /// When the caller's last turn ended, until the bot's answer sounds.
    turn_ended: Option<Instant>,
}

/// The calls in progress.
pub struct Board {
    calls: Mutex<BTreeMap<u64, Slot>>,
    next: AtomicU64,
    version: watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            calls: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            version: watch::channel(0).0,
        }
    }
}

impl Board {
    /// A call is answered: its entry, until the returned handle drops.
    pub fn enter(self: &Arc<Self>, call_id: &str, caller: &str, customer: Option<String>) -> Entry {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let started_at = crate::store::now_ms();
        let slot = Slot {
            call: LiveCall {
                call_id: call_id.to_string(),
                caller: caller.to_string(),
                customer,
                started_at,
                duration_ms: 0,
                phase: phase_name(Phase::Answering),
                speaking: Speaking::Nobody,
                turns: 0,
                turn_latency_ms: None,
            },
            answered: Instant::now(),
            caller_speaks: false,
            bot_speaks: false,
            turn_ended: None,
        };
        self.lock().insert(key, slot);
        self.changed();
        Entry {
            board: self.clone(),
            key,
        }
    }

    /// The calls in progress, oldest first.
    pub fn snapshot(&self) -> Vec<LiveCall> {
        let now = Instant::now();
        self.lock()
            .values()
            .map(|slot| LiveCall {
                duration_ms: now.saturating_duration_since(slot.answered).as_millis() as u64,
                ..slot.call.clone()
            })
            .collect()
    }

    /// How many calls are in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes each time a call enters, changes or leaves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Slot>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A call's entry on the board; it leaves when this drops.
pub struct Entry {
    board: Arc<Board>,
    key: u64,
}

impl Entry {
    /// Updates the entry; readers are told only when it changed.
    fn update(&self, change: impl FnOnce(&mut Slot)) {
        let changed = {
            let mut calls = self.board.lock();
            let Some(slot) = calls.get_mut(&self.key) else {
                return;
            };
            // What an event can change (the rest is set once at entry).
            let moving = |c: &LiveCall| (c.phase, c.speaking, c.turns, c.turn_latency_ms);
            let before = moving(&slot.call);
            change(slot);
            slot.call.speaking = match (slot.caller_speaks, slot.bot_speaks) {
                (false, false) => Speaking::Nobody,
                (true, false) => Speaking::Caller,
                (false, true) => Speaking::Bot,
                (true, true) => Speaking::Both,
            };
            moving(&slot.call) != before
        };
        if changed {
            self.board.changed();
        }
    }

    pub fn phase(&self, phase: Phase) {
        self.update(|slot| slot.call.phase = phase_name(phase));
    }

    /// The caller started speaking.
    pub fn caller_started(&self) {
        self.update(|slot| slot.caller_speaks = true);
    }

    /// The caller's turn ended (they stopped speaking, or pressed a key).
    pub fn caller_turn_ended(&self, key: bool) {
        self.update(|slot| {
            if !key {
                slot.caller_speaks = false;
            }
            slot.call.turns += 1;
            slot.turn_ended = Some(Instant::now());
        });
    }

    /// The bot's audio started (a phrase, a filler, a reply's sentence).
    pub fn bot_started(&self) {
        self.update(|slot| {
            slot.bot_speaks = true;
            if let Some(ended) = slot.turn_ended.take() {
                slot.call.turn_latency_ms = Some(duration_ms(ended.elapsed()));
            }
        });
    }

    /// The bot is quiet (its queue ran out).
    pub fn bot_stopped(&self) {
        self.update(|slot| slot.bot_speaks = false);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.board.lock().remove(&self.key);
        self.board.changed();
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A phase as the console and the API name it.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Answering => "answering",
        Phase::Greeting => "greeting",
        Phase::Listening => "listening",
        Phase::Thinking => "thinking",
        Phase::Replying => "replying",
        Phase::Interrupted => "interrupted",
        Phase::SayingGoodbye => "saying_goodbye",
        Phase::AnnouncingTransfer => "announcing_transfer",
        Phase::Transferring => "transferring",
        Phase::Ended => "ended",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_entry_follows_its_call_and_leaves_with_it() {
        let board = Arc::new(Board::default());
        let mut seen = board.watch();
        let entry = board.enter("c1@x", "+33612345678", Some("Mme Durand".into()));
        assert!(seen.has_changed().unwrap());
        seen.mark_unchanged();
        entry.bot_started();
        tokio::time::advance(Duration::from_millis(3000)).await;
        entry.bot_stopped();
        entry.phase(Phase::Listening);
        entry.caller_started();
        let now = &board.snapshot()[0];
        assert_eq!(
            (now.phase, now.speaking, now.duration_ms, now.turns),
            ("listening", Speaking::Caller, 3000, 0)
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        entry.caller_turn_ended(false);
        entry.phase(Phase::Thinking);
        tokio::time::advance(Duration::from_millis(420)).await;
        entry.bot_started();
        let now = &board.snapshot()[0];
        assert_eq!(
            (now.speaking, now.turns, now.turn_latency_ms),
            (Speaking::Bot, 1, Some(420))
        );
        // An update that changes nothing tells nobody.
        seen.mark_unchanged();
        entry.bot_started();
        assert!(!seen.has_changed().unwrap());
        // Talking over the bot.
        entry.caller_started();
        assert_eq!(board.snapshot()[0].speaking, Speaking::Both);
        let second = board.enter("c2@x", "+33700000000", None);
        assert_eq!(board.len(), 2);
        drop(entry);
        let left = board.snapshot();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].call_id, "c2@x");
        drop(second);
        assert!(board.is_empty());
    }
}
