//! Loss is never silent, as root: the agent runs with a deliberately small
//! kernel ring buffer while a bulk TCP writer (in a cgroup of its own, on
//! loopback) overflows it, and ships to a collector. Every count of the loss
//! must agree: the kernel's per-CPU loss counters, the gaps in the agent's
//! output (plus the one `lost` record stating bytes no stream can place, when
//! other processes lose whole connections in the same overflow), the agent's
//! own gap counters, the gaps and lost records stored at the collector, and
//! the bytes actually missing from the writer's and the reader's streams.
#[path = "../../xtask/src/certs.rs"]
#[allow(dead_code)]
mod certs;
mod support;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::UdpSocket,
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use support::*;
use wiretrail_agent::record::LostRecord;
use wiretrail_tests::{
    agent::Agent, collector::Collector, free_port, require_root, serial, wait_until, workload::Cgroup,
};

/// Bytes the writer sends: enough to overflow the ring many times over.
const TOTAL: usize = 8 << 20;
/// The agent's ring: eight 16 KiB chunks (the agent drains it every 10 ms).
const RING_BYTES: &str = "131072";

/// One process, two sockets on loopback: a reader thread accepts and reads to
/// EOF; the main thread connects, prints both ports, writes the file given as
/// argv[1] in 64 KiB calls (1 ms apart, so the agent drains the ring between
/// overflows and the streams hold both bytes and gaps), shuts its write side, waits for the reader, prints
/// `done <bytes read>`, then keeps both sockets open until a line on stdin.
const BULK: &str = r#"
import socket, sys, threading, time
data = open(sys.argv[1], "rb").read()
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
got = [0, None]
def read():
    c, _ = ls.accept()
    got[1] = c
    while True:
        d = c.recv(65536)
        if not d:
            return
        got[0] += len(d)
t = threading.Thread(target=read)
t.start()
s = socket.create_connection(("127.0.0.1", ls.getsockname()[1]))
print("ports", s.getsockname()[1], ls.getsockname()[1], flush=True)
for i in range(0, len(data), 65536):
    s.sendall(data[i:i + 65536])
    time.sleep(0.001)
s.shutdown(socket.SHUT_WR)
t.join()
print("done", got[0], flush=True)
sys.stdin.readline()
got[1].close()
s.close()
"#;

/// Deterministic incompressible bytes.
fn pattern(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Missing bytes because events never reached the agent (ring full, or never
/// arrived): what the kernel's `lost_bytes` counts. Caps and unreadable
/// memory are counted by the kernel elsewhere.
fn is_ring_loss(r: GapReason) -> bool {
    matches!(r, GapReason::Lost | GapReason::ReorderOverflow | GapReason::MissingAtClose | GapReason::MissingAtFlush)
}

/// The collector's name of a gap reason (`wire::gap_reason`).
fn wire_reason(r: GapReason) -> String {
    wiretrail_agent::record::wire::gap_reason(r).as_str_name().to_string()
}

/// One missing range: (conn id, egress?, stream position, length, wire reason).
type GapKey = (u64, bool, u64, u64, String);

/// Every missing range the agent's records state, wherever it is recorded
/// (gap records, and gap marks in the parts of exchanges and segments).
fn output_gaps(recs: &Records) -> Vec<(GapKey, GapReason)> {
    let mut v = Vec::new();
    for r in &recs.0 {
        let Some(who) = r.who() else { continue };
        assert!(who.witness.is_none(), "--no-twins, yet a record holds both ends: {r:?}");
        let conn = who.side.conn_id;
        if let Record::Gap(g) = r {
            let key = (conn, g.direction == Direction::Egress, g.pos, g.len, wire_reason(g.reason));
            v.push((key, g.reason));
            continue;
        }
        for p in r.parts() {
            for m in &p.seen.gaps {
                let key = (conn, p.direction == Direction::Egress, p.pos + m.offset, m.len, wire_reason(m.reason));
                v.push((key, m.reason));
            }
        }
    }
    v
}

/// The same ranges as the collector stores them (its JSON records), and the
/// `lost` records (what, count), which travel as gap records with no stream.
fn collector_gaps(stored: &[Value]) -> (Vec<GapKey>, Vec<(String, u64)>) {
    let mut v = Vec::new();
    let mut lost = Vec::new();
    for r in stored {
        let conn = r["conn_id"].as_u64().expect("conn_id");
        let parsed: Value = r["parsed_json"].as_str().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
        if r["kind"] == "RECORD_KIND_GAP" && parsed["what"].is_string() {
            lost.push((parsed["what"].as_str().unwrap().to_string(), parsed["count"].as_u64().expect("count")));
            continue;
        }
        if r["kind"] == "RECORD_KIND_GAP" {
            let g = &r["gap"];
            let egress = r["direction"] == "DIRECTION_EGRESS";
            v.push((conn, egress, g["pos"].as_u64().unwrap(), g["len"].as_u64().unwrap(), g["reason"].to_string()));
            continue;
        }
        for p in r["parts"].as_array().into_iter().flatten() {
            let egress = p["direction"] == "DIRECTION_EGRESS";
            let pos = p["stream_pos"].as_u64().unwrap();
            for m in p["seen"]["gaps"].as_array().into_iter().flatten() {
                v.push((
                    conn,
                    egress,
                    pos + m["offset"].as_u64().unwrap(),
                    m["len"].as_u64().unwrap(),
                    m["reason"].to_string(),
                ));
            }
        }
    }
    v.iter_mut().for_each(|k| k.4 = k.4.trim_matches('"').to_string());
    v.sort();
    lost.sort();
    (v, lost)
}

/// Checks one direction of one connection against the bytes really sent:
/// every position from 0 to `data.len()` is in exactly one record, as bytes
/// equal to `data` there or as a stated gap. Returns the gap bytes.
fn check_stream(recs: &Records, conn: u64, dir: Direction, data: &[u8]) -> u64 {
    let s = stream(recs, conn, dir, false);
    assert!(s.tiled, "{dir:?} of conn {conn}: records leave a hole or overlap (an unstated loss)");
    assert_eq!(
        s.end,
        data.len() as u64,
        "{dir:?} of conn {conn}: the records end at {} of {} bytes",
        s.end,
        data.len()
    );
    let mut views: Vec<View> = recs.parts_of(conn).into_iter().filter(|v| v.dir == dir && !v.tls).collect();
    views.sort_by_key(|v| v.pos);
    for v in &views {
        let mut gaps = v.gaps.clone();
        gaps.sort_unstable();
        let (mut at, mut used) = (0u64, 0usize);
        for (o, l) in gaps.into_iter().chain([(v.len, 0)]) {
            let n = (o - at) as usize;
            let want = &data[(v.pos + at) as usize..(v.pos + o) as usize];
            assert!(
                v.bytes[used..used + n] == *want,
                "{dir:?} of conn {conn}: bytes at {} differ from what was sent",
                v.pos + at
            );
            used += n;
            at = o + l;
        }
        assert_eq!(used, v.bytes.len(), "{dir:?} of conn {conn}: a part holds more bytes than its gaps leave room for");
    }
    let missing: u64 = s.gaps.iter().map(|g| g.1).sum();
    assert_eq!(missing, data.len() as u64 - s.bytes.len() as u64, "{dir:?} of conn {conn}: gaps vs bytes present");
    missing
}

fn stat(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or_else(|| panic!("the agent's final counters have no {name}: {stats}"))
}

#[test]
fn ring_overflow_is_reconciled_from_kernel_counters_to_collector() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(TOTAL);
    let file = dir.path().join("bulk.bin");
    std::fs::write(&file, &data).unwrap();

    let certs = dir.path().join("certs");
    certs::generate(&certs, &["agent", "security"]).expect("certificates");
    let port = free_port();
    let collector = Collector::start(&dir.path().join("data"), &certs, port);
    let agent = Agent::start(&[
        "--ring-bytes",
        RING_BYTES,
        "--no-twins",
        "--no-tls",
        "--collector",
        &format!("https://127.0.0.1:{port}"),
        "--agent-id",
        "agent",
        "--tls-dir",
        certs.to_str().unwrap(),
        "--spool-dir",
        dir.path().join("spool").to_str().unwrap(),
    ]);

    let cg = Cgroup::new(&format!("wiretrail-test-{}-loss.slice", std::process::id()), "bulk");
    let mut bulk = cg
        .command(None, "python3", &["-c", BULK, file.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = BufReader::new(bulk.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ports: Vec<u16> =
        line.trim().strip_prefix("ports ").expect("ports line").split(' ').map(|p| p.parse().unwrap()).collect();
    let (client, server) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), format!("done {TOTAL}"), "the reader did not get every byte");

    // The close events must not be lost too (a lost close of a connection
    // whose tail was lost leaves no position to show the tail missing): wait
    // until the agent has read the ring past the burst, shown by a marker
    // datagram sent after it reaching the agent's output; resend while the
    // ring is still overflowing.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut drained = false;
    for i in 0..20 {
        let marker = format!("wt-loss-drained-{i}");
        // A socket per marker: its bytes start a record of their own.
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(marker.as_bytes(), rx.local_addr().unwrap()).unwrap();
        if wait_until(Duration::from_secs(3), || agent.records_now().contains(&marker_b64(&marker))) {
            drained = true;
            break;
        }
    }
    assert!(drained, "the agent never recorded a marker datagram after the burst:\n{}", agent.log());
    writeln!(bulk.stdin.as_mut().unwrap()).unwrap();
    assert!(bulk.wait().unwrap().success());

    // Both connections closed and recorded, then stop (the shipper drains its spool).
    let closed = |text: &str| {
        // Whole lines only: the agent may be writing the last one.
        let recs = Records::parse(&text[..text.rfind('\n').map_or(0, |i| i + 1)]);
        recs.0
            .iter()
            .filter(|r| matches!(r, Record::Connection(_)))
            .filter_map(Record::who)
            .any(|w| w.side.local.map(|a| a.to_string()) == Some(client.clone()))
            && recs
                .0
                .iter()
                .filter(|r| matches!(r, Record::Connection(_)))
                .filter_map(Record::who)
                .any(|w| w.side.local.map(|a| a.to_string()) == Some(server.clone()))
    };
    assert!(
        wait_until(Duration::from_secs(10), || closed(&agent.records_now())),
        "no connection records for the bulk connections:\n{}",
        agent.log()
    );
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("loss");

    // 1. The ring really overflowed, on the bulk connections among others.
    let kernel_lost_bytes = stat(&stats, "kernel_lost_bytes");
    let kernel_lost_events = stat(&stats, "kernel_lost_events");
    assert!(kernel_lost_bytes > 0 && kernel_lost_events > 0, "the ring did not overflow: {stats}");

    // 2. The bytes missing from the two streams, checked against what was
    //    sent: every position is a byte equal to the sent one, or a gap.
    let cid = recs.conn_between(&client, &server);
    let sid = recs.conn_between(&server, &client);
    let missing_out = check_stream(&recs, cid, Direction::Egress, &data);
    let missing_in = check_stream(&recs, sid, Direction::Ingress, &data);
    assert!(missing_out > 0 && missing_in > 0, "the overflow missed the bulk streams ({missing_out}, {missing_in})");
    for (conn, dir) in [(cid, Direction::Ingress), (sid, Direction::Egress)] {
        let s = stream(&recs, conn, dir, false);
        assert!(s.bytes.is_empty() && s.gaps.is_empty(), "{dir:?} of conn {conn} should be empty: {:?}", s.gaps);
    }

    // 3. Kernel counters vs the gaps in the output (every connection on the
    //    host shared the ring, so all of them count).
    let gaps = output_gaps(&recs);
    let ring_loss: u64 = gaps.iter().filter(|(_, r)| is_ring_loss(*r)).map(|(k, _)| k.3).sum();
    let on_bulk: u64 =
        gaps.iter().filter(|(k, r)| is_ring_loss(*r) && (k.0 == cid || k.0 == sid)).map(|(k, _)| k.3).sum();
    eprintln!(
        "kernel: {kernel_lost_events} events / {kernel_lost_bytes} bytes lost; output: {} gap ranges, {ring_loss} bytes ({on_bulk} on the bulk connections: {missing_out} + {missing_in})",
        gaps.len()
    );
    assert_eq!(
        on_bulk,
        missing_out + missing_in,
        "gap bytes on the bulk connections vs bytes missing from their streams"
    );
    // No gap is invented, and what no stream can place (other processes'
    // connections whose every event was lost in the burst, or whose lost
    // tail had no close before the agent stopped) is stated by one `lost`
    // record at the end: the two add up to the kernel's count exactly.
    assert!(
        ring_loss <= kernel_lost_bytes,
        "the output states {ring_loss} bytes missing, the kernel lost {kernel_lost_bytes}"
    );
    let unplaced: Vec<&LostRecord> = recs
        .0
        .iter()
        .filter_map(|r| if let Record::Lost(l) = r { Some(&**l) } else { None })
        .filter(|l| l.what == "stream_bytes")
        .collect();
    assert!(unplaced.len() <= 1, "{unplaced:#?}");
    let unplaced = unplaced.first().map_or(0, |l| l.count);
    if unplaced > 0 {
        eprintln!("{unplaced} lost bytes in no stream (other processes' connections), stated by a lost record");
    }
    assert_eq!(ring_loss + unplaced, kernel_lost_bytes, "bytes the kernel lost vs bytes the output states missing");
    // Each lost event is at most one chunk; each missing range at least one lost event.
    let ranges = merged_ranges(&gaps);
    assert!(kernel_lost_bytes <= kernel_lost_events * 16 * 1024, "{stats}");
    assert!(ranges <= kernel_lost_events, "{ranges} missing ranges from {kernel_lost_events} lost events");

    // 4. The agent's own counters agree with its records.
    let gap_records = recs.0.iter().filter(|r| matches!(r, Record::Gap(_) | Record::Lost(_))).count() as u64;
    assert_eq!(stat(&stats, "gap_records"), gap_records, "{stats}");
    let lost: u64 = gaps.iter().filter(|(_, r)| *r == GapReason::Lost).map(|(k, _)| k.3).sum();
    assert_eq!(stat(&stats, "gap_lost_bytes"), lost, "{stats}");
    let other: u64 = gaps
        .iter()
        .filter(|(_, r)| !matches!(r, GapReason::Lost | GapReason::Truncated | GapReason::Unreadable))
        .map(|(k, _)| k.3)
        .sum();
    assert_eq!(stat(&stats, "gap_other_bytes"), other, "{stats}");

    // 5. The collector stores exactly the agent's gaps. (Heartbeats go to
    //    the collector only: they are not in the agent's output.)
    let records = recs.0.len();
    let mut stored = Vec::new();
    let all_there = wait_until(Duration::from_secs(30), || {
        stored = collector.query(&["--agent", "agent", "--limit", "1000000"]);
        stored.retain(|r| r["kind"] != "RECORD_KIND_HEARTBEAT");
        stored.len() >= records
    });
    assert!(all_there, "the collector has {} of the agent's {records} records:\n{}", stored.len(), collector.log());
    assert_eq!(stored.len(), records, "the collector has more records than the agent wrote");
    let mut want: Vec<GapKey> = gaps.into_iter().map(|(k, _)| k).collect();
    want.sort();
    let (have, have_lost) = collector_gaps(&stored);
    assert!(have == want, "gaps at the collector ({}) differ from the agent's output ({})", have.len(), want.len());
    let mut want_lost: Vec<(String, u64)> = recs
        .0
        .iter()
        .filter_map(|r| if let Record::Lost(l) = r { Some((l.what.clone(), l.count)) } else { None })
        .collect();
    want_lost.sort();
    assert_eq!(have_lost, want_lost, "lost records at the collector vs in the agent's output");
    drop(collector);
}

/// Maximal missing ranges (adjacent pieces of one range, split over several
/// records, are one).
fn merged_ranges(gaps: &[(GapKey, GapReason)]) -> u64 {
    let mut by: BTreeMap<(u64, bool), Vec<(u64, u64)>> = BTreeMap::new();
    for ((conn, eg, pos, len, _), r) in gaps {
        if is_ring_loss(*r) {
            by.entry((*conn, *eg)).or_default().push((*pos, *len));
        }
    }
    let mut n = 0;
    for v in by.values_mut() {
        v.sort_unstable();
        let mut end = None;
        for (p, l) in v.iter() {
            if end != Some(*p) {
                n += 1;
            }
            end = Some(p + l);
        }
    }
    n
}

/// A marker as it appears in the agent's JSON lines (raw bytes are base64).
fn marker_b64(m: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(m)
}
