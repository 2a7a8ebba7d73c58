//! Client mTLS from PEM files, re-read on every connection and watched for
//! changes (the same mtime approach as the collector's `tls.rs`).

use std::path::PathBuf;
use std::time::SystemTime;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::ShipError;

/// The agent's mTLS files.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The agent's certificate chain (PEM).
    pub cert: PathBuf,
    /// The agent's private key (PEM).
    pub key: PathBuf,
    /// CA certificates trusted for the collector (PEM).
    pub ca: PathBuf,
    /// Name expected in the collector's certificate.
    pub server_name: String,
}

impl ClientTlsFiles {
    /// `<name>.pem`, `<name>.key` and `ca.pem` in `dir` (as made by `cargo xtask certs`).
    pub fn in_dir(dir: &std::path::Path, name: &str, server_name: &str) -> Self {
        ClientTlsFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.pem"),
            server_name: server_name.to_string(),
        }
    }

    fn what(&self, p: &PathBuf) -> &'static str {
        if *p == self.ca {
            "CA certificate (--tls-dir ca.pem)"
        } else if *p == self.key {
            "client private key"
        } else {
            "client certificate"
        }
    }

    /// Modification times of the three files (None where unreadable).
    pub fn mtimes(&self) -> Vec<Option<SystemTime>> {
        [&self.cert, &self.key, &self.ca].iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// Reads the files now into a tonic client TLS config.
    pub fn load(&self) -> Result<ClientTlsConfig, ShipError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| ShipError::TlsFile { what: self.what(p), path: p.clone(), source })
        };
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(self.server_name.clone()))
    }
}

/// The cause of a failed connection in words: the collector's certificate
/// not signed by our CA, not valid for the expected name, our certificate
/// refused by the collector, or the transport error chain.
pub fn explain(e: &tonic::transport::Error, tls: Option<&ClientTlsFiles>) -> String {
    use rustls::{AlertDescription, CertificateError, Error as Tls};
    let mut chain: Vec<String> = Vec::new();
    let mut tls_err: Option<&Tls> = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        chain.push(err.to_string());
        if let Some(t) = err.downcast_ref::<Tls>() {
            tls_err = Some(t);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<Tls>())
        {
            tls_err = Some(t);
        }
        cur = err.source();
    }
    let (ca, name) = match tls {
        Some(t) => (t.ca.display().to_string(), t.server_name.as_str()),
        None => ("(no TLS)".to_string(), ""),
    };
    let why = match tls_err {
        Some(Tls::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            format!("unknown CA: the collector's certificate is not signed by the CA in {ca}")
        }
        Some(Tls::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!("name mismatch: the collector's certificate is not valid for {name:?} (--collector-name)"),
        Some(Tls::InvalidCertificate(c)) => format!("the collector's certificate is not acceptable: {c:?}"),
        Some(Tls::AlertReceived(
            a @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied),
        )) => {
            format!(
                "the collector refused this agent's client certificate ({a:?}): is it signed by the collector's CA?"
            )
        }
        Some(t) => format!("TLS: {t}"),
        None => return chain.join(": "),
    };
    format!("{why} ({})", chain.last().cloned().unwrap_or_default())
}
