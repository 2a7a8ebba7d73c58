//! Two network namespaces joined by a veth pair: test hosts of our own.
use std::{os::unix::fs::MetadataExt, process::Command};

/// Namespaces `<name>-a` (198.18.0.1, 2001:2::1) and `<name>-b` (198.18.0.2,
/// 2001:2::2), deleted on drop. 198.18.0.0/15 and 2001:2::/48 are reserved for
/// benchmarking (RFC 2544, RFC 5180) and exist only inside them.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
}

pub const ADDR_A: &str = "198.18.0.1";
pub const ADDR_B: &str = "198.18.0.2";
pub const ADDR6_A: &str = "2001:2::1";
pub const ADDR6_B: &str = "2001:2::2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (apt-get install iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl NetnsPair {
    pub fn new(tag: &str) -> NetnsPair {
        let base = format!("wt{}{}", tag, std::process::id() % 100_000);
        let (a, b) = (format!("{base}a"), format!("{base}b"));
        let (va, vb) = (format!("{base}va"), format!("{base}vb"));
        let pair = NetnsPair { a: a.clone(), b: b.clone() };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        ip(&["-n", &a, "addr", "add", &format!("{ADDR_A}/30"), "dev", &va]);
        ip(&["-n", &b, "addr", "add", &format!("{ADDR_B}/30"), "dev", &vb]);
        // `nodad`: usable at once (no duplicate address detection to wait for).
        ip(&["-n", &a, "addr", "add", &format!("{ADDR6_A}/64"), "dev", &va, "nodad"]);
        ip(&["-n", &b, "addr", "add", &format!("{ADDR6_B}/64"), "dev", &vb, "nodad"]);
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// Inode of a namespace's net ns (what the agent reports as `netns`).
    pub fn inode(name: &str) -> u64 {
        std::fs::metadata(format!("/run/netns/{name}")).expect("netns file").ino()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
