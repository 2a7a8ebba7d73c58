//! Client mTLS from PEM files, watched for changes (the same mtime approach as
//! the collector's `tls.rs`): changed files are checked before they are put in
//! force; unusable ones leave the previous certificates in force.

use std::path::PathBuf;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
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

    /// Reads the files now into a tonic client TLS config, after checking
    /// they hold a certificate, the private key that matches it and a CA.
    pub fn load(&self) -> Result<ClientTlsConfig, ShipError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|source| ShipError::TlsFile { what: self.what(p), path: p.clone(), source })
        };
        let (ca, cert, key) = (read(&self.ca)?, read(&self.cert)?, read(&self.key)?);
        self.check(&ca, &cert, &key)?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(self.server_name.clone()))
    }

    /// The PEM contents are usable: certificates that parse, a key that
    /// matches the first one, CA certificates rustls accepts as roots.
    fn check(&self, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<(), ShipError> {
        let bad = |p: &PathBuf, why: String| ShipError::TlsInvalid { path: p.clone(), why };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(bad(&self.cert, "no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(&self.key, e.to_string()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&self.key, e.to_string()))?;
        rustls::sign::CertifiedKey::new(certs, signer)
            .keys_match()
            .map_err(|e| bad(&self.key, format!("does not match the certificate: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            roots.add(c.map_err(|e| bad(&self.ca, e.to_string()))?).map_err(|e| bad(&self.ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad(&self.ca, "no CA certificate".into()));
        }
        Ok(())
    }
}

/// The client TLS configuration in force, re-read when its files change. A
/// change to unusable files leaves the configuration in force (reported once
/// per change); only the first load has nothing to fall back on.
pub struct ReloadingClientTls {
    files: ClientTlsFiles,
    /// The configuration in force and the file times it was read at.
    in_force: Option<(ClientTlsConfig, Vec<Option<SystemTime>>)>,
    /// File times of a change found unusable (not re-read until they change again).
    rejected: Option<Vec<Option<SystemTime>>>,
}

/// What [`ReloadingClientTls::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The files were read for the first time.
    Loaded,
    /// The files have not changed.
    Unchanged,
    /// New files were put in force.
    Reloaded,
    /// The files changed but are unusable; the previous ones stay in force.
    Rejected,
}

impl ReloadingClientTls {
    /// Nothing is read until the first [`refresh`](Self::refresh).
    pub fn new(files: ClientTlsFiles) -> Self {
        ReloadingClientTls { files, in_force: None, rejected: None }
    }

    /// Re-reads the files if they changed since last read. Fails only when no
    /// configuration is in force yet.
    pub fn refresh(&mut self) -> Result<Refresh, ShipError> {
        let now = self.files.mtimes();
        let seen = self.in_force.as_ref().map(|(_, m)| m);
        if seen == Some(&now) || self.rejected.as_ref() == Some(&now) {
            return Ok(Refresh::Unchanged);
        }
        match (self.files.load(), &self.in_force) {
            (Ok(cfg), prev) => {
                let what = if prev.is_some() { Refresh::Reloaded } else { Refresh::Loaded };
                if what == Refresh::Reloaded {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                }
                self.in_force = Some((cfg, now));
                self.rejected = None;
                Ok(what)
            }
            (Err(e), Some(_)) => {
                tracing::error!(error = %e, "TLS files changed but are unusable; keeping the previous certificates");
                self.rejected = Some(now);
                Ok(Refresh::Rejected)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The configuration in force (after a successful [`refresh`](Self::refresh)).
    pub fn config(&self) -> Option<ClientTlsConfig> {
        self.in_force.as_ref().map(|(c, _)| c.clone())
    }

    /// The files.
    pub fn files(&self) -> &ClientTlsFiles {
        &self.files
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
