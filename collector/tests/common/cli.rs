//! Running the `wiretrail` binary against a test collector over mTLS.

use std::net::SocketAddr;
use std::path::Path;

/// Runs `wiretrail ARGS --server addr --tls-dir dir --cert-name who`: (exit code, stdout, stderr).
pub async fn cli(addr: SocketAddr, dir: &Path, who: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(args)
        .args(["--server", &addr.to_string(), "--tls-dir", dir.to_str().unwrap(), "--cert-name", who])
        .output()
        .await
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// `cli` that must succeed; its stdout.
pub async fn ok(addr: SocketAddr, dir: &Path, who: &str, args: &[&str]) -> String {
    let (code, out, err) = cli(addr, dir, who, args).await;
    assert_eq!(code, 0, "wiretrail {args:?} as {who} failed: {err}");
    out
}

/// Each line of `s` as JSON.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect()
}

/// Sends one batch with the `agent` certificate of `dir`; the ack must accept it.
pub async fn ingest_tls(addr: SocketAddr, dir: &Path, b: wiretrail_proto::v1::Batch) {
    use tokio_stream::StreamExt;
    let mut c = wiretrail_proto::v1::ingest_client::IngestClient::new(super::mtls(addr, dir, "agent").await);
    let mut s = c.ingest(tokio_stream::iter(vec![b])).await.unwrap().into_inner();
    s.next().await.expect("an ack").expect("batch accepted");
}
