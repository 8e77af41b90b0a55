//! `[console]`: where the after-sales team's console listens and who may
//! use it: its users and scripts' tokens, read and checked here (the
//! console, a layer above the call, is handed them; the configuration does
//! not import it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What a user may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Calls, transcripts and figures, callers' numbers masked.
    Viewer,
    /// Everything, numbers in full, recordings.
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Supervisor => "supervisor",
        }
    }
}

/// A user as the configuration names them, their hash resolved.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The argon2 hash (PHC string, `$argon2id$…`).
    pub password_hash: String,
}

/// A script's token, as the configuration names it.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// SHA-256 of the token.
    pub digest: [u8; 32],
}

/// Tokens shorter than this are refused at start.
pub const MIN_TOKEN_LEN: usize = 32;

/// SHA-256 of a token.
pub fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// `[console]`. Off unless `listen` is set.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where the console listens (`127.0.0.1:9480`). Beyond loopback it
    /// needs users: sav refuses to start otherwise.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// How long a sign-in lasts, in hours (default 12).
    #[serde(default)]
    pub session_hours: Option<u64>,
    /// Who may sign in. None (on loopback only): anyone who reaches it is
    /// a viewer (numbers masked).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Scripts' bearer tokens (a CRM placing callbacks, a dashboard).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// `[[console.tokens]]`: the token itself never in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `[[console.users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub role: Role,
    /// The argon2 hash (`sav hash-password`), here or from an environment
    /// variable or a file (one of the three).
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub password_hash_env: Option<String>,
    #[serde(default)]
    pub password_hash_file: Option<PathBuf>,
}

/// What is wrong with `[console]`.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleConfigError {
    #[error(
        "[console] listen = {0}: beyond loopback the console needs users ([[console.users]] with \
         an argon2 password hash); it is never served there without authentication"
    )]
    OpenWithoutUsers(SocketAddr),
    #[error("[[console.users]] {0}: exactly one of password_hash, password_hash_env, password_hash_file")]
    Hash(String),
    #[error("[[console.users]] {0}: {1}")]
    Secret(String, crate::secret::SecretError),
    #[error("[[console.users]] {0} appears twice")]
    Duplicate(String),
    #[error("[[console.tokens]] {0}: {1}")]
    Token(String, String),
}

impl ConsoleConfig {
    /// The users with their hashes read; checks that a console beyond
    /// loopback has some.
    pub fn users(&self, base: &Path) -> Result<Vec<User>, ConsoleConfigError> {
        let mut users: Vec<User> = Vec::with_capacity(self.users.len());
        for user in &self.users {
            if users.iter().any(|u| u.name == user.name) {
                return Err(ConsoleConfigError::Duplicate(user.name.clone()));
            }
            let file = user.password_hash_file.as_ref().map(|f| base.join(f));
            let from_secret = crate::secret::read(
                &format!("console.users.{}.password_hash", user.name),
                user.password_hash_env.as_deref(),
                file.as_deref(),
            )
            .map_err(|e| ConsoleConfigError::Secret(user.name.clone(), e))?;
            let hash = match (&user.password_hash, from_secret) {
                (Some(hash), None) => hash.trim().to_string(),
                (None, Some(hash)) => hash.trim().to_string(),
                _ => return Err(ConsoleConfigError::Hash(user.name.clone())),
            };
            users.push(User {
                name: user.name.clone(),
                role: user.role,
                password_hash: hash,
            });
        }
        if let Some(listen) = self.listen {
            if users.is_empty() && self.tokens.is_empty() && !listen.ip().is_loopback() {
                return Err(ConsoleConfigError::OpenWithoutUsers(listen));
            }
        }
        Ok(users)
    }

    /// The scripts' tokens, read from their variables or files.
    pub fn tokens(&self, base: &Path) -> Result<Vec<Token>, ConsoleConfigError> {
        let mut tokens: Vec<Token> = Vec::with_capacity(self.tokens.len());
        for token in &self.tokens {
            let refuse = |why: String| ConsoleConfigError::Token(token.name.clone(), why);
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(refuse("appears twice".into()));
            }
            let file = token.token_file.as_ref().map(|f| base.join(f));
            let secret = crate::secret::read(
                &format!("console.tokens.{}.token", token.name),
                token.token_env.as_deref(),
                file.as_deref(),
            )
            .map_err(|e| refuse(e.to_string()))?
            .ok_or_else(|| refuse("token_env or token_file is required".into()))?;
            let secret = secret.trim();
            if secret.len() < MIN_TOKEN_LEN {
                return Err(refuse(format!(
                    "a token of {} characters is too short (at least {MIN_TOKEN_LEN}: `openssl rand -hex 32`)",
                    secret.len()
                )));
            }
            tokens.push(Token {
                name: token.name.clone(),
                role: token.role,
                digest: digest(secret),
            });
        }
        Ok(tokens)
    }

    pub fn session_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session_hours.unwrap_or(12).clamp(1, 24 * 30) * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConsoleConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn beyond_loopback_the_console_needs_users() {
        let open = parse("listen = \"0.0.0.0:9480\"\n");
        assert!(matches!(
            open.users(Path::new(".")),
            Err(ConsoleConfigError::OpenWithoutUsers(_))
        ));
        let local = parse("listen = \"127.0.0.1:9480\"\n");
        assert!(local.users(Path::new(".")).unwrap().is_empty());
        let with = parse(
            "listen = \"0.0.0.0:9480\"\n[[users]]\nname = \"ana\"\nrole = \"supervisor\"\npassword_hash = \"$argon2id$x\"\n",
        );
        let users = with.users(Path::new(".")).unwrap();
        assert_eq!(users[0].role, Role::Supervisor);
        let neither = parse("[[users]]\nname = \"bob\"\nrole = \"viewer\"\n");
        assert!(matches!(
            neither.users(Path::new(".")),
            Err(ConsoleConfigError::Hash(name)) if name == "bob"
        ));
        // Tokens alone are authentication too; a short one is refused.
        let dir = std::env::temp_dir().join(format!("sav-console-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("long"), format!("{}\n", "a1".repeat(32))).unwrap();
        std::fs::write(dir.join("short"), "abc\n").unwrap();
        let scripts = parse(
            "listen = \"0.0.0.0:9480\"\n[[tokens]]\nname = \"crm\"\nrole = \"supervisor\"\ntoken_file = \"long\"\n",
        );
        assert!(scripts.users(&dir).unwrap().is_empty());
        let tokens = scripts.tokens(&dir).unwrap();
        assert_eq!(tokens[0].digest, digest(&"a1".repeat(32)));
        let short = parse("[[tokens]]\nname = \"x\"\nrole = \"viewer\"\ntoken_file = \"short\"\n");
        assert!(
            matches!(short.tokens(&dir), Err(ConsoleConfigError::Token(name, _)) if name == "x")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
