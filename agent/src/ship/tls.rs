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

    /// Modification times of the three files (None where unreadable).
    pub fn mtimes(&self) -> Vec<Option<SystemTime>> {
        [&self.cert, &self.key, &self.ca].iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// Reads the files now into a tonic client TLS config.
    pub fn load(&self) -> Result<ClientTlsConfig, ShipError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|source| ShipError::TlsFile { path: p.clone(), source });
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(self.server_name.clone()))
    }
}
