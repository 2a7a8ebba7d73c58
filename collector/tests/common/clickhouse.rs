//! ClickHouse servers for the clustered-mode tests (started by
//! [`wiretrail_tests::clickhouse`], shared with `cargo xtask bench collector
//! --store clickhouse`) and a SQL helper.

// Every test binary includes `common`; only tests/clickhouse.rs starts servers.
#[allow(unused_imports)]
pub use wiretrail_tests::clickhouse::{Cluster, Modern};

/// Runs `sql` over HTTP against `url`; the body, or a panic with the server's error.
pub async fn sql(url: &str, sql: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--data-binary", sql, url])
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{sql}: {body} {}", String::from_utf8_lossy(&out.stderr));
    body
}
