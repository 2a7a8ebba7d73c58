//! mTLS with certificates read from files and reloaded when they change
//! (checked at each new connection and every few seconds) or on SIGHUP. A
//! reload that fails keeps the previous certificates; each reload, good or
//! failed, is reported to the [`ReloadingServerConfig`]'s listener (the
//! server appends a `tls_reload` entry, see [`reload`]).

pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};

/// TLS errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The three files of one side's mTLS setup.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM).
    pub cert: PathBuf,
    /// This side's private key (PEM).
    pub key: PathBuf,
    /// CA certificates trusted for the other side (PEM).
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Standard file names in a directory made by `cargo xtask certs` (`<name>.pem`, `<name>.key`, `ca.pem`).
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        TlsFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")), ca: dir.join("ca.pem") }
    }

    fn mtimes(&self) -> Vec<Option<SystemTime>> {
        [&self.cert, &self.key, &self.ca].iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Loads certificates, key and CA roots.
pub fn load(
    files: &TlsFiles,
) -> Result<
    (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>, RootCertStore),
    TlsError,
> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(&files.cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{}: no certificate", files.cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut read(&files.key)?.as_slice())
        .map_err(|e| TlsError::Pem(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| TlsError::Pem(format!("{}: no private key", files.key.display())))?;
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read(&files.ca)?.as_slice()) {
        let c = c.map_err(|e| TlsError::Pem(format!("{}: {e}", files.ca.display())))?;
        roots.add(c).map_err(|e| TlsError::Pem(format!("{}: {e}", files.ca.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem(format!("{}: no CA certificate", files.ca.display())));
    }
    Ok((certs, key, roots))
}

/// The process's rustls crypto provider (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, reload::CertInfo), TlsError> {
    let (certs, key, roots) = load(files)?;
    let info = reload::CertInfo::of(&certs[0]);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(cfg), info))
}

/// A server TLS configuration that is rebuilt when its files change.
pub struct ReloadingServerConfig {
    /// The files.
    files: TlsFiles,
    /// Current config, the file times it was built from and its certificate.
    current: Mutex<(Arc<ServerConfig>, Vec<Option<SystemTime>>, reload::CertInfo)>,
    /// Told of every reload attempt.
    listener: Option<reload::Listener>,
}

impl ReloadingServerConfig {
    /// Loads the files now (an error here is fatal at start).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let m = files.mtimes();
        let (cfg, info) = server_config(&files)?;
        Ok(ReloadingServerConfig { files, current: Mutex::new((cfg, m, info)), listener: None })
    }

    /// Tells `listener` of every later reload attempt.
    pub fn with_listener(mut self, listener: reload::Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The config to use for a new connection, reloading if a file changed.
    pub fn get(&self) -> Arc<ServerConfig> {
        self.check(false)
    }

    /// Reloads when a file changed (or always, with `force`: SIGHUP) and
    /// returns the config in force. A reload that fails keeps the previous
    /// config; either outcome is logged and reported to the listener.
    pub fn check(&self, force: bool) -> Arc<ServerConfig> {
        let mut cur = self.current.lock().expect("tls lock");
        let m = self.files.mtimes();
        if force || m != cur.1 {
            let event = match server_config(&self.files) {
                Ok((cfg, info)) => {
                    tracing::info!(cert = %self.files.cert.display(), fingerprint = %info.sha256, subject = %info.subject,
                        not_after = %info.not_after, "TLS certificates reloaded");
                    *cur = (cfg, m, info.clone());
                    reload::Event { loaded: Some(info), error: None, kept: None }
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates");
                    cur.1 = m;
                    reload::Event { loaded: None, error: Some(e.to_string()), kept: Some(cur.2.clone()) }
                }
            };
            if let Some(l) = &self.listener {
                l(event);
            }
        }
        cur.0.clone()
    }
}
