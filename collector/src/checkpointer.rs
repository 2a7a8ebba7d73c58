//! The checkpoint thread: issues a checkpoint every interval when the log
//! grew, and on request (the `IssueCheckpoint` API, export). It has its own
//! OS thread so busy queries or follow streams can never delay checkpoints.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tokio::sync::oneshot;

use wiretrail_log::merkle::SignedCheckpoint;
use wiretrail_log::store::{Log, StoreError};

type Reply = oneshot::Sender<Result<SignedCheckpoint, StoreError>>;

/// Handle to ask the checkpoint thread for a checkpoint.
#[derive(Clone)]
pub struct Checkpointer {
    tx: mpsc::Sender<Reply>,
}

impl Checkpointer {
    /// Spawns the thread; it stops when every handle is dropped.
    pub fn spawn(shared: Arc<Log>, every: Duration) -> (Checkpointer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Reply>();
        let handle = std::thread::Builder::new()
            .name("wt-checkpoint".into())
            .spawn(move || {
                let mut next = std::time::Instant::now() + every;
                loop {
                    let wait = next.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(reply) => {
                            let _ = reply.send(shared.issue_checkpoint());
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            next = std::time::Instant::now() + every;
                            if let Err(e) = shared.issue_checkpoint() {
                                tracing::error!(error = %e, "periodic checkpoint failed");
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawning the checkpoint thread");
        (Checkpointer { tx }, handle)
    }

    /// Issues (or returns the latest, when it covers the log) a checkpoint.
    pub async fn issue(&self) -> Result<SignedCheckpoint, crate::Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| crate::Error::Unavailable("checkpoint thread stopped".into()))?;
        Ok(rx.await.map_err(|_| crate::Error::Unavailable("checkpoint thread stopped".into()))??)
    }
}
