//! The API's services called in-process: a gRPC channel over an in-memory
//! pipe, each request tagged with the browser's TLS information, so the
//! services authorize and log the console's reads like any client's.

use axum::http;
use hyper_util::rt::TokioIo;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};

use super::principal::Principal;

/// The Query, Review and Keys services of this collector.
#[derive(Clone)]
pub struct Backend {
    routes: Routes,
}

impl Backend {
    /// Over `routes` (the same service instances the gRPC listener serves).
    pub fn new(routes: Routes) -> Self {
        Backend { routes }
    }

    /// A channel whose calls are made as `who`.
    pub async fn channel(&self, who: &Principal) -> Result<Channel, tonic::Status> {
        let (routes, tls) = (self.routes.clone(), who.tls.clone());
        let connector = tower::service_fn(move |_: http::Uri| {
            let (client, server) = tokio::io::duplex(256 << 10);
            let (routes, tls) = (routes.clone(), tls.clone());
            tokio::spawn(async move {
                let tag = tower::util::MapRequestLayer::new(move |mut r: http::Request<tonic::body::Body>| {
                    r.extensions_mut().insert(tls.clone());
                    r
                });
                let served = Server::builder()
                    .layer(tag)
                    .add_routes(routes)
                    .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server)))
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "console backend connection ended");
                }
            });
            std::future::ready(Ok::<_, std::io::Error>(TokioIo::new(client)))
        });
        Endpoint::from_static("http://console.internal")
            .connect_with_connector(connector)
            .await
            .map_err(|e| tonic::Status::unavailable(format!("console backend: {e}")))
    }
}
