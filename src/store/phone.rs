//! Phone numbers to E.164 (`+33612345678`), the form customers are keyed by.
//!
//! Callers arrive as SIP URIs (`sip:+33612345678@pbx;user=phone`,
//! `sip:0612345678@pbx`), `tel:` URIs, or typed by hand in a CSV
//! (`06 12 34 56 78`, `+33 (0)6 12-34-56-78`, `0033612345678`). National
//! numbers (a single leading 0) take the configured country code.

/// Why a number could not be made E.164.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("no digits")]
    Empty,
    #[error("unexpected character {0:?}")]
    BadChar(char),
    #[error("{0} digits: an E.164 number has 8 to 15")]
    Length(usize),
    #[error("a national number needs a country code (store.country_code)")]
    NoCountry,
}

/// The E.164 form of `raw`; `country_code` ("33") completes national numbers.
pub fn normalise(raw: &str, country_code: &str) -> Result<String, PhoneError> {
    let number = raw.trim();
    // A URI: keep its user part.
    let number = number
        .strip_prefix("sips:")
        .or_else(|| number.strip_prefix("sip:"))
        .or_else(|| number.strip_prefix("tel:"))
        .unwrap_or(number);
    let number = number.split(['@', ';']).next().unwrap_or_default();
    let mut plus = false;
    let mut digits = String::with_capacity(16);
    let mut chars = number.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '+' if digits.is_empty() && !plus => plus = true,
            // "+33 (0)6…": the trunk prefix in brackets is not dialled.
            '(' if chars.peek() == Some(&'0') => {
                chars.next();
                if chars.next() != Some(')') {
                    return Err(PhoneError::BadChar('('));
                }
            }
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            other => return Err(PhoneError::BadChar(other)),
        }
        if digits.len() > 20 {
            return Err(PhoneError::Length(digits.len()));
        }
    }
    if digits.is_empty() {
        return Err(PhoneError::Empty);
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        if country_code.is_empty() {
            return Err(PhoneError::NoCountry);
        }
        format!("{country_code}{rest}")
    } else {
        // Already international without its "+" (many trunks send that).
        digits
    };
    if !(8..=15).contains(&international.len()) {
        return Err(PhoneError::Length(international.len()));
    }
    Ok(format!("+{international}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_callers_and_files_use_become_one() {
        for raw in [
            "+33612345678",
            "+33 6 12 34 56 78",
            "06 12 34 56 78",
            "06.12.34.56.78",
            "0033612345678",
            "+33 (0)6 12-34-56-78",
            "33612345678",
            "sip:+33612345678@pbx.example.com;user=phone",
            "sip:0612345678@10.0.0.1:5060",
            "tel:+33-6-12-34-56-78",
        ] {
            assert_eq!(normalise(raw, "33").as_deref(), Ok("+33612345678"), "{raw}");
        }
        assert_eq!(normalise("020 7946 0958", "44").unwrap(), "+442079460958");
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        assert_eq!(normalise("", "33"), Err(PhoneError::Empty));
        assert_eq!(
            normalise("sip:alice@example.com", "33"),
            Err(PhoneError::BadChar('a'))
        );
        assert_eq!(normalise("+33 6 12", "33"), Err(PhoneError::Length(5)));
        assert_eq!(normalise("0612345678", ""), Err(PhoneError::NoCountry));
        assert_eq!(
            normalise("+1234567890123456789012", "33"),
            Err(PhoneError::Length(21))
        );
        assert_eq!(normalise("06+12", "33"), Err(PhoneError::BadChar('+')));
    }
}
