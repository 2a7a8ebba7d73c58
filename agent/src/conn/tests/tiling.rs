//! Properties: any chunking and arrival order gives the same records, and
//! whatever the events, every byte of every stream ends in exactly one
//! record (as bytes or as a gap) — with one end, or with both ends paired.

use proptest::prelude::*;

use super::*;
use crate::record::Part;

/// Cuts `stream` at the given points into (position, bytes).
fn cut(stream: &[u8], cuts: &[usize]) -> Vec<(u64, Vec<u8>)> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.extend([0, stream.len()]);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| (w[0] as u64, stream[w[0]..w[1]].to_vec())).collect()
}

/// What a record says about the bytes: (kind, part roles and raw bytes, fields).
fn digest(rs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .filter(|r| !matches!(r, Record::Connection(_)))
        .map(|r| {
            let parts: Vec<String> = r
                .parts()
                .iter()
                .map(|p| format!("{:?}@{}+{}:{:?}", p.role, p.pos, p.len, String::from_utf8_lossy(&p.raw.0)))
                .collect();
            let fields = match r {
                Record::Exchange(e) => e.messages.iter().map(|m| m.fields.json().to_string()).collect::<Vec<_>>(),
                _ => vec![],
            };
            format!("{} {parts:?} {fields:?}", r.kind())
        })
        .collect();
    v.sort();
    v
}

/// Every (connection, direction) stream is tiled exactly once by the
/// records' parts and gap records, from 0 to its total. A paired record's
/// parts cover the other end's stream too, up to what that end carried
/// (made-up traffic may have one end read more than the other wrote).
fn assert_tiles(rs: &[Record], totals: &[(u64, Direction, u64)]) {
    let total_of =
        |conn: u64, dir: Direction| totals.iter().find(|t| t.0 == conn && t.1 == dir).map_or(u64::MAX, |t| t.2);
    let mut spans: Vec<(u64, Direction, u64, u64)> = Vec::new();
    for r in rs {
        let who = r.who().map(|w| (w.side.conn_id, w.witness.map(|x| x.conn_id)));
        let Some((conn, witness)) = who else { continue };
        let mut add = |p: &Part| {
            spans.push((conn, p.direction, p.pos, p.len));
            // A paired record holds the other end's bytes too (opposite direction).
            if let Some(w) = witness
                && let Some(obs) = &p.witness
            {
                // Bytes that had not reached the other end when the record was
                // made are not its observation: if they come, they are its own records.
                let end = (p.end() - obs.unseen).min(total_of(w, p.direction.opposite()));
                if end > p.pos {
                    spans.push((w, p.direction.opposite(), p.pos, end - p.pos));
                }
            }
        };
        for p in r.parts() {
            add(p);
        }
        if let Record::Gap(g) = r {
            spans.push((conn, g.direction, g.pos, g.len));
            if let (Some(w), Some(obs)) = (witness, &g.witness_seen) {
                let end = (g.pos + g.len - obs.unseen).min(total_of(w, g.direction.opposite()));
                if end > g.pos {
                    spans.push((w, g.direction.opposite(), g.pos, end - g.pos));
                }
            }
        }
    }
    for &(conn, dir, total) in totals {
        let mut mine: Vec<(u64, u64)> =
            spans.iter().filter(|s| s.0 == conn && s.1 == dir).map(|s| (s.2, s.3)).collect();
        mine.sort_unstable();
        let mut at = 0;
        for (pos, len) in &mine {
            assert_eq!(*pos, at, "conn {conn} {dir:?}: hole or overlap at {at}: {mine:?}\n{rs:#?}");
            at += len;
        }
        assert_eq!(
            at,
            total,
            "conn {conn} {dir:?}: tiles {mine:?} up to {at}, not {total}\n{}",
            rs.iter().map(|r| serde_json::to_string(r).unwrap()).collect::<Vec<_>>().join("\n")
        );
    }
}

fn http_conversation(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut req = Vec::new();
    let mut resp = Vec::new();
    for i in 0..n {
        req.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let body = "b".repeat(i * 7);
        resp.extend_from_slice(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    (req, resp)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunking and any arrival order of each direction gives the same
    /// records (requests go before their responses: causality).
    #[test]
    fn any_chunking_and_order_gives_the_same_records(
        req_cuts in prop::collection::vec(any::<usize>(), 0..12),
        resp_cuts in prop::collection::vec(any::<usize>(), 0..12),
        seed in any::<u64>(),
    ) {
        let (req, resp) = http_conversation(4);
        let reference = {
            let mut t = table();
            let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
            let mut rs = run(&mut t, vec![c.connect(), c.send(&req), c.recv(&resp), c.close()]);
            rs.extend(finish(&mut t));
            digest(&rs)
        };
        let mut t = table();
        let mut c = Synth::tcp(1, "127.0.0.1:40000", "10.0.0.2:80");
        let mut evs = vec![c.connect()];
        let mut x = seed | 1;
        for (dir, stream, cuts) in [(Direction::Egress, &req, &req_cuts), (Direction::Ingress, &resp, &resp_cuts)] {
            let mut chunks = cut(stream, cuts);
            for i in (1..chunks.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                chunks.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for (pos, bytes) in chunks {
                evs.push(c.data_at(dir, pos, &bytes));
            }
        }
        evs.push(c.close());
        let mut rs = run(&mut t, evs);
        rs.extend(finish(&mut t));
        prop_assert_eq!(digest(&rs), reference);
    }

    /// Arbitrary events on a pair of loopback sockets (paired or not, with
    /// losses, truncations, reordering and any bytes) never panic, and every
    /// byte ends in exactly one record.
    #[test]
    fn every_byte_ends_in_exactly_one_record(
        ops in prop::collection::vec((0u8..8, any::<bool>(), prop::collection::vec(any::<u8>(), 1..40)), 1..60),
        http_start in any::<bool>(),
        twins in any::<bool>(),
    ) {
        let mut t = table_with(ConnConfig { twins, max_reorder_bytes: 256, ..ConnConfig::default() });
        let mut c = Synth::tcp(1, "127.0.0.1:40000", "127.0.0.1:8080").process(1, "c");
        let mut s = Synth::tcp(2, "127.0.0.1:8080", "127.0.0.1:40000").process(2, "s");
        let mut evs = vec![c.connect(), s.accept()];
        if http_start {
            evs.extend([c.send(REQ), s.recv(REQ)]);
        }
        let mut deferred: Vec<CaptureEvent> = Vec::new();
        for (op, server, bytes) in ops {
            let side = if server { &mut s } else { &mut c };
            match op {
                0 | 1 => evs.push(side.send(&bytes)),
                2 | 3 => evs.push(side.recv(&bytes)),
                4 => evs.push(side.truncated(if server { Direction::Ingress } else { Direction::Egress }, bytes.len() as u64, GapReason::Truncated)),
                5 => side.lose(Direction::Egress, bytes.len() as u64),
                6 => deferred.push(side.send(&bytes)),
                _ => deferred.push(side.recv(&bytes)),
            }
        }
        evs.extend(deferred);
        evs.push(c.close());
        evs.push(s.close());
        let totals = [
            (1, Direction::Egress, c.pos[0]), (1, Direction::Ingress, c.pos[1]),
            (2, Direction::Egress, s.pos[0]), (2, Direction::Ingress, s.pos[1]),
        ];
        let mut rs = run(&mut t, evs);
        let mut out = Vec::new();
        t.tick(c.ts.max(s.ts) + 3 * SEC, &mut out);
        rs.extend(out);
        rs.extend(finish(&mut t));
        assert_tiles(&rs, &totals);
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.buffered(), 0);
    }
}
