//! What every call shares: the process's configuration, the live phrases
//! and cache, the media driver, the store and the providers.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cache::{CacheError, PhraseCache};
use crate::config::Config;
use crate::media::codec::Codec;
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
        let cache = Arc::new(cache);
        if config.cache.code_at_start {
            code_in_background(&cache, &config.media.codecs);
        }
        Ok(Self {
            config,
            cache,
            knowledge,
        })
    }
}

/// Codes the phrases in `codecs` not made at load on a thread of their
/// own (a call that comes meanwhile waits for them, as it would have).
fn code_in_background(cache: &Arc<PhraseCache>, codecs: &[Codec]) {
    let later: Vec<Codec> = codecs
        .iter()
        .copied()
        .filter(|&c| !cache.is_ready(c))
        .collect();
    if later.is_empty() {
        return;
    }
    let cache = cache.clone();
    let spawned = std::thread::Builder::new()
        .name("phrase-coding".into())
        .spawn(move || later.into_iter().for_each(|codec| cache.prepare(codec)));
    if let Err(error) = spawned {
        warn!(%error, "phrases not coded at start: the first call in each codec codes them");
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
    /// The calls in progress (the console's live view).
    pub board: Arc<crate::call::board::Board>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        // The default (code_at_start = true), with Opus listed and not G.722.
        let text = crate::config::EMBEDDED_DEFAULT.replace(
            "codecs = [\"PCMA\", \"PCMU\", \"G722\", \"opus\"]",
            "codecs = [\"PCMA\", \"opus\"]",
        );
        assert!(
            text.contains("codecs = [\"PCMA\", \"opus\"]") && text.contains("code_at_start = true"),
            "sav.toml changed"
        );
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = Config::from_toml(&text, "test", base).expect("the default configuration");
        Live::load(Arc::new(config)).expect("the repository's cache")
    }

    #[test]
    fn the_listed_codecs_are_coded_at_start_and_only_those() {
        let warm = live();
        let begun = std::time::Instant::now();
        while !warm.cache.is_ready(Codec::Opus) {
            assert!(
                begun.elapsed() < std::time::Duration::from_secs(120),
                "Opus never coded"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // G.722 is not listed: left for a call that would need it.
        assert!(!warm.cache.is_ready(Codec::G722));
    }
}
