//! mTLS: a client certificate is required, its identity is stored, and
//! certificates are reloaded when the files change: a client of a CA no longer
//! trusted is refused, and unusable new files leave the old ones in force.

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
    client_trusting(addr, dir, ident, &[dir]).await
}

/// A client with `dir`'s certificate `ident`, trusting the CAs of `trusted`.
async fn client_trusting(
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    ident: Option<&str>,
    trusted: &[&std::path::Path],
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().domain_name("collector");
    for d in trusted {
        tls = tls.ca_certificate(Certificate::from_pem(std::fs::read(d.join("ca.pem")).unwrap()));
    }
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
    let mut s = q
        .search(SearchRequest { filter: Some(Filter::default()), follow: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let r = s.next().await.unwrap().unwrap();
    let ident = r.decoded.unwrap().peer_identity;
    assert!(ident.contains("CN=agent") && ident.contains("spiffe://wiretrail/role/agent/agent"), "{ident}");

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

/// Ingests over a new connection; Err when the handshake or the call fails.
async fn try_ingest(ch: Result<tonic::transport::Channel, tonic::transport::Error>, seq: u64) -> Result<(), String> {
    ingest_one(ch.map_err(|e| e.to_string())?, seq).await.map_err(|e| e.to_string())
}

/// Replaces `files` of `to` with those of `from` (write then rename each).
fn install(from: &std::path::Path, to: &std::path::Path, files: &[&str]) {
    for f in files {
        let tmp = to.join(format!("{f}.tmp"));
        std::fs::copy(from.join(f), &tmp).unwrap();
        std::fs::rename(&tmp, to.join(f)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_the_old_ca_is_refused_after_a_ca_change() {
    let logs = common::logs::capture_logs();
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certs::generate(old.path(), &["agent"]).unwrap();
    certs::generate(new.path(), &["agent"]).unwrap();
    let served = tempfile::tempdir().unwrap();
    install(old.path(), served.path(), &["ca.pem", "collector.pem", "collector.key"]);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(served.path(), "collector"));
    let srv = Server::start(cfg).await;
    // Both clients trust both CAs: a refusal can only be the collector's.
    let both = [old.path(), new.path()];
    let old_client = || client_trusting(srv.addr, old.path(), Some("agent"), &both);
    let new_client = || client_trusting(srv.addr, new.path(), Some("agent"), &both);
    try_ingest(old_client().await, 0).await.expect("the old CA's client before the change");
    assert!(try_ingest(new_client().await, 0).await.is_err(), "a client of a CA not yet trusted was served");

    install(new.path(), served.path(), &["ca.pem", "collector.pem", "collector.key"]);
    // The first new connection makes the collector re-read its files.
    try_ingest(new_client().await, 0).await.expect("the new CA's client after the change");
    logs.wait_for_line(&["TLS certificates reloaded", &served.path().display().to_string()]).await;
    let refused = try_ingest(old_client().await, 1).await;
    assert!(refused.is_err(), "a client of the old CA was served after the CA change");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_new_certificates_leave_the_old_ones_in_force() {
    let logs = common::logs::capture_logs();
    let (good, next) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certs::generate(good.path(), &["agent"]).unwrap();
    certs::generate(next.path(), &["agent"]).unwrap();
    let served = tempfile::tempdir().unwrap();
    install(good.path(), served.path(), &["ca.pem", "collector.pem", "collector.key"]);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(served.path(), "collector"));
    let srv = Server::start(cfg).await;
    // This client trusts only the first CA: it connects only while the
    // collector serves the first certificate and accepts that CA's clients.
    let good_client = || client(srv.addr, good.path(), Some("agent"));
    try_ingest(good_client().await, 0).await.expect("before any change");

    let broken: [(&str, &[u8]); 3] = [
        ("collector.pem", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"),
        ("collector.key", b"not a key at all\n"),
        ("ca.pem", b""),
    ];
    let failed = ["TLS reload failed; keeping the previous certificates"];
    let mut seq = 1;
    for (file, text) in broken {
        let saved = std::fs::read(served.path().join(file)).unwrap();
        let before = logs.count(&failed);
        std::fs::write(served.path().join(file), text).unwrap();
        // A new connection makes the collector read the broken file; it says so.
        let attempt = try_ingest(good_client().await, seq).await;
        logs.wait_for_count(&failed, before + 1).await;
        attempt.unwrap_or_else(|e| panic!("broken {file}: the old certificates must stay in force: {e}"));
        try_ingest(good_client().await, seq + 1).await.expect("still in force on the next connection");
        std::fs::write(served.path().join(file), saved).unwrap();
        seq += 2;
    }
    // A key that does not match the certificate is refused too.
    let before = logs.count(&failed);
    install(next.path(), served.path(), &["collector.key"]);
    let attempt = try_ingest(good_client().await, seq).await;
    logs.wait_for_count(&failed, before + 1).await;
    attempt.expect("a mismatched key must leave the old pair in force");

    // Usable new files are then taken up: the first CA's client is refused,
    // the new CA's client served.
    install(next.path(), served.path(), &["ca.pem", "collector.pem", "collector.key"]);
    try_ingest(client(srv.addr, next.path(), Some("agent")).await, 0).await.expect("the new certificates");
    assert!(try_ingest(good_client().await, seq + 1).await.is_err(), "the replaced certificates are still in force");
    srv.stop().await;
}
