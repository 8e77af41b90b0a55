//! SIP over TLS: the certificate and key from `certs/`, checked at start so
//! that a bad file is an error naming it, not a warning in the listener.

use std::path::Path;

use rsipstack::transport::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::sip::config;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source} (make a certificate as certs/README.md says)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error(
        "{path} is a SEC1 EC key (BEGIN EC PRIVATE KEY); convert it to PKCS#8: \
         openssl pkcs8 -topk8 -nocrypt -in {path} -out {path}.pk8"
    )]
    Sec1Key { path: String },
    #[error("{path} holds no PKCS#8 or RSA private key in PEM")]
    NoKey { path: String },
    #[error("certificate {cert} and key {key} do not go together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
}

/// Reads and checks the PEM files; returns rsipstack's listener settings.
pub fn load(settings: &config::TlsConfig) -> Result<TlsConfig, TlsError> {
    let cert_pem = read(&settings.cert)?;
    let key_pem = read(&settings.key)?;
    let cert_path = settings.cert.display().to_string();
    let key_path = settings.key.display().to_string();
    // As strict as the listener will be: one bad block fails it.
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: cert_path.clone(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path });
    }
    if String::from_utf8_lossy(&key_pem).contains("BEGIN EC PRIVATE KEY") {
        return Err(TlsError::Sec1Key { path: key_path });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.clone(),
    })?;
    if matches!(key, PrivateKeyDer::Sec1(_)) {
        return Err(TlsError::Sec1Key { path: key_path });
    }
    // The pair must make a server configuration (key matches certificate).
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError::Mismatch {
            cert: cert_path,
            key: key_path,
            reason: e.to_string(),
        })?;
    Ok(TlsConfig {
        cert: Some(cert_pem),
        key: Some(key_pem),
        ..Default::default()
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}
