//! The agent's connection table: feeds every event's byte range into per-direction
//! accounts and produces explicit gaps for bytes that never arrive.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::stream::{Hole, StreamAccount};
use crate::capture::event::{CaptureEvent, Direction, GapReason, Meta};

/// Limits of the table.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// How long a hole may wait for a late event (other CPUs) before it is a gap.
    pub reorder_window: Duration,
    /// A connection with no event for this long is flushed and forgotten.
    pub idle_timeout: Duration,
    /// Most connections kept; the least recently seen are flushed beyond it.
    pub max_conns: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            reorder_window: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            max_conns: 100_000,
        }
    }
}

/// A byte range known to be missing from a connection's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Identity and addresses of the connection (its latest event).
    pub meta: Meta,
    pub direction: Direction,
    pub pos: u64,
    pub len: u64,
    pub reason: GapReason,
}

struct Conn {
    /// Latest event's metadata, used to describe gaps.
    meta: Meta,
    tx: StreamAccount,
    rx: StreamAccount,
    /// Highest totals the kernel reported (bytes reserved per direction).
    tx_total: u64,
    rx_total: u64,
    /// TLS plaintext streams of the same connection (their own positions).
    tls_tx: StreamAccount,
    tls_rx: StreamAccount,
    tls_tx_total: u64,
    tls_rx_total: u64,
    /// Latest TLS event's metadata (names the library on TLS gaps).
    tls_meta: Option<Meta>,
    last_seen: Instant,
    /// Set by the close event: finalize after the reorder window.
    closing_since: Option<Instant>,
}

/// Connection table (see module docs).
pub struct Tracker {
    config: TrackerConfig,
    conns: HashMap<u64, Conn>,
    /// Connections flushed because of `max_conns` or `idle_timeout`.
    pub evicted: u64,
    /// Bytes seen twice (should stay 0; a non-zero value is a capture bug).
    pub overlap_bytes: u64,
}

fn holes_to_gaps(meta: &Meta, direction: Direction, holes: Vec<Hole>, out: &mut Vec<Gap>) {
    out.extend(holes.into_iter().map(|h| Gap {
        meta: meta.clone(),
        direction,
        pos: h.pos,
        len: h.len,
        reason: GapReason::Lost,
    }));
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Tracker { config, conns: HashMap::new(), evicted: 0, overlap_bytes: 0 }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Accounts for one event; returns gaps it makes known (explicit truncations).
    pub fn on_event(&mut self, ev: &CaptureEvent, now: Instant) -> Vec<Gap> {
        let meta = ev.meta();
        if meta.untracked || meta.conn_id == 0 {
            return Vec::new();
        }
        let conn = self.conns.entry(meta.conn_id).or_insert_with(|| Conn {
            meta: meta.clone(),
            tx: StreamAccount::default(),
            rx: StreamAccount::default(),
            tx_total: 0,
            rx_total: 0,
            tls_tx: StreamAccount::default(),
            tls_rx: StreamAccount::default(),
            tls_tx_total: 0,
            tls_rx_total: 0,
            tls_meta: None,
            last_seen: now,
            closing_since: None,
        });
        conn.last_seen = now;
        if meta.tls {
            conn.tls_tx_total = conn.tls_tx_total.max(meta.tx_total);
            conn.tls_rx_total = conn.tls_rx_total.max(meta.rx_total);
        } else {
            conn.tx_total = conn.tx_total.max(meta.tx_total);
            conn.rx_total = conn.rx_total.max(meta.rx_total);
        }
        let mut gaps = Vec::new();
        match ev {
            CaptureEvent::Data { direction, pos, payload, .. } => {
                self.overlap_bytes += conn.account(*direction, meta.tls).seen(*pos, payload.len() as u64, now);
            }
            CaptureEvent::Truncated { direction, pos, len, reason, .. } => {
                self.overlap_bytes += conn.account(*direction, meta.tls).seen(*pos, *len, now);
                gaps.push(Gap { meta: meta.clone(), direction: *direction, pos: *pos, len: *len, reason: *reason });
            }
            CaptureEvent::Close { .. } => conn.closing_since = Some(now),
            CaptureEvent::Connect { .. } | CaptureEvent::Accept { .. } | CaptureEvent::Exec { .. } => {}
        }
        if meta.tls {
            conn.tls_meta = Some(meta.clone());
        } else {
            conn.meta = meta.clone();
        }
        gaps
    }

    /// Periodic work: holes past the reorder window become gaps, closed
    /// connections are finalized, idle and excess connections are flushed.
    pub fn tick(&mut self, now: Instant) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let window = self.config.reorder_window;
        let hole_deadline = now.checked_sub(window).unwrap_or(now);
        let mut done = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            let closed = c.closing_since.is_some_and(|t| now.duration_since(t) >= window);
            let idle = now.duration_since(c.last_seen) >= self.config.idle_timeout;
            if closed || idle {
                c.finish(&mut gaps);
                done.push(id);
                if idle && !closed {
                    self.evicted += 1;
                }
            } else {
                c.expire(hole_deadline, &mut gaps);
            }
        }
        for id in done {
            self.conns.remove(&id);
        }
        if self.conns.len() > self.config.max_conns {
            let mut by_age: Vec<(Instant, u64)> = self.conns.iter().map(|(&id, c)| (c.last_seen, id)).collect();
            by_age.sort_unstable();
            let excess = self.conns.len() - self.config.max_conns;
            for &(_, id) in by_age.iter().take(excess) {
                if let Some(mut c) = self.conns.remove(&id) {
                    c.finish(&mut gaps);
                    self.evicted += 1;
                }
            }
        }
        gaps
    }

    /// Shutdown: every connection is finalized against the kernel's totals.
    pub fn finish_all(&mut self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        for (_, mut c) in self.conns.drain() {
            c.finish(&mut gaps);
        }
        gaps
    }
}

impl Conn {
    fn account(&mut self, d: Direction, tls: bool) -> &mut StreamAccount {
        match (d, tls) {
            (Direction::Egress, false) => &mut self.tx,
            (Direction::Ingress, false) => &mut self.rx,
            (Direction::Egress, true) => &mut self.tls_tx,
            (Direction::Ingress, true) => &mut self.tls_rx,
        }
    }

    /// Finalizes every stream against the highest totals the kernel reported.
    fn finish(&mut self, out: &mut Vec<Gap>) {
        let tls_meta = self.tls_meta.clone().unwrap_or_else(|| Meta { tls: true, ..self.meta.clone() });
        holes_to_gaps(&self.meta, Direction::Egress, self.tx.finish(self.tx_total), out);
        holes_to_gaps(&self.meta, Direction::Ingress, self.rx.finish(self.rx_total), out);
        holes_to_gaps(&tls_meta, Direction::Egress, self.tls_tx.finish(self.tls_tx_total), out);
        holes_to_gaps(&tls_meta, Direction::Ingress, self.tls_rx.finish(self.tls_rx_total), out);
    }

    fn expire(&mut self, deadline: Instant, out: &mut Vec<Gap>) {
        let tls_meta = self.tls_meta.clone().unwrap_or_else(|| Meta { tls: true, ..self.meta.clone() });
        holes_to_gaps(&self.meta, Direction::Egress, self.tx.expire(deadline), out);
        holes_to_gaps(&self.meta, Direction::Ingress, self.rx.expire(deadline), out);
        holes_to_gaps(&tls_meta, Direction::Egress, self.tls_tx.expire(deadline), out);
        holes_to_gaps(&tls_meta, Direction::Ingress, self.tls_rx.expire(deadline), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(conn_id: u64, tx_total: u64, rx_total: u64) -> Meta {
        Meta { tx_total, rx_total, ..Meta::for_test(conn_id, "127.0.0.1:1", "127.0.0.1:2") }
    }

    fn data(conn: u64, pos: u64, len: usize, tx_total: u64) -> CaptureEvent {
        CaptureEvent::Data {
            meta: meta(conn, tx_total, 0),
            direction: Direction::Egress,
            pos,
            payload: vec![7; len].into(),
        }
    }

    #[test]
    fn complete_connection_has_no_gaps() {
        let t = Instant::now();
        let mut tr = Tracker::new(TrackerConfig::default());
        assert!(tr.on_event(&data(1, 0, 10, 10), t).is_empty());
        assert!(tr.on_event(&data(1, 10, 10, 20), t).is_empty());
        tr.on_event(&CaptureEvent::Close { meta: meta(1, 20, 0) }, t);
        assert!(tr.tick(t + Duration::from_secs(3)).is_empty());
        assert!(tr.is_empty());
    }

    #[test]
    fn lost_middle_and_tail_become_gaps_after_close() {
        let t = Instant::now();
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.on_event(&data(1, 0, 10, 10), t);
        tr.on_event(&data(1, 20, 10, 30), t);
        tr.on_event(&CaptureEvent::Close { meta: meta(1, 45, 0) }, t);
        assert!(tr.tick(t + Duration::from_millis(500)).is_empty(), "inside reorder window");
        let gaps = tr.tick(t + Duration::from_secs(3));
        let got: Vec<_> = gaps.iter().map(|g| (g.pos, g.len, g.reason)).collect();
        assert_eq!(got, vec![(10, 10, GapReason::Lost), (30, 15, GapReason::Lost)]);
    }

    #[test]
    fn truncation_is_an_immediate_gap_and_fills_the_account() {
        let t = Instant::now();
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.on_event(&data(1, 0, 10, 100), t);
        let trunc = CaptureEvent::Truncated {
            meta: meta(1, 100, 0),
            direction: Direction::Egress,
            pos: 10,
            len: 90,
            reason: GapReason::Truncated,
        };
        let gaps = tr.on_event(&trunc, t);
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].pos, gaps[0].len, gaps[0].reason), (10, 90, GapReason::Truncated));
        assert!(tr.finish_all().is_empty());
    }

    #[test]
    fn excess_connections_are_flushed_and_counted() {
        let t = Instant::now();
        let mut tr = Tracker::new(TrackerConfig { max_conns: 2, ..Default::default() });
        for id in 1..=4 {
            tr.on_event(&data(id, 0, 1, 5), t + Duration::from_millis(id));
        }
        let gaps = tr.tick(t + Duration::from_millis(10));
        assert_eq!(tr.len(), 2);
        assert_eq!(tr.evicted, 2);
        // The two oldest had 4 bytes each never seen.
        assert_eq!(gaps.iter().map(|g| g.meta.conn_id).collect::<Vec<_>>(), vec![1, 2]);
    }
}
