//! The ends of a conversation a stored record speaks for. Most records have
//! one (the agent's side of a socket); a two-witness record (both ends
//! captured on the agent's host, `Record.witness` set) has two, and indexing,
//! search, the inventory and policy check treat it as a record of either.

use std::collections::HashMap;

use wiretrail_proto::v1::{ConnRole, Direction, Endpoint, Record};

/// One end of the conversation a record describes.
#[derive(Debug, Clone)]
pub struct SideView<'a> {
    /// Its workload identity map.
    pub identity: &'a HashMap<String, String>,
    /// The other end's identity map (may be empty).
    pub peer_identity: &'a HashMap<String, String>,
    /// Its own address and the address it talks to.
    pub local: Option<&'a Endpoint>,
    pub remote: Option<&'a Endpoint>,
    /// Its uid.
    pub uid: u32,
    /// Client, server or unknown.
    pub role: ConnRole,
    /// Payload bytes it sent and received in this record.
    pub tx: u64,
    pub rx: u64,
    /// The record's own side (false: the witness end).
    pub primary: bool,
}

/// Payload bytes by direction of the record's side: from `parts` when the
/// record has them (exchanges, segments), else the payload and `direction`.
pub fn bytes_by_direction(r: &Record) -> (u64, u64) {
    if !r.parts.is_empty() {
        let mut tx = 0;
        let mut rx = 0;
        for p in &r.parts {
            match p.direction() {
                Direction::Egress => tx += p.payload_len,
                Direction::Ingress => rx += p.payload_len,
                Direction::Unspecified => {}
            }
        }
        return (tx, rx);
    }
    let len = r.payload.len() as u64;
    match r.direction() {
        Direction::Egress => (len, 0),
        Direction::Ingress => (0, len),
        Direction::Unspecified => (0, 0),
    }
}

/// The ends `r` speaks for: its side, and the witness's for two-witness records.
pub fn sides(r: &Record) -> Vec<SideView<'_>> {
    let (tx, rx) = bytes_by_direction(r);
    let mut v = vec![SideView {
        identity: &r.identity,
        peer_identity: &r.peer_identity,
        local: r.local.as_ref(),
        remote: r.remote.as_ref(),
        uid: r.uid,
        role: r.role(),
        tx,
        rx,
        primary: true,
    }];
    if let Some(w) = &r.witness {
        v.push(SideView {
            identity: &r.peer_identity,
            peer_identity: &r.identity,
            local: w.local.as_ref(),
            remote: w.remote.as_ref(),
            uid: w.uid,
            role: w.role(),
            tx: rx,
            rx: tx,
            primary: false,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use wiretrail_proto::v1::{Part, Side};

    use super::*;

    #[test]
    fn a_two_witness_record_speaks_for_both_ends() {
        let mut r = Record { identity: [("exe".into(), "/c".into())].into(), ..Default::default() };
        r.peer_identity = [("exe".into(), "/s".into())].into();
        let mut p = Part { payload_len: 10, ..Default::default() };
        p.set_direction(Direction::Egress);
        let mut q = Part { payload_len: 30, ..Default::default() };
        q.set_direction(Direction::Ingress);
        r.parts = vec![p, q];
        assert_eq!(sides(&r).len(), 1);
        r.witness = Some(Side { uid: 7, ..Default::default() });
        let s = sides(&r);
        assert_eq!((s[0].identity["exe"].as_str(), s[0].tx, s[0].rx), ("/c", 10, 30));
        assert_eq!((s[1].identity["exe"].as_str(), s[1].tx, s[1].rx, s[1].uid), ("/s", 30, 10, 7));
        assert_eq!(s[1].peer_identity["exe"], "/c");
    }
}
