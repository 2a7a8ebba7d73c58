//! Peer identity for conversations between two processes on this host: the
//! agent sees both sockets, one's local endpoint being the other's remote one
//! (same transport, same network namespace). Each side's records then carry
//! the other side's identity as `peer_identity`. Loopback conversations are
//! matched within one network namespace (every namespace has its own
//! 127.0.0.1); others across namespaces too: two pods, containers or test
//! namespaces on this node talk over veth pairs and see the same addresses.
//!
//! The index maps (transport, netns for loopback, local, remote) to the identity of the
//! socket's process; it is fed by every connect/accept/data event, entries go
//! on close (of the same connection) and, beyond `max` entries, the least
//! recently refreshed half is dropped (counted in `peer_index_evicted`).
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::Identity;
use crate::{
    capture::event::{CaptureEvent, Meta, Transport},
    metrics::Metrics,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    udp: bool,
    netns: u32,
    local: SocketAddr,
    remote: SocketAddr,
}

struct Entry {
    conn_id: u64,
    identity: Arc<Identity>,
    /// Event count when last refreshed (for eviction).
    seen: u64,
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

fn key(m: &Meta) -> Option<Key> {
    // A datagram's own address (unconnected UDP) names no socket pair.
    if m.peer_from_arg || m.local.port() == 0 || m.remote.port() == 0 || m.remote.ip().is_unspecified() {
        return None;
    }
    let (local, remote) = (canonical(m.local), canonical(m.remote));
    let loopback = local.ip().is_loopback() || remote.ip().is_loopback();
    Some(Key { udp: m.transport == Transport::Udp, netns: if loopback { m.netns } else { 0 }, local, remote })
}

/// Endpoint pair → identity of the local process, bounded.
pub struct PeerIndex {
    map: HashMap<Key, Entry>,
    max: usize,
    events: u64,
    metrics: Arc<Metrics>,
}

impl PeerIndex {
    pub const DEFAULT_MAX: usize = 65_536;

    pub fn new(max: usize, metrics: Arc<Metrics>) -> PeerIndex {
        PeerIndex { map: HashMap::new(), max: max.max(2), events: 0, metrics }
    }

    /// Records that `ev`'s socket belongs to `identity`, and returns the
    /// identity of the socket at its other end when that is on this host.
    pub fn on_event(&mut self, ev: &CaptureEvent, identity: &Arc<Identity>) -> Option<Arc<Identity>> {
        if let CaptureEvent::Exec { .. } = ev {
            return None;
        }
        let m = ev.meta();
        let k = key(m)?;
        self.events += 1;
        let peer = self.map.get(&Key { local: k.remote, remote: k.local, ..k }).map(|e| e.identity.clone());
        if let CaptureEvent::Close { .. } = ev {
            if self.map.get(&k).is_some_and(|e| e.conn_id == m.conn_id) {
                self.map.remove(&k);
            }
            return peer;
        }
        match self.map.get_mut(&k) {
            Some(e) if e.conn_id == m.conn_id && Arc::ptr_eq(&e.identity, identity) => e.seen = self.events,
            _ => {
                if self.map.len() >= self.max {
                    self.evict();
                }
                self.map.insert(k, Entry { conn_id: m.conn_id, identity: identity.clone(), seen: self.events });
            }
        }
        peer
    }

    /// Drops the least recently refreshed half.
    fn evict(&mut self) {
        let mut seen: Vec<u64> = self.map.values().map(|e| e.seen).collect();
        let mid = seen.len() / 2;
        let (_, cut, _) = seen.select_nth_unstable(mid);
        let cut = *cut;
        let before = self.map.len();
        self.map.retain(|_, e| e.seen > cut);
        self.metrics.peer_index_evicted.add((before - self.map.len()) as u64);
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

    fn meta(conn_id: u64, local: &str, remote: &str, netns: u32) -> Meta {
        Meta { netns, comm: "x".into(), ..Meta::for_test(conn_id, local, remote) }
    }

    fn id(exe: &str) -> Arc<Identity> {
        Arc::new(Identity { exe: Some(exe.into()), ..Default::default() })
    }

    #[test]
    fn both_ends_learn_each_other() {
        let mut p = PeerIndex::new(16, Default::default());
        let (curl, nginx) = (id("/usr/bin/curl"), id("/usr/sbin/nginx"));
        let c = CaptureEvent::Connect { meta: meta(1, "127.0.0.1:40000", "127.0.0.1:80", 7) };
        assert_eq!(p.on_event(&c, &curl), None, "the server's socket is not seen yet");
        // Dual-stack server: the same endpoints, IPv4-mapped.
        let a = CaptureEvent::Accept { meta: meta(2, "[::ffff:127.0.0.1]:80", "[::ffff:127.0.0.1]:40000", 7) };
        assert_eq!(p.on_event(&a, &nginx), Some(curl.clone()));
        let d = CaptureEvent::Close { meta: meta(1, "127.0.0.1:40000", "127.0.0.1:80", 7) };
        assert_eq!(p.on_event(&d, &curl), Some(nginx.clone()));
        // Closed: the server no longer finds the client.
        let d = CaptureEvent::Close { meta: meta(2, "127.0.0.1:80", "127.0.0.1:40000", 7) };
        assert_eq!(p.on_event(&d, &nginx), None);
        assert!(p.is_empty());
    }

    #[test]
    fn namespaces_apart_match_over_their_own_addresses() {
        let mut p = PeerIndex::new(16, Default::default());
        let (a, b) = (id("/a"), id("/b"));
        p.on_event(&CaptureEvent::Connect { meta: meta(1, "198.18.0.1:40000", "198.18.0.2:80", 7) }, &a);
        let accept = CaptureEvent::Accept { meta: meta(2, "198.18.0.2:80", "198.18.0.1:40000", 8) };
        assert_eq!(p.on_event(&accept, &b), Some(a));
    }

    #[test]
    fn other_namespaces_loopback_and_udp_datagrams_do_not_match() {
        let mut p = PeerIndex::new(16, Default::default());
        let (a, b) = (id("/a"), id("/b"));
        p.on_event(&CaptureEvent::Connect { meta: meta(1, "127.0.0.1:40000", "127.0.0.1:80", 7) }, &a);
        let other_ns = CaptureEvent::Accept { meta: meta(2, "127.0.0.1:80", "127.0.0.1:40000", 8) };
        assert_eq!(p.on_event(&other_ns, &b), None);
        let mut udp = meta(3, "127.0.0.1:80", "127.0.0.1:40000", 7);
        udp.transport = Transport::Udp;
        assert_eq!(p.on_event(&CaptureEvent::Accept { meta: udp.clone() }, &b), None, "other transport");
        udp.transport = Transport::Tcp;
        udp.peer_from_arg = true;
        assert_eq!(p.on_event(&CaptureEvent::Accept { meta: udp }, &b), None);
    }

    #[test]
    fn close_of_a_stale_connection_keeps_the_new_one() {
        let mut p = PeerIndex::new(16, Default::default());
        let (a, b) = (id("/a"), id("/b"));
        p.on_event(&CaptureEvent::Connect { meta: meta(1, "127.0.0.1:40000", "127.0.0.1:80", 7) }, &a);
        p.on_event(&CaptureEvent::Connect { meta: meta(5, "127.0.0.1:40000", "127.0.0.1:80", 7) }, &a);
        p.on_event(&CaptureEvent::Close { meta: meta(1, "127.0.0.1:40000", "127.0.0.1:80", 7) }, &a);
        let s = CaptureEvent::Accept { meta: meta(2, "127.0.0.1:80", "127.0.0.1:40000", 7) };
        assert_eq!(p.on_event(&s, &b), Some(a));
    }

    #[test]
    fn bounded() {
        let metrics = Arc::new(Metrics::default());
        let mut p = PeerIndex::new(8, metrics.clone());
        let a = id("/a");
        for port in 1000..1100u16 {
            let m = meta(port as u64, &format!("127.0.0.1:{port}"), "127.0.0.1:80", 7);
            p.on_event(&CaptureEvent::Connect { meta: m }, &a);
            assert!(p.len() <= 8);
        }
        assert!(metrics.peer_index_evicted.get() >= 90);
        // The newest survive.
        let s = CaptureEvent::Accept { meta: meta(9999, "127.0.0.1:80", "127.0.0.1:1099", 7) };
        assert_eq!(p.on_event(&s, &id("/b")), Some(a));
    }
}
