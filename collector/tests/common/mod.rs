//! Helpers shared by the collector's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::oneshot;
use wiretrail_collector::ServeConfig;
use wiretrail_proto::v1::{Batch, Endpoint, Record, RecordKind};

/// A test record with a recognizable payload.
pub fn record(i: u64, t: i64) -> Record {
    Record {
        kind: RecordKind::DataChunk as i32,
        capture_time_ns: t,
        conn_id: i % 7,
        remote: Some(Endpoint { address: format!("10.0.0.{}", i % 4), port: 5432 }),
        app_protocol: if i.is_multiple_of(2) { "postgres".into() } else { "http1".into() },
        identity: HashMap::from([("pod".to_string(), format!("pod-{}", i % 3))]),
        payload: format!("SELECT {i} FROM accounts").into_bytes(),
        host: "node-a".into(),
        ..Default::default()
    }
}

/// Batch `seq` of `n` records.
pub fn batch(agent: &str, boot: &str, seq: u64, n: u64) -> Batch {
    Batch {
        agent_id: agent.into(),
        boot_id: boot.into(),
        seq,
        records: (0..n).map(|j| record(seq * n + j, 1_000_000 + (seq * n + j) as i64)).collect(),
    }
}

/// An in-process collector.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), wiretrail_collector::server::ServeError>>>,
}

impl Server {
    pub async fn start(cfg: ServeConfig) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(wiretrail_collector::run(listener, cfg, async move {
            let _ = rx.await;
        }));
        Server { addr, stop: Some(tx), task: Some(task) }
    }

    pub async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn plain_config(dir: &Path) -> ServeConfig {
    ServeConfig::new(dir.to_path_buf())
}

pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}
