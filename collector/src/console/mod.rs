//! The security team's console: HTML pages served over HTTPS by the collector
//! process itself, next to the gRPC API (`wiretrail serve --console-addr`).
//!
//! - Same server certificate and client-certificate verification as the API
//!   (no client certificate: the TLS handshake is refused).
//! - Every page reads through the API's own services ([`backend`]): an
//!   in-process gRPC channel per request carrying the browser's client
//!   certificate, so each read is authorized by [`crate::authz::Authz`] and
//!   recorded in the access log exactly as the same call from the CLI would be.
//!   A refusal is a 403 page naming the role needed.
//! - Who the browser is comes from one function ([`principal::principal`]),
//!   the place an OIDC login would plug in.
//! - Server-rendered HTML (every value escaped by [`html`]), one stylesheet
//!   and one small script compiled into the binary; nothing from elsewhere.

pub mod access;
pub mod alerts;
pub mod assets;
pub mod backend;
pub mod conversation;
pub mod export;
pub mod fail;
pub mod html;
pub mod identities;
pub mod policy;
pub mod principal;
pub mod record;
pub mod review;
pub mod search;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tonic::transport::server::Connected;

use crate::tls::{ReloadingServerConfig, TlsError, TlsFiles};
pub use backend::Backend;

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The console's address could not be bound.
    #[error("console: binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The console needs the collector's TLS files (it serves HTTPS only).
    #[error("console: --console-addr needs TLS (--tls-dir); the console is never served in plaintext")]
    NoTls,
    /// The TLS files are unusable.
    #[error("console: {0}")]
    Tls(#[source] TlsError),
}

/// State shared by the page handlers.
#[derive(Clone)]
pub struct Console {
    /// The API's services, called in-process.
    pub backend: Backend,
    /// This collector's log: a search result of another log (clustered mode)
    /// is shown by its origin and leaf, not linked to this log's record page.
    pub origin: String,
}

/// The console's routes.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(search::page))
        .route("/search", get(search::page))
        .route("/search/follow", get(search::follow))
        .route("/record/{leaf}", get(record::page))
        .route("/conversation", get(conversation::page))
        .route("/identities", get(identities::page))
        .route("/alerts", get(alerts::page))
        .route("/alerts/follow", get(alerts::follow))
        .route("/policy", get(policy::page).post(policy::what_if))
        .route("/review", get(review::page).post(review::mark))
        .route("/access", get(access::page))
        .route("/export", get(export::download))
        .route("/assets/console.css", get(assets::css))
        .route("/assets/console.js", get(assets::js))
        .fallback(fail::not_found)
        .with_state(console)
}

/// Binds `addr` and serves the console there with the TLS files of the
/// collector, until the returned task is aborted.
pub async fn spawn(
    addr: SocketAddr,
    files: Option<TlsFiles>,
    console: Console,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ConsoleError> {
    let files = files.ok_or(ConsoleError::NoTls)?;
    let tls = Arc::new(ReloadingServerConfig::new(files).map_err(ConsoleError::Tls)?);
    let listener = TcpListener::bind(addr).await.map_err(|source| ConsoleError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ConsoleError::Bind { addr, source })?;
    tracing::info!(addr = %local, "console serving (HTTPS, client certificates)");
    let app = router(console);
    let task = tokio::spawn(async move {
        // The connections, aborted with this task when the collector stops
        // (their handlers hold the services, which hold the commit thread's sender).
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "console: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // The API's configuration (roots, client verification), speaking HTTP/1.1.
            let mut cfg = (*tls.get()).clone();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
            let app = app.clone();
            connections.spawn(async move {
                let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::warn!(%peer, error = %e, "console: TLS handshake refused"),
                    Err(_) => return tracing::warn!(%peer, "console: TLS handshake timed out"),
                };
                let Some(who) = principal::principal(&stream.connect_info()) else {
                    return tracing::warn!(%peer, "console: no client certificate");
                };
                let svc = hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(who)));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "console: connection ended");
                }
            });
        }
    });
    Ok((local, task))
}
