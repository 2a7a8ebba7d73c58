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

/// The files inspected, so each is inspected once while processes map it.
///
/// A file that no process maps at the end of a full scan is forgotten: the
/// agent's main task detaches its probes on that scan's [`Found::Live`], so
/// the next process to map it must be hooked again (a program run every few
/// minutes would otherwise be hooked the first time only).
#[derive(Debug, Default)]
struct Inspected {
    files: HashSet<(u64, u64)>,
    /// Well-known library paths: attached for good, never forgotten.
    pinned: HashSet<(u64, u64)>,
}

impl Inspected {
    /// Whether `id` is to be inspected now (first time, or first since forgotten).
    fn first(&mut self, id: (u64, u64), pinned: bool) -> bool {
        if pinned {
            self.pinned.insert(id);
        }
        self.files.insert(id)
    }

    /// A full scan found `live` mapped: forgets every other file.
    fn scanned(&mut self, live: &HashSet<(u64, u64)>) {
        let pinned = &self.pinned;
        self.files.retain(|id| live.contains(id) || pinned.contains(id));
    }
}

/// Inspects `c` unless it was already; sends what it offers. False once the
/// agent's main task is gone.
fn look(inspected: &mut Inspected, tx: &Sender<Found>, c: Candidate, pinned: bool, exec_ns: u64) -> bool {
    if !inspected.first(c.id, pinned) {
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
}

/// Runs until `rx` closes or `tx`'s receiver is gone.
pub fn run(rx: Receiver<Request>, tx: Sender<Found>) {
    let mut inspected = Inspected::default();
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
        match req {
            Some(Request::All) => {
                for c in discover::well_known() {
                    if !look(&mut inspected, &tx, c, true, 0) {
                        return;
                    }
                }
                let mut live = HashSet::new();
                for pid in discover::pids() {
                    if pid == me {
                        continue;
                    }
                    // New processes first: their first connection races with us.
                    // Their files are live too, though their pids may be past
                    // the list this scan walks (missing from `live`, a file
                    // attached now would be detached on this very scan).
                    while let Ok(Request::Exec(p, at)) = rx.try_recv() {
                        for c in discover::candidates(p) {
                            live.insert(c.id);
                            if !look(&mut inspected, &tx, c, false, at) {
                                return;
                            }
                        }
                        let now = Instant::now();
                        later.push((now + Duration::from_millis(20), p, at));
                        later.push((now + Duration::from_millis(200), p, at));
                    }
                    for c in discover::candidates(pid) {
                        live.insert(c.id);
                        if !look(&mut inspected, &tx, c, false, 0) {
                            return;
                        }
                    }
                }
                inspected.scanned(&live);
                if tx.blocking_send(Found::Live(live)).is_err() {
                    return;
                }
            }
            Some(Request::Exec(pid, at)) => {
                tracing::debug!(pid, "new program image: looking for TLS");
                for c in discover::candidates(pid) {
                    if !look(&mut inspected, &tx, c, false, at) {
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
                if !look(&mut inspected, &tx, c, false, at) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_no_process_maps_at_a_scan_is_inspected_again_when_one_does() {
        let mut seen = Inspected::default();
        let (lib, prog, gone) = ((1, 10), (1, 20), (1, 30));
        assert!(seen.first(lib, true));
        assert!(seen.first(prog, false));
        assert!(seen.first(gone, false));
        assert!(!seen.first(prog, false), "inspected twice while mapped");
        // A scan finds only `prog` mapped: `gone`'s probes are detached, so it is forgotten.
        seen.scanned(&HashSet::from([prog]));
        assert!(!seen.first(prog, false));
        assert!(!seen.first(lib, true), "a well-known library is attached for good");
        assert!(seen.first(gone, false), "a program run again after its probes were detached is not hooked");
    }
}
