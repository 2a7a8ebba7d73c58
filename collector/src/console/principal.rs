//! Who the browser is: the one place the console derives an identity.
//!
//! Today a client certificate verified by the TLS handshake; an OIDC login
//! would produce a [`Principal`] here too (with what the services need to
//! authorize it).

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The browser's verified identity, as the API's services see it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The certificate identity (`CN=...; SAN=...`), as in the access log.
    pub identity: String,
    /// The connection's TLS information, handed to the services so they
    /// authorize the certificate exactly as for a gRPC client.
    pub(crate) tls: TlsConnectInfo<TcpConnectInfo>,
}

/// The principal of a console connection; `None` without a client certificate.
pub fn principal(tls: &TlsConnectInfo<TcpConnectInfo>) -> Option<Principal> {
    tls.peer_certs().filter(|c| !c.is_empty())?;
    let mut req = tonic::Request::new(());
    req.extensions_mut().insert(tls.clone());
    Some(Principal { identity: crate::ingest::peer_identity(&req), tls: tls.clone() })
}
