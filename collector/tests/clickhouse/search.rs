//! Clustered search past the candidates ClickHouse selects and the filter
//! drops (a scenario of `clickhouse.rs`, run against its cluster).
use super::common::*;
use super::{Reader, ch, config, start};
use wiretrail_proto::v1::Filter;

/// ClickHouse's text test sees the whole leaf (the host name is in every
/// one), the filter only the payload: the first candidates in time do not
/// match, the last ones do. A search with a limit reads past the candidates
/// the filter drops, through the API and on the command line.
pub async fn all_logs_search_reads_past_candidates_the_filter_drops(url: &str) {
    let d = tempfile::tempdir().unwrap();
    let s = start(config(d.path(), "collector-p", ch(url, "pages"))).await;
    // 1,500 records whose host is "node-a", then 10 whose payload names it
    // too; all at one capture time, so the pages follow each other by leaf.
    let mut batches: Vec<_> = (0..15).map(|seq| batch("agent-p", "b1", seq, 100)).collect();
    let mut last = batch("agent-p", "b1", 15, 10);
    for (i, r) in last.records.iter_mut().enumerate() {
        r.payload = format!("SELECT host FROM nodes WHERE name = 'node-a' -- {i}").into_bytes();
    }
    batches.push(last);
    for r in batches.iter_mut().flat_map(|b| b.records.iter_mut()) {
        r.capture_time_ns = 5_000_000;
    }
    for a in send(s.addr, batches).await {
        a.expect("batch acknowledged");
    }
    let text = Filter { payload_text: "node-a".into(), limit: 5, ..Default::default() };
    let r = Reader::open(&ch(url, "pages")).await.unwrap();
    let candidates = r.search(&text).await.unwrap();
    assert_eq!(candidates.len(), 5, "ClickHouse's own test selects the first leaves");
    assert!(candidates.iter().all(|h| !h.leaf.record.as_ref().unwrap().payload.windows(6).any(|w| w == b"node-a")));
    let mut api = wiretrail_proto::v1::query_client::QueryClient::new(channel(s.addr).await);
    let req = wiretrail_proto::v1::SearchRequest { filter: Some(text.clone()), follow: false, all_logs: true };
    let mut stream = api.search(req).await.expect("all-logs search").into_inner();
    let mut got = Vec::new();
    while let Some(r) = tokio_stream::StreamExt::next(&mut stream).await {
        got.push(r.expect("a result"));
    }
    assert_eq!(got.len(), 5, "the limit of matching records, read past 1,500 that do not match");
    for g in &got {
        let rec = g.decoded.as_ref().unwrap().record.as_ref().unwrap();
        assert!(String::from_utf8_lossy(&rec.payload).contains("name = 'node-a'"), "{rec:?}");
        assert!(g.leaf_index >= 1500, "after the 1,500 that do not match: {}", g.leaf_index);
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wiretrail"))
        .args(["query", "--text", "node-a", "--limit", "5", "--json"])
        .args(["--clickhouse", url, "--clickhouse-database", "pages"])
        .env_remove("WIRETRAIL_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = super::common::cli::json_lines(&String::from_utf8_lossy(&out.stdout));
    let leaves: Vec<u64> = lines.iter().map(|l| l["leaf_index"].as_u64().unwrap()).collect();
    assert_eq!(leaves, got.iter().map(|g| g.leaf_index).collect::<Vec<_>>(), "the command line reads the same");
    // Past its bound of candidates a search is refused, not answered short.
    let mut bounded = Reader::open(&ch(url, "pages")).await.unwrap();
    bounded.max_candidates = 1000;
    let q = wiretrail_log::filter::Query::new(text).unwrap();
    let e = bounded.search_matching(&q).await.err().expect("refused");
    assert!(e.to_string().contains("read 1000 candidate rows") && e.to_string().contains("0 of them match"), "{e}");
    s.stop().await;
}
