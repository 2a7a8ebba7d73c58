//! Finding the other end of a conversation on this host: both sockets are
//! captured, one's local endpoint being the other's remote one (same
//! transport). Loopback conversations are matched within one network
//! namespace (every namespace has its own 127.0.0.1); others across
//! namespaces too (two pods, containers or test namespaces on this node talk
//! over veth pairs and see the same addresses).
//!
//! The index holds one key per tracked connection and loses it with the
//! connection, so it is bounded by the connection table's own bound.
use std::{collections::HashMap, net::SocketAddr};

use crate::record::Side;
use crate::types::Transport;

/// (transport, namespace for loopback, local, remote) of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    udp: bool,
    netns: u32,
    local: SocketAddr,
    remote: SocketAddr,
}

impl PeerKey {
    /// The key of the socket at the other end.
    pub fn mirror(&self) -> PeerKey {
        PeerKey { local: self.remote, remote: self.local, ..*self }
    }

    /// A loopback conversation: its other end is on this host.
    pub fn loopback(&self) -> bool {
        self.local.ip().is_loopback() && self.remote.ip().is_loopback()
    }
}

/// IPv4-mapped IPv6 addresses (dual-stack sockets) as IPv4, so both sides agree.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// The key of a socket, when its endpoints name a socket pair (a datagram's
/// own address, as on unconnected UDP, names none).
pub fn key(side: &Side, peer_from_arg: bool) -> Option<PeerKey> {
    let (local, remote) = (side.local?, side.remote?);
    if peer_from_arg || local.port() == 0 || remote.port() == 0 || remote.ip().is_unspecified() {
        return None;
    }
    let (local, remote) = (canonical(local), canonical(remote));
    let loopback = local.ip().is_loopback() || remote.ip().is_loopback();
    Some(PeerKey { udp: side.transport == Transport::Udp, netns: if loopback { side.netns } else { 0 }, local, remote })
}

/// Socket key → connection id.
#[derive(Default)]
pub struct PeerIndex {
    map: HashMap<PeerKey, u64>,
}

impl PeerIndex {
    /// Registers `id` under `k` (a newer socket with the same endpoints wins)
    /// and returns the connection at the other end, if tracked.
    pub fn insert(&mut self, k: PeerKey, id: u64) -> Option<u64> {
        self.map.insert(k, id);
        self.map.get(&k.mirror()).copied()
    }

    /// Forgets `k` if it still names `id`.
    pub fn remove(&mut self, k: &PeerKey, id: u64) {
        if self.map.get(k) == Some(&id) {
            self.map.remove(k);
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Comm, Role};

    fn side(local: &str, remote: &str, netns: u32) -> Side {
        Side {
            conn_id: 1,
            transport: Transport::Tcp,
            local: Some(local.parse().unwrap()),
            remote: Some(remote.parse().unwrap()),
            role: Role::Client,
            pid: 1,
            tid: 1,
            comm: Comm::new("x"),
            uid: 0,
            cgroup_id: 1,
            netns,
        }
    }

    #[test]
    fn both_ends_find_each_other_and_dual_stack_agrees() {
        let mut p = PeerIndex::default();
        let c = key(&side("127.0.0.1:40000", "127.0.0.1:80", 7), false).unwrap();
        assert_eq!(p.insert(c, 1), None);
        let s = key(&side("[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:40000", 7), false).unwrap();
        assert_eq!(p.insert(s, 2), Some(1));
        p.remove(&c, 1);
        assert_eq!(p.insert(s, 2), None);
    }

    #[test]
    fn loopback_stays_in_its_namespace_other_addresses_do_not() {
        let mut p = PeerIndex::default();
        p.insert(key(&side("127.0.0.1:40000", "127.0.0.1:80", 7), false).unwrap(), 1);
        assert_eq!(p.insert(key(&side("127.0.0.1:80", "127.0.0.1:40000", 8), false).unwrap(), 2), None);
        p.insert(key(&side("198.18.0.1:40000", "198.18.0.2:80", 7), false).unwrap(), 3);
        assert_eq!(p.insert(key(&side("198.18.0.2:80", "198.18.0.1:40000", 8), false).unwrap(), 4), Some(3));
    }

    #[test]
    fn datagram_peers_and_unbound_sockets_have_no_key() {
        assert!(key(&side("127.0.0.1:40000", "127.0.0.1:53", 7), true).is_none());
        assert!(key(&side("127.0.0.1:0", "127.0.0.1:53", 7), false).is_none());
        assert!(key(&side("127.0.0.1:5", "0.0.0.0:53", 7), false).is_none());
    }

    #[test]
    fn a_stale_connection_does_not_remove_a_newer_one() {
        let mut p = PeerIndex::default();
        let k = key(&side("127.0.0.1:40000", "127.0.0.1:80", 7), false).unwrap();
        p.insert(k, 1);
        p.insert(k, 5);
        p.remove(&k, 1);
        assert_eq!(p.insert(k.mirror(), 2), Some(5));
    }
}
