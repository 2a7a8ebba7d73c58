//! Shipper + spool against an in-process collector: outages, restarts, a full spool.

#[path = "../../xtask/src/certs.rs"]
mod certs;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use wiretrail_agent::ship::{ClientTlsFiles, ShipConfig, ShipHandle};
use wiretrail_agent::spool::SpoolConfig;
use wiretrail_collector::ServeConfig;
use wiretrail_collector::tls::TlsFiles;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, GapReason, Record, RecordKind, SearchRequest, StoredLeaf};

/// An in-process collector on a fixed address.
struct Collector {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), wiretrail_collector::server::ServeError>>,
}

impl Collector {
    /// Starts listening on the reserved address.
    async fn start(addr: Reserved, cfg: ServeConfig) -> Collector {
        let listener = addr.0.listen(64).unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
            let _ = rx.await;
        }));
        Collector { stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// A local address held for the collector: bound but not listening, so
/// connections to it are refused (nobody listens yet) and no other socket can
/// take the port before the collector listens on it.
struct Reserved(tokio::net::TcpSocket);

fn free_addr() -> (SocketAddr, Reserved) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (s.local_addr().unwrap(), Reserved(s))
}

fn record(i: u64, payload: usize) -> Record {
    let mut p = format!("rec-{i:08} ").into_bytes();
    p.resize(payload.max(p.len()), b'.');
    Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: 1_000_000_000 + i as i64,
        host: "node-t".into(),
        payload: p,
        ..Default::default()
    }
}

fn ship_config(addr: SocketAddr, spool: &Path, tls: Option<&Path>) -> ShipConfig {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut c = ShipConfig::new(
        format!("{scheme}://{addr}"),
        "agent-t".into(),
        "node-t".into(),
        SpoolConfig::new(spool.to_path_buf()),
    );
    c.tls = tls.map(|d| ClientTlsFiles::in_dir(d, "agent", "collector"));
    c.max_batch_records = 10;
    c.max_batch_delay = Duration::from_millis(20);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c.drain_timeout = Duration::from_millis(500);
    c
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_leaves(addr: SocketAddr, tls: Option<&Path>) -> Vec<StoredLeaf> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let ch = match tls {
        None => Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        Some(d) => {
            let r = |n: &str| std::fs::read(d.join(n)).unwrap();
            Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(r("ca.pem")))
                        .identity(Identity::from_pem(r("security.pem"), r("security.key")))
                        .domain_name("collector"),
                )
                .unwrap()
        }
    }
    .connect()
    .await
    .unwrap();
    let mut s = QueryClient::new(ch)
        .search(SearchRequest {
            filter: Some(Filter { limit: 1_000_000, ..Default::default() }),
            follow: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r.unwrap().decoded.unwrap());
    }
    out
}

/// Data records' payload prefixes, asserting each appears once.
fn delivered_once(leaves: &[StoredLeaf]) -> HashSet<String> {
    let mut seen = HashSet::new();
    for l in leaves {
        let r = l.record.as_ref().unwrap();
        if r.kind == RecordKind::DataChunk as i32 {
            let key = String::from_utf8_lossy(&r.payload[..12]).into_owned();
            assert!(seen.insert(key.clone()), "{key} stored twice");
        }
    }
    seen
}

fn expected(range: std::ops::Range<u64>) -> HashSet<String> {
    range.map(|i| format!("rec-{i:08}")).collect()
}

async fn send(h: &ShipHandle, range: std::ops::Range<u64>, payload: usize) {
    for i in range {
        h.records.send(record(i, payload)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_then_all_delivered_once_over_mtls() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::generate(certs_dir.path(), &["agent", "security"]).unwrap();
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    let shutdown = CancellationToken::new();
    let h = ShipHandle::spawn(ship_config(addr, spool.path(), Some(certs_dir.path())), shutdown.clone()).await.unwrap();
    send(&h, 0..500, 100).await;
    wait_for("records spooled while the collector is down", || {
        let s = h.stats.get();
        s.records_spooled == 500 && s.send_errors >= 2
    })
    .await;
    assert_eq!(h.stats.get().batches_acked, 0);

    let mut cfg = ServeConfig::new(data.path().to_path_buf());
    cfg.tls = Some(TlsFiles::in_dir(certs_dir.path(), "collector"));
    let col = Collector::start(reserved, cfg).await;
    wait_for("spool drained", || h.stats.get().batches_acked == 50).await;
    shutdown.cancel();
    h.task.await.unwrap().unwrap();
    let leaves = all_leaves(addr, Some(certs_dir.path())).await;
    assert_eq!(leaves.len(), 500);
    assert_eq!(delivered_once(&leaves), expected(0..500));
    assert!(leaves.iter().all(|l| l.peer_identity.contains("CN=agent")));
    col.stop().await;
    let s = h.stats.get();
    assert_eq!((s.records_dropped, s.batches_duplicate), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarts_resend_unacked_batches_and_collector_dedups() {
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();

    // Boot 1: collector down; 300 records spooled, then the agent stops.
    let stop1 = CancellationToken::new();
    let h1 = ShipHandle::spawn(ship_config(addr, spool.path(), None), stop1.clone()).await.unwrap();
    send(&h1, 0..300, 64).await;
    stop1.cancel();
    h1.task.await.unwrap().unwrap();
    assert_eq!(h1.stats.get().records_spooled, 300);
    let snapshot = tempfile::tempdir().unwrap();
    copy_tree(spool.path(), snapshot.path());

    // Boot 2: collector up; boot 1's batches go first with their original ids.
    let col = Collector::start(reserved, ServeConfig::new(data.path().to_path_buf())).await;
    let stop2 = CancellationToken::new();
    let h2 = ShipHandle::spawn(ship_config(addr, spool.path(), None), stop2.clone()).await.unwrap();
    send(&h2, 300..500, 64).await;
    wait_for("both boots delivered", || h2.stats.get().batches_acked == 50).await;
    stop2.cancel();
    h2.task.await.unwrap().unwrap();

    // Boot 3: as if boot 2 crashed before unlinking boot 1's acked batches.
    copy_tree(snapshot.path(), spool.path());
    let stop3 = CancellationToken::new();
    let h3 = ShipHandle::spawn(ship_config(addr, spool.path(), None), stop3.clone()).await.unwrap();
    wait_for("re-sent batches acked", || h3.stats.get().batches_acked == 30).await;
    assert_eq!(h3.stats.get().batches_duplicate, 30);
    stop3.cancel();
    h3.task.await.unwrap().unwrap();

    let leaves = all_leaves(addr, None).await;
    assert_eq!(leaves.len(), 500);
    assert_eq!(delivered_once(&leaves), expected(0..500));
    let boots: HashSet<_> = leaves.iter().map(|l| l.boot_id.clone()).collect();
    assert_eq!(boots, HashSet::from([h1.boot_id, h2.boot_id]));
    col.stop().await;
}

fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_turns_newest_records_into_one_gap_record() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    let mut cfg = ship_config(addr, spool.path(), None);
    cfg.spool.max_bytes = 20_000; // about three batches of ten 512-byte records
    let shutdown = CancellationToken::new();
    let h = ShipHandle::spawn(cfg, shutdown.clone()).await.unwrap();
    send(&h, 0..200, 512).await;
    wait_for("all records handled", || {
        let s = h.stats.get();
        s.records_spooled + s.records_dropped == 200
    })
    .await;
    let dropped = h.stats.get().records_dropped;
    assert!(dropped >= 150, "only {dropped} dropped with a 20 kB spool");
    assert_eq!(h.stats.get().gap_records, 0, "gap pending until there is room");

    let col = Collector::start(reserved, ServeConfig::new(data.path().to_path_buf())).await;
    wait_for("gap record spooled", || h.stats.get().gap_records == 1).await;
    send(&h, 200..230, 512).await;
    wait_for("everything acked", || {
        let s = h.stats.get();
        s.records_spooled == 200 - dropped + 30 && s.batches_acked == s.batches_spooled
    })
    .await;
    shutdown.cancel();
    h.task.await.unwrap().unwrap();

    let leaves = all_leaves(addr, None).await;
    let gaps: Vec<_> = leaves.iter().filter_map(|l| l.record.as_ref().unwrap().gap.clone()).collect();
    assert_eq!(gaps.len(), 1, "exactly one gap record");
    let g = &gaps[0];
    assert_eq!(g.reason, GapReason::SpoolFull as i32);
    assert_eq!(g.len, dropped);
    assert!(g.detail.contains("spool_full"), "{}", g.detail);
    let kept = delivered_once(&leaves);
    assert_eq!(kept.len() as u64 + g.len, 230);
    // The oldest records were kept; the newest before the collector came back were not.
    let first_lost = 200 - dropped;
    assert_eq!(g.pos, first_lost);
    assert_eq!(g.first_time_ns, record(first_lost, 0).capture_time_ns);
    assert_eq!(g.last_time_ns, record(199, 0).capture_time_ns);
    assert_eq!(kept, expected(0..first_lost).union(&expected(200..230)).cloned().collect());
    let parsed: serde_json::Value = serde_json::from_str(
        &leaves.iter().find(|l| l.record.as_ref().unwrap().gap.is_some()).unwrap().record.as_ref().unwrap().parsed_json,
    )
    .unwrap();
    assert_eq!(parsed["reason"], "spool_full");
    assert_eq!(parsed["records"], dropped);
    assert!(parsed["bytes"].as_u64().unwrap() >= dropped * 512);
    col.stop().await;
}

fn batch_file(spool: &Path, boot_id: &str, seq: u64) -> std::path::PathBuf {
    let boot_dir = std::fs::read_dir(spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().ends_with(boot_id))
        .unwrap();
    boot_dir.join(format!("{seq:020}.wtb"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_holes_become_gap_records_and_stray_files_are_left_alone() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    // Boot 1, collector down: batches 0..10 of ten records each stay spooled.
    let stop1 = CancellationToken::new();
    let h1 = ShipHandle::spawn(ship_config(addr, spool.path(), None), stop1.clone()).await.unwrap();
    send(&h1, 0..100, 64).await;
    wait_for("boot 1 spooled", || h1.stats.get().batches_spooled == 10).await;
    stop1.cancel();
    h1.task.await.unwrap().unwrap();
    // Batches 3 and 4 deleted; batch 6 quarantined on an earlier start (its
    // replacement never written); stray files next to the batches.
    std::fs::remove_file(batch_file(spool.path(), &h1.boot_id, 3)).unwrap();
    std::fs::remove_file(batch_file(spool.path(), &h1.boot_id, 4)).unwrap();
    let six = batch_file(spool.path(), &h1.boot_id, 6);
    std::fs::rename(&six, six.with_extension("corrupt")).unwrap();
    let stray_top = spool.path().join("README.txt");
    std::fs::write(&stray_top, "notes").unwrap();
    let stray_in = six.with_file_name("copy-of-batch.bak");
    std::fs::write(&stray_in, "x").unwrap();

    // Boot 2 starts despite the stray files and ships everything else.
    let col = Collector::start(reserved, ServeConfig::new(data.path().to_path_buf())).await;
    let stop2 = CancellationToken::new();
    let h2 = ShipHandle::spawn(ship_config(addr, spool.path(), None), stop2.clone()).await.unwrap();
    send(&h2, 100..150, 64).await;
    // 7 spooled batches of boot 1 + 2 gap batches + 5 of boot 2.
    wait_for("all delivered", || h2.stats.get().batches_acked == 14).await;
    assert_eq!(h2.stats.get().batches_lost, 3);
    stop2.cancel();
    h2.task.await.unwrap().unwrap();
    let leaves = all_leaves(addr, None).await;
    let lost: std::collections::HashSet<u64> = (30..50).chain(60..70).collect();
    let want: HashSet<String> = (0..150).filter(|i| !lost.contains(i)).map(|i| format!("rec-{i:08}")).collect();
    assert_eq!(delivered_once(&leaves), want);
    let mut gaps: Vec<_> = leaves
        .iter()
        .filter(|l| l.record.as_ref().unwrap().gap.as_ref().is_some_and(|g| g.reason == GapReason::SpoolLost as i32))
        .map(|l| (l.boot_id.clone(), l.seq, l.record.clone().unwrap().gap.unwrap()))
        .collect();
    gaps.sort_by_key(|g| g.1);
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert_eq!((gaps[0].0.as_str(), gaps[0].1, gaps[0].2.pos, gaps[0].2.len), (h1.boot_id.as_str(), 3, 3, 2));
    assert!(gaps[0].2.detail.contains("deleted"), "{}", gaps[0].2.detail);
    assert_eq!((gaps[1].1, gaps[1].2.pos, gaps[1].2.len), (6, 6, 1));
    assert!(gaps[1].2.detail.contains("quarantined"), "{}", gaps[1].2.detail);
    assert!(stray_top.exists() && stray_in.exists(), "stray files must be left alone");
    col.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_refused_as_too_large_becomes_a_gap_record() {
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    let col = Collector::start(reserved, ServeConfig::new(data.path().to_path_buf())).await;
    let mut cfg = ship_config(addr, spool.path(), None);
    cfg.max_record_bytes = 30 << 20; // let it reach the collector, which refuses it
    let shutdown = CancellationToken::new();
    let h = ShipHandle::spawn(cfg, shutdown.clone()).await.unwrap();
    send(&h, 0..5, 64).await;
    h.records.send(record(5, 17 << 20)).await.unwrap();
    send(&h, 6..20, 64).await;
    wait_for("all acked", || {
        let s = h.stats.get();
        s.batches_spooled > 0 && s.batches_acked == s.batches_spooled && s.records_in == 20
    })
    .await;
    assert_eq!(h.stats.get().records_too_large, 1);
    shutdown.cancel();
    h.task.await.unwrap().unwrap();
    let leaves = all_leaves(addr, None).await;
    let want: HashSet<String> = (0..20).filter(|i| *i != 5).map(|i| format!("rec-{i:08}")).collect();
    assert_eq!(delivered_once(&leaves), want);
    let g: Vec<_> = leaves.iter().filter_map(|l| l.record.as_ref().unwrap().gap.clone()).collect();
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].reason, g[0].len), (GapReason::TooLarge as i32, 17 << 20));
    assert_eq!(g[0].first_time_ns, record(5, 0).capture_time_ns);
    col.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_name_their_cause() {
    use wiretrail_agent::ship::explain_connect_error;
    let (good, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certs::generate(good.path(), &["agent"]).unwrap();
    certs::generate(other.path(), &["agent"]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let (addr, reserved) = free_addr();
    let mut cfg = ServeConfig::new(data.path().to_path_buf());
    cfg.tls = Some(TlsFiles::in_dir(good.path(), "collector"));
    let col = Collector::start(reserved, cfg).await;
    let attempt = |files: ClientTlsFiles| async move {
        let ep = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(files.load().unwrap())
            .unwrap();
        let e = ep.connect().await.expect_err("connected");
        explain_connect_error(&e, Some(&files))
    };
    // Our CA does not know the collector's certificate.
    let mut wrong_ca = ClientTlsFiles::in_dir(good.path(), "agent", "collector");
    wrong_ca.ca = other.path().join("ca.pem");
    let why = attempt(wrong_ca).await;
    assert!(why.contains("unknown CA") && why.contains("ca.pem"), "{why}");
    // The collector's certificate is not for this name.
    let why = attempt(ClientTlsFiles::in_dir(good.path(), "agent", "not-the-collector")).await;
    assert!(why.contains("name mismatch") && why.contains("not-the-collector"), "{why}");
    // A missing file is named.
    let mut missing = ClientTlsFiles::in_dir(good.path(), "agent", "collector");
    missing.ca = good.path().join("nope.pem");
    let e = missing.load().unwrap_err().to_string();
    assert!(e.contains("CA certificate") && e.contains("nope.pem"), "{e}");
    col.stop().await;
}

/// A TCP relay to `to` whose open connections the test can cut (as a network
/// failure would): the agent then connects again.
struct Relay {
    addr: SocketAddr,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let conns = open.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                conns.lock().unwrap().push(relay.abort_handle());
            }
        });
        Relay { addr, open }
    }

    /// Closes every connection open through the relay.
    fn cut(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Writes `bytes` to `path` by rename, as certificate tooling does.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Ships records `next..next + 10` (one batch) and waits for its ack.
async fn ship_ten(h: &ShipHandle, next: &mut u64, what: &str) {
    let acked = h.stats.get().batches_acked;
    send(h, *next..*next + 10, 64).await;
    *next += 10;
    wait_for(what, || h.stats.get().batches_acked == acked + 1).await;
}

/// The peer identity the collector stored for record `i`.
fn stored_identity(leaves: &[StoredLeaf], i: u64) -> String {
    let key = format!("rec-{i:08}");
    leaves
        .iter()
        .find(|l| l.record.as_ref().is_some_and(|r| r.payload.starts_with(key.as_bytes())))
        .unwrap_or_else(|| panic!("{key} not stored"))
        .peer_identity
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reloads_its_certificate_and_keeps_the_old_one_when_the_new_one_is_unusable() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let ca = tempfile::tempdir().unwrap();
    certs::generate(ca.path(), &["agent", "agent-b", "security"]).unwrap();
    // The agent's own directory: CA, certificate and key as deployed.
    let mine = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "agent.pem", "agent.key"] {
        std::fs::copy(ca.path().join(f), mine.path().join(f)).unwrap();
    }
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    let mut serve = ServeConfig::new(data.path().to_path_buf());
    serve.tls = Some(TlsFiles::in_dir(ca.path(), "collector"));
    // Both certificates may ship for this agent id (the rotation below).
    let roles = ca.path().join("roles.yaml");
    std::fs::write(&roles, "version: 1\nidentities:\n  - identity: \"CN=agent*\"\n    agent_ids: [agent-t]\n").unwrap();
    serve.roles = Some(roles);
    let col = Collector::start(reserved, serve).await;
    let relay = Relay::start(addr).await;
    let mut cfg = ship_config(relay.addr, spool.path(), Some(mine.path()));
    cfg.tls_check_interval = Duration::from_millis(20);
    let shutdown = CancellationToken::new();
    let h = ShipHandle::spawn(cfg, shutdown.clone()).await.unwrap();
    let mut next = 0;
    ship_ten(&h, &mut next, "shipping with the first certificate").await;

    // Unusable new files: a certificate that is none, a key of another certificate.
    let garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".to_vec();
    let other_key = std::fs::read(ca.path().join("agent-b.key")).unwrap();
    for (file, bytes) in [("agent.pem", garbage), ("agent.key", other_key)] {
        let path = mine.path().join(file);
        let saved = std::fs::read(&path).unwrap();
        let rejected = h.stats.get().tls_rejected;
        replace(&path, &bytes);
        wait_for("the agent to find the new file unusable", || h.stats.get().tls_rejected == rejected + 1).await;
        ship_ten(&h, &mut next, "shipping on the connection open before the change").await;
        // A new connection (the old one cut) uses the certificate in force.
        let connections = h.stats.get().connections;
        relay.cut();
        ship_ten(&h, &mut next, "shipping over a new connection with the old certificate").await;
        assert!(h.stats.get().connections > connections, "no new connection was made");
        replace(&path, &saved);
    }

    // A usable new certificate (another identity) is taken up on its own.
    let reloads = h.stats.get().tls_reloads;
    replace(&mine.path().join("agent.key"), &std::fs::read(ca.path().join("agent-b.key")).unwrap());
    replace(&mine.path().join("agent.pem"), &std::fs::read(ca.path().join("agent-b.pem")).unwrap());
    wait_for("the new certificate in force", || h.stats.get().tls_reloads > reloads).await;
    let switched = next;
    ship_ten(&h, &mut next, "shipping with the new certificate").await;
    shutdown.cancel();
    h.task.await.unwrap().unwrap();

    let leaves = all_leaves(addr, Some(ca.path())).await;
    assert_eq!(delivered_once(&leaves), expected(0..next));
    for i in 0..switched {
        let id = stored_identity(&leaves, i);
        assert!(id.contains("spiffe://wiretrail/role/agent/agent") && !id.contains("agent-b"), "record {i}: {id}");
    }
    for i in switched..next {
        let id = stored_identity(&leaves, i);
        assert!(id.contains("spiffe://wiretrail/role/agent/agent-b"), "record {i}: {id}");
    }
    col.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_spooled_while_a_full_spool_drops_records() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (data, spool) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, reserved) = free_addr();
    let mut cfg = ship_config(addr, spool.path(), None);
    cfg.spool.max_bytes = 20_000;
    let shutdown = CancellationToken::new();
    let h = ShipHandle::spawn(cfg, shutdown.clone()).await.unwrap();
    send(&h, 0..200, 512).await;
    wait_for("all records handled", || {
        let s = h.stats.get();
        s.records_spooled + s.records_dropped == 200
    })
    .await;
    let before = h.stats.get();
    assert!(before.records_dropped >= 150, "{before:?}");
    // The collector is still away and ordinary records do not fit: heartbeats still do (gap reserve).
    // Each heartbeat is made larger than any room a 20 kB spool of ~5 kB
    // batches can have left (a long host name), so only the reserve can take it.
    for n in 0..3u64 {
        let mut r = Record {
            host: "h".repeat(6_000),
            heartbeat: Some(wiretrail_proto::v1::Heartbeat { number: n, ..Default::default() }),
            ..Default::default()
        };
        r.set_kind(wiretrail_proto::v1::RecordKind::Heartbeat);
        h.records.send(r).await.unwrap();
    }
    wait_for("heartbeats spooled", || h.stats.get().records_spooled == before.records_spooled + 3).await;
    assert_eq!(h.stats.get().records_dropped, before.records_dropped, "no heartbeat was dropped");
    let col = Collector::start(reserved, ServeConfig::new(data.path().to_path_buf())).await;
    wait_for("everything acked", || {
        let s = h.stats.get();
        s.gap_records == 1 && s.batches_acked == s.batches_spooled
    })
    .await;
    shutdown.cancel();
    h.task.await.unwrap().unwrap();
    let leaves = all_leaves(addr, None).await;
    let beats: Vec<u64> =
        leaves.iter().filter_map(|l| l.record.as_ref().unwrap().heartbeat.as_ref().map(|b| b.number)).collect();
    assert_eq!(beats, [0, 1, 2]);
    col.stop().await;
}
