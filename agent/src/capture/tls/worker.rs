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
    /// A process that just executed a new image (pid, CLOCK_BOOTTIME ns of
    /// the exec): looked at now and twice more shortly after, once the dynamic
    /// loader has mapped its libraries.
    Exec(u32, u64),
}

/// What was found.
#[derive(Debug)]
pub enum Found {
    /// A file not inspected before, and what it offers.
    /// `exec_ns`: the CLOCK_BOOTTIME of the exec that led to it (0: found by a scan).
    File { candidate: Candidate, inspection: Inspection, pinned: bool, exec_ns: u64 },
    /// Every file some process maps right now (after `Request::All`).
    Live(HashSet<(u64, u64)>),
}

/// Runs until `rx` closes or `tx`'s receiver is gone.
pub fn run(rx: Receiver<Request>, tx: Sender<Found>) {
    let mut inspected: HashSet<(u64, u64)> = HashSet::new();
    let mut later: Vec<(Instant, u32, u64)> = Vec::new();
    let me = std::process::id();
    loop {
        let timeout = later.iter().map(|(t, _, _)| t.saturating_duration_since(Instant::now())).min();
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
        let mut look = |c: Candidate, pinned: bool, exec_ns: u64| -> bool {
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
            tx.blocking_send(Found::File { candidate: c, inspection, pinned, exec_ns }).is_ok()
        };
        match req {
            Some(Request::All) => {
                for c in discover::well_known() {
                    if !look(c, true, 0) {
                        return;
                    }
                }
                let mut live = HashSet::new();
                for pid in discover::pids() {
                    if pid == me {
                        continue;
                    }
                    // New processes first: their first connection races with us.
                    while let Ok(Request::Exec(p, at)) = rx.try_recv() {
                        for c in discover::candidates(p) {
                            if !look(c, false, at) {
                                return;
                            }
                        }
                        let now = Instant::now();
                        later.push((now + Duration::from_millis(20), p, at));
                        later.push((now + Duration::from_millis(200), p, at));
                    }
                    for c in discover::candidates(pid) {
                        live.insert(c.id);
                        if !look(c, false, 0) {
                            return;
                        }
                    }
                }
                if tx.blocking_send(Found::Live(live)).is_err() {
                    return;
                }
            }
            Some(Request::Exec(pid, at)) => {
                tracing::debug!(pid, "new program image: looking for TLS");
                for c in discover::candidates(pid) {
                    if !look(c, false, at) {
                        return;
                    }
                }
                let now = Instant::now();
                later.push((now + Duration::from_millis(20), pid, at));
                later.push((now + Duration::from_millis(200), pid, at));
            }
            None => {}
        }
        let now = Instant::now();
        let due: Vec<(u32, u64)> = later.iter().filter(|(t, _, _)| *t <= now).map(|(_, p, at)| (*p, *at)).collect();
        later.retain(|(t, _, _)| *t > now);
        for (pid, at) in due {
            for c in discover::candidates(pid) {
                if !look(c, false, at) {
                    return;
                }
            }
        }
    }
}
