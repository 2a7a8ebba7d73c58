//! The segmentation tests' workloads: a client and a server in cgroups and
//! network namespaces of their own, a policy between them, and the decisions
//! the agent records.
use std::{path::Path, time::Duration};

use sha2::Digest as _;
use wiretrail_agent::record::{Decision, Notice};
use wiretrail_tests::{
    agent::Agent,
    netns::NetnsPair,
    wait_until,
    workload::{Cgroup, ECHO_SERVER, Running, connect_once},
};

use super::{Record, Records};

pub const EPERM: i32 = 1;
pub const ETIMEDOUT: i32 = 110;
/// The port the policy's rule allows (TCP).
pub const ALLOWED: u16 = 8080;
/// A port no rule allows.
pub const OTHER: u16 = 9090;
/// The port the policy's UDP rule allows.
pub const UDP_ALLOWED: u16 = 5353;

/// Client and server workloads: cgroups `<slice>/client` and `<slice>/server`,
/// in namespaces `a` (198.18.0.1, 2001:2::1) and `b` (198.18.0.2, 2001:2::2).
/// The client cgroup has a resident process (like a pod's pause container) so
/// the agent knows its namespace's addresses before any client connects.
pub struct Setup {
    _server: Running,
    _resident: Running,
    pub client: Cgroup,
    pub server: Cgroup,
    pub net: NetnsPair,
    pub slice: String,
}

impl Setup {
    pub fn new(tag: &str) -> Setup {
        let slice = format!("wiretrail-seg-{tag}-{}.slice", std::process::id());
        let net = NetnsPair::new(tag);
        let client = Cgroup::new(&slice, "client");
        let server = Cgroup::new(&slice, "server");
        let srv = Running::start(
            &server,
            Some(&net.b),
            "python3",
            &["-c", ECHO_SERVER, &ALLOWED.to_string(), &OTHER.to_string()],
        );
        let resident = Running::start(&client, Some(&net.a), "sleep", &["600"]);
        Setup { _server: srv, _resident: resident, client, server, net, slice }
    }

    /// A one-shot client in the client cgroup, over IPv4.
    pub fn connect(&self, port: u16) -> Result<(), i32> {
        connect_once(&self.client, Some(&self.net.a), wiretrail_tests::netns::ADDR_B, port)
    }

    /// A policy with zones `client` and `server` in `mode`, allowing client →
    /// server on `ports` (TCP) and on [`UDP_ALLOWED`] (UDP).
    pub fn policy(&self, mode: &str, ports: &[u16]) -> String {
        let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        format!(
            "version: 1\nzones:\n  - name: client\n    mode: {mode}\n    members:\n      - cgroup: \"/{slice}/client\"\n  - name: server\n    mode: {mode}\n    members:\n      - cgroup: \"/{slice}/server\"\nrules:\n  - name: client-to-server\n    from: client\n    to: server\n    ports: [{ports}]\n    protocol: tcp\n  - name: client-to-server-udp\n    from: client\n    to: server\n    ports: [{UDP_ALLOWED}]\n    protocol: udp\n",
            slice = self.slice,
            ports = ports.join(", ")
        )
    }
}

pub fn sha256_hex(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy");
}

/// The records the agent has written so far: whole lines only (the agent may
/// be writing the last one).
fn written(agent: &Agent) -> Records {
    let text = agent.records_now();
    Records::parse(&text[..text.rfind('\n').map_or(0, |i| i + 1)])
}

/// Every decision the agent has written so far.
pub fn decisions(agent: &Agent) -> Vec<Decision> {
    written(agent)
        .0
        .into_iter()
        .filter_map(|r| if let Record::PolicyDecision(d) = r { Some(*d) } else { None })
        .collect()
}

/// The cgroup path of an identity ("" when none).
pub fn cgroup(i: &Option<std::sync::Arc<wiretrail_agent::identity::Identity>>) -> String {
    i.as_ref().and_then(|i| i.cgroup_path.clone()).unwrap_or_default()
}

/// Waits for a decision on `port` (remote or local) with `verdict` at a hook
/// whose name starts with `hook_prefix`, and returns it.
pub fn wait_decision(agent: &Agent, hook_prefix: &str, port: u16, verdict: &str) -> Decision {
    let found = |a: &Agent| {
        decisions(a).into_iter().find(|d| {
            d.verdict == verdict
                && d.hook.starts_with(hook_prefix)
                && (d.remote.port() == port || d.local.is_some_and(|l| l.port() == port))
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || found(agent).is_some()),
        "no {verdict} decision ({hook_prefix}) for port {port}; decisions: {:#?}\nlog:\n{}",
        decisions(agent),
        agent.log()
    );
    found(agent).unwrap()
}

/// Waits for an agent notice of `kind` matching `pred`.
pub fn wait_notice(agent: &Agent, kind: &str, pred: impl Fn(&Notice) -> bool) -> Notice {
    let find = |a: &Agent| {
        written(a).0.into_iter().find_map(|r| match r {
            Record::Notice(n) if n.notice == kind && pred(&n) => Some(*n),
            _ => None,
        })
    };
    assert!(wait_until(Duration::from_secs(15), || find(agent).is_some()), "no {kind} notice:\n{}", agent.log());
    find(agent).unwrap()
}
