//! Helpers shared by the collector's integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod clickhouse;
pub mod logs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::oneshot;
use wiretrail_collector::ServeConfig;
use wiretrail_proto::v1::{Batch, Endpoint, Record, RecordKind};

/// A test record with a recognizable payload.
pub fn record(i: u64, t: i64) -> Record {
    Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: t,
        conn_id: i % 7,
        remote: Some(Endpoint { address: format!("10.0.0.{}", i % 4), port: 5432 }),
        app_protocol: if i.is_multiple_of(2) { "postgres".into() } else { "http1".into() },
        identity: HashMap::from([("pod".to_string(), format!("pod-{}", i % 3))]),
        payload: format!("SELECT {i} FROM accounts").into_bytes(),
        host: "node-a".into(),
        ..Default::default()
    }
}

/// A test record whose payload (an HTTP request of ~500 bytes) compresses,
/// so that its leaf is stored as a compressed frame (the collector's default).
pub fn compressible_record(i: u64, t: i64) -> Record {
    let payload = format!(
        "POST /api/v1/orders/{i} HTTP/1.1\r\nHost: orders.shop.svc\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nX-Request-Id: req-{i:08}\r\n\r\n{}",
        format!("{{\"order\":{i},\"item\":\"widget\",\"qty\":1}}").repeat(8)
    );
    Record { payload: payload.into_bytes(), ..record(i, t) }
}

/// Batch `seq` of `n` records with compressible payloads ([`compressible_record`]).
pub fn compressible_batch(agent: &str, boot: &str, seq: u64, n: u64) -> Batch {
    let mut b = batch(agent, boot, seq, n);
    for (j, r) in b.records.iter_mut().enumerate() {
        let i = seq * n + j as u64;
        *r = compressible_record(i, r.capture_time_ns);
    }
    b
}

/// Batch `seq` of `n` records.
pub fn batch(agent: &str, boot: &str, seq: u64, n: u64) -> Batch {
    Batch {
        agent_id: agent.into(),
        boot_id: boot.into(),
        seq,
        records: (0..n).map(|j| record(seq * n + j, 1_000_000 + (seq * n + j) as i64)).collect(),
        ..Default::default()
    }
}

/// An in-process collector.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wiretrail_collector::server::ServeError>>>,
}

impl Server {
    pub async fn start(cfg: ServeConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
            let _ = rx.await;
        }));
        Server { addr, stop: Some(tx), task: Some(task) }
    }

    /// Whether the server task has ended (e.g. failed at start).
    pub fn finished(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.is_finished())
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn plain_config(dir: &Path) -> ServeConfig {
    ServeConfig::new(dir.to_path_buf())
}

/// A channel to a TLS collector as client `name` (`NAME.pem`/`NAME.key`, `ca.pem` in `dir`).
pub async fn mtls(addr: SocketAddr, dir: &Path, name: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let r = |f: String| std::fs::read(dir.join(f)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(r("ca.pem".into())))
        .identity(Identity::from_pem(r(format!("{name}.pem")), r(format!("{name}.key"))))
        .domain_name("collector");
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap()
}

pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// Sends `batches` on one ingest stream; returns the acks and the first error.
pub async fn send(addr: SocketAddr, batches: Vec<Batch>) -> Vec<Result<wiretrail_proto::v1::Ack, tonic::Status>> {
    use tokio_stream::StreamExt;
    let mut c = wiretrail_proto::v1::ingest_client::IngestClient::new(channel(addr).await)
        .max_encoding_message_size(usize::MAX);
    let mut out = Vec::new();
    match c.ingest(tokio_stream::iter(batches)).await {
        Ok(resp) => {
            let mut s = resp.into_inner();
            while let Some(a) = s.next().await {
                let stop = a.is_err();
                out.push(a);
                if stop {
                    break;
                }
            }
        }
        Err(e) => out.push(Err(e)),
    }
    out
}

/// Every leaf matching `f` (up to a million).
pub async fn search(addr: SocketAddr, f: wiretrail_proto::v1::Filter) -> Vec<wiretrail_proto::v1::SearchResult> {
    use tokio_stream::StreamExt;
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(channel(addr).await);
    let f = wiretrail_proto::v1::Filter { limit: 1_000_000, ..f };
    let mut s = q
        .search(wiretrail_proto::v1::SearchRequest { filter: Some(f), follow: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut v = Vec::new();
    while let Some(r) = s.next().await {
        v.push(r.unwrap());
    }
    v
}

/// Every leaf matching `f` in every collector's log (clustered mode's `all_logs`).
pub async fn search_all_logs(
    addr: SocketAddr,
    f: wiretrail_proto::v1::Filter,
) -> Result<Vec<wiretrail_proto::v1::SearchResult>, tonic::Status> {
    use tokio_stream::StreamExt;
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(channel(addr).await);
    let f = wiretrail_proto::v1::Filter { limit: 1_000_000, ..f };
    let req = wiretrail_proto::v1::SearchRequest { filter: Some(f), follow: false, all_logs: true };
    let mut s = q.search(req).await?.into_inner();
    let mut v = Vec::new();
    while let Some(r) = s.next().await {
        v.push(r?);
    }
    Ok(v)
}

/// All alerts stored so far (after the index caught up with the log).
pub async fn alerts(addr: SocketAddr) -> Vec<wiretrail_proto::v1::Alert> {
    use tokio_stream::StreamExt;
    let mut q = wiretrail_proto::v1::query_client::QueryClient::new(channel(addr).await);
    let req = wiretrail_proto::v1::AlertsRequest { since_id: 0, kind: String::new(), follow: false };
    let mut s = q.alerts(req).await.unwrap().into_inner();
    let mut v = Vec::new();
    while let Some(a) = s.next().await {
        v.push(a.unwrap());
    }
    v
}

/// Waits (polling, at most 20 s) until `f` returns `Some`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let t = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A tmpfs of `mb` MiB mounted on a fresh directory (root only); unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(mb: u64) -> Tmpfs {
        assert!(unsafe { libc::geteuid() } == 0, "this test mounts a tmpfs: run it as root");
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a ballast file (until ENOSPC) and returns its path.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let p = self.path().join("ballast");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0xa5u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// The address a `wiretrail serve` child prints first on its stdout
/// ("listening on ADDR"; the child was spawned with stdout piped).
pub fn listening(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped")).read_line(&mut line).unwrap();
    line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).parse().unwrap()
}
