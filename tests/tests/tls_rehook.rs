//! TLS discovery over a program's life, as root: the probes of a program with
//! TLS linked in are detached when no process runs it any more, and attached
//! again when it runs again.
mod support;

use std::{os::unix::fs::MetadataExt, time::Duration};

use support::*;
use wiretrail_tests::{agent::Agent, nginx::INDEX, require_root, serial, tls, wait_until};

/// A static Go TLS client run twice, its probes detached in between (the
/// agent's full scan, every 5 s, finds no process mapping it): the second
/// run's plaintext is captured like the first's. (The discovery thread used to
/// remember the file as inspected, so the second run went unhooked.)
#[test]
fn a_tls_program_run_again_after_its_probes_were_detached_is_hooked_again() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let (addr, _nginx, client) = tls::nginx_and_go_client(dir.path());
    let inode = std::fs::metadata(&client).unwrap().ino();
    let agent = Agent::start(&[]);
    let run = || tls::run_go_client(&client, &addr.to_string());
    let first = run();
    let detached = format!("inode={inode}");
    let gone = |log: &str| plain_text(log).lines().any(|l| l.contains("TLS probes detached") && l.contains(&detached));
    assert!(wait_until(Duration::from_secs(20), || gone(&agent.log())), "probes never detached:\n{}", agent.log());
    // The agent closes detached probes one at a time on a thread of its own
    // (~100 ms each; the Go client has 17), and an attach waits for the close
    // under way. Waiting for them to be closed keeps this test about the
    // rehook, not about how soon an attach gets past a close (`bench
    // hook-window` measures that); no close is observable, so this waits twice
    // the time 17 take.
    std::thread::sleep(Duration::from_secs(4));
    let second = run();
    std::thread::sleep(Duration::from_millis(500));
    let log = agent.log();
    let path = client.to_str().unwrap();
    let attaches = plain_text(&log).lines().filter(|l| l.contains("TLS probes attached") && l.contains(path)).count();
    assert_eq!(attaches, 2, "the client's file is not hooked again:\n{}", plain_text(&log));
    let (text, stats) = agent.stop();
    let recs = Records::parse(&text);
    recs.dump("tls_program_run_again");
    for (run, pid) in [("first", first), ("second", second)] {
        let cid = recs.client_conn(pid, &addr.to_string());
        let sent = stream(&recs, cid, Direction::Egress, true).bytes;
        assert!(!sent.is_empty(), "the {run} run's plaintext was not captured:\n{}", plain_text(&log));
        let (out, inn) =
            (assert_whole(&recs, cid, Direction::Egress, true), assert_whole(&recs, cid, Direction::Ingress, true));
        assert!(out.starts_with(b"GET /index.html HTTP/1.1\r\n"), "{run}: {:?}", String::from_utf8_lossy(&out));
        assert!(
            inn.starts_with(b"HTTP/1.1 200 OK\r\n") && inn.ends_with(INDEX),
            "{run}: {:?}",
            String::from_utf8_lossy(&inn)
        );
    }
    assert_eq!(stats["kernel_lost_events"], 0);
}

/// `log` without its colour codes (ESC `[` ... `m`).
fn plain_text(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(at) = rest.find('\x1b') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
    }
    out.push_str(rest);
    out
}
