//! mTLS: a client certificate is required, its identity is stored, and
//! certificates are reloaded when the files change.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use common::*;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use wiretrail_collector::tls::TlsFiles;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, SearchRequest};

async fn client(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    ident: Option<&str>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap()))
        .domain_name("collector");
    if let Some(n) = ident {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join(format!("{n}.pem"))).unwrap(),
            std::fs::read(dir.join(format!("{n}.key"))).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await
}

async fn ingest_one(ch: tonic::transport::Channel, seq: u64) -> Result<(), tonic::Status> {
    let mut c = IngestClient::new(ch);
    let mut s = c.ingest(tokio_stream::iter(vec![batch("agent-x", "b", seq, 1)])).await?.into_inner();
    s.next().await.ok_or_else(|| tonic::Status::unknown("no ack"))?.map(|_| ())
}

#[tokio::test]
async fn client_certificate_required_identity_stored_and_reloaded() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::generate(certs_dir.path(), &["agent", "security"]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(certs_dir.path(), "collector"));
    let srv = Server::start(cfg).await;

    ingest_one(client(srv.addr, certs_dir.path(), Some("agent")).await.unwrap(), 0).await.unwrap();
    // No client certificate: the handshake or the first call fails.
    let refused = match client(srv.addr, certs_dir.path(), None).await {
        Err(_) => true,
        Ok(ch) => ingest_one(ch, 1).await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");

    let mut q = QueryClient::new(client(srv.addr, certs_dir.path(), Some("security")).await.unwrap());
    let mut s = q.search(SearchRequest { filter: Some(Filter::default()), follow: false }).await.unwrap().into_inner();
    let r = s.next().await.unwrap().unwrap();
    let ident = r.decoded.unwrap().peer_identity;
    assert!(ident.contains("CN=agent") && ident.contains("spiffe://wiretrail/agent"), "{ident}");

    // New CA + certificates written in place: the server picks them up without restart.
    let new_dir = tempfile::tempdir().unwrap();
    certs::generate(new_dir.path(), &["agent"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    for f in ["ca.pem", "collector.pem", "collector.key"] {
        std::fs::copy(new_dir.path().join(f), certs_dir.path().join(f)).unwrap();
    }
    ingest_one(client(srv.addr, new_dir.path(), Some("agent")).await.unwrap(), 1).await.unwrap();
    srv.stop().await;
}
