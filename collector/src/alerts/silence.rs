//! The silence/return state machine: which agents have sent no heartbeat
//! for longer than the threshold, and when they are back, what the hole was.
//!
//! Rules (times in UTC ns; "now" and arrivals on the collector's clock, a
//! heartbeat's own time on the agent's):
//! - An agent is known from its first heartbeat received, or, after a
//!   collector restart, from its newest heartbeat in the log ([`Silence::seed`]):
//!   an agent that stopped while the collector was down is still reported.
//! - It is silent when no heartbeat has *arrived* for longer than the
//!   threshold ([`Silence::check`]; one `agent_silent` event per silence).
//! - While silent, heartbeats captured before the silence alert (an old
//!   boot's backlog re-sent from its spool) only move the hole's start; the
//!   first heartbeat captured after the alert ends the silence with one
//!   `agent_returned` event: last heartbeat before the hole, first after,
//!   whether the agent restarted (another boot id) and, within one boot, the
//!   agent's own counters across the hole.
//!
//! Pure and driven by explicit times, so tests run it without waiting.

use std::collections::HashMap;
use std::time::Duration;

use wiretrail_proto::v1::Heartbeat;

/// Where "now" comes from (injectable: tests use a fake clock).
pub use crate::when::{Clock, SystemClock};

/// One heartbeat as the collector received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    /// The agent's boot id.
    pub boot_id: String,
    /// The heartbeat's capture time (agent clock).
    pub time_ns: i64,
    /// When the collector received (stored) it.
    pub received_ns: i64,
    /// Its content.
    pub heartbeat: Heartbeat,
}

impl Beat {
    /// The beat as JSON (counters, spool and clock state).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = wiretrail_log::record_json::heartbeat_json(&self.heartbeat);
        v["boot_id"] = self.boot_id.clone().into();
        v["time_ns"] = self.time_ns.into();
        v["received_ns"] = self.received_ns.into();
        v
    }
}

/// Counter growth between two heartbeats of one boot.
pub fn counter_deltas(a: &Heartbeat, b: &Heartbeat) -> serde_json::Value {
    let d = |x: u64, y: u64| y.saturating_sub(x);
    serde_json::json!({
        "heartbeats_missed": b.number.saturating_sub(a.number).saturating_sub(1),
        "kernel_events": d(a.kernel_events, b.kernel_events),
        "kernel_lost_events": d(a.kernel_lost_events, b.kernel_lost_events),
        "kernel_lost_bytes": d(a.kernel_lost_bytes, b.kernel_lost_bytes),
        "data_bytes": d(a.data_bytes, b.data_bytes),
        "data_events": d(a.data_events, b.data_events),
        "records": d(a.records, b.records),
        "gap_records": d(a.gap_records, b.gap_records),
        "gap_bytes": d(a.gap_bytes, b.gap_bytes),
        "spool_records_dropped": d(a.spool_records_dropped, b.spool_records_dropped),
    })
}

/// What the state machine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The agent has been silent for longer than the threshold.
    Silent {
        /// The agent id.
        agent_id: String,
        /// Details (an `agent_silent` entry's detail).
        detail: serde_json::Value,
    },
    /// The agent is back.
    Returned {
        /// The agent id.
        agent_id: String,
        /// Details (an `agent_returned` entry's detail).
        detail: serde_json::Value,
    },
}

#[derive(Debug)]
struct Agent {
    /// Newest heartbeat (by capture time) before any silence.
    last: Beat,
    /// Latest arrival of any heartbeat.
    last_arrival_ns: i64,
    /// When the silence alert was raised (collector clock), while silent.
    silent_at: Option<i64>,
    /// Known from the log at collector start, not yet heard from since.
    from_log: bool,
}

/// Per-agent silence state.
#[derive(Debug)]
pub struct Silence {
    after_ns: i64,
    agents: HashMap<String, Agent>,
}

impl Silence {
    /// Agents are silent after `after` without a heartbeat.
    pub fn new(after: Duration) -> Self {
        Silence { after_ns: after.as_nanos().min(i64::MAX as u128) as i64, agents: HashMap::new() }
    }

    /// Notes a heartbeat received from `agent_id`; returns the return event when it ends a silence.
    pub fn observe(&mut self, agent_id: &str, beat: Beat) -> Option<Event> {
        let Some(a) = self.agents.get_mut(agent_id) else {
            let last_arrival_ns = beat.received_ns;
            let a = Agent { last: beat, last_arrival_ns, silent_at: None, from_log: false };
            self.agents.insert(agent_id.to_string(), a);
            return None;
        };
        a.last_arrival_ns = a.last_arrival_ns.max(beat.received_ns);
        a.from_log = false;
        match a.silent_at {
            Some(at) if beat.time_ns > at => {
                let restarted = beat.boot_id != a.last.boot_id;
                let across = if restarted {
                    serde_json::Value::Null
                } else {
                    counter_deltas(&a.last.heartbeat, &beat.heartbeat)
                };
                let detail = serde_json::json!({
                    "agent_id": agent_id,
                    "last_heartbeat": a.last.to_json(),
                    "first_heartbeat": beat.to_json(),
                    "silence_alert_ns": at,
                    "hole_from_ns": a.last.time_ns,
                    "hole_to_ns": beat.time_ns,
                    "hole_ns": beat.time_ns - a.last.time_ns,
                    "restarted": restarted,
                    "previous_boot_id": a.last.boot_id,
                    "boot_id": beat.boot_id,
                    "across_hole": across,
                });
                a.silent_at = None;
                a.last = beat;
                Some(Event::Returned { agent_id: agent_id.to_string(), detail })
            }
            _ => {
                if beat.time_ns >= a.last.time_ns {
                    a.last = beat;
                }
                None
            }
        }
    }

    /// Agents silent for longer than the threshold at `now_ns` and not yet reported.
    pub fn check(&mut self, now_ns: i64) -> Vec<Event> {
        let mut out = Vec::new();
        let mut ids: Vec<&String> = self.agents.keys().collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        for id in ids {
            let a = self.agents.get_mut(&id).expect("listed");
            let silent_for = now_ns.saturating_sub(a.last_arrival_ns);
            if a.silent_at.is_some() || silent_for <= self.after_ns {
                continue;
            }
            a.silent_at = Some(now_ns);
            let detail = serde_json::json!({
                "agent_id": id,
                "last_heartbeat": a.last.to_json(),
                "last_arrival_ns": a.last_arrival_ns,
                "silent_for_ns": silent_for,
                "threshold_ns": self.after_ns,
                "known_from_log_at_start": a.from_log,
            });
            out.push(Event::Silent { agent_id: id, detail });
        }
        out
    }

    /// Makes `agent_id` known from the log at collector start: its newest
    /// stored heartbeat, the arrival of its newest stored batch, and whether a
    /// silence alert raised before the restart is still open (`silent_at`).
    /// A heartbeat already received since start wins.
    pub fn seed(&mut self, agent_id: &str, last: Beat, last_arrival_ns: i64, silent_at: Option<i64>) {
        self.agents.entry(agent_id.to_string()).or_insert(Agent { last, last_arrival_ns, silent_at, from_log: true });
    }

    /// Whether `agent_id` is silent now.
    pub fn is_silent(&self, agent_id: &str) -> bool {
        self.agents.get(agent_id).is_some_and(|a| a.silent_at.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn beat(boot: &str, number: u64, time_s: i64, received_s: i64, kernel_events: u64) -> Beat {
        Beat {
            boot_id: boot.into(),
            time_ns: time_s * S,
            received_ns: received_s * S,
            heartbeat: Heartbeat { number, kernel_events, ..Default::default() },
        }
    }

    #[test]
    fn silent_after_the_threshold_once_then_back_with_the_hole() {
        let mut s = Silence::new(Duration::from_secs(60));
        assert!(s.observe("a", beat("b1", 0, 100, 100, 10)).is_none());
        assert!(s.observe("a", beat("b1", 1, 105, 105, 20)).is_none());
        // Exactly at the threshold: not yet.
        assert!(s.check(165 * S).is_empty());
        let ev = s.check(165 * S + 1);
        let [Event::Silent { agent_id, detail }] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(agent_id, "a");
        assert_eq!(detail["last_heartbeat"]["time_ns"], 105 * S);
        assert_eq!(detail["silent_for_ns"], 60 * S + 1);
        assert!(s.is_silent("a"));
        // Reported once per silence.
        assert!(s.check(300 * S).is_empty());
        // A backlog heartbeat captured before the alert moves the hole's start only.
        assert!(s.observe("a", beat("b1", 2, 110, 400, 30)).is_none());
        assert!(s.is_silent("a"));
        // The first heartbeat captured after the alert ends it; same boot: counters across the hole.
        let Some(Event::Returned { detail, .. }) = s.observe("a", beat("b1", 9, 401, 401, 95)) else {
            panic!("no return")
        };
        assert!(!s.is_silent("a"));
        assert_eq!(detail["hole_from_ns"], 110 * S);
        assert_eq!(detail["hole_to_ns"], 401 * S);
        assert_eq!(detail["restarted"], false);
        assert_eq!(detail["across_hole"]["kernel_events"], 65);
        assert_eq!(detail["across_hole"]["heartbeats_missed"], 6);
        assert_eq!(detail["silence_alert_ns"], 165 * S + 1);
    }

    #[test]
    fn restart_is_a_new_boot_and_counters_are_not_compared() {
        let mut s = Silence::new(Duration::from_secs(1));
        s.observe("a", beat("b1", 5, 10, 10, 500));
        s.observe("z", beat("bz", 0, 10, 12, 0));
        let ev = s.check(12 * S);
        assert_eq!(ev.len(), 1, "only a is silent: {ev:?}");
        let Some(Event::Returned { agent_id, detail }) = s.observe("a", beat("b2", 0, 13, 13, 3)) else {
            panic!("no return")
        };
        assert_eq!(agent_id, "a");
        assert_eq!(detail["restarted"], true);
        assert_eq!((detail["previous_boot_id"].as_str(), detail["boot_id"].as_str()), (Some("b1"), Some("b2")));
        assert!(detail["across_hole"].is_null());
        assert_eq!(detail["hole_ns"], 3 * S);
        // Silent again later: a new alert.
        assert!(s.check(14 * S + 1).iter().any(|e| matches!(e, Event::Silent { agent_id, .. } if agent_id == "a")));
    }

    #[test]
    fn an_agent_known_from_the_log_is_reported_when_it_never_comes_back() {
        let mut s = Silence::new(Duration::from_secs(60));
        // Last heartbeat 100, its batch arrived at 101; the collector restarts at 500.
        s.seed("gone", beat("b1", 7, 100, 101, 70), 101 * S, None);
        let ev = s.check(500 * S);
        let [Event::Silent { agent_id, detail }] = ev.as_slice() else { panic!("{ev:?}") };
        assert_eq!(agent_id, "gone");
        assert_eq!(detail["silent_for_ns"], 399 * S);
        assert_eq!(detail["known_from_log_at_start"], true);
        assert_eq!(detail["last_heartbeat"]["number"], 7);
        // A silence already alerted before the restart is not alerted again; its return states the hole.
        s.seed("quiet", beat("b2", 3, 50, 50, 30), 50 * S, Some(120 * S));
        assert!(s.check(600 * S).is_empty());
        let Some(Event::Returned { detail, .. }) = s.observe("quiet", beat("b2", 90, 610, 610, 900)) else {
            panic!("no return")
        };
        assert_eq!((detail["hole_from_ns"].as_i64(), detail["hole_to_ns"].as_i64()), (Some(50 * S), Some(610 * S)));
        assert_eq!(detail["across_hole"]["kernel_events"], 870);
        // A heartbeat received since start is newer than the log's: the seed does not replace it.
        s.observe("live", beat("b3", 9, 640, 640, 0));
        s.seed("live", beat("b3", 1, 10, 10, 0), 10 * S, None);
        assert!(s.check(665 * S).is_empty());
    }

    #[test]
    fn arrivals_keep_an_agent_alive() {
        let mut s = Silence::new(Duration::from_secs(5));
        for t in 0..20 {
            s.observe("a", beat("b", t as u64, t * 4, t * 4, 0));
            assert!(s.check(t * 4 * S + 4 * S).is_empty(), "at {t}");
        }
    }
}
