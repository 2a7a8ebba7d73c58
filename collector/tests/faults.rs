//! Randomized fault test, bounded in time: several agents ingest while the
//! collector (a process, its data on a small tmpfs) is killed with SIGKILL
//! at random points and the disk fills now and then. At the end every
//! acknowledged batch is stored whole exactly once (compared batch by batch
//! by content hash) and `verify` passes. Set WIRETRAIL_FAULT_SEED to replay.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use wiretrail_collector::ingest::content_hash;
use wiretrail_log::store::{StoreConfig, Writer};
use wiretrail_proto::v1::ingest_client::IngestClient;
use wiretrail_proto::v1::{Batch, StoredLeaf};

const AGENTS: u64 = 3;
const BATCHES: u64 = 150;
const CHAOS: Duration = Duration::from_secs(20);
const DRAIN: Duration = Duration::from_secs(30);

/// xorshift64*: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn spawn(dir: &std::path::Path, log: &std::path::Path) -> (Child, SocketAddr) {
    let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["serve", "--insecure-plaintext", "--listen", "127.0.0.1:0", "--checkpoint-secs", "1", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        panic!("collector did not start: {line:?}\n{}", std::fs::read_to_string(log).unwrap_or_default());
    };
    (child, addr.parse().unwrap())
}

/// Batch `seq` of agent `a`: its size and content follow from (a, seq).
fn make_batch(a: u64, seq: u64) -> Batch {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ (a << 32) ^ seq.wrapping_mul(0x1000_0001));
    let n = 1 + r.below(25);
    let mut b = batch(&format!("fault-agent-{a}"), "boot-1", seq, n);
    for rec in &mut b.records {
        let len = 16 + r.below(3000) as usize;
        rec.payload = (0..len).map(|_| b'a' + r.below(26) as u8).collect();
    }
    b
}

/// One agent: sends its batches in order, resends unacked ones after any
/// failure; returns the content hash of each acknowledged seq.
async fn agent(a: u64, addr: watch::Receiver<SocketAddr>) -> BTreeMap<u64, [u8; 32]> {
    let mut acked = BTreeMap::new();
    let mut next = 0u64;
    let t = Instant::now();
    while next < BATCHES {
        assert!(t.elapsed() < CHAOS + DRAIN, "agent {a}: batches {next}.. never acknowledged");
        let target = *addr.borrow();
        let ch = match tokio::time::timeout(
            Duration::from_secs(2),
            tonic::transport::Endpoint::from_shared(format!("http://{target}")).unwrap().connect(),
        )
        .await
        {
            Ok(Ok(ch)) => ch,
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(16);
        let mut acks = match IngestClient::new(ch).ingest(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut in_flight: VecDeque<(u64, [u8; 32])> = VecDeque::new();
        let mut sent = next;
        loop {
            while in_flight.len() < 8 && sent < BATCHES {
                // Paced like an agent: a batch every 20-80 ms.
                tokio::time::sleep(Duration::from_millis(20 + (sent * 7 + a * 13) % 60)).await;
                let mut b = make_batch(a, sent);
                let h = content_hash(&mut b);
                if tx.send(b).await.is_err() {
                    break;
                }
                in_flight.push_back((sent, h));
                sent += 1;
            }
            if in_flight.is_empty() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(5), acks.next()).await {
                Ok(Some(Ok(ack))) => {
                    let (seq, h) = in_flight.pop_front().unwrap();
                    assert_eq!(ack.seq, seq, "agent {a}: acks out of order");
                    assert!(!ack.conflict, "agent {a}: batch {seq} taken for a conflict");
                    acked.insert(seq, h);
                    next = seq + 1;
                }
                Ok(Some(Err(s))) => {
                    assert_ne!(s.code(), tonic::Code::FailedPrecondition, "agent {a}: {s:?} (an acked batch was lost)");
                    break;
                }
                _ => break,
            }
        }
        drop(tx);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_and_full_disks_lose_no_acknowledged_batch() {
    let seed: u64 = std::env::var("WIRETRAIL_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("fault test seed: {seed} (WIRETRAIL_FAULT_SEED={seed} to replay)");
    let mut rng = Rng(seed | 1);
    let fs = Tmpfs::mount(48);
    let data = fs.path().join("data");
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut child, addr) = spawn(&data, log.path());
    let (addr_tx, addr_rx) = watch::channel(addr);
    let agents: Vec<_> = (0..AGENTS).map(|a| tokio::spawn(agent(a, addr_rx.clone()))).collect();
    let (mut kills, mut fills) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < CHAOS && !agents.iter().all(|a| a.is_finished()) {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(900))).await;
        if rng.below(10) < 7 {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            let (c, addr) = spawn(&data, log.path());
            child = c;
            addr_tx.send_replace(addr);
        } else {
            let ballast = fs.fill();
            fills += 1;
            tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
            std::fs::remove_file(ballast).unwrap();
        }
    }
    let mut acked = HashMap::new();
    for (a, h) in agents.into_iter().enumerate() {
        acked.insert(format!("fault-agent-{a}"), h.await.unwrap());
    }
    eprintln!("{kills} kills, {fills} full disks in {:?}", start.elapsed());
    assert!(kills + fills >= 5, "too few faults injected");
    // Let the last collector finish starting (its SIGTERM handler) before stopping it.
    let ch = channel(*addr_rx.borrow()).await;
    let q = wiretrail_proto::v1::query_client::QueryClient::new(ch);
    eventually("collector ready", || {
        let mut q = q.clone();
        async move { q.issue_checkpoint(wiretrail_proto::v1::IssueCheckpointRequest {}).await.ok() }
    })
    .await;
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", std::fs::read_to_string(log.path()).unwrap());

    // Stored batches, by content hash of their leaves' records.
    let (_w, shared) = Writer::open(&data, StoreConfig::default()).unwrap();
    let mut stored: HashMap<(String, u64), Vec<StoredLeaf>> = HashMap::new();
    let mut runs: HashMap<(String, u64), u32> = HashMap::new();
    for item in shared.iter(0, shared.size()).unwrap() {
        let (i, bytes) = item.unwrap();
        let l = wiretrail_collector::query::decode(i, &bytes).unwrap();
        if l.entry.is_some() {
            continue;
        }
        let k = (l.agent_id.clone(), l.seq);
        if l.index_in_batch == 0 {
            *runs.entry(k.clone()).or_default() += 1;
        }
        stored.entry(k).or_default().push(l);
    }
    for (agent, seqs) in &acked {
        assert_eq!(seqs.len() as u64, BATCHES, "{agent}");
        for (seq, h) in seqs {
            let k = (agent.clone(), *seq);
            assert_eq!(runs.get(&k), Some(&1), "{agent} batch {seq} stored {:?} times", runs.get(&k));
            let leaves = &stored[&k];
            let mut b = Batch {
                agent_id: agent.clone(),
                boot_id: "boot-1".into(),
                seq: *seq,
                records: leaves.iter().map(|l| l.record.clone().unwrap()).collect(),
                ..Default::default()
            };
            assert!(leaves.iter().enumerate().all(|(j, l)| l.index_in_batch == j as u32), "{agent} {seq}: not whole");
            assert_eq!(leaves[0].batch_records as usize, leaves.len(), "{agent} {seq}: not whole");
            assert_eq!(&content_hash(&mut b), h, "{agent} batch {seq}: stored content differs from the acked");
            assert_eq!(leaves[0].batch_sha256, h.to_vec());
        }
    }
    let (r, _) = wiretrail_log::verify::verify(&data, &shared.verifier(), None, |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None, "{:?}", r.problem);
    assert!(r.checkpoints_checked >= 1);
}
