//! The connection table: lookup by id, memory accounting, eviction of the
//! least recently active connections, and idle/linger expiry.

use std::collections::HashMap;

use crate::flow::conn::Conn;

struct Entry {
    conn: Conn,
    accounted: usize,
}

/// Live connections and the bytes they hold.
#[derive(Default)]
pub struct ConnTable {
    entries: HashMap<u64, Entry>,
    buffered: usize,
}

impl ConnTable {
    /// An empty table.
    pub fn new() -> Self {
        ConnTable::default()
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held across all connections (as of their last update).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Whether `id` is tracked.
    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// The connection with `id`.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.entries.get_mut(&id).map(|e| &mut e.conn)
    }

    /// Track a new connection (the caller made room).
    pub fn insert(&mut self, conn: Conn) {
        let id = conn.id;
        let accounted = conn.buffered();
        self.buffered += accounted;
        if let Some(old) = self.entries.insert(id, Entry { conn, accounted }) {
            self.buffered -= old.accounted;
        }
    }

    /// Re-read the memory held by `id` after it changed.
    pub fn reaccount(&mut self, id: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            let now = e.conn.buffered();
            self.buffered = self.buffered - e.accounted + now;
            e.accounted = now;
        }
    }

    /// Stop tracking `id`.
    pub fn remove(&mut self, id: u64) -> Option<Conn> {
        let e = self.entries.remove(&id)?;
        self.buffered -= e.accounted;
        Some(e.conn)
    }

    /// Ids of the `n` least recently active connections, oldest first.
    pub fn oldest(&self, n: usize) -> Vec<u64> {
        let mut all: Vec<(u64, u64)> = self.entries.values().map(|e| (e.conn.last_activity, e.conn.id)).collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        if n < all.len() {
            all.select_nth_unstable(n - 1);
            all.truncate(n);
        }
        all.sort_unstable();
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// Ids due at `now`: closed connections past the linger, others idle past
    /// the timeout. Sorted for deterministic output.
    pub fn expired(&self, now: u64, idle_ns: u64, linger_ns: u64) -> Vec<(u64, bool)> {
        let mut ids: Vec<(u64, bool)> = self
            .entries
            .values()
            .filter_map(|e| {
                let c = &e.conn;
                if let Some(close) = &c.close
                    && close.ts_ns.saturating_add(linger_ns) <= now
                {
                    return Some((c.id, true));
                }
                (c.last_activity.saturating_add(idle_ns) <= now).then_some((c.id, false))
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Every id, sorted.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.entries.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::input::Transport;

    #[test]
    fn oldest_and_expired() {
        let mut t = ConnTable::new();
        for (id, ts) in [(1, 50), (2, 10), (3, 30), (4, 20)] {
            t.insert(Conn::unannounced(id, ts, Transport::Tcp));
        }
        assert_eq!(t.oldest(2), vec![2, 4]);
        assert_eq!(t.oldest(10), vec![2, 4, 3, 1]);
        assert_eq!(t.expired(40, 15, 0), vec![(2, false), (4, false)]);
        assert!(t.remove(2).is_some());
        assert_eq!(t.len(), 3);
        assert!(t.remove(2).is_none());
    }
}
