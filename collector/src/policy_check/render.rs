//! The report as a table or as JSON lines.
use std::io::Write;

use wiretrail_common::policy::{FlowDirection, Policy, Verdict};

use super::replay::{Outcome, Report};

fn zone_name(p: &Policy, z: Option<u32>) -> String {
    z.and_then(|z| p.zone(z)).map_or_else(|| "-".to_string(), |z| z.name.clone())
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::NotSegmented => "not-segmented",
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Audit => "audit",
    }
}

fn proto(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "?",
    }
}

fn direction(d: FlowDirection) -> &'static str {
    match d {
        FlowDirection::Egress => "egress",
        FlowDirection::Ingress => "ingress",
    }
}

/// The zone whose default decided (the local zone) and its mode.
fn decided_by(p: &Policy, o: &Outcome) -> String {
    match o.decision.mode {
        Some(m) => format!("{} ({})", zone_name(p, o.local_zone), m.as_str()),
        None => "-".into(),
    }
}

/// One JSON object per denied/audited flow, then `{"summary": ...}`.
pub fn json(out: &mut impl Write, p: &Policy, r: &Report) -> std::io::Result<()> {
    for o in r.findings() {
        let v = serde_json::json!({
            "verdict": verdict(o.decision.verdict),
            "direction": direction(o.flow.direction),
            "workload": o.flow.workload,
            "local_zone": o.local_zone.and_then(|z| p.zone(z)).map(|z| &z.name),
            "peer": o.flow.peer.to_string(),
            "peer_zone": o.flow.peer_zone.and_then(|z| p.zone(z)).map(|z| &z.name),
            "port": o.flow.port,
            "protocol": proto(o.flow.proto),
            "count": o.count,
            "deciding_zone": o.local_zone.and_then(|z| p.zone(z)).map(|z| &z.name),
            "mode": o.decision.mode.map(|m| m.as_str()),
        });
        writeln!(out, "{v}")?;
    }
    writeln!(out, "{}", serde_json::json!({"summary": summary_json(p, r)}))
}

fn summary_json(p: &Policy, r: &Report) -> serde_json::Value {
    serde_json::json!({
        "policy_sha256": p.sha256, "checked": r.checked, "allowed": r.allowed, "denied": r.denied,
        "audited": r.audited, "not_segmented": r.not_segmented, "distinct_flows": r.flows.len(),
    })
}

/// A table of the denied/audited flows and a summary line.
pub fn table(out: &mut impl Write, p: &Policy, r: &Report) -> std::io::Result<()> {
    let rows: Vec<[String; 9]> = r
        .findings()
        .map(|o| {
            [
                verdict(o.decision.verdict).to_string(),
                o.count.to_string(),
                direction(o.flow.direction).to_string(),
                o.flow.workload.label(),
                zone_name(p, o.local_zone),
                o.flow.peer.to_string(),
                zone_name(p, o.flow.peer_zone),
                format!("{}/{}", o.flow.port, proto(o.flow.proto)),
                decided_by(p, o),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let head = ["VERDICT", "COUNT", "DIR", "WORKLOAD", "ZONE", "PEER", "PEER ZONE", "PORT", "DECIDED BY"];
        let mut w = head.map(str::len);
        for row in &rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: &[&str]| {
            let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<0$}", w[i])).collect();
            s.join("  ").trim_end().to_string()
        };
        writeln!(out, "{}", line(&head))?;
        for row in &rows {
            writeln!(out, "{}", line(&row.each_ref().map(String::as_str)))?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} flows checked ({} distinct): {} allowed, {} denied, {} audited, {} not segmented (policy sha256 {})",
        r.checked,
        r.flows.len(),
        r.allowed,
        r.denied,
        r.audited,
        r.not_segmented,
        &p.sha256[..12]
    )
}
