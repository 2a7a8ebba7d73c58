//! Identities: the inventory (custodian, purpose, shadow flag, first/last
//! seen) and a who-talks-to-whom map as server-rendered SVG, with the
//! segmentation zones the collector knows: those named by the agents' policy
//! decisions (the `policy_denied` / `policy_violation` alerts).

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::Extension;
use axum::extract::State;
use axum::response::Html;
use wiretrail_proto::v1::InventoryRequest;
use wiretrail_proto::v1::query_client::QueryClient;

use super::Console;
use super::fail::Failure;
use super::html::{esc, page as frame, table, time};
use super::principal::Principal;

/// Most nodes drawn on the map.
const MAX_NODES: usize = 40;

/// Zones by identity key, from the policy decisions' alerts.
async fn zones(c: &Console, who: &Principal) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for kind in ["policy_denied", "policy_violation"] {
        for a in super::alerts::list(c, who, kind).await? {
            let d: serde_json::Value = serde_json::from_str(&a.detail_json).unwrap_or_default();
            for (key, zone) in [("identity_key", "local_zone"), ("peer_identity_key", "peer_zone")] {
                if let (Some(k), Some(z)) = (d[key].as_str(), d[zone].as_str())
                    && !z.is_empty()
                {
                    out.insert(k.to_string(), z.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// The map: identities and their peers on a circle, an edge per observed
/// pair, each node with its zone when known.
fn map(edges: &[(String, String)], shadow: &BTreeMap<String, bool>, zones: &BTreeMap<String, String>) -> String {
    let mut nodes: Vec<&String> = Vec::new();
    for (a, b) in edges {
        for n in [a, b] {
            if !nodes.contains(&n) && nodes.len() < MAX_NODES {
                nodes.push(n);
            }
        }
    }
    let n = nodes.len().max(1) as f64;
    let pos = |i: usize| {
        let a = i as f64 / n * std::f64::consts::TAU + std::f64::consts::PI;
        (450.0 + 260.0 * a.cos(), 250.0 + 190.0 * a.sin())
    };
    let idx = |s: &String| nodes.iter().position(|x| *x == s);
    let mut s = String::from(
        "<svg id=\"map\" role=\"img\" aria-label=\"Who talks to whom\" viewBox=\"0 0 900 500\" width=\"100%\" style=\"max-width:900px\">",
    );
    for (a, b) in edges {
        if let (Some(i), Some(j)) = (idx(a), idx(b)) {
            let ((x1, y1), (x2, y2)) = (pos(i), pos(j));
            let _ = write!(s, "<line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"#8c959f\"/>");
        }
    }
    for (i, name) in nodes.iter().enumerate() {
        let (x, y) = pos(i);
        let fill = match shadow.get(*name) {
            Some(true) => "#cf222e",
            Some(false) => "#1f6feb",
            None => "#8c959f",
        };
        let mut label: String = crate::inventory::identity_label(name).chars().take(40).collect();
        if let Some(z) = zones.get(*name) {
            label = format!("{label} [zone {z}]");
        }
        let _ = write!(
            s,
            "<circle cx=\"{x:.0}\" cy=\"{y:.0}\" r=\"7\" fill=\"{fill}\"><title>{}</title></circle>\
             <text x=\"{:.0}\" y=\"{:.0}\">{}</text>",
            esc(name),
            x + 10.0,
            y + 4.0,
            esc(&label)
        );
    }
    s.push_str("</svg><p class=\"hint\">Blue: registered identity; red: shadow identity; grey: peer address.</p>");
    s
}

/// `GET /identities`.
pub async fn page(State(c): State<Console>, Extension(who): Extension<Principal>) -> Result<Html<String>, Failure> {
    let zones = zones(&c, &who).await?;
    let mut q = QueryClient::new(c.backend.channel(&who).await?);
    let inv = q.inventory(InventoryRequest { shadow_only: false }).await?.into_inner();
    let mut rows = Vec::new();
    let mut edges = Vec::new();
    let mut shadow = BTreeMap::new();
    for e in &inv.entries {
        shadow.insert(e.identity_key.clone(), e.shadow);
        for p in e.peers.iter().filter(|p| **p != e.identity_key) {
            edges.push((e.identity_key.clone(), p.clone()));
        }
        if e.peers.is_empty() || e.peers.iter().all(|p| *p == e.identity_key) {
            edges.push((e.identity_key.clone(), e.identity_key.clone()));
        }
        rows.push(vec![
            format!(
                "<span title=\"{}\">{}</span>",
                esc(&e.identity_key),
                esc(&crate::inventory::identity_label(&e.identity_key))
            ),
            esc(zones.get(&e.identity_key).map(String::as_str).unwrap_or("")),
            esc(&e.custodian),
            esc(&e.purpose),
            if e.shadow { "<strong class=\"error\">shadow</strong>".into() } else { "registered".into() },
            time(e.first_seen_ns),
            time(e.last_seen_ns),
            e.records.to_string(),
            esc(&e.hosts.join(" ")),
            format!(
                "<span class=\"wrap\">{}</span>",
                esc(&e.peers.iter().map(|p| crate::inventory::identity_label(p)).collect::<Vec<_>>().join(", "))
            ),
        ]);
    }
    let body = format!(
        "<p>{} identities (index covers {} leaves).</p>{}<h2>Who talks to whom</h2>{}",
        inv.entries.len(),
        inv.indexed,
        table(
            "inventory",
            &[
                "Identity",
                "Zone",
                "Custodian",
                "Purpose",
                "Status",
                "First seen (UTC)",
                "Last seen (UTC)",
                "Records",
                "Hosts",
                "Peers"
            ],
            &rows
        ),
        map(&edges, &shadow, &zones)
    );
    Ok(Html(frame(&who, "/identities", "Identities", &body)))
}
