//! Bounds that keep one client from taking the query API down: follow
//! streams per client and overall (a new one beyond them gets
//! RESOURCE_EXHAUSTED), and a cap on blocking work (searches, scans,
//! inventory, proofs) running at once, so the runtime's blocking threads are
//! never exhausted. Ingest (the commit thread), the indexer and checkpoints
//! (the checkpoint thread) have their own threads and are not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Query API limits.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Open follow streams (searches and alerts) per client.
    pub follow_per_client: usize,
    /// Open follow streams overall.
    pub follow_total: usize,
    /// Blocking query tasks running at once (others wait their turn).
    pub concurrent_work: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { follow_per_client: 16, follow_total: 256, concurrent_work: 32 }
    }
}

/// Counts follow streams and hands out work slots.
pub struct Limiter {
    limits: QueryLimits,
    follows: Arc<Mutex<HashMap<String, usize>>>,
    work: Arc<Semaphore>,
}

/// An open follow stream; released when dropped.
pub struct FollowSlot {
    follows: Arc<Mutex<HashMap<String, usize>>>,
    client: String,
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        let mut f = self.follows.lock().expect("follows lock");
        if let Some(n) = f.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                f.remove(&self.client);
            }
        }
    }
}

impl Limiter {
    /// A limiter with `limits`.
    pub fn new(limits: QueryLimits) -> Self {
        let work = Arc::new(Semaphore::new(limits.concurrent_work.max(1)));
        Limiter { limits, follows: Arc::default(), work }
    }

    /// Opens a follow stream for `client`, or refuses it (RESOURCE_EXHAUSTED).
    pub fn follow(&self, client: &str) -> Result<FollowSlot, Error> {
        let mut f = self.follows.lock().expect("follows lock");
        let total: usize = f.values().sum();
        let mine = f.get(client).copied().unwrap_or(0);
        if mine >= self.limits.follow_per_client {
            return Err(Error::Busy(format!(
                "{mine} follow streams already open for this client (at most {}); close one first",
                self.limits.follow_per_client
            )));
        }
        if total >= self.limits.follow_total {
            return Err(Error::Busy(format!(
                "{total} follow streams open on this collector (at most {}); try later",
                self.limits.follow_total
            )));
        }
        *f.entry(client.to_string()).or_default() += 1;
        Ok(FollowSlot { follows: self.follows.clone(), client: client.to_string() })
    }

    /// Waits for a slot to run blocking work.
    pub async fn work(&self) -> OwnedSemaphorePermit {
        self.work.clone().acquire_owned().await.expect("the semaphore is never closed")
    }
}
