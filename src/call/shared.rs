//! What every call shares: the process's configuration, the live phrases
//! and cache, the media driver, the SIP dialogs, the store and providers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::{CacheError, PhraseCache};
use crate::config::Config;
use crate::media::driver::MediaDriver;
use crate::media::ports::RtpPortPool;
use crate::sip::registrar_client::LearnedAddress;

/// What a SIGHUP reloads: the phrases and prompts, the phrase cache and the
/// knowledge base. A call takes the set in force when it comes and keeps it
/// to its end.
pub struct Live {
    pub config: Arc<Config>,
    pub cache: Arc<PhraseCache>,
    /// The knowledge base of the guided flow, when it has problems.
    pub knowledge: Option<Arc<crate::conversation::guide::Knowledge>>,
}

impl Live {
    /// Loads the cache and builds the knowledge base of `config`.
    pub fn load(config: Arc<Config>) -> Result<Self, CacheError> {
        let (cache, stale) = PhraseCache::load(&config.cache)?;
        for (key, problem) in &stale {
            warn!(phrase = %key, %problem, "phrase cache is stale; run `sav cache build`");
        }
        info!(
            phrases = cache.len(),
            bytes = cache.audio_bytes(),
            "phrase cache loaded"
        );
        let knowledge = (!config.problems.is_empty()).then(|| {
            info!(
                problems = config.problems.len(),
                "guided flow on the knowledge base"
            );
            Arc::new(crate::conversation::guide::Knowledge::new(
                config.problems.clone(),
                config.flow.clone(),
            ))
        });
        Ok(Self {
            config,
            cache: Arc::new(cache),
            knowledge,
        })
    }
}

/// What every call shares.
pub struct Server {
    /// The configuration the server started with (SIP, media, store…: what
    /// a reload does not change).
    pub config: Arc<Config>,
    /// Phrases, cache and knowledge base, replaced by a reload.
    pub live: std::sync::RwLock<Arc<Live>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub dialogs: Arc<DialogLayer>,
    pub driver: MediaDriver,
    pub ports: RtpPortPool,
    /// One permit per call in progress (`max_calls`).
    pub calls: Arc<Semaphore>,
    pub next_media_id: AtomicU64,
    /// Fired on SIGINT/SIGTERM: calls say goodbye and hang up.
    pub shutdown: CancellationToken,
    /// Our SIP address as the registrar sees it (rport/received), when it
    /// differs from the configured one: Contact in dialogs follows it.
    pub learned: LearnedAddress,
    /// INVITEs refused because their source is not in `[sip] allow`.
    pub forbidden: AtomicU64,
    /// The speech providers, when any is configured.
    pub providers: Option<crate::call::reply::Providers>,
    /// Customers and call records.
    pub store: crate::store::Store,
}

impl Server {
    /// The phrases, cache and knowledge base in force now.
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_live(&self, live: Live) {
        let live = Arc::new(live);
        match self.live.write() {
            Ok(mut slot) => *slot = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
    }

    /// Shutting down: new calls are refused.
    pub fn draining(&self) -> bool {
        self.metrics.draining()
    }

    /// Calls in progress (ringing or established).
    pub fn calls_in_progress(&self) -> i64 {
        self.metrics.active_calls.get()
    }

    /// Our Contact URI for dialogs: the same user and address as in REGISTER.
    pub fn contact_uri(&self, transport: rsipstack::sip::Transport) -> String {
        crate::sip::contact::for_dialog(&self.config.sip, &self.learned, transport)
    }
}
