//! The bridge from capture to reassembly: maps captured events (and the
//! tracker's lost-byte gaps) onto [`FlowEvent`]s and runs the [`FlowEngine`].
//!
//! TLS plaintext has its own byte positions on the same connection, so it is
//! reassembled as a separate flow whose id is the connection id with
//! [`TLS_FLOW_BIT`] set; records of that flow are reported on the connection id
//! with `tls: true`. The socket's own (ciphertext) stream is reassembled too and
//! yields raw records: metadata never replaces the original.
use std::collections::HashMap;

use super::{
    FlowConfig, FlowEngine,
    input::{self, ConnClose, ConnOpen, DataChunk, FlowEvent, GapEvent, ProcessIdentity, Role},
};
use crate::{
    capture::event::{CaptureEvent, Direction, GapReason, Meta, Transport},
    conn::Gap,
    proto::record::Record,
};

/// Set on the flow id of a connection's TLS plaintext stream.
pub const TLS_FLOW_BIT: u64 = 1 << 63;

/// Feeds the flow engine.
pub struct Feed {
    engine: FlowEngine,
    /// Who initiated each connection (from connect/accept), for its TLS flow.
    roles: HashMap<u64, Role>,
    /// Highest TLS plaintext totals seen per connection, to close its TLS flow.
    tls_totals: HashMap<u64, (u64, u64)>,
}

fn dir(d: Direction) -> input::Direction {
    match d {
        Direction::Egress => input::Direction::Egress,
        Direction::Ingress => input::Direction::Ingress,
    }
}

fn reason(r: GapReason) -> input::GapReason {
    match r {
        GapReason::Lost => input::GapReason::Lost,
        GapReason::Truncated => input::GapReason::Truncated,
        GapReason::Unreadable => input::GapReason::Unreadable,
    }
}

fn open(m: &Meta, id: u64, role: Role) -> FlowEvent {
    FlowEvent::Open(conn_open(m, id, role))
}

fn conn_open(m: &Meta, id: u64, role: Role) -> ConnOpen {
    ConnOpen {
        conn_id: id,
        ts_ns: m.ts_ns,
        local: Some(m.local),
        remote: (!m.peer_from_arg).then_some(m.remote),
        transport: match m.transport {
            Transport::Tcp => input::Transport::Tcp,
            Transport::Udp => input::Transport::Udp,
        },
        role,
        identity: ProcessIdentity { pid: m.pid, uid: m.uid, comm: m.comm.clone(), cgroup_id: m.cgroup_id },
    }
}

impl Feed {
    /// A feed with an engine configured by `config`.
    pub fn new(config: FlowConfig) -> Self {
        Feed { engine: FlowEngine::new(config), roles: HashMap::new(), tls_totals: HashMap::new() }
    }

    /// The engine (for its counters).
    pub fn engine(&self) -> &FlowEngine {
        &self.engine
    }

    fn flow_id(m: &Meta) -> u64 {
        if m.tls && m.conn_id != 0 { m.conn_id | TLS_FLOW_BIT } else { m.conn_id }
    }

    /// One captured event.
    pub fn on_event(&mut self, ev: &CaptureEvent, out: &mut Vec<Record>) {
        let m = ev.meta();
        let id = Self::flow_id(m);
        if m.tls && m.conn_id != 0 && !self.tls_totals.contains_key(&m.conn_id) {
            let role = self.roles.get(&m.conn_id).copied().unwrap_or(Role::Unknown);
            self.engine.push_into(open(m, id, role), out);
        }
        if m.tls && m.conn_id != 0 {
            let t = self.tls_totals.entry(m.conn_id).or_insert((0, 0));
            *t = (t.0.max(m.tx_total), t.1.max(m.rx_total));
        }
        // A socket first seen mid-stream (older than the agent): tracked with
        // the transport, endpoints and identity its first event carries.
        if !matches!(ev, CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } | CaptureEvent::Exec { .. })
            && id != 0
            && !self.engine.tracks(id)
        {
            let role = self.roles.get(&m.conn_id).copied().unwrap_or(Role::Unknown);
            self.engine.adopt(&conn_open(m, id, role), out);
        }
        match ev {
            CaptureEvent::Connect { .. } => {
                self.roles.insert(m.conn_id, Role::Client);
                self.engine.push_into(open(m, id, Role::Client), out);
            }
            CaptureEvent::Accept { .. } => {
                self.roles.insert(m.conn_id, Role::Server);
                self.engine.push_into(open(m, id, Role::Server), out);
            }
            CaptureEvent::Data { direction, pos, payload, .. } => {
                let chunk = DataChunk {
                    conn_id: id,
                    direction: dir(*direction),
                    pos: *pos,
                    ts_ns: m.ts_ns,
                    data: payload.clone(),
                };
                self.engine.push_into(FlowEvent::Data(chunk), out);
            }
            CaptureEvent::Truncated { direction, pos, len, reason: r, .. } => {
                let gap = GapEvent {
                    conn_id: id,
                    direction: dir(*direction),
                    pos: *pos,
                    len: *len,
                    ts_ns: m.ts_ns,
                    reason: reason(*r),
                };
                self.engine.push_into(FlowEvent::Gap(gap), out);
            }
            CaptureEvent::Close { .. } => {
                let close = ConnClose { conn_id: id, ts_ns: m.ts_ns, tx_total: m.tx_total, rx_total: m.rx_total };
                self.engine.push_into(FlowEvent::Close(close), out);
                if let Some((tx, rx)) = self.tls_totals.remove(&m.conn_id) {
                    let close =
                        ConnClose { conn_id: m.conn_id | TLS_FLOW_BIT, ts_ns: m.ts_ns, tx_total: tx, rx_total: rx };
                    self.engine.push_into(FlowEvent::Close(close), out);
                }
                self.roles.remove(&m.conn_id);
            }
            CaptureEvent::Exec { .. } => {}
        }
    }

    /// Bytes the tracker found missing (lost events).
    pub fn on_gap(&mut self, g: &Gap, out: &mut Vec<Record>) {
        let gap = GapEvent {
            conn_id: Self::flow_id(&g.meta),
            direction: dir(g.direction),
            pos: g.pos,
            len: g.len,
            ts_ns: g.meta.ts_ns,
            reason: reason(g.reason),
        };
        self.engine.push_into(FlowEvent::Gap(gap), out);
    }

    /// Finishes idle and closed flows as of kernel time `now_ns`.
    pub fn flush_idle(&mut self, now_ns: u64) -> Vec<Record> {
        self.engine.flush_idle(now_ns)
    }

    /// Finishes every flow (agent shutdown).
    pub fn shutdown(&mut self) -> Vec<Record> {
        self.engine.shutdown()
    }
}
