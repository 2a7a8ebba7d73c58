//! The discovery thread: finds candidate files and inspects them (ELF parsing,
//! symbol and version search, Go disassembly), off the async runtime. It sends
//! what it finds to the agent's main task, which attaches (that needs `&mut Ebpf`).
use std::{
    collections::HashSet,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::Sender;

use super::{
    discover::{self, Candidate},
    elf::{self, Inspection},
};

/// What to look at.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Well-known library paths and every process (also reports which files are
    /// still in use, for detaching).
    All,
    /// A process that just executed a new image: looked at now and twice more
    /// shortly after, once the dynamic loader has mapped its libraries.
    Exec(u32),
}

/// What was found.
#[derive(Debug)]
pub enum Found {
    /// A file not inspected before, and what it offers.
    File { candidate: Candidate, inspection: Inspection, pinned: bool },
    /// Every file some process maps right now (after `Request::All`).
    Live(HashSet<(u64, u64)>),
}

/// Runs until `rx` closes or `tx`'s receiver is gone.
pub fn run(rx: Receiver<Request>, tx: Sender<Found>) {
    let mut inspected: HashSet<(u64, u64)> = HashSet::new();
    let mut later: Vec<(Instant, u32)> = Vec::new();
    let me = std::process::id();
    loop {
        let timeout = later.iter().map(|(t, _)| t.saturating_duration_since(Instant::now())).min();
        let req = match timeout {
            Some(t) => match rx.recv_timeout(t) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            },
        };
        let mut look = |c: Candidate, pinned: bool| -> bool {
            if !inspected.insert(c.id) {
                return true;
            }
            let inspection = match elf::inspect(&c.open_path) {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(path = %c.shown_path, error = %e, "not inspectable");
                    Inspection::None
                }
            };
            tracing::debug!(path = %c.shown_path, pid = c.pid, ?inspection, "inspected");
            if matches!(inspection, Inspection::None) {
                return true;
            }
            tx.blocking_send(Found::File { candidate: c, inspection, pinned }).is_ok()
        };
        match req {
            Some(Request::All) => {
                for c in discover::well_known() {
                    if !look(c, true) {
                        return;
                    }
                }
                let mut live = HashSet::new();
                for pid in discover::pids() {
                    if pid == me {
                        continue;
                    }
                    // New processes first: their first connection races with us.
                    while let Ok(Request::Exec(p)) = rx.try_recv() {
                        for c in discover::candidates(p) {
                            if !look(c, false) {
                                return;
                            }
                        }
                        let now = Instant::now();
                        later.push((now + Duration::from_millis(20), p));
                        later.push((now + Duration::from_millis(200), p));
                    }
                    for c in discover::candidates(pid) {
                        live.insert(c.id);
                        if !look(c, false) {
                            return;
                        }
                    }
                }
                if tx.blocking_send(Found::Live(live)).is_err() {
                    return;
                }
            }
            Some(Request::Exec(pid)) => {
                tracing::debug!(pid, "new program image: looking for TLS");
                for c in discover::candidates(pid) {
                    if !look(c, false) {
                        return;
                    }
                }
                let now = Instant::now();
                later.push((now + Duration::from_millis(20), pid));
                later.push((now + Duration::from_millis(200), pid));
            }
            None => {}
        }
        let now = Instant::now();
        let due: Vec<u32> = later.iter().filter(|(t, _)| *t <= now).map(|(_, p)| *p).collect();
        later.retain(|(t, _)| *t > now);
        for pid in due {
            for c in discover::candidates(pid) {
                if !look(c, false) {
                    return;
                }
            }
        }
    }
}
