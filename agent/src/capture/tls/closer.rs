//! Closing uprobes off the main loop and out of the way of attaches.
//!
//! Closing a uprobe waits for the kernel (about 100 ms per probe on these
//! machines, 400 ms for a file's four) while holding the lock that attaching
//! one also takes (the trace-event mutex), and the main loop that detaches
//! unused files also attaches the probes of new processes: a process started
//! while another file's probes were being removed was hooked 260–390 ms after
//! its exec instead of ~20 ms. So the links are handed to one thread that
//! closes them one at a time, never while an attach is under way, with a pause
//! after each in which a waiting attach gets the lock: a new program waits for
//! at most the one close already running.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use aya::programs::uprobe::UProbeLink;

/// Pause after each close.
const PAUSE: Duration = Duration::from_millis(10);
/// How often a waiting close looks again whether the attach is done.
const POLL: Duration = Duration::from_millis(2);

pub struct Closer {
    tx: Option<mpsc::Sender<Vec<UProbeLink>>>,
    attaching: Arc<AtomicBool>,
}

/// Marks an attach under way until dropped.
pub struct Attaching<'a>(&'a AtomicBool);

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Closer {
    /// Starts the closing thread (without one, links are closed where dropped).
    pub fn start() -> Closer {
        let attaching = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Vec<UProbeLink>>();
        let busy = attaching.clone();
        let run = move || {
            for links in rx {
                for link in links {
                    while busy.load(Ordering::Acquire) {
                        std::thread::sleep(POLL);
                    }
                    drop(link);
                    std::thread::sleep(PAUSE);
                }
            }
        };
        let tx = match std::thread::Builder::new().name("tls-detach".into()).spawn(run) {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "no thread to close uprobes on: they are closed inline");
                None
            }
        };
        Closer { tx, attaching }
    }

    /// Closes `links` on the closing thread.
    pub fn close(&self, links: Vec<UProbeLink>) {
        if links.is_empty() {
            return;
        }
        if let Some(tx) = &self.tx
            && let Err(mpsc::SendError(links)) = tx.send(links)
        {
            tracing::warn!("the uprobe closing thread is gone: closing inline");
            drop(links);
        }
    }

    /// Holds closes back until the returned guard is dropped.
    pub fn attaching(&self) -> Attaching<'_> {
        self.attaching.store(true, Ordering::Release);
        Attaching(&self.attaching)
    }
}
