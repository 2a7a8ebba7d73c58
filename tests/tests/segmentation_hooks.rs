//! Every segmentation hook in the kernel, with each verdict: connect4/6 (TCP),
//! sendmsg4/6 (UDP sendto) and ingress4/6 (a connection attempt from a process
//! outside the server's zone), in enforce and in audit mode, as root. The
//! workloads live in cgroups and network namespaces the tests create.
//!
//! Each test has a positive control (an allowed flow goes through) beside the
//! flow the policy forbids, so a broken setup cannot pass for an enforced one.
mod support;

use support::{segmentation::*, *};
use wiretrail_agent::record::Decision;
use wiretrail_tests::{
    agent::Agent,
    netns::{ADDR_A, ADDR_B, ADDR6_A, ADDR6_B},
    require_root, serial,
    workload::{Cgroup, connect_once, udp_send_once},
};

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn client_addr(self) -> &'static str {
        match self {
            Family::V4 => ADDR_A,
            Family::V6 => ADDR6_A,
        }
    }

    fn server_addr(self) -> &'static str {
        match self {
            Family::V4 => ADDR_B,
            Family::V6 => ADDR6_B,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }

    /// The verdict of a flow no rule allows.
    fn verdict(self) -> &'static str {
        match self {
            Mode::Enforce => "deny",
            Mode::Audit => "audit",
        }
    }
}

/// The workloads, a policy in `mode` (client → server allowed on [`ALLOWED`]
/// over TCP and [`UDP_ALLOWED`] over UDP), and the agent enforcing it.
fn start(tag: &str, mode: Mode) -> (Setup, Agent, tempfile::TempDir) {
    let s = Setup::new(tag);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    write(&path, &s.policy(mode.name(), &[ALLOWED]));
    let agent = Agent::start(&["--no-tls", "--policy", path.to_str().unwrap()]);
    (s, agent, dir)
}

/// Waits for the decision at exactly `hook` on `port` with `verdict`.
fn decision_at(agent: &Agent, hook: &str, port: u16, verdict: &str) -> Decision {
    let d = wait_decision(agent, hook, port, verdict);
    assert_eq!(d.hook, hook, "{d:?}");
    d
}

/// Checks what every non-allow decision says: the hook, the mode, the rule
/// (none allowed it) and the policy's hash.
fn assert_default_deny(d: &Decision, s: &Setup, mode: Mode) {
    assert_eq!(d.mode, mode.name(), "{d:?}");
    assert_eq!(d.rule, "default-deny", "{d:?}");
    assert_eq!(d.policy_sha256, sha256_hex(&s.policy(mode.name(), &[ALLOWED])), "{d:?}");
}

/// connect() from the client zone to a port no rule allows.
fn outbound_connect(tag: &str, fam: Family, mode: Mode) {
    require_root();
    let _g = serial();
    let (s, agent, _dir) = start(tag, mode);
    let (server, hook) = (fam.server_addr(), format!("connect{}", fam.suffix()));
    let connect = |port| connect_once(&s.client, Some(&s.net.a), server, port);
    assert_eq!(connect(ALLOWED), Ok(()), "allowed connection failed:\n{}", agent.log());
    let expected = if mode == Mode::Enforce { Err(EPERM) } else { Ok(()) };
    assert_eq!(connect(OTHER), expected, "{} mode, connect to {server}:{OTHER}", mode.name());

    let allow = decision_at(&agent, &hook, ALLOWED, "allow");
    assert_eq!(allow.rule, "client-to-server", "{allow:?}");
    let d = decision_at(&agent, &hook, OTHER, mode.verdict());
    assert_default_deny(&d, &s, mode);
    assert_eq!(d.transport, Transport::Tcp, "{d:?}");
    assert_eq!(d.remote.ip().to_string(), server, "{d:?}");
    assert_eq!((d.local_zone.as_str(), d.peer_zone.as_str()), ("client", "server"), "{d:?}");
    assert_eq!(cgroup(&d.identity), s.client.path, "{d:?}");
    assert_eq!(d.peer_identity.get("cgroup_path"), Some(&s.server.path), "{d:?}");
}

/// sendto() from the client zone to a UDP port no rule allows.
fn outbound_sendmsg(tag: &str, fam: Family, mode: Mode) {
    require_root();
    let _g = serial();
    let (s, agent, _dir) = start(tag, mode);
    let (server, hook) = (fam.server_addr(), format!("sendmsg{}", fam.suffix()));
    let send = |port| udp_send_once(&s.client, Some(&s.net.a), server, port);
    assert_eq!(send(UDP_ALLOWED), Ok(()), "allowed datagram refused:\n{}", agent.log());
    let expected = if mode == Mode::Enforce { Err(EPERM) } else { Ok(()) };
    assert_eq!(send(OTHER), expected, "{} mode, sendto {server}:{OTHER}", mode.name());

    let d = decision_at(&agent, &hook, OTHER, mode.verdict());
    assert_default_deny(&d, &s, mode);
    assert_eq!(d.transport, Transport::Udp, "{d:?}");
    assert_eq!(d.remote.ip().to_string(), server, "{d:?}");
    assert_eq!((d.local_zone.as_str(), d.peer_zone.as_str()), ("client", "server"), "{d:?}");
    assert_eq!(cgroup(&d.identity), s.client.path, "{d:?}");
    // Allowed datagrams are not decisions (they are captured as data).
    assert!(
        !decisions(&agent).iter().any(|d| d.hook == hook && d.remote.port() == UDP_ALLOWED),
        "an allowed datagram was recorded as a decision"
    );
}

/// A process in no zone (so no outbound hook decides it), in the client's
/// namespace, connects to the server: only the server's ingress hook can stop
/// the SYN. In enforce mode it is dropped (the client times out); in audit mode
/// it goes through; either way the server side records the decision.
fn inbound(tag: &str, fam: Family, mode: Mode) {
    require_root();
    let _g = serial();
    let (s, agent, _dir) = start(tag, mode);
    let outsider = Cgroup::new(&s.slice, "outsider");
    let (server, hook) = (fam.server_addr(), format!("ingress{}", fam.suffix()));
    let connect = |port| connect_once(&outsider, Some(&s.net.a), server, port);
    // The namespace's address is the client zone's: client → server:ALLOWED is allowed.
    assert_eq!(connect(ALLOWED), Ok(()), "allowed inbound connection failed:\n{}", agent.log());
    let expected = if mode == Mode::Enforce { Err(ETIMEDOUT) } else { Ok(()) };
    assert_eq!(connect(OTHER), expected, "{} mode, inbound SYN to {server}:{OTHER}", mode.name());

    let allow = decision_at(&agent, &hook, ALLOWED, "allow");
    assert_eq!(allow.rule, "client-to-server", "{allow:?}");
    let d = decision_at(&agent, &hook, OTHER, mode.verdict());
    assert_default_deny(&d, &s, mode);
    assert_eq!(d.transport, Transport::Tcp, "{d:?}");
    assert_eq!(d.local.map(|l| (l.ip().to_string(), l.port())), Some((server.to_string(), OTHER)), "{d:?}");
    assert_eq!(d.remote.ip().to_string(), fam.client_addr(), "{d:?}");
    assert_eq!((d.local_zone.as_str(), d.peer_zone.as_str()), ("server", "client"), "{d:?}");
    assert_eq!(cgroup(&d.identity), s.server.path, "{d:?}");
    // The outsider is in no zone: no outbound hook decided its connections.
    assert!(
        !decisions(&agent).iter().any(|d| cgroup(&d.identity) == outsider.path),
        "a process in no zone was decided at an outbound hook"
    );
}

#[test]
fn connect4_enforce_refuses_with_eperm_and_records_the_denial() {
    outbound_connect("c4e", Family::V4, Mode::Enforce);
}

#[test]
fn connect4_audit_lets_the_connection_through_and_records_it() {
    outbound_connect("c4a", Family::V4, Mode::Audit);
}

#[test]
fn connect6_enforce_refuses_with_eperm_and_records_the_denial() {
    outbound_connect("c6e", Family::V6, Mode::Enforce);
}

#[test]
fn connect6_audit_lets_the_connection_through_and_records_it() {
    outbound_connect("c6a", Family::V6, Mode::Audit);
}

#[test]
fn sendmsg4_enforce_refuses_the_datagram_and_records_the_denial() {
    outbound_sendmsg("m4e", Family::V4, Mode::Enforce);
}

#[test]
fn sendmsg4_audit_sends_the_datagram_and_records_it() {
    outbound_sendmsg("m4a", Family::V4, Mode::Audit);
}

#[test]
fn sendmsg6_enforce_refuses_the_datagram_and_records_the_denial() {
    outbound_sendmsg("m6e", Family::V6, Mode::Enforce);
}

#[test]
fn sendmsg6_audit_sends_the_datagram_and_records_it() {
    outbound_sendmsg("m6a", Family::V6, Mode::Audit);
}

#[test]
fn ingress4_enforce_drops_a_syn_from_outside_the_zone_and_records_it() {
    inbound("i4e", Family::V4, Mode::Enforce);
}

#[test]
fn ingress4_audit_lets_the_syn_through_and_records_it() {
    inbound("i4a", Family::V4, Mode::Audit);
}

#[test]
fn ingress6_enforce_drops_a_syn_from_outside_the_zone_and_records_it() {
    inbound("i6e", Family::V6, Mode::Enforce);
}

#[test]
fn ingress6_audit_lets_the_syn_through_and_records_it() {
    inbound("i6a", Family::V6, Mode::Audit);
}
