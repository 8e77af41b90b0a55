//! `[store]`: where customers and call records are kept.

use serde::Deserialize;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://path` (relative to the config file's directory), or
    /// `postgres://user[:password]@host[:port]/database` for several
    /// instances sharing one store.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// The URL from an environment variable instead (a PostgreSQL password
    /// kept out of the file)…
    #[serde(default)]
    pub url_env: Option<String>,
    /// …or from a file (a container secret, a systemd credential).
    #[serde(default)]
    pub url_file: Option<std::path::PathBuf>,
    /// This instance's name in call records: calls it left open are closed
    /// as interrupted when it starts again. Default: the SIP listen address.
    pub instance: Option<String>,
    /// Country code that completes national numbers ("0612…" → "+33612…").
    #[serde(default = "default_country_code")]
    pub country_code: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            url_env: None,
            url_file: None,
            instance: None,
            country_code: default_country_code(),
        }
    }
}

fn default_store_url() -> String {
    "sqlite://sav.db".into()
}

fn default_country_code() -> String {
    "33".into()
}
