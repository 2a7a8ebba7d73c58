//! Followers of the committed size, without an async runtime: the writer
//! notifies ([`Appended::notify`]) after each commit; a follower's
//! [`SizeWatch::changed`] completes once the log has grown since it last
//! looked. Only `std` wakers are used, so it works under any executor (the
//! collector's tokio tasks) and keeps this crate free of one.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Why a watch cannot wait any longer.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The log (and its writer's notifications) is gone.
    #[error("the log was closed")]
    Closed,
}

/// What the notifier and its watches share.
#[derive(Default)]
struct State {
    /// Bumped by every notification.
    version: u64,
    /// Set when the notifier is dropped.
    closed: bool,
    /// Id of the next watch.
    next_id: u64,
    /// Waker of each watch waiting in [`SizeWatch::changed`], by watch id
    /// (one per watch: bounded by the live watches).
    wakers: BTreeMap<u64, Waker>,
}

/// The notifying side, held by the [`super::Log`].
#[derive(Default)]
pub(super) struct Appended(Arc<Mutex<State>>);

impl Appended {
    /// Marks the committed size changed and wakes every waiting watch.
    pub(super) fn notify(&self) {
        let wakers = {
            let mut s = self.0.lock().expect("watch lock");
            s.version += 1;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_values().for_each(Waker::wake);
    }

    /// A new watch; changes before this call are already seen.
    pub(super) fn subscribe(&self) -> SizeWatch {
        let mut s = self.0.lock().expect("watch lock");
        let id = s.next_id;
        s.next_id += 1;
        SizeWatch { state: self.0.clone(), id, seen: s.version }
    }
}

impl Drop for Appended {
    fn drop(&mut self) {
        let wakers = {
            let mut s = self.0.lock().expect("watch lock");
            s.closed = true;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_values().for_each(Waker::wake);
    }
}

/// A follower's watch of the committed size (from [`super::Log::subscribe`]).
pub struct SizeWatch {
    /// Shared with the notifier.
    state: Arc<Mutex<State>>,
    /// This watch's key in [`State::wakers`].
    id: u64,
    /// The notification count last seen.
    seen: u64,
}

impl SizeWatch {
    /// Completes when the committed size changed since the subscription or
    /// the last completed call (read the new size from the log); fails when
    /// the log is gone. Dropping the future before it completes loses nothing.
    pub async fn changed(&mut self) -> Result<(), WatchError> {
        poll_fn(|cx| {
            let mut s = self.state.lock().expect("watch lock");
            if s.version != self.seen {
                self.seen = s.version;
                s.wakers.remove(&self.id);
                return Poll::Ready(Ok(()));
            }
            if s.closed {
                return Poll::Ready(Err(WatchError::Closed));
            }
            s.wakers.insert(self.id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for SizeWatch {
    fn drop(&mut self) {
        self.state.lock().expect("watch lock").wakers.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    use super::*;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_changed(w: &mut SizeWatch, count: &Arc<Count>) -> Poll<Result<(), WatchError>> {
        let waker = Waker::from(count.clone());
        pin!(w.changed()).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_watch_waits_for_the_next_notification_and_wakes_on_it() {
        let a = Appended::default();
        a.notify();
        let mut w = a.subscribe();
        let count = Arc::new(Count::default());
        assert!(poll_changed(&mut w, &count).is_pending(), "a change before subscribing is already seen");
        assert!(poll_changed(&mut w, &count).is_pending());
        a.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one waker per watch, woken once");
        assert!(matches!(poll_changed(&mut w, &count), Poll::Ready(Ok(()))));
        assert!(poll_changed(&mut w, &count).is_pending(), "each change completes one call");
        a.notify();
        a.notify();
        assert!(matches!(poll_changed(&mut w, &count), Poll::Ready(Ok(()))));
        assert!(poll_changed(&mut w, &count).is_pending(), "changes since the last call count once");
    }

    #[test]
    fn dropping_the_notifier_wakes_and_closes_its_watches() {
        let a = Appended::default();
        let mut w = a.subscribe();
        let mut dropped = a.subscribe();
        let count = Arc::new(Count::default());
        assert!(poll_changed(&mut w, &count).is_pending());
        assert!(poll_changed(&mut dropped, &count).is_pending());
        drop(dropped);
        drop(a);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "a dropped watch's waker is forgotten");
        assert!(matches!(poll_changed(&mut w, &count), Poll::Ready(Err(WatchError::Closed))));
    }
}
