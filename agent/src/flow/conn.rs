//! One connection: both directions' streams, the protocol parser, request
//! pairing, and the rules that turn parser results, gaps and caps into records.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::flow::config::FlowConfig;
use crate::flow::detect::{ConnHints, Detect, detect, detect_datagram};
use crate::flow::input::{ConnClose, ConnOpen, Direction, GapReason, ProcessIdentity, Role, Transport};
use crate::flow::stats::FlowStats;
use crate::flow::stream::{DirStream, GapSeg, Seg};
use crate::proto::record::{Body, ConnEnd, ConnSummary, DirBytes, Raw, Record, UnparsedReason};
use crate::proto::{Parse, Parser, Protocol, make_parser};

mod emit;
mod pump;
mod span;

use span::Span;

#[derive(Debug)]
enum SyncState {
    /// At a message boundary; do not call the parser before `need_min` bytes.
    InSync { need_min: usize },
    /// Looking for a message boundary.
    Desynced,
    /// Inside a message being collected across a gap or cap.
    Spanning(Box<Span>),
}

#[derive(Debug)]
struct DirState {
    stream: DirStream,
    sync: SyncState,
    kernel_total: Option<u64>,
}

impl DirState {
    fn new() -> Self {
        DirState { stream: DirStream::new(), sync: SyncState::InSync { need_min: 0 }, kernel_total: None }
    }
}

/// Static facts about a connection.
#[derive(Clone, Debug)]
pub struct ConnMeta {
    /// Kernel ns of the open (or first) event.
    pub open_ts: u64,
    /// Local endpoint.
    pub local: Option<std::net::SocketAddr>,
    /// Remote endpoint.
    pub remote: Option<std::net::SocketAddr>,
    /// TCP or UDP.
    pub transport: Transport,
    /// Who connected.
    pub role: Role,
    /// Whether an open event was seen.
    pub open_seen: bool,
    /// Process identity.
    pub identity: ProcessIdentity,
}

/// Everything the engine knows about one connection.
pub struct Conn {
    /// Connection id.
    pub id: u64,
    /// Endpoints and identity.
    pub meta: ConnMeta,
    /// Kernel ns of the latest event.
    pub last_activity: u64,
    /// The close event, once seen.
    pub close: Option<ConnClose>,
    protocol: Protocol,
    parser: Option<Box<dyn Parser>>,
    dirs: [DirState; 2],
    pending: VecDeque<(u64, u64)>,
    messages: u64,
}

/// Shared context of one engine call.
pub struct Ctx<'a> {
    /// Limits.
    pub cfg: &'a FlowConfig,
    /// Counters.
    pub stats: &'a mut FlowStats,
    /// Output.
    pub out: &'a mut Vec<Record>,
}

impl Conn {
    /// A connection from its open event.
    pub fn opened(open: &ConnOpen) -> Self {
        Conn::new(
            open.conn_id,
            ConnMeta {
                open_ts: open.ts_ns,
                local: open.local,
                remote: open.remote,
                transport: open.transport,
                role: open.role,
                open_seen: true,
                identity: open.identity.clone(),
            },
        )
    }

    /// A connection first seen through data, a gap or a close (no open).
    pub fn unannounced(id: u64, ts: u64, transport: Transport) -> Self {
        Conn::new(
            id,
            ConnMeta {
                open_ts: ts,
                local: None,
                remote: None,
                transport,
                role: Role::Unknown,
                open_seen: false,
                identity: ProcessIdentity::default(),
            },
        )
    }

    fn new(id: u64, meta: ConnMeta) -> Self {
        let mut dirs = [DirState::new(), DirState::new()];
        if meta.role == Role::Unknown {
            for d in &mut dirs {
                d.sync = SyncState::Desynced;
            }
        }
        Conn {
            id,
            last_activity: meta.open_ts,
            meta,
            close: None,
            protocol: Protocol::Undetected,
            parser: None,
            dirs,
            pending: VecDeque::new(),
            messages: 0,
        }
    }

    /// The open event arrived after other events: adopt its role if no
    /// parser started yet.
    pub fn set_role(&mut self, role: Role) {
        self.meta.role = role;
        if self.parser.is_none() && role != Role::Unknown {
            for d in &mut self.dirs {
                d.sync = SyncState::InSync { need_min: 0 };
            }
        }
    }

    /// Protocol detected so far.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Bytes held in memory for this connection.
    pub fn buffered(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| {
                d.stream.buffered()
                    + match &d.sync {
                        SyncState::Spanning(s) => s.raw.len(),
                        _ => 0,
                    }
            })
            .sum()
    }

    /// Payload bytes arrived.
    pub fn on_data(&mut self, ctx: &mut Ctx<'_>, dir: Direction, pos: u64, ts: u64, data: Bytes) {
        self.last_activity = self.last_activity.max(ts);
        if self.meta.transport == Transport::Udp {
            self.on_datagram(ctx, dir, pos, ts, data);
            return;
        }
        let st = &mut self.dirs[dir.index()];
        let out = st.stream.insert_data(pos, ts, data, ctx.cfg.max_reorder_bytes);
        ctx.stats.overlap_bytes += out.overlap;
        ctx.stats.reorder_overflows += out.overflow_gaps;
        if out.overlap > 0 {
            tracing::debug!(
                conn_id = self.id,
                ?dir,
                pos,
                bytes = out.overlap,
                "overlapping capture data; first copy kept"
            );
        }
        self.advance(ctx, false);
    }

    /// Capture reported missing bytes.
    pub fn on_gap(&mut self, ctx: &mut Ctx<'_>, dir: Direction, pos: u64, len: u64, reason: GapReason, ts: u64) {
        self.last_activity = self.last_activity.max(ts);
        if self.meta.transport == Transport::Udp {
            let st = &mut self.dirs[dir.index()];
            st.stream.gap_bytes += len;
            let g = GapSeg { pos, len, reason, ts_ns: ts };
            self.emit_gap(ctx, dir, g);
            return;
        }
        let out = self.dirs[dir.index()].stream.insert_gap(pos, len, reason, ts);
        ctx.stats.overlap_gap_bytes += out.overlap;
        self.advance(ctx, false);
    }

    /// The close event arrived. Returns true when every byte up to the final
    /// counts is accounted for and the connection can be finished now.
    pub fn on_close(&mut self, close: ConnClose) -> bool {
        self.last_activity = self.last_activity.max(close.ts_ns);
        self.dirs[0].kernel_total = Some(close.tx_total);
        self.dirs[1].kernel_total = Some(close.rx_total);
        self.close = Some(close);
        self.complete()
    }

    /// Close seen and both streams delivered up to the final counts.
    pub fn complete(&self) -> bool {
        self.close.is_some()
            && (self.meta.transport == Transport::Udp
                || self.dirs.iter().all(|d| {
                    d.kernel_total
                        .is_some_and(|t| d.stream.next_pos() >= t && d.stream.high_water() <= d.stream.next_pos())
                }))
    }

    /// Flush everything: missing bytes become gaps, partial messages become
    /// incomplete records, and the connection record is emitted last.
    pub fn finish(&mut self, ctx: &mut Ctx<'_>, end: ConnEnd) {
        let ts = self.last_activity;
        let tcp = self.meta.transport == Transport::Tcp;
        for st in &mut self.dirs {
            // Bytes can sit in a UDP connection's stream only if an open
            // event changed its transport after TCP data arrived.
            let waiting = st.stream.high_water() > st.stream.next_pos();
            let (target, reason) = match st.kernel_total {
                Some(t) if tcp => (t.max(st.stream.high_water()), GapReason::MissingAtClose),
                _ => (st.stream.high_water(), GapReason::MissingAtFlush),
            };
            if tcp || waiting {
                st.stream.fill_to(target, reason, ts);
            }
        }
        self.advance(ctx, true);
        let summary = ConnSummary {
            open_ts_ns: self.meta.open_ts,
            close_ts_ns: self.close.as_ref().map(|c| c.ts_ns),
            local: self.meta.local,
            remote: self.meta.remote,
            transport: self.meta.transport,
            role: self.meta.role,
            open_seen: self.meta.open_seen,
            identity: self.meta.identity.clone(),
            egress: self.dir_bytes(Direction::Egress),
            ingress: self.dir_bytes(Direction::Ingress),
            messages: self.messages,
            end,
        };
        let last = self.close.as_ref().map_or(self.last_activity, |c| c.ts_ns.max(self.last_activity));
        ctx.stats.records += 1;
        ctx.out.push(Record {
            conn_id: self.id,
            direction: None,
            protocol: self.protocol,
            first_ts_ns: self.meta.open_ts,
            last_ts_ns: last,
            stream_pos: 0,
            stream_len: 0,
            raw: Raw::default(),
            gaps: Vec::new(),
            exchange: None,
            error: None,
            body: Body::Connection(summary),
        });
    }

    fn dir_bytes(&self, dir: Direction) -> DirBytes {
        let st = &self.dirs[dir.index()];
        DirBytes { captured: st.stream.captured, gap: st.stream.gap_bytes, kernel_total: st.kernel_total }
    }

    fn hints(&self) -> ConnHints {
        ConnHints {
            transport: self.meta.transport,
            role: self.meta.role,
            local_port: self.meta.local.map(|a| a.port()),
            remote_port: self.meta.remote.map(|a| a.port()),
        }
    }

    fn ensure_parser(&mut self, ctx: &mut Ctx<'_>, final_: bool) -> bool {
        if self.parser.is_some() {
            return true;
        }
        let mut fronts: [Bytes; 2] = [Bytes::new(), Bytes::new()];
        let mut forced = final_;
        for (i, st) in self.dirs.iter_mut().enumerate() {
            match st.stream.front_mut() {
                Some(Seg::Data(d)) => {
                    let b = d.contiguous().clone();
                    forced |= b.len() >= ctx.cfg.detect_max_bytes;
                    fronts[i] = b;
                }
                Some(Seg::Gap(_)) => forced = true,
                None => {}
            }
        }
        match detect(self.hints(), &fronts[0], &fronts[1], forced) {
            Detect::NeedMore => false,
            Detect::Found(proto, client_dir) => {
                self.protocol = proto;
                self.parser = Some(make_parser(proto, client_dir, self.meta.transport, &ctx.cfg.proto));
                true
            }
        }
    }

    fn advance(&mut self, ctx: &mut Ctx<'_>, final_: bool) {
        if !self.ensure_parser(ctx, final_) {
            return;
        }
        for dir in Direction::BOTH {
            self.pump(ctx, dir, final_);
        }
    }

    fn on_datagram(&mut self, ctx: &mut Ctx<'_>, dir: Direction, pos: u64, ts: u64, data: Bytes) {
        self.dirs[dir.index()].stream.captured += data.len() as u64;
        if data.is_empty() {
            return;
        }
        if self.parser.is_none()
            && let Detect::Found(proto, client_dir) = detect_datagram(self.hints(), Some((dir, &data)))
        {
            self.protocol = proto;
            self.parser = Some(make_parser(proto, client_dir, self.meta.transport, &ctx.cfg.proto));
        }
        let Some(parser) = self.parser.as_mut() else {
            return;
        };
        let (body, exchange, error) = match parser.parse(dir, &data) {
            Parse::Message(p) => {
                let error = if p.len < data.len() {
                    Some(
                        p.error.unwrap_or_default()
                            + &format!("{} bytes after the message in the datagram", data.len() - p.len),
                    )
                } else {
                    p.error
                };
                (p.body, p.exchange, error)
            }
            Parse::Need { .. } => {
                let partial = parser.interrupted(dir, &data);
                (partial.body, partial.exchange, Some("datagram ends inside the message".to_string()))
            }
            Parse::Invalid { error, .. } => (Body::Unparsed { reason: UnparsedReason::Malformed }, None, Some(error)),
        };
        if error.is_some() && !matches!(body, Body::Unparsed { .. }) {
            ctx.stats.malformed_messages += 1;
        }
        self.emit(ctx, dir, pos, data, Vec::new(), ts, ts, body, exchange, error);
    }
}
