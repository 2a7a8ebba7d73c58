use std::format;
use std::string::{String, ToString};

use crate::policy::*;
use crate::segment::{RULES_PER_SLOT, ZONES_PER_SLOT};

/// `n` zones, each with one cgroup member and one /32 address.
fn zones(n: u32) -> String {
    let mut s = String::from("version: 1\nzones:\n");
    for i in 0..n {
        s.push_str(&format!(
            "  - name: z{i}\n    members: [{{cgroup: \"/z{i}/**\"}}]\n    addresses: [10.{}.{}.{}/32]\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    s
}

#[test]
fn a_policy_that_fits_has_no_shortfall() {
    let p = Policy::parse(&zones(100)).unwrap();
    assert_eq!(p.shortfalls(), std::vec![]);
}

/// 64k zones (the case): parsed in near-linear time (a quadratic
/// duplicate-name check took 15 s in release builds) and refused by the
/// installability check, as the agent would.
#[test]
fn too_many_zones_are_named() {
    let n = 65_536;
    let text = zones(n);
    let t = std::time::Instant::now();
    let p = Policy::parse(&text).unwrap();
    // Reported, not asserted (speed is measured by benchmarks): near-linear
    // parsing takes ~1 s in release builds here.
    std::eprintln!("parsed {n} zones ({} bytes) in {:?}", text.len(), t.elapsed());
    assert_eq!(p.zones.len(), n as usize);
    assert_eq!(p.zone_by_name("z65535").map(|z| z.id), Some(n));
    let s = p.shortfalls();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].map, s[0].needed, s[0].capacity), ("ZONES", n as u64, ZONES_PER_SLOT as u64));
    assert!(s[0].to_string().contains("ZONES needs 65536 entries"), "{}", s[0]);
}

#[test]
fn too_many_rule_keys_are_named_without_building_them_all() {
    // 1000 rules of 4096 port keys each: 4 million keys for a 262144-entry map.
    let mut y = zones(50);
    y.push_str("rules:\n");
    for i in 0..1000 {
        y.push_str(&format!("  - from: z{}\n    to: z{}\n    ports: [\"1-4096\"]\n", i % 50, i / 50));
    }
    let p = Policy::parse(&y).unwrap();
    let s = p.shortfalls();
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].map, s[0].at_least), ("RULES", true));
    assert_eq!(s[0].capacity, RULES_PER_SLOT as u64);
    assert!(s[0].to_string().contains("more than 262144"), "{}", s[0]);
    // Duplicate keys count once: the same rule twice fits.
    let mut y = zones(2);
    y.push_str("rules:\n");
    for _ in 0..100 {
        y.push_str("  - from: z0\n    to: z1\n    ports: [\"1-4096\"]\n");
    }
    assert_eq!(Policy::parse(&y).unwrap().shortfalls(), std::vec![]);
}
