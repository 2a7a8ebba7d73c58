//! The identity of each connection's process, for the records made after its
//! events: protocol records from reassembly and gaps found by the tracker.
use std::{collections::HashMap, sync::Arc};

use super::Identity;

/// Most connections remembered; the map is cleared when full (a cache: a
/// record made after that carries no identity rather than a wrong one).
const MAX: usize = 262_144;

/// Connection id → identity of the process that owns the socket.
#[derive(Debug, Default)]
pub struct ConnIdentities {
    map: HashMap<u64, Arc<Identity>>,
}

impl ConnIdentities {
    /// Remembers `id` for `conn_id` (0: untracked, nothing to remember).
    pub fn note(&mut self, conn_id: u64, id: &Arc<Identity>) {
        if conn_id == 0 || self.map.get(&conn_id).is_some_and(|e| Arc::ptr_eq(e, id)) {
            return;
        }
        if self.map.len() >= MAX {
            self.map.clear();
        }
        self.map.insert(conn_id, id.clone());
    }

    pub fn get(&self, conn_id: u64) -> Option<&Arc<Identity>> {
        self.map.get(&conn_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_connection_and_ignores_untracked() {
        let mut c = ConnIdentities::default();
        let a = Arc::new(Identity { cgroup_path: Some("/a".into()), ..Default::default() });
        c.note(1, &a);
        c.note(0, &a);
        assert_eq!(c.get(1).and_then(|i| i.cgroup_path.as_deref()), Some("/a"));
        assert!(c.get(0).is_none());
    }
}
