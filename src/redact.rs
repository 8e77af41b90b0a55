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
        let chars: Vec<char> = self.0.chars().collect();
        let keep = chars.len().min(3);
        let tail: String = chars[chars.len() - keep..].iter().collect();
        write!(f, "…{tail}")
    }
}

impl fmt::Debug for Pii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_only_the_tail() {
        assert_eq!(Pii("+33612345678").to_string(), "…678");
        assert_eq!(Pii("ab").to_string(), "…ab");
        assert_eq!(Pii("").to_string(), "…");
    }
}
