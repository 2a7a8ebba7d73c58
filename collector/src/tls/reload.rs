//! What a TLS reload reports: the certificate now served (fingerprint,
//! subject, expiry) or why the new files were refused; the server turns each
//! into a `tls_reload` collector entry ([`entry_detail`]).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The served certificate, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER certificate (hex).
    pub sha256: String,
    /// Subject distinguished name.
    pub subject: String,
    /// End of validity (RFC 3339), empty when the certificate does not parse.
    pub not_after: String,
}

impl CertInfo {
    /// The description of `cert` (the leaf of the chain).
    pub fn of(cert: &CertificateDer<'_>) -> CertInfo {
        let sha256 = hex::encode(Sha256::digest(cert.as_ref()));
        match X509Certificate::from_der(cert.as_ref()) {
            Ok((_, c)) => CertInfo {
                sha256,
                subject: c.subject().to_string(),
                not_after: jiff::Timestamp::from_second(c.validity().not_after.timestamp())
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            },
            Err(_) => CertInfo { sha256, subject: String::new(), not_after: String::new() },
        }
    }
}

/// One reload attempt.
#[derive(Debug, Clone)]
pub struct Event {
    /// The certificate now served, when the reload succeeded.
    pub loaded: Option<CertInfo>,
    /// Why the new files were refused.
    pub error: Option<String>,
    /// The certificate still served after a refused reload.
    pub kept: Option<CertInfo>,
}

/// Called on every reload attempt (from the thread that noticed the change).
pub type Listener = Arc<dyn Fn(Event) + Send + Sync>;

/// The `tls_reload` entry detail of `e`.
pub fn entry_detail(e: &Event) -> serde_json::Value {
    let cert = |c: &CertInfo| serde_json::json!({"sha256": c.sha256, "subject": c.subject, "not_after": c.not_after});
    match (&e.loaded, &e.error) {
        (Some(c), _) => serde_json::json!({"ok": true, "certificate": cert(c)}),
        (None, err) => serde_json::json!({
            "ok": false, "error": err.clone().unwrap_or_default(), "kept": e.kept.as_ref().map(cert),
        }),
    }
}
