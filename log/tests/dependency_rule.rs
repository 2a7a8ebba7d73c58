//! The crate's dependency rule (lib.rs): an auditor's offline verifier builds
//! from this crate alone, so its dependency tree holds no gRPC, SQLite, async
//! runtime, HTTP or ClickHouse crate. Read from `cargo tree` (no build, the
//! lock file's resolution, offline).

#[test]
fn no_server_side_crate_is_in_the_dependency_tree() {
    let cargo = env!("CARGO");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["tree", "--manifest-path", manifest, "-e", "normal", "--prefix", "none", "--offline", "--locked"])
        .output()
        .expect("running cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let crates: std::collections::BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains("wiretrail-log") && crates.contains("wiretrail-proto") && crates.contains("prost"),
        "{tree}"
    );
    let forbidden = ["tonic", "tonic-prost", "rusqlite", "tokio", "hyper", "axum", "clickhouse", "tower"];
    let found: Vec<&&str> = forbidden.iter().filter(|c| crates.contains(**c)).collect();
    assert!(found.is_empty(), "wiretrail-log depends on {found:?}:\n{tree}");
}
