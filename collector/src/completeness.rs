//! The completeness report of one agent over a time window, from its log
//! leaves: heartbeats seen against expected, what the agent says it saw
//! (heartbeat counters) against what was recorded, gap records by reason,
//! silences (heartbeats further apart than twice their interval, and the
//! collector's `agent_silent` / `agent_returned` entries).
//!
//! Counters are per boot: within a window, a boot contributes the growth
//! between its first and last heartbeat, or its last heartbeat's values when
//! it started inside the window. Edges are exact to one heartbeat interval.

use std::collections::BTreeMap;

use serde::Serialize;
use wiretrail_proto::v1::{Heartbeat, Record, RecordKind};

/// A silence: no heartbeat between `from_ns` and `to_ns` (agent clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    /// Capture time of the last heartbeat before.
    pub from_ns: i64,
    /// Capture time of the first heartbeat after (the window's end when none came).
    pub to_ns: i64,
    /// The heartbeat after belongs to another boot.
    pub restarted: bool,
}

/// Gap records of one reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GapTotal {
    /// Gap records.
    pub records: u64,
    /// Sum of their lengths (bytes for data gaps, records or batches for spool gaps).
    pub len: u64,
}

/// What the agent's heartbeats say it saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stated {
    /// Kernel events written to the ring.
    pub kernel_events: u64,
    /// Events lost in the kernel (ring full) and their bytes.
    pub kernel_lost_events: u64,
    /// Bytes of those events.
    pub kernel_lost_bytes: u64,
    /// Payload bytes read from the kernel.
    pub data_bytes: u64,
    /// Records made.
    pub records: u64,
    /// Raw bytes those records hold.
    pub record_payload_bytes: u64,
    /// Bytes the agent's gap records state missing.
    pub gap_bytes: u64,
    /// Records the spool could not keep.
    pub spool_records_dropped: u64,
}

/// The report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The agent.
    pub agent_id: String,
    /// The window (UTC ns; `to_ns` is now when open).
    pub from_ns: i64,
    /// End of the window.
    pub to_ns: i64,
    /// Heartbeats stored in the window.
    pub heartbeats_seen: u64,
    /// Heartbeats expected: the window (from the first heartbeat when it is open) over the interval.
    pub heartbeats_expected: u64,
    /// Heartbeat interval (ms; the largest seen).
    pub interval_ms: u64,
    /// Boots seen.
    pub boots: Vec<String>,
    /// What the agent says it saw.
    pub stated: Stated,
    /// Records stored (every kind but heartbeats) and their raw bytes.
    pub recorded_records: u64,
    /// Raw payload bytes stored.
    pub recorded_bytes: u64,
    /// Gap records by reason.
    pub gaps: BTreeMap<String, GapTotal>,
    /// Silences found in the heartbeats.
    pub silences: Vec<Silence>,
    /// The collector's silence and return entries: (kind, entry time).
    pub liveness_entries: Vec<(String, i64)>,
}

#[derive(Default)]
struct Boot {
    first: Option<Heartbeat>,
    last: Option<Heartbeat>,
}

/// Builds the report from the agent's records in the window.
pub struct Builder {
    r: Report,
    beats: Vec<(i64, String, Heartbeat)>,
}

impl Builder {
    /// A report for `agent_id` over `[from_ns, to_ns)`.
    pub fn new(agent_id: &str, from_ns: i64, to_ns: i64) -> Self {
        Builder { r: Report { agent_id: agent_id.into(), from_ns, to_ns, ..Default::default() }, beats: Vec::new() }
    }

    /// Adds one stored record of the agent (`boot_id` from its leaf).
    pub fn record(&mut self, boot_id: &str, r: &Record) {
        match r.kind() {
            RecordKind::Heartbeat => {
                if let Some(h) = &r.heartbeat {
                    self.beats.push((r.capture_time_ns, boot_id.to_string(), *h));
                }
            }
            kind => {
                self.r.recorded_records += 1;
                self.r.recorded_bytes += r.payload.len() as u64;
                if kind == RecordKind::Gap {
                    let g = r.gap.clone().unwrap_or_default();
                    let t = self.r.gaps.entry(crate::alerts::gap::reason_name(g.reason())).or_default();
                    t.records += 1;
                    t.len += g.len;
                }
            }
        }
    }

    /// Adds one of the collector's liveness entries about the agent.
    pub fn entry(&mut self, kind: &str, time_ns: i64) {
        self.r.liveness_entries.push((kind.to_string(), time_ns));
    }

    /// The report.
    pub fn finish(mut self) -> Report {
        let mut r = self.r;
        self.beats.sort_by_key(|b| b.0);
        r.heartbeats_seen = self.beats.len() as u64;
        r.interval_ms = self.beats.iter().map(|b| b.2.interval_ms).max().unwrap_or(0);
        let mut boots: BTreeMap<String, Boot> = BTreeMap::new();
        let mut boot_order = Vec::new();
        for (_, boot, h) in &self.beats {
            let b = boots.entry(boot.clone()).or_insert_with(|| {
                boot_order.push(boot.clone());
                Boot::default()
            });
            b.first.get_or_insert(*h);
            b.last = Some(*h);
        }
        for b in boots.values() {
            let (Some(first), Some(last)) = (&b.first, &b.last) else { continue };
            let from_zero = first.boot_start_ns >= r.from_ns;
            let d = |f: fn(&Heartbeat) -> u64| if from_zero { f(last) } else { f(last).saturating_sub(f(first)) };
            let s = &mut r.stated;
            s.kernel_events += d(|h| h.kernel_events);
            s.kernel_lost_events += d(|h| h.kernel_lost_events);
            s.kernel_lost_bytes += d(|h| h.kernel_lost_bytes);
            s.data_bytes += d(|h| h.data_bytes);
            s.records += d(|h| h.records);
            s.record_payload_bytes += d(|h| h.record_payload_bytes);
            s.gap_bytes += d(|h| h.gap_bytes);
            s.spool_records_dropped += d(|h| h.spool_records_dropped);
        }
        r.boots = boot_order;
        let interval_ns = r.interval_ms as i64 * 1_000_000;
        if interval_ns > 0 {
            for w in self.beats.windows(2) {
                if w[1].0 - w[0].0 > 2 * interval_ns {
                    r.silences.push(Silence { from_ns: w[0].0, to_ns: w[1].0, restarted: w[0].1 != w[1].1 });
                }
            }
            if let Some(last) = self.beats.last()
                && r.to_ns - last.0 > 2 * interval_ns
            {
                r.silences.push(Silence { from_ns: last.0, to_ns: r.to_ns, restarted: false });
            }
            let start = if r.from_ns > 0 { r.from_ns } else { self.beats.first().map_or(r.to_ns, |b| b.0) };
            // One every interval from `start`, the end excluded.
            r.heartbeats_expected = ((r.to_ns - start).max(0) + interval_ns - 1).div_euclid(interval_ns) as u64;
        }
        r
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use crate::when::fmt_ns;
    let from = if r.from_ns == 0 { "the first record".to_string() } else { fmt_ns(r.from_ns) };
    let mut s = format!("agent {}  window {from} .. {}\n", wiretrail_log::text::escape(&r.agent_id), fmt_ns(r.to_ns));
    s += &format!(
        "heartbeats   seen {} / expected {} (interval {} ms), boots {}\n",
        r.heartbeats_seen,
        r.heartbeats_expected,
        r.interval_ms,
        r.boots.len()
    );
    let st = &r.stated;
    s += &format!(
        "agent saw    {} kernel events ({} lost, {} bytes lost), {} data bytes, {} records holding {} bytes, \
         {} gap bytes, {} records dropped by the spool\n",
        st.kernel_events,
        st.kernel_lost_events,
        st.kernel_lost_bytes,
        st.data_bytes,
        st.records,
        st.record_payload_bytes,
        st.gap_bytes,
        st.spool_records_dropped
    );
    s += &format!("recorded     {} records holding {} bytes\n", r.recorded_records, r.recorded_bytes);
    for (reason, g) in &r.gaps {
        s += &format!("gap          {reason}: {} records, length {}\n", g.records, g.len);
    }
    for x in &r.silences {
        s += &format!(
            "silence      {} .. {} ({} ms){}\n",
            fmt_ns(x.from_ns),
            fmt_ns(x.to_ns),
            (x.to_ns - x.from_ns) / 1_000_000,
            if x.restarted { ", agent restarted" } else { "" }
        );
    }
    for (kind, t) in &r.liveness_entries {
        s += &format!("collector    {kind} at {}\n", fmt_ns(*t));
    }
    s
}

#[cfg(test)]
mod tests {
    use wiretrail_proto::v1::{Gap, GapReason};

    use super::*;

    const MS: i64 = 1_000_000;

    fn hb(t_ms: i64, boot_start_ms: i64, data_bytes: u64) -> Record {
        let mut r = Record {
            capture_time_ns: t_ms * MS,
            heartbeat: Some(Heartbeat {
                interval_ms: 100,
                boot_start_ns: boot_start_ms * MS,
                data_bytes,
                record_payload_bytes: data_bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        r.set_kind(RecordKind::Heartbeat);
        r
    }

    #[test]
    fn heartbeats_counters_gaps_and_silences() {
        let mut b = Builder::new("a", 1_000 * MS, 2_000 * MS);
        // Boot 1 started before the window: only its growth counts.
        for (i, t) in [1_000, 1_100, 1_200].iter().enumerate() {
            b.record("b1", &hb(*t, 0, 500 + 10 * i as u64));
        }
        // Killed; boot 2 starts inside the window: its counters from zero.
        for (i, t) in [1_700, 1_800, 1_900].iter().enumerate() {
            b.record("b2", &hb(*t, 1_650, 5 * (i as u64 + 1)));
        }
        let mut g = Record {
            payload: vec![],
            gap: Some(Gap { len: 40, reason: GapReason::RingFull as i32, ..Default::default() }),
            ..Default::default()
        };
        g.set_kind(RecordKind::Gap);
        b.record("b1", &g);
        b.record("b1", &g);
        let mut x = Record { payload: vec![0; 7], ..Default::default() };
        x.set_kind(RecordKind::Exchange);
        b.record("b2", &x);
        b.entry("agent_silent", 1_500 * MS);
        let r = b.finish();
        assert_eq!((r.heartbeats_seen, r.heartbeats_expected, r.interval_ms), (6, 10, 100));
        assert_eq!(r.stated.data_bytes, 20 + 15);
        assert_eq!((r.recorded_records, r.recorded_bytes), (3, 7));
        assert_eq!(r.gaps["ring_full"], GapTotal { records: 2, len: 80 });
        assert_eq!(r.silences, vec![Silence { from_ns: 1_200 * MS, to_ns: 1_700 * MS, restarted: true }]);
        let text = render(&r);
        assert!(
            text.contains("seen 6 / expected 10")
                && text.contains(
                    "silence      1970-01-01T00:00:01.2Z .. 1970-01-01T00:00:01.7Z (500 ms), agent restarted"
                ),
            "{text}"
        );
    }

    #[test]
    fn a_silent_end_of_window_is_a_silence() {
        let mut b = Builder::new("a", 0, 1_000 * MS);
        b.record("b", &hb(100, 0, 0));
        b.record("b", &hb(200, 0, 0));
        let r = b.finish();
        assert_eq!(r.heartbeats_expected, 9);
        assert_eq!(r.silences, vec![Silence { from_ns: 200 * MS, to_ns: 1_000 * MS, restarted: false }]);
    }
}
