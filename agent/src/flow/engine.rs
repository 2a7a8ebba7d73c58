//! The flow engine: events in, records out.

use bytes::Bytes;

use crate::flow::config::FlowConfig;
use crate::flow::conn::{Conn, Ctx};
use crate::flow::input::{ConnOpen, FlowEvent, Transport};
use crate::flow::stats::FlowStats;
use crate::flow::table::ConnTable;
use crate::proto::Protocol;
use crate::proto::record::{Body, ConnEnd, GapInfo, GapMarker, Raw, Record, UnparsedReason};

/// Reassembles every connection's streams and parses them into records.
///
/// Drive it with [`FlowEngine::push`] for every capture event and call
/// [`FlowEngine::flush_idle`] periodically (e.g. every second) with the
/// current kernel CLOCK_BOOTTIME; [`FlowEngine::shutdown`] flushes the rest.
///
/// ```
/// use bytes::Bytes;
/// use wiretrail_agent::flow::input::{DataChunk, Direction, FlowEvent};
/// use wiretrail_agent::flow::{FlowConfig, FlowEngine};
/// use wiretrail_agent::proto::record::Body;
///
/// let mut engine = FlowEngine::new(FlowConfig::default());
/// let records = engine.push(FlowEvent::Data(DataChunk {
///     conn_id: 7,
///     direction: Direction::Egress,
///     pos: 0,
///     ts_ns: 1_000,
///     data: Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
/// }));
/// assert!(matches!(records[0].body, Body::Http1(_)));
/// // Later, from a timer: finish idle and lingering connections.
/// let flushed = engine.flush_idle(1_000 + 301 * 1_000_000_000);
/// assert!(matches!(flushed[0].body, Body::Connection(_)));
/// ```
pub struct FlowEngine {
    cfg: FlowConfig,
    table: ConnTable,
    stats: FlowStats,
}

impl FlowEngine {
    /// An engine with the given limits.
    pub fn new(cfg: FlowConfig) -> Self {
        FlowEngine { cfg, table: ConnTable::new(), stats: FlowStats::default() }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// Connections tracked.
    pub fn connections(&self) -> usize {
        self.table.len()
    }

    /// Bytes buffered across connections.
    pub fn buffered_bytes(&self) -> usize {
        self.table.buffered()
    }

    /// Whether connection `id` is tracked now.
    pub fn tracks(&self, id: u64) -> bool {
        self.table.contains(id)
    }

    /// Starts tracking a connection first seen mid-stream (opened before
    /// capture began, e.g. a server's listening UDP socket or a connection
    /// older than the agent), with the endpoints, transport and identity its
    /// first event carries; `open_seen` stays false. Without it such a
    /// connection would be assumed TCP with no endpoints, and a UDP socket's
    /// datagrams reassembled as a byte stream. No-op if already tracked.
    pub fn adopt(&mut self, open: &ConnOpen, out: &mut Vec<Record>) {
        if open.conn_id == 0 || self.table.contains(open.conn_id) {
            return;
        }
        let FlowEngine { cfg, table, stats } = self;
        let mut ctx = Ctx { cfg, stats, out };
        let mut conn = Conn::opened(open);
        conn.meta.open_seen = false;
        ctx.stats.connections_without_open += 1;
        ctx.stats.connections_opened += 1;
        if table.len() >= ctx.cfg.max_connections.max(1) {
            let batch = (ctx.cfg.max_connections / 64).max(1);
            evict(table, &mut ctx, batch);
        }
        table.insert(conn);
    }

    /// Process one event; returns the records it completed.
    pub fn push(&mut self, ev: FlowEvent) -> Vec<Record> {
        let mut out = Vec::new();
        self.push_into(ev, &mut out);
        out
    }

    /// Process one event, appending completed records to `out`.
    pub fn push_into(&mut self, ev: FlowEvent, out: &mut Vec<Record>) {
        self.stats.events += 1;
        let id = ev.conn_id();
        if let Err(e) = ev.validate() {
            tracing::warn!(conn_id = id, error = %e, "invalid capture event recorded raw");
            self.stats.invalid_events += 1;
            let error = e.to_string();
            self.orphan(ev, error, out);
            return;
        }
        if id == 0 {
            self.stats.untracked_events += 1;
            let error = "event for an untracked connection (conn_id 0)".to_string();
            self.orphan(ev, error, out);
            return;
        }
        let ts = ev.ts_ns();
        let FlowEngine { cfg, table, stats } = self;
        let mut ctx = Ctx { cfg, stats, out };
        if table.get_mut(id).is_none() {
            let conn = match &ev {
                FlowEvent::Open(o) => Conn::opened(o),
                _ => {
                    ctx.stats.connections_without_open += 1;
                    Conn::unannounced(id, ts, Transport::Tcp)
                }
            };
            ctx.stats.connections_opened += 1;
            if table.len() >= ctx.cfg.max_connections.max(1) {
                let batch = (ctx.cfg.max_connections / 64).max(1);
                evict(table, &mut ctx, batch);
            }
            table.insert(conn);
        } else if let FlowEvent::Open(o) = &ev
            && let Some(c) = table.get_mut(id)
        {
            update_open(c, o);
        }
        let Some(conn) = table.get_mut(id) else {
            return;
        };
        let mut done = false;
        match ev {
            FlowEvent::Open(_) => {}
            FlowEvent::Data(c) => {
                ctx.stats.data_bytes += c.data.len() as u64;
                conn.on_data(&mut ctx, c.direction, c.pos, c.ts_ns, c.data);
                done = conn.complete();
            }
            FlowEvent::Gap(g) => {
                conn.on_gap(&mut ctx, g.direction, g.pos, g.len, g.reason, g.ts_ns);
                done = conn.complete();
            }
            FlowEvent::Close(c) => done = conn.on_close(c),
        }
        if done {
            if let Some(mut conn) = table.remove(id) {
                ctx.stats.connections_closed += 1;
                conn.finish(&mut ctx, ConnEnd::Closed);
            }
        } else {
            table.reaccount(id);
        }
        while table.buffered() > ctx.cfg.max_buffered_bytes && !table.is_empty() {
            let batch = (table.len() / 64).max(1);
            evict(table, &mut ctx, batch);
        }
    }

    /// Finish connections closed longer than the linger or idle longer than
    /// the idle timeout, as of kernel time `now_ns`.
    pub fn flush_idle(&mut self, now_ns: u64) -> Vec<Record> {
        let mut out = Vec::new();
        let FlowEngine { cfg, table, stats } = self;
        let mut ctx = Ctx { cfg, stats, out: &mut out };
        for (id, closed) in table.expired(now_ns, ctx.cfg.idle_timeout_ns, ctx.cfg.close_linger_ns) {
            if let Some(mut conn) = table.remove(id) {
                if closed {
                    ctx.stats.connections_closed += 1;
                    conn.finish(&mut ctx, ConnEnd::Closed);
                } else {
                    ctx.stats.connections_idle += 1;
                    conn.finish(&mut ctx, ConnEnd::Idle);
                }
            }
        }
        out
    }

    /// Finish every connection (agent shutdown).
    pub fn shutdown(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        let FlowEngine { cfg, table, stats } = self;
        let mut ctx = Ctx { cfg, stats, out: &mut out };
        for id in table.ids() {
            if let Some(mut conn) = table.remove(id) {
                conn.finish(&mut ctx, ConnEnd::Shutdown);
            }
        }
        out
    }

    /// An event that cannot join a connection: recorded as is, with why.
    fn orphan(&mut self, ev: FlowEvent, error: String, out: &mut Vec<Record>) {
        let ev_conn = ev.conn_id();
        let orphan = Body::Unparsed { reason: UnparsedReason::Orphan };
        let (direction, pos, ts, raw, gaps, body, len) = match ev {
            FlowEvent::Data(c) => {
                self.stats.data_bytes += c.data.len() as u64;
                let len = c.data.len() as u64;
                (Some(c.direction), c.pos, c.ts_ns, c.data, Vec::new(), orphan, len)
            }
            FlowEvent::Gap(g) => {
                self.stats.gap_records += 1;
                self.stats.gap_bytes += g.len;
                let marker = GapMarker { offset: 0, len: g.len, reason: g.reason };
                let body = Body::Gap(GapInfo { len: g.len, reason: g.reason });
                (Some(g.direction), g.pos, g.ts_ns, Bytes::new(), vec![marker], body, g.len)
            }
            FlowEvent::Close(c) => (None, 0, c.ts_ns, Bytes::new(), Vec::new(), orphan, 0),
            FlowEvent::Open(o) => (None, 0, o.ts_ns, Bytes::new(), Vec::new(), orphan, 0),
        };
        self.stats.records += 1;
        out.push(Record {
            conn_id: ev_conn,
            direction,
            protocol: Protocol::Undetected,
            first_ts_ns: ts,
            last_ts_ns: ts,
            stream_pos: pos,
            stream_len: len,
            raw: Raw(raw),
            gaps,
            exchange: None,
            error: Some(error),
            body,
        });
    }
}

fn update_open(conn: &mut Conn, open: &ConnOpen) {
    conn.meta.open_ts = conn.meta.open_ts.min(open.ts_ns);
    conn.meta.local = open.local;
    conn.meta.remote = open.remote;
    conn.meta.transport = open.transport;
    conn.meta.identity = open.identity.clone();
    conn.meta.open_seen = true;
    conn.set_role(open.role);
}

fn evict(table: &mut ConnTable, ctx: &mut Ctx<'_>, n: usize) {
    for id in table.oldest(n) {
        if let Some(mut conn) = table.remove(id) {
            tracing::debug!(conn_id = id, buffered = conn.buffered(), "evicting connection to stay within caps");
            ctx.stats.connections_evicted += 1;
            ctx.stats.evicted_buffered_bytes += conn.buffered() as u64;
            conn.finish(ctx, ConnEnd::Evicted);
        }
    }
}
