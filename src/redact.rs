//! Redaction of caller identities in logs: phone numbers and addresses go
//! through [`Pii`], which shows only a short tail unless the operator asked
//! for them in full (`[log] show_caller_numbers`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`Pii`] shows values in full (process-wide, like the logger).
static SHOW_IN_FULL: AtomicBool = AtomicBool::new(false);

/// Set once at start from the configuration.
pub fn show_in_full(show: bool) {
    SHOW_IN_FULL.store(show, Ordering::Relaxed);
}

/// Wraps something personal (a caller number, a SIP URI) for logging.
pub struct Pii<'a>(pub &'a str);

impl fmt::Display for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW_IN_FULL.load(Ordering::Relaxed) {
            return f.write_str(self.0);
        }
        f.write_str(&tail(self.0, 3))
    }
}

/// `…` and the last `keep` characters of `value` (a number as a viewer or
/// a log sees it).
pub fn tail(value: &str, keep: usize) -> String {
    let count = value.chars().count();
    let tail: String = value.chars().skip(count.saturating_sub(keep)).collect();
    format!("…{tail}")
}

impl fmt::Debug for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text from outside (a provider's error body) with anything that looks
/// like a secret taken out: the value after `Bearer`, or after `key`,
/// `token`, `secret`, `password` and a `:` or `=`, and any run of 20 or more token characters that
/// mixes letters and digits (an API key, a JWT).
pub fn secrets(text: &str) -> String {
    const NAMES: [&str; 6] = [
        "bearer",
        "key",
        "token",
        "secret",
        "password",
        "authorization",
    ];
    let mut out = String::with_capacity(text.len());
    let mut hide_next: Option<bool> = None;
    let is_token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/');
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest.find(is_token).unwrap_or(rest.len());
        let (between, from) = rest.split_at(start);
        out.push_str(between);
        let end = from.find(|c: char| !is_token(c)).unwrap_or(from.len());
        let (word, tail) = from.split_at(end);
        rest = tail;
        if word.is_empty() {
            continue;
        }
        let lower = word.to_ascii_lowercase();
        let mixed = word.chars().any(|c| c.is_ascii_alphabetic())
            && word.chars().any(|c| c.is_ascii_digit());
        // A name's value: after `:` or `=` (`key: …`, `password=…`), or
        // after `Bearer`.
        let value = match hide_next {
            Some(bearer) => bearer || between.contains([':', '=']),
            None => false,
        };
        if value && lower == "bearer" {
            // `Authorization: Bearer …`: the token is what follows.
            out.push_str(word);
            hide_next = Some(true);
        } else if value || (word.len() >= 20 && mixed) {
            out.push_str("<redacted>");
            hide_next = None;
        } else {
            out.push_str(word);
            hide_next = NAMES
                .iter()
                .any(|name| lower.ends_with(name))
                .then_some(lower == "bearer");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_provider_s_words_are_taken_out() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-AbCd1234EfGh5678IjKl. You can find your API key at https://example.com.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let logged = secrets(body);
        assert!(!logged.contains("AbCd1234"), "{logged}");
        assert!(logged.contains("Incorrect API key provided"), "{logged}");
        assert!(logged.contains("invalid_api_key"), "{logged}");
        let header = "Authorization: Bearer abc.def, xi-api-key: 12345, password=hunter2";
        let logged = secrets(header);
        for secret in ["abc.def", "12345", "hunter2"] {
            assert!(!logged.contains(secret), "{logged}");
        }
        assert_eq!(
            secrets("rate limited, try later"),
            "rate limited, try later"
        );
    }

    #[test]
    fn shows_only_the_tail() {
        assert_eq!(Pii("+33612345678").to_string(), "…678");
        assert_eq!(Pii("ab").to_string(), "…ab");
        assert_eq!(Pii("").to_string(), "…");
    }
}
