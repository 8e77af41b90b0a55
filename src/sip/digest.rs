//! HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 7616, RFC 8760),
//! computed here because rsipstack's parser refuses forms real registrars
//! send (`algorithm=SHA-256`, `qop="auth,auth-int"`, several challenges).
//!
//! Pure functions: parse the `WWW-Authenticate`/`Proxy-Authenticate` values,
//! pick the first challenge we support (the server lists them in its order of
//! preference, RFC 7616 §3.7), and build the `Authorization` value.

use std::fmt::Write as _;

use md5::Md5;
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    #[error("challenge is not a Digest challenge: {0}")]
    NotDigest(String),
    #[error("Digest challenge without {0}")]
    Missing(&'static str),
    #[error("no supported challenge (algorithms offered: {0})")]
    Unsupported(String),
    #[error("malformed challenge parameters")]
    Malformed,
}

/// Hash algorithm of a challenge (RFC 7616 §6.1, RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(token: &str) -> Option<Self> {
        // RFC 7616 spells SHA-256; some stacks send SHA256. Both are accepted.
        match token.to_ascii_uppercase().as_str() {
            "MD5" => Some(Self::Md5),
            "MD5-SESS" => Some(Self::Md5Sess),
            "SHA-256" | "SHA256" => Some(Self::Sha256),
            "SHA-256-SESS" | "SHA256-SESS" => Some(Self::Sha256Sess),
            _ => None,
        }
    }

    /// The spelling we send back (RFC 7616 §6.1).
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 | Self::Md5Sess => hex(&Md5::digest(data.as_bytes())),
            Self::Sha256 | Self::Sha256Sess => hex(&Sha256::digest(data.as_bytes())),
        }
    }

    fn is_session(self) -> bool {
        matches!(self, Self::Md5Sess | Self::Sha256Sess)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server offers qop=auth (we never use auth-int: no body in REGISTER
    /// is worth it, and "auth" is always offered alongside).
    pub qop_auth: bool,
    /// The server offered qop, but not "auth" (only auth-int).
    pub qop_other_only: bool,
    /// The previous nonce was merely stale: retry without counting a failure.
    pub stale: bool,
}

/// Splits `k=v, k="v, with comma", …` into pairs.
fn auth_params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or(DigestError::Malformed)?;
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or(DigestError::Malformed)?;
            value = out;
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if key.is_empty() {
            return Err(DigestError::Malformed);
        }
        params.push((key, value));
    }
    Ok(params)
}

impl Challenge {
    /// Parses one header value (`Digest realm=…, nonce=…`).
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest(scheme.to_string()));
        }
        let params = auth_params(rest)?;
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let algorithm_text = get("algorithm").unwrap_or_else(|| "MD5".into());
        let algorithm =
            Algorithm::parse(&algorithm_text).ok_or(DigestError::Unsupported(algorithm_text))?;
        let qop = get("qop");
        let qop_auth = qop
            .as_deref()
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
        Ok(Self {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            qop_other_only: qop.is_some() && !qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The first challenge we can answer among several header values, in the
    /// server's order of preference.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, DigestError> {
        let mut offered = Vec::new();
        let mut first_error = None;
        for value in values {
            match Self::parse(value) {
                Ok(challenge) if challenge.algorithm.is_session() && !challenge.qop_auth => {
                    // -sess needs the cnonce sent, which only qop allows.
                    offered.push(format!("{} without qop", challenge.algorithm.name()));
                }
                Ok(challenge) if !challenge.qop_other_only => return Ok(challenge),
                Ok(challenge) => offered.push(format!(
                    "{} (qop auth-int only)",
                    challenge.algorithm.name()
                )),
                Err(DigestError::Unsupported(name)) => offered.push(name),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if offered.is_empty() => Err(e),
            _ => Err(DigestError::Unsupported(offered.join(", "))),
        }
    }
}

/// What we answer with.
#[derive(Debug, Clone)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// Builds the `Authorization` / `Proxy-Authorization` value for `method` on
/// `uri`. `nc` counts the uses of this nonce (starting at 1); `cnonce` is a
/// fresh random string.
pub fn authorization(
    challenge: &Challenge,
    credentials: &Credentials<'_>,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let alg = challenge.algorithm;
    let mut ha1 = alg.hash(&format!(
        "{}:{}:{}",
        credentials.username, challenge.realm, credentials.password
    ));
    if alg.is_session() {
        ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", challenge.nonce));
    }
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = if challenge.qop_auth {
        alg.hash(&format!(
            "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
            challenge.nonce
        ))
    } else {
        alg.hash(&format!("{ha1}:{}:{ha2}", challenge.nonce))
    };
    let mut value = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
        quote(credentials.username),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        alg.name()
    );
    if challenge.qop_auth {
        let _ = write!(value, ", qop=auth, nc={nc}, cnonce=\"{}\"", quote(cnonce));
    }
    if let Some(opaque) = &challenge.opaque {
        let _ = write!(value, ", opaque=\"{}\"", quote(opaque));
    }
    value
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(header: &str) -> &str {
        let start = header.find("response=\"").unwrap() + 10;
        &header[start..start + header[start..].find('"').unwrap()]
    }

    /// RFC 7616 §3.9.1, MD5 and SHA-256 with qop=auth.
    #[test]
    fn rfc7616_examples() {
        let creds = Credentials {
            username: "Mufasa",
            password: "Circle of Life",
        };
        let base = "realm=\"http-auth@example.org\", qop=\"auth, auth-int\", nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let md5 = Challenge::parse(&format!("Digest {base}, algorithm=MD5")).unwrap();
        assert!(md5.qop_auth);
        let header = authorization(&md5, &creds, "GET", "/dir/index.html", 1, cnonce);
        assert_eq!(response_of(&header), "8ca523f5e9506fed4657c9700eebdbec");
        assert!(header.contains("qop=auth, nc=00000001"), "{header}");
        assert!(header.contains("opaque=\"FQhe"), "{header}");

        let sha = Challenge::parse(&format!("Digest {base}, algorithm=SHA-256")).unwrap();
        assert_eq!(sha.algorithm, Algorithm::Sha256);
        let header = authorization(&sha, &creds, "GET", "/dir/index.html", 1, cnonce);
        assert_eq!(
            response_of(&header),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(header.contains("algorithm=SHA-256"), "{header}");
    }

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_example() {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let creds = Credentials {
            username: "Mufasa",
            password: "Circle Of Life",
        };
        let header = authorization(&c, &creds, "GET", "/dir/index.html", 1, "0a4f113b");
        assert_eq!(response_of(&header), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn without_qop_uses_the_rfc2069_form() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        let creds = Credentials {
            username: "u",
            password: "p",
        };
        let header = authorization(&c, &creds, "REGISTER", "sip:example.com", 1, "c");
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:example.com");
        assert_eq!(
            response_of(&header),
            Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}"))
        );
        assert!(!header.contains("qop"), "{header}");
    }

    #[test]
    fn first_supported_challenge_wins() {
        let c = Challenge::choose([
            "Digest realm=\"r\", nonce=\"a\", algorithm=SHA-512-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"b\", algorithm=SHA-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"c\", algorithm=MD5, qop=\"auth\"",
        ])
        .unwrap();
        assert_eq!((c.algorithm, c.nonce.as_str()), (Algorithm::Sha256, "b"));
        let err = Challenge::choose(["Digest realm=\"r\", nonce=\"a\", algorithm=SHA-512-256"])
            .unwrap_err();
        assert_eq!(err, DigestError::Unsupported("SHA-512-256".into()));
        let err =
            Challenge::choose(["Digest realm=\"r\", nonce=\"a\", qop=\"auth-int\""]).unwrap_err();
        assert!(matches!(err, DigestError::Unsupported(_)));
    }

    #[test]
    fn parses_stale_sess_unquoted_and_escaped_values() {
        let c = Challenge::parse(
            "Digest realm=\"a \\\"quoted\\\", realm\",nonce=\"n1\",algorithm=md5-sess,qop=auth,stale=TRUE",
        )
        .unwrap();
        assert_eq!(c.realm, "a \"quoted\", realm");
        assert_eq!(c.algorithm, Algorithm::Md5Sess);
        assert!(c.qop_auth && c.stale);
        let creds = Credentials {
            username: "u",
            password: "p",
        };
        let header = authorization(&c, &creds, "REGISTER", "sip:x", 2, "cn");
        assert!(
            header.contains("realm=\"a \\\"quoted\\\", realm\""),
            "{header}"
        );
        assert!(header.contains("nc=00000002"), "{header}");
    }

    #[test]
    fn malformed_challenges_are_errors() {
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest(_))
        ));
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"unterminated"),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            Challenge::parse("Digest garbage"),
            Err(DigestError::Malformed)
        );
    }
}
