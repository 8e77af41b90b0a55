//! Who may use the console: users with argon2-hashed passwords (their
//! hashes from `*_env` or `*_file`), sessions kept in memory with an expiry
//! (a bounded number; the oldest goes first), and a CSRF token per session
//! that every form that changes something must carry back; and bearer
//! tokens for scripts (`Authorization: Bearer …`), kept as SHA-256 digests
//! (a token is 32 random bytes or more: a fast digest is enough, and each
//! request is checked without argon2's cost).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub use crate::config::console::{digest, Role, Token, User, MIN_TOKEN_LEN};

/// Sessions open at once at most; a new login past it ends the oldest.
pub const MAX_SESSIONS: usize = 1000;

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// The token forms carry back (double submit: the page has it, a
    /// cross-site form does not).
    pub csrf: String,
    expires: Instant,
}

/// The console's users and open sessions.
pub struct Access {
    users: Vec<User>,
    tokens: Vec<Token>,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("unknown user or wrong password")]
    Refused,
    #[error("user {0}: the password hash is not an argon2 PHC string (make one with `sav hash-password`)")]
    BadHash(String),
}

impl Access {
    pub fn new(users: Vec<User>, tokens: Vec<Token>, ttl: Duration) -> Result<Self, AuthError> {
        for user in &users {
            if PasswordHash::new(&user.password_hash).is_err() {
                return Err(AuthError::BadHash(user.name.clone()));
            }
        }
        Ok(Self {
            users,
            tokens,
            ttl,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Whether anyone must sign in (users or tokens are configured).
    pub fn required(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// The script a bearer token names: its name and role.
    pub fn bearer(&self, token: &str) -> Option<(&str, Role)> {
        let digest = digest(token);
        // Every token compared, in constant time each.
        let mut found = None;
        for known in &self.tokens {
            if same_bytes(&known.digest, &digest) {
                found = Some((known.name.as_str(), known.role));
            }
        }
        found
    }

    /// Checks a password (argon2: tens of milliseconds, on the caller's
    /// thread: run it off the runtime); a new session's id when it is right.
    pub fn login(&self, name: &str, password: &str, now: Instant) -> Result<String, AuthError> {
        let Some(user) = self.users.iter().find(|u| u.name == name) else {
            // The same work for an unknown name: no timing tells names.
            let _ = verify(
                self.users.first().map_or("", |u| &u.password_hash),
                password,
            );
            return Err(AuthError::Refused);
        };
        if !verify(&user.password_hash, password) {
            return Err(AuthError::Refused);
        }
        let id = token();
        let session = Session {
            user: user.name.clone(),
            role: user.role,
            csrf: token(),
            expires: now + self.ttl,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// The session `id` names, while it lasts.
    pub fn session(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(id) {
            Some(session) if session.expires > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// An argon2id hash of `password` for the configuration
/// (`sav hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// 32 random bytes, hex.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal strings, in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_with_the_right_password_and_ends_at_its_expiry() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let access = Access::new(
            vec![User {
                name: "ana".into(),
                role: Role::Supervisor,
                password_hash: hash,
            }],
            Vec::new(),
            Duration::from_secs(60),
        )
        .unwrap();
        let t0 = Instant::now();
        assert_eq!(access.login("ana", "wrong", t0), Err(AuthError::Refused));
        assert_eq!(access.login("bob", "s3cret", t0), Err(AuthError::Refused));
        let id = access.login("ana", "s3cret", t0).unwrap();
        let session = access.session(&id, t0).unwrap();
        assert_eq!(
            (session.user.as_str(), session.role),
            ("ana", Role::Supervisor)
        );
        assert_eq!(session.csrf.len(), 64);
        assert!(access.session("nope", t0).is_none());
        assert!(access.session(&id, t0 + Duration::from_secs(61)).is_none());
        let again = access.login("ana", "s3cret", t0).unwrap();
        access.logout(&again);
        assert!(access.session(&again, t0).is_none());
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn a_script_is_known_by_its_token_only() {
        let token = "0123456789abcdef0123456789abcdef";
        let access = Access::new(
            Vec::new(),
            vec![Token {
                name: "crm".into(),
                role: Role::Supervisor,
                digest: digest(token),
            }],
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(access.required());
        assert_eq!(access.bearer(token), Some(("crm", Role::Supervisor)));
        assert_eq!(access.bearer("0123456789abcdef0123456789abcdeF"), None);
        assert_eq!(access.bearer(""), None);
    }

    #[test]
    fn a_hash_that_is_not_argon2_is_refused_at_start() {
        let users = vec![User {
            name: "ana".into(),
            role: Role::Viewer,
            password_hash: "plaintext".into(),
        }];
        assert!(matches!(
            Access::new(users, Vec::new(), Duration::from_secs(60)),
            Err(AuthError::BadHash(name)) if name == "ana"
        ));
    }
}
