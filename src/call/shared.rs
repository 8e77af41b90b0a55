//! What every call shares: the process's configuration, the live phrases
//! and cache, the media driver, the store and the providers.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::{CacheError, PhraseCache};
use crate::config::Config;
use crate::media::driver::MediaDriver;

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

/// What every call is handed by the process.
pub struct Services {
    /// The configuration the process started with (SIP, media, store…: what
    /// a reload does not change).
    pub config: Arc<Config>,
    /// Phrases, cache and knowledge base, replaced by a reload.
    pub live: std::sync::RwLock<Arc<Live>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Paces every call's outbound RTP.
    pub driver: MediaDriver,
    /// Fired when the drain bound passes: calls hang up.
    pub shutdown: CancellationToken,
    /// The speech providers, when any is configured.
    pub providers: Option<crate::call::reply::Providers>,
    /// Customers and call records.
    pub store: crate::store::Store,
}

impl Services {
    /// The phrases, cache and knowledge base in force now.
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces what new calls take (a reload).
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
}
