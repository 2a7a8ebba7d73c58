//! The indexer's feed: a thread that reads, decompresses and decodes the
//! committed log ahead of the indexer's SQLite transactions, so that work runs
//! beside them (on another core when there is one) instead of before each.
//!
//! Chunks go through a bounded channel ([`QUEUED`] chunks of [`CHUNK_LEAVES`]
//! decoded leaves), which caps the memory the read-ahead holds. A read that
//! fails is sent as an error and retried from the same leaf after a second.
//! The feed stops when the indexer drops its receiver or the stop flag is set.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use prost::Message;
use wiretrail_proto::v1::StoredLeaf;

use super::{IndexError, IndexProgress};
use wiretrail_log::store::{Log, StoreError};

/// Decoded leaves per chunk.
const CHUNK_LEAVES: u64 = 4096;
/// Chunks the channel holds beyond the one being indexed and the one being read.
const QUEUED: usize = 2;
/// How often the feed looks for new commits (and the stop flag) when it has caught up.
const IDLE: Duration = Duration::from_millis(20);

/// Leaves `from..to` of the log, decoded (leaves deleted by retention are absent).
pub(crate) struct Chunk {
    /// First leaf covered.
    pub from: u64,
    /// End of the range covered.
    pub to: u64,
    /// The leaves present in it, in order.
    pub leaves: Vec<(u64, StoredLeaf)>,
}

/// Reads and decodes leaves `from..to`.
pub(crate) fn read(shared: &Log, from: u64, to: u64) -> Result<Chunk, IndexError> {
    let mut leaves = Vec::with_capacity((to - from) as usize);
    for item in shared.iter(from, to)? {
        let (i, bytes) = item?;
        let leaf = StoredLeaf::decode(bytes.as_slice())
            .map_err(|e| StoreError::Inconsistent(format!("leaf {i} does not decode: {e}")))?;
        leaves.push((i, leaf));
    }
    Ok(Chunk { from, to, leaves })
}

/// The receiving end, held by the indexer thread.
pub(crate) struct Feed {
    rx: Option<Receiver<Result<Chunk, IndexError>>>,
    /// Indexed leaves handed back to be freed on the feed's thread (freeing
    /// a transaction's worth of decoded leaves took 7-10 % of the indexer's time).
    spent: Sender<Vec<(u64, StoredLeaf)>>,
    handle: Option<JoinHandle<()>>,
}

impl Feed {
    /// Starts reading at leaf `from`.
    pub(crate) fn spawn(shared: Arc<Log>, from: u64, progress: Arc<IndexProgress>) -> Feed {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUED);
        let (spent, spent_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("wt-index-feed".into())
            .spawn(move || run(&shared, from, &progress, &tx, &spent_rx))
            .expect("spawning the index feed");
        Feed { rx: Some(rx), spent, handle: Some(handle) }
    }

    /// Hands indexed leaves back, to be freed on the feed's thread.
    pub(crate) fn recycle(&self, leaves: Vec<(u64, StoredLeaf)>) {
        // A feed that has stopped frees nothing: the vector is then dropped here.
        let _ = self.spent.send(leaves);
    }

    /// The next chunk, waiting at most `wait`; `None` when none came.
    pub(crate) fn next(&self, wait: Duration) -> Option<Result<Chunk, IndexError>> {
        let rx = self.rx.as_ref().expect("receiver kept until drop");
        match rx.recv_timeout(wait) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            // The feed only exits on stop; the indexer checks the flag itself.
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// A chunk that is already waiting, without blocking.
    pub(crate) fn ready(&self) -> Option<Result<Chunk, IndexError>> {
        self.rx.as_ref().expect("receiver kept until drop").try_recv().ok()
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Dropping the receiver ends a blocked send; then the thread returns.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    shared: &Log,
    from: u64,
    progress: &IndexProgress,
    tx: &SyncSender<Result<Chunk, IndexError>>,
    spent: &Receiver<Vec<(u64, StoredLeaf)>>,
) {
    let mut next = from;
    while !progress.stop.load(Ordering::Acquire) {
        while spent.try_recv().is_ok() {}
        let size = shared.size();
        if next >= size {
            std::thread::sleep(IDLE);
            continue;
        }
        let to = size.min(next + CHUNK_LEAVES);
        let read = read(shared, next, to);
        let failed = read.is_err();
        if !failed {
            next = to;
        }
        // Blocks while the channel is full; the indexer drops its receiver when
        // it stops, which ends the wait.
        if tx.send(read).is_err() {
            return;
        }
        if failed {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
