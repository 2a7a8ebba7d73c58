//! Roles and the access log, over mTLS with certificates from `cargo xtask
//! certs`: each role is refused outside its RPCs (PERMISSION_DENIED naming the
//! role needed), a roles file maps identities to roles, and every search,
//! view, export, proof and checkpoint is an access entry (who, role, filter or
//! range, count, case, whose records) in the verified log, listed and
//! followed by `AccessLog`. One collector serves the whole binary.

mod common;

#[path = "../../xtask/src/certs.rs"]
mod certs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wiretrail_collector::access::meta::Meta;
use wiretrail_collector::tls::TlsFiles;
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::*;

const CLIENTS: [&str; 7] = ["agent", "security", "reviewer", "auditor", "admin", "mystery:superuser", "carol:"];
const ROLES_FILE: &str = "version: 1\nidentities:\n  - identity: \"CN=carol; *\"\n    roles: [reviewer]\n";

type Q = QueryClient<InterceptedService<Channel, Meta>>;

async fn query_as(addr: SocketAddr, dir: &Path, name: &str, case: Option<&str>) -> Q {
    QueryClient::with_interceptor(mtls(addr, dir, name).await, Meta::case(case).unwrap())
}

fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>, role: &str) {
    let s = r.expect_err(&format!("{what} was allowed"));
    assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}");
    assert!(s.message().contains(&format!("needs role {role}")), "{what}: {}", s.message());
}

/// Drains a server stream; the first error if any.
async fn drain<T>(r: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>) -> Result<Vec<T>, tonic::Status> {
    let mut s = r?.into_inner();
    let mut v = Vec::new();
    while let Some(x) = s.next().await {
        v.push(x?);
    }
    Ok(v)
}

fn workload_record(i: u64, ns: &str) -> Record {
    let mut r = record(i, 2_000_000 + i as i64);
    r.identity = HashMap::from([
        ("k8s_namespace".to_string(), ns.to_string()),
        ("k8s_service_account".to_string(), "api".to_string()),
    ]);
    r
}

async fn ingest(addr: SocketAddr, dir: &Path, name: &str, b: Batch) -> Result<Ack, tonic::Status> {
    let mut c = IngestClient::new(mtls(addr, dir, name).await);
    let mut s = c.ingest(tokio_stream::iter(vec![b])).await?.into_inner();
    s.next().await.ok_or_else(|| tonic::Status::unknown("no ack"))?
}

/// Every Query RPC called as `q` must be refused (role named).
async fn refused_everywhere(q: &mut Q, who: &str) {
    let f = || Some(Filter::default());
    let access = Some(Filter { entry_kind: "access".into(), ..Default::default() });
    denied(
        &format!("{who} Search"),
        drain(q.search(SearchRequest { filter: f(), follow: false, ..Default::default() }).await).await,
        "reviewer",
    );
    denied(
        &format!("{who} Search access"),
        drain(q.search(SearchRequest { filter: access, follow: false, ..Default::default() }).await).await,
        "auditor",
    );
    denied(&format!("{who} View"), drain(q.view(ViewRequest { first_leaf: 0, last_leaf: 0 }).await).await, "reviewer");
    denied(
        &format!("{who} IssueCheckpoint"),
        q.issue_checkpoint(IssueCheckpointRequest {}).await,
        "auditor or reviewer",
    );
    denied(
        &format!("{who} LatestCheckpoint"),
        q.latest_checkpoint(LatestCheckpointRequest {}).await,
        "auditor or reviewer",
    );
    let ip = InclusionProofRequest { leaf_index: 0, tree_size: 1 };
    denied(&format!("{who} InclusionProof"), q.inclusion_proof(ip).await, "auditor or reviewer");
    let cp = ConsistencyProofRequest { from_size: 1, to_size: 1 };
    denied(&format!("{who} ConsistencyProof"), q.consistency_proof(cp).await, "auditor or reviewer");
    denied(
        &format!("{who} Inventory"),
        q.inventory(InventoryRequest { shadow_only: false }).await,
        "reviewer or auditor or admin",
    );
    let al = AlertsRequest { since_id: 0, kind: String::new(), follow: false };
    denied(&format!("{who} Alerts"), drain(q.alerts(al).await).await, "reviewer or auditor or admin");
    denied(&format!("{who} AccessLog"), drain(q.access_log(AccessLogRequest::default()).await).await, "auditor");
}

async fn access_log(q: &mut Q, req: AccessLogRequest) -> Vec<AccessRecord> {
    drain(q.access_log(AccessLogRequest { limit: 1_000_000, ..req }).await).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_every_read_is_an_access_entry() {
    let certs_dir = tempfile::tempdir().unwrap();
    let dir = certs_dir.path();
    certs::generate(dir, &CLIENTS).unwrap();
    std::fs::write(dir.join("roles.yaml"), ROLES_FILE).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = plain_config(data.path());
    cfg.tls = Some(TlsFiles::in_dir(dir, "collector"));
    cfg.roles = Some(dir.join("roles.yaml"));
    let srv = Server::start(cfg).await;
    let addr = srv.addr;

    // --- Roles.
    let pay: Vec<Record> = (0..4).map(|i| workload_record(i, "pay")).collect();
    let web: Vec<Record> = (4..7).map(|i| workload_record(i, "web")).collect();
    let b = |seq, records| Batch { agent_id: "node-1".into(), boot_id: "b".into(), seq, records, ..Default::default() };
    ingest(addr, dir, "agent", b(0, pay)).await.unwrap();
    ingest(addr, dir, "agent", b(1, web)).await.unwrap();
    for who in ["agent", "mystery", "carol"] {
        if who != "carol" {
            refused_everywhere(&mut query_as(addr, dir, who, None).await, who).await;
        }
    }
    let unknown = drain(query_as(addr, dir, "mystery", None).await.search(SearchRequest::default()).await).await;
    assert!(unknown.unwrap_err().message().contains("no known role (unknown: superuser)"));
    for who in ["reviewer", "security", "auditor", "admin", "mystery", "carol"] {
        // An agent id nobody owns: only the role can refuse it.
        let own = Batch { agent_id: format!("node-{who}"), ..b(0, vec![record(9, 9)]) };
        denied(&format!("{who} Ingest"), ingest(addr, dir, who, own).await, "agent");
    }
    // The auditor reads proofs and the access log, not records; the admin neither.
    let mut auditor = query_as(addr, dir, "auditor", None).await;
    denied("auditor Search", drain(auditor.search(SearchRequest::default()).await).await, "reviewer");
    let mut admin = query_as(addr, dir, "admin", None).await;
    denied("admin AccessLog", drain(admin.access_log(AccessLogRequest::default()).await).await, "auditor");
    denied(
        "admin InclusionProof",
        admin.inclusion_proof(InclusionProofRequest { leaf_index: 0, tree_size: 1 }).await,
        "auditor",
    );
    admin.inventory(InventoryRequest { shadow_only: false }).await.expect("admin reads the inventory");
    // carol's certificate names no role; the roles file makes her a reviewer.
    let mut carol = query_as(addr, dir, "carol", None).await;
    let got = drain(
        carol.search(SearchRequest { filter: Some(Filter::default()), follow: false, ..Default::default() }).await,
    )
    .await;
    assert_eq!(got.expect("roles file maps carol to reviewer").len(), 7);

    // --- Reads, each logged. Provenance: the certificate that shipped each record.
    let t0 = wiretrail_log::store::now_ns();
    let mut rev = query_as(addr, dir, "reviewer", Some("CASE-1")).await;
    let pay_filter = Filter { identity: vec!["k8s_namespace=pay".into()], ..Default::default() };
    let found = drain(
        rev.search(SearchRequest { filter: Some(pay_filter.clone()), follow: false, ..Default::default() }).await,
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 4);
    for r in &found {
        assert!(r.shipped_by.contains("CN=agent") && r.shipped_by.contains("role/agent/agent"), "{}", r.shipped_by);
    }
    let t1 = wiretrail_log::store::now_ns();
    let viewed = drain(rev.view(ViewRequest { first_leaf: 4, last_leaf: 6 }).await).await.unwrap();
    assert_eq!(viewed.len(), 3, "the three web records");
    let sec = mtls(addr, dir, "security").await;
    let files =
        wiretrail_collector::export::export_as(sec, Meta::case(Some("CASE-2")).unwrap().export(), pay_filter, |_| {})
            .await
            .unwrap();
    let exported = String::from_utf8(files["records.jsonl"].clone()).unwrap();
    assert!(exported.lines().all(|l| l.contains("\"shipped_by\":\"CN=agent;")), "{exported}");
    let mut aud = query_as(addr, dir, "auditor", Some("AUDIT-9")).await;
    let cp = aud.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    aud.latest_checkpoint(LatestCheckpointRequest {}).await.unwrap();
    aud.inclusion_proof(InclusionProofRequest { leaf_index: 2, tree_size: cp.size }).await.unwrap();
    aud.consistency_proof(ConsistencyProofRequest { from_size: 3, to_size: cp.size }).await.unwrap();

    // --- The access log.
    let all = access_log(&mut aud, AccessLogRequest::default()).await;
    let reviewer_id = |r: &AccessRecord| r.identity.contains("role/reviewer/reviewer");
    let s = all.iter().find(|r| reviewer_id(r) && r.action == "search").expect("the reviewer's search");
    assert_eq!((s.role.as_str(), s.case_id.as_str(), s.returned), ("reviewer", "CASE-1", 4));
    assert_eq!(s.workloads, ["k8s:pay/api"]);
    assert!(s.time_ns >= t0 && s.time_ns < t1, "collector UTC time of the access");
    let d: serde_json::Value = serde_json::from_str(&s.detail_json).unwrap();
    assert_eq!(d["filter"]["identity"][0], "k8s_namespace=pay", "{d}");
    assert_eq!(d["agent_ids"][0], "node-1");
    let v = all.iter().find(|r| reviewer_id(r) && r.action == "view").expect("the view");
    let d: serde_json::Value = serde_json::from_str(&v.detail_json).unwrap();
    assert_eq!((d["first_leaf"].as_u64(), d["last_leaf"].as_u64(), v.returned), (Some(4), Some(6), 3));
    assert_eq!(v.workloads, ["k8s:web/api"]);
    let exp: Vec<_> = all.iter().filter(|r| r.case_id == "CASE-2").collect();
    assert!(exp.iter().all(|r| r.purpose == "export" && r.identity.contains("CN=security")));
    let count = |a: &str| exp.iter().filter(|r| r.action == a).count();
    // The export's 4 proofs are one access entry (one per 10,000 records), naming the leaves.
    assert_eq!((count("search"), count("issue_checkpoint"), count("inclusion_proof")), (1, 1, 1), "{exp:#?}");
    let proofs = exp.iter().find(|r| r.action == "inclusion_proof").unwrap();
    let d: serde_json::Value = serde_json::from_str(&proofs.detail_json).unwrap();
    assert_eq!((proofs.returned, d["leaves"].as_u64()), (4, Some(4)), "{d}");
    assert_eq!(
        d["leaf_runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
            .sum::<u64>(),
        4,
        "{d}"
    );
    for a in ["issue_checkpoint", "latest_checkpoint", "inclusion_proof", "consistency_proof"] {
        let e = all.iter().find(|r| r.case_id == "AUDIT-9" && r.action == a).unwrap_or_else(|| panic!("{a}"));
        assert_eq!((e.role.as_str(), e.returned), ("auditor", 1), "{a}");
    }
    let p = all.iter().find(|r| r.case_id == "AUDIT-9" && r.action == "inclusion_proof").unwrap();
    assert!(p.detail_json.contains("\"leaf_index\":2"), "{}", p.detail_json);

    // Filters: whose records (workload), who, when, case; the listing itself is logged.
    let web_readers =
        access_log(&mut aud, AccessLogRequest { workload: "k8s:web/*".into(), ..Default::default() }).await;
    assert!(!web_readers.is_empty() && web_readers.iter().all(|r| r.workloads.contains(&"k8s:web/api".to_string())));
    assert!(
        web_readers.iter().any(|r| r.identity.contains("CN=carol")),
        "carol's unfiltered search returned web records"
    );
    let pay_in_window = access_log(
        &mut aud,
        AccessLogRequest { workload: "k8s:pay/api".into(), from_time_ns: t0, to_time_ns: t1, ..Default::default() },
    )
    .await;
    assert_eq!(
        pay_in_window.iter().map(|r| (r.action.as_str(), r.case_id.as_str())).collect::<Vec<_>>(),
        [("search", "CASE-1")]
    );
    let by_reviewer =
        access_log(&mut aud, AccessLogRequest { identity: "*role/reviewer/reviewer*".into(), ..Default::default() })
            .await;
    assert_eq!(by_reviewer.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(), ["search", "view"]);
    let listings = access_log(&mut aud, AccessLogRequest { action: "access_log".into(), ..Default::default() }).await;
    assert!(listings.len() >= 4 && listings.iter().all(|r| r.role == "auditor" && r.case_id == "AUDIT-9"));

    // Follow: a new access arrives on an open stream.
    let follow_req = AccessLogRequest { identity: "*CN=carol*".into(), follow: true, ..Default::default() };
    let mut follow = aud.access_log(follow_req).await.unwrap().into_inner();
    let before = access_log(&mut aud, AccessLogRequest { identity: "*CN=carol*".into(), ..Default::default() }).await;
    for _ in 0..before.len() {
        follow.next().await.unwrap().unwrap();
    }
    drain(carol.view(ViewRequest { first_leaf: 0, last_leaf: 1 }).await).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(20), follow.next()).await.expect("follow saw nothing");
    let next = next.expect("the follow stream ended instead of waiting for new accesses").unwrap();
    assert_eq!((next.action.as_str(), next.returned), ("view", 2));

    drop(follow);

    // A followed search: each delivery is logged (before it is sent).
    let node1 = Filter { agent_id: "node-1".into(), ..Default::default() };
    let mut sf = rev
        .search(SearchRequest { filter: Some(node1), follow: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..7 {
        sf.next().await.expect("the search's first results").unwrap();
    }
    ingest(addr, dir, "agent", b(2, vec![workload_record(20, "pay")])).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), sf.next()).await.expect("the followed search saw nothing");
    let got = got.expect("the followed search ended").unwrap();
    let who =
        AccessLogRequest { identity: "*role/reviewer/reviewer*".into(), action: "search".into(), ..Default::default() };
    let logged = access_log(&mut aud, who).await;
    let d: serde_json::Value = serde_json::from_str(&logged.last().unwrap().detail_json).unwrap();
    assert_eq!((d["follow"].as_bool(), d["returned"].as_u64()), (Some(true), Some(1)), "{d}");
    assert_eq!(d["first_leaf"].as_u64(), Some(got.leaf_index), "{d}");
    drop(sf);
    let access_filter = Filter { entry_kind: "access".into(), ..Default::default() };
    let r = drain(rev.search(SearchRequest { filter: Some(access_filter), follow: false, ..Default::default() }).await)
        .await;
    denied("reviewer Search of access entries", r, "auditor");
    let star = Filter { entry_kind: "*".into(), ..Default::default() };
    let star = drain(rev.search(SearchRequest { filter: Some(star), follow: false, ..Default::default() }).await)
        .await
        .unwrap();
    let kinds: Vec<_> = star.iter().map(|r| r.decoded.as_ref().unwrap().entry.as_ref().unwrap().kind.clone()).collect();
    assert!(kinds.iter().all(|k| k != "access"), "a reviewer's entry_kind * returned access entries: {kinds:?}");

    // Every access entry is a leaf of the verified log.
    let cp = aud.issue_checkpoint(IssueCheckpointRequest {}).await.unwrap().into_inner();
    let leaves =
        drain(rev.search(SearchRequest { filter: Some(Filter::default()), follow: false, ..Default::default() }).await)
            .await;
    assert_eq!(leaves.unwrap().len(), 8, "reviewers' searches return records, never access entries");
    let mut sec = query_as(addr, dir, "security", None).await;
    let entries = Filter { entry_kind: "access".into(), limit: 1_000_000, ..Default::default() };
    let entries = drain(sec.search(SearchRequest { filter: Some(entries), follow: false, ..Default::default() }).await)
        .await
        .unwrap();
    assert!(entries.len() > 20 && entries.iter().all(|e| e.leaf_index < cp.size + 2));
    srv.stop().await;
    let key =
        wiretrail_log::merkle::Verifier::parse(&std::fs::read_to_string(data.path().join("verifier.key")).unwrap())
            .unwrap();
    let (report, _) = wiretrail_log::verify::verify(data.path(), &key, None, |_, _| {}).unwrap();
    assert_eq!(report.first_bad, None, "{:?}", report.problem);
    assert!(report.leaves > cp.size && report.checkpoints_checked > 0, "{report:?}");
}

#[tokio::test]
async fn a_bad_roles_file_stops_the_collector_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let roles = dir.path().join("roles.yaml");
    std::fs::write(&roles, "version: 1\nidentities:\n  - identity: \"CN=a; *\"\n    roles: [reviewer, root]\n")
        .unwrap();
    let mut cfg = plain_config(&dir.path().join("data"));
    cfg.roles = Some(roles);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = wiretrail_collector::run(listener, cfg, std::future::pending()).await.unwrap_err().to_string();
    assert!(e.contains("roles.yaml") && e.contains("root") && e.contains("line 4"), "{e}");
}
