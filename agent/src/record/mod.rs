//! The record: the agent's one unit of evidence, rendered by the JSON-lines
//! and text writers (`crate::output`) and the collector's wire form
//! ([`wire`]).
//!
//! - [`Exchange`]: one application exchange (an HTTP/1 request with its
//!   response, an HTTP/2 stream, a PostgreSQL query with its results, a Redis
//!   command with its reply, a DNS query with its answer) or one message of a
//!   one-way protocol (FIX). The raw bytes of each direction are in it once, as
//!   [`Part`]s with their provenance: byte positions, the kernel times of the
//!   first and last byte, the calls they came from, the gaps inside them. When
//!   both ends of the conversation were captured on this host the record is
//!   the only one for those bytes and carries the other end's observation
//!   (`witness`) too.
//! - [`Segment`]: bytes no parser claimed (unknown protocol, bytes after a gap
//!   until the parser finds its footing), coalesced per connection and
//!   direction, bounded by size and time.
//! - [`ConnRecord`]: a connection when it ends (`connection`), and once while
//!   still open for long-lived ones (`connection_open`).
//! - [`GapRecord`]: missing stream bytes no other record holds; [`LostRecord`]:
//!   events of another kind lost (e.g. policy decisions).
//! - [`Decision`] and [`Notice`]: made outside the capture path.
use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod part;
pub mod text;
pub mod wire;

pub use part::{CallMark, Fault, Fields, GapMark, Message, Observation, Part, PartRole, Raw, Redaction};

use crate::{
    capture::tls::TlsLib,
    clock::{ClockSync, KERNEL_CLOCK, parse_rfc3339, rfc3339},
    identity::Identity,
    proto::{AppAttrs, Protocol, fields::UnparsedReason},
    types::{Comm, Direction, GapReason, Role, Transport},
};

/// When a record happened and how well that is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// UTC ns since the Unix epoch.
    pub utc_ns: i128,
    /// The kernel's CLOCK_BOOTTIME ns it was converted from (None: the record
    /// was made by the agent and stamped with CLOCK_REALTIME).
    pub kernel_ns: Option<u64>,
    /// Error bound of the conversion (ns).
    pub clock_error_ns: u64,
}

impl Stamp {
    /// A kernel time converted with `clock`, with the conversion's error bound
    /// at that time.
    pub fn kernel(ns: u64, clock: &ClockSync) -> Stamp {
        Stamp { utc_ns: clock.to_utc_ns(ns), kernel_ns: Some(ns), clock_error_ns: clock.error_at(ns) }
    }

    /// The agent's real-time clock now.
    pub fn now() -> Stamp {
        Stamp { utc_ns: crate::clock::now_utc_ns(), kernel_ns: None, clock_error_ns: 0 }
    }
}

#[derive(Serialize, Deserialize)]
struct StampRepr {
    ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts_kernel_ns: Option<u64>,
    clock: String,
    #[serde(default)]
    clock_error_ns: u64,
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StampRepr {
            ts: rfc3339(self.utc_ns),
            ts_kernel_ns: self.kernel_ns,
            clock: if self.kernel_ns.is_some() { KERNEL_CLOCK } else { "CLOCK_REALTIME" }.to_string(),
            clock_error_ns: self.clock_error_ns,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = StampRepr::deserialize(d)?;
        let utc_ns =
            parse_rfc3339(&r.ts).ok_or_else(|| serde::de::Error::custom(format!("bad RFC 3339 time {:?}", r.ts)))?;
        Ok(Stamp { utc_ns, kernel_ns: r.ts_kernel_ns, clock_error_ns: r.clock_error_ns })
    }
}

/// One end of a connection as captured: the socket and the process using it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// Connection id (one per socket per agent boot).
    pub conn_id: u64,
    /// TCP or UDP.
    pub transport: Transport,
    /// The socket's own address.
    #[serde(default)]
    pub local: Option<SocketAddr>,
    /// The address it talks to (None for unconnected UDP; see `Part::peer`).
    #[serde(default)]
    pub remote: Option<SocketAddr>,
    /// Client (connected), server (accepted) or unknown (predates capture).
    pub role: Role,
    /// Process (tgid), thread, command, real uid of the latest event.
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub uid: u32,
    /// cgroup v2 id and network namespace inode.
    pub cgroup_id: u64,
    pub netns: u32,
}

/// Who the record's bytes belong to: the captured side, its workload
/// identity, and the other end's when it is on this host too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// The record's side.
    #[serde(flatten)]
    pub side: Side,
    /// Workload identity of the side's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Arc<Identity>>,
    /// Workload identity of the process at the other end, when on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_identity: Option<Arc<Identity>>,
    /// Both ends captured on this host: the other end's side. The record then
    /// holds both observations (`Part::witness`) and the bytes once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Side>,
    /// TLS plaintext records: the library it was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsLib>,
    /// ...and the library the other end's plaintext was taken from (two witnesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_tls: Option<TlsLib>,
    /// Application identity the side's messages revealed so far (e.g.
    /// `fix.sender_comp_id`, `postgres.user`): attributes of its identity,
    /// shipped in the identity map.
    #[serde(default, skip_serializing_if = "attrs_empty")]
    pub app: AppAttrs,
    /// ...and what the other end's messages revealed (its identity's attributes).
    #[serde(default, skip_serializing_if = "attrs_empty")]
    pub peer_app: AppAttrs,
}

fn attrs_empty(a: &AppAttrs) -> bool {
    a.is_empty()
}

/// Why an exchange record holds less than a whole exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incomplete {
    /// The request was seen; no response came before the connection ended (or
    /// the pairing bound was reached).
    NoResponse,
    /// A response whose request was not seen (connection predates capture, or
    /// the request was lost).
    NoRequest,
    /// The exchange was long or large: this record holds what came so far and
    /// the next record of the same exchange id continues it.
    Continues,
}

/// One application exchange, or one message of a one-way protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(flatten)]
    pub who: Who,
    /// Application protocol.
    pub protocol: Protocol,
    /// Pairing key within the connection (HTTP/1 and RESP ordinal, HTTP/2
    /// stream id, DNS id, PostgreSQL ordinal); None for one-way messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_id: Option<u64>,
    /// The bytes, in parts: request parts first, then response parts.
    pub parts: Vec<Part>,
    /// The parsed messages, in stream order within each part.
    pub messages: Vec<Message>,
    /// ns from the request's last byte to the response's first byte (as the
    /// record's side saw them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
    /// Set when the record holds less than a whole exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
    /// Capture faults (e.g. the two ends saw different bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// Bytes masked by redaction rules (`crate::redact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<Redaction>,
}

/// Unparsed bytes of one direction, coalesced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(flatten)]
    pub who: Who,
    /// Protocol of the connection (unknown, or the protocol whose parser
    /// could not use these bytes).
    pub protocol: Protocol,
    /// Why the bytes are not parsed.
    pub reason: UnparsedReason,
    /// The parser's complaint, for malformed bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The bytes.
    pub part: Part,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// Bytes masked by redaction rules (`crate::redact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redactions: Vec<Redaction>,
}

/// Why a connection record was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnEnd {
    /// Closed, and every byte accounted for (or the linger expired).
    Closed,
    /// No event for the idle timeout.
    Idle,
    /// Evicted by the connection or memory bound.
    Evicted,
    /// The agent stopped.
    Shutdown,
    /// Still open (`connection_open` records of long-lived connections).
    Open,
}

impl ConnEnd {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ConnEnd::Closed => "closed",
            ConnEnd::Idle => "idle",
            ConnEnd::Evicted => "evicted",
            ConnEnd::Shutdown => "shutdown",
            ConnEnd::Open => "open",
        }
    }
}

/// Byte accounting of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirTotals {
    /// Payload bytes captured.
    pub captured: u64,
    /// Bytes known missing.
    pub gap: u64,
    /// The kernel's final count, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_total: Option<u64>,
    /// TLS ciphertext counted and timed, not kept: the plaintext of this
    /// direction is recorded. `captured + gap + not_kept.bytes` is the total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_kept: Option<NotKept>,
}

/// Bytes a socket carried whose content is deliberately not in the records
/// (TLS ciphertext whose plaintext is), with the calls and times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotKept {
    /// Bytes counted and not kept.
    pub bytes: u64,
    /// Calls (syscalls) that carried them.
    pub calls: u64,
    /// Kernel time of the first of those calls.
    pub first_ns: u64,
    /// Kernel time of the last of those calls.
    pub last_ns: u64,
}

/// A connection's summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnRecord {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(flatten)]
    pub who: Who,
    /// Protocol detected on the socket (and on the TLS plaintext, if any).
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_protocol: Option<Protocol>,
    /// Kernel ns of the open (or first sight) and of the close.
    pub open_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_ns: Option<u64>,
    /// connect/accept was seen (false: the socket predates capture).
    pub open_seen: bool,
    /// Why the record was made.
    pub end: ConnEnd,
    /// Socket bytes per direction.
    pub egress: DirTotals,
    pub ingress: DirTotals,
    /// TLS plaintext bytes per direction, when a TLS library was hooked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_egress: Option<DirTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ingress: Option<DirTotals>,
    /// Exchange and segment records made for the connection.
    pub exchanges: u64,
    pub segments: u64,
    /// Both ends on this host: the other end's accounting and close.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_egress: Option<DirTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_ingress: Option<DirTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_close_ns: Option<u64>,
    /// The socket carried TLS but no plaintext of it was captured: the
    /// ciphertext bytes per direction whose content is not in the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_unseen: Option<TlsUnseen>,
    /// The same for the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_tls_unseen: Option<TlsUnseen>,
}

/// A TLS connection whose plaintext was not captured (a library not hooked,
/// hooked after the connection began, or driven through memory BIOs so its
/// plaintext is recorded without a connection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsUnseen {
    /// Why, as far as the agent can tell.
    pub reason: String,
    /// Ciphertext bytes captured on the socket per direction.
    pub egress_bytes: u64,
    pub ingress_bytes: u64,
}

/// Missing stream bytes that no exchange or segment holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(flatten)]
    pub who: Who,
    pub protocol: Protocol,
    pub direction: Direction,
    /// TLS plaintext positions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    pub pos: u64,
    pub len: u64,
    pub reason: GapReason,
    /// Both ends on this host: how the other end saw these positions (it
    /// missed them too, or had not received them yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_seen: Option<Observation>,
}

/// Events of another kind than stream bytes, lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    #[serde(flatten)]
    pub stamp: Stamp,
    /// What was lost (`policy_decisions`, ...).
    pub what: String,
    /// How many.
    pub count: u64,
    pub detail: String,
}

/// A segmentation decision taken in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub stamp: Stamp,
    /// allow, deny or audit.
    pub verdict: String,
    /// connect4, connect6, sendmsg4, sendmsg6, ingress4, ingress6.
    pub hook: String,
    /// egress (the local workload initiated) or ingress.
    pub direction: Direction,
    pub transport: Transport,
    #[serde(default)]
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
    /// The rule that allowed the flow, or `default-deny`.
    pub rule: String,
    pub rule_id: u32,
    pub rule_line: u32,
    /// Mode of the zone whose default deny applied ("" when a rule allowed it).
    pub mode: String,
    pub policy_sha256: String,
    pub policy_generation: u32,
    pub local_zone: String,
    pub peer_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Arc<Identity>>,
    /// The peer's zone, and its cgroup when it is a member on this host.
    pub peer_identity: std::collections::BTreeMap<String, String>,
}

/// A report by the agent about itself (a TLS library it cannot hook, a policy
/// loaded or rejected, ...).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(flatten)]
    pub stamp: Stamp,
    /// What kind of notice: `tls_unsupported`, `policy_loaded`, `policy_rejected`.
    pub notice: String,
    /// Its details.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Exchange(Box<Exchange>),
    Segment(Box<Segment>),
    Connection(Box<ConnRecord>),
    ConnectionOpen(Box<ConnRecord>),
    Gap(Box<GapRecord>),
    Lost(Box<LostRecord>),
    PolicyDecision(Box<Decision>),
    Notice(Box<Notice>),
}

impl Record {
    /// When it happened.
    pub fn stamp(&self) -> &Stamp {
        match self {
            Record::Exchange(r) => &r.stamp,
            Record::Segment(r) => &r.stamp,
            Record::Connection(r) | Record::ConnectionOpen(r) => &r.stamp,
            Record::Gap(r) => &r.stamp,
            Record::Lost(r) => &r.stamp,
            Record::PolicyDecision(r) => &r.stamp,
            Record::Notice(r) => &r.stamp,
        }
    }

    /// The socket side, for records about a connection.
    pub fn who(&self) -> Option<&Who> {
        match self {
            Record::Exchange(r) => Some(&r.who),
            Record::Segment(r) => Some(&r.who),
            Record::Connection(r) | Record::ConnectionOpen(r) => Some(&r.who),
            Record::Gap(r) => Some(&r.who),
            Record::Lost(_) | Record::PolicyDecision(_) | Record::Notice(_) => None,
        }
    }

    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Exchange(_) => "exchange",
            Record::Segment(_) => "segment",
            Record::Connection(_) => "connection",
            Record::ConnectionOpen(_) => "connection_open",
            Record::Gap(_) => "gap",
            Record::Lost(_) => "lost",
            Record::PolicyDecision(_) => "policy_decision",
            Record::Notice(_) => "notice",
        }
    }

    /// Every part holding bytes (exchanges and segments).
    pub fn parts(&self) -> &[Part] {
        match self {
            Record::Exchange(r) => &r.parts,
            Record::Segment(r) => std::slice::from_ref(&r.part),
            _ => &[],
        }
    }

    /// A notice about the agent itself, stamped now.
    pub fn notice(kind: &str, details: serde_json::Value) -> Record {
        let details = match details {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("detail".into(), other);
                m
            }
        };
        Record::Notice(Box::new(Notice { stamp: Stamp::now(), notice: kind.to_string(), details }))
    }
}
