//! The search page: time range ("last 1h" or RFC 3339), identity, peer,
//! protocol and payload text; a paged table; a live follow mode (the API's
//! follow stream as server-sent events).

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, http};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wiretrail_proto::v1::query_client::QueryClient;
use wiretrail_proto::v1::{Filter, SearchRequest, SearchResult};

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, preview, row, table, time, url};
use super::principal::Principal;
use crate::access::meta::Meta;

/// Rows per page.
pub const PAGE: usize = 50;

/// The search form, as a query string.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Params {
    /// "last 1h", "15m": the window ending now.
    pub since: String,
    /// RFC 3339 start (inclusive).
    pub from: String,
    /// RFC 3339 end (exclusive).
    pub to: String,
    /// `key=value` pairs (commas or spaces between them) the record's identity must have.
    pub identity: String,
    /// Peer `address` or `address:port`.
    pub peer: String,
    /// Application protocol.
    pub protocol: String,
    /// Text the raw payload must contain.
    pub text: String,
    /// Case id the reads are made under (access log).
    pub case: String,
    /// Page number, from 0.
    pub page: usize,
    /// Follow mode: new records are appended live.
    pub follow: Option<String>,
    /// Follow: only leaves after this one (already shown).
    pub after: Option<u64>,
}

/// `s` trimmed, `None` when empty.
fn opt(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// A duration as typed by people: "last 1h", "1 h", "15m".
pub fn parse_since(s: &str) -> Result<std::time::Duration, Failure> {
    let t = s.trim();
    let t = t.strip_prefix("last").unwrap_or(t);
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(crate::when::parse_duration(&compact)?)
}

/// A peer as `address` or `address:port` (`[v6]:port`).
pub fn parse_peer(s: &str) -> Result<(String, u32), Failure> {
    let s = s.trim();
    let bad = || Failure::Input(format!("peer {s:?}: expected ADDRESS or ADDRESS:PORT"));
    if let Some(rest) = s.strip_prefix('[') {
        let (a, p) = rest.split_once(']').ok_or_else(bad)?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if p.is_empty() => 0,
            None => return Err(bad()),
        };
        return Ok((a.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => Ok((a.to_string(), p.parse().map_err(|_| bad())?)),
        _ => Ok((s.to_string(), 0)),
    }
}

impl Params {
    /// The API filter these parameters select (`limit` results at most).
    pub fn filter(&self, now_ns: i64, limit: u64) -> Result<Filter, Failure> {
        let w = crate::when::WindowInput {
            since: opt(&self.since).map(parse_since).transpose()?,
            from_ns: opt(&self.from).map(crate::when::parse_time).transpose()?,
            to_ns: opt(&self.to).map(crate::when::parse_time).transpose()?,
        }
        .resolve(now_ns)?;
        let mut identity = Vec::new();
        for pair in self.identity.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
            if !pair.contains('=') {
                return Err(Failure::Input(format!("identity {pair:?}: expected key=value")));
            }
            identity.push(pair.to_string());
        }
        let (peer_address, peer_port) = match opt(&self.peer) {
            Some(p) => parse_peer(p)?,
            None => (String::new(), 0),
        };
        Ok(Filter {
            from_time_ns: w.from_ns,
            to_time_ns: w.to_ns,
            identity,
            peer_address,
            peer_port,
            app_protocol: self.protocol.trim().to_string(),
            payload_text: self.text.clone(),
            limit,
            ..Default::default()
        })
    }

    /// The parameters as a query string (without page and follow).
    pub fn query(&self) -> String {
        let f = [
            ("since", &self.since),
            ("from", &self.from),
            ("to", &self.to),
            ("identity", &self.identity),
            ("peer", &self.peer),
            ("protocol", &self.protocol),
            ("text", &self.text),
            ("case", &self.case),
        ];
        f.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", url(v))).collect::<Vec<_>>().join("&")
    }
}

/// Where the record was captured and who it talked to.
fn peer_of(r: &wiretrail_proto::v1::Record) -> String {
    if !r.peer_identity.is_empty() {
        let mut ids: Vec<_> = r.peer_identity.iter().map(|(k, v)| format!("{k}={v}")).collect();
        ids.sort();
        return ids.join(" ");
    }
    r.remote.as_ref().map(|e| format!("{}:{}", e.address, e.port)).unwrap_or_default()
}

/// The identity map as `k=v` text.
pub fn identity_text(m: &std::collections::HashMap<String, String>) -> String {
    let mut ids: Vec<_> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ids.sort();
    ids.join(" ")
}

/// Whether `r` is a leaf of the log `own` (every result names its log; in
/// clustered mode a search answers from every collector's log).
pub fn is_own(r: &SearchResult, own: &str) -> bool {
    r.origin.is_empty() || r.origin == own
}

/// The leaf of `r`: a link to its record page when it is in the log `own`;
/// else its log and leaf, as text (that page reads this collector's log).
pub fn leaf_link(r: &SearchResult, own: &str) -> String {
    if is_own(r, own) {
        format!("<a href=\"/record/{i}\">{i}</a>", i = r.leaf_index)
    } else {
        format!(
            "<span title=\"in the log of another collector: wiretrail prove --clickhouse\">{} {}</span>",
            esc(&r.origin),
            r.leaf_index
        )
    }
}

/// One result as table cells (`own`: this collector's log).
pub fn cells(r: &SearchResult, own: &str) -> Vec<String> {
    let l = r.decoded.clone().unwrap_or_default();
    let rec = l.record.clone().unwrap_or_default();
    let conv = format!("/conversation?agent={}&boot={}&conn={}", url(&l.agent_id), url(&l.boot_id), rec.conn_id);
    vec![
        leaf_link(r, own),
        time(rec.capture_time_ns),
        esc(&l.agent_id),
        esc(&rec.host),
        format!("<span class=\"wrap\">{}</span>", esc(&identity_text(&rec.identity))),
        format!("<span class=\"wrap\">{}</span>", esc(&peer_of(&rec))),
        esc(&rec.app_protocol),
        format!("<span class=\"payload\">{}</span>", preview(&rec.payload, 80)),
        format!("<a href=\"{}\">conn {}</a>", esc(&conv), rec.conn_id),
    ]
}

/// The table's columns.
pub const HEAD: [&str; 9] =
    ["Leaf", "Captured (UTC)", "Agent", "Host", "Identity", "Peer", "Protocol", "Payload", "Conversation"];

/// A query client reading as `who` under case id `case` ("" = none), as `--case` does.
async fn client(
    c: &Console,
    who: &Principal,
    case: &str,
) -> Result<QueryClient<InterceptedService<Channel, Meta>>, Failure> {
    let meta = Meta::case(Some(case.trim())).map_err(Failure::Input)?;
    Ok(QueryClient::with_interceptor(c.backend.channel(who).await?, meta).max_decoding_message_size(64 << 20))
}

/// The results of `filter` (at most its limit), read as `who` under case id `case`.
pub async fn run(c: &Console, who: &Principal, case: &str, filter: Filter) -> Result<Vec<SearchResult>, Failure> {
    let mut q = client(c, who, case).await?;
    let mut s =
        q.search(SearchRequest { filter: Some(filter), follow: false, ..Default::default() }).await?.into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r?);
    }
    Ok(out)
}

/// The search form for `p`.
pub fn form(p: &Params) -> String {
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/search\" role=\"search\">{}{}{}{}{}{}{}{}\
         <div class=\"actions\"><label><input type=\"checkbox\" name=\"follow\" value=\"1\"{}> Follow live</label>\
         <button type=\"submit\">Search</button></div></form>",
        input("since", "Since (e.g. last 1h)", &p.since, "last 1h"),
        input("from", "From (RFC 3339)", &p.from, "2026-12-06T09:00:00Z"),
        input("to", "To (RFC 3339)", &p.to, ""),
        input("identity", "Identity (key=value)", &p.identity, "pod=api"),
        input("peer", "Peer (address[:port])", &p.peer, "10.0.0.1:5432"),
        input("protocol", "Protocol", &p.protocol, "http1"),
        input("text", "Payload text", &p.text, ""),
        input("case", "Case id", &p.case, ""),
        if p.follow.is_some() { " checked" } else { "" },
    )
}

/// `GET /search`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Html<String>, Failure> {
    let mut body = form(&p);
    let searched = p.query();
    if !searched.is_empty() || p.follow.is_some() {
        let shown = (p.page + 1) * PAGE;
        let filter = p.filter(wiretrail_log::store::now_ns(), shown as u64 + 1)?;
        let results = run(&c, &who, &p.case, filter).await?;
        let more = results.len() > shown;
        let rows: Vec<_> = results.iter().skip(p.page * PAGE).take(PAGE).map(|r| cells(r, &c.origin)).collect();
        // Following reads this collector's log: resume after its last leaf shown.
        let last =
            results[..results.len().min(shown)].iter().filter(|r| is_own(r, &c.origin)).map(|r| r.leaf_index).max();
        body.push_str(&format!(
            "<div class=\"actions\"><p id=\"count\">{} results on this page (page {})</p>\
             <a class=\"button\" id=\"export\" href=\"/export?{}\">Export as evidence bundle</a></div>",
            rows.len(),
            p.page + 1,
            esc(&searched)
        ));
        let mut t = table("results", &HEAD, &rows);
        if p.follow.is_some() {
            let after = last.map(|l| format!("&after={l}")).unwrap_or_default();
            let live = format!("/search/follow?{searched}{after}");
            t = t.replacen("<tbody>", &format!("<tbody data-live=\"{}\" data-status=\"live\">", esc(&live)), 1);
            body.push_str("<p id=\"live\" role=\"status\" aria-live=\"polite\">live: waiting for records</p>");
        }
        body.push_str(&t);
        let mut pager = String::from("<nav class=\"pager\" aria-label=\"Pages of results\">");
        if p.page > 0 {
            pager.push_str(&format!("<a href=\"/search?{}&page={}\">Previous</a>", esc(&searched), p.page - 1));
        }
        if more {
            pager.push_str(&format!("<a href=\"/search?{}&page={}\" id=\"next\">Next</a>", esc(&searched), p.page + 1));
        }
        pager.push_str("</nav>");
        body.push_str(&pager);
    } else {
        body.push_str("<p class=\"hint\">Set at least one condition (e.g. since \"last 1h\") and search.</p>");
    }
    Ok(Html(frame(&who, "/search", "Search", &body)))
}

/// `GET /search/follow`: the API's follow stream as server-sent events, one
/// rendered row each.
pub async fn follow(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<Params>,
) -> Result<Response, Failure> {
    let filter = p.filter(wiretrail_log::store::now_ns(), 0)?;
    let mut q = client(&c, &who, &p.case).await?;
    let s = q.search(SearchRequest { filter: Some(filter), follow: true, ..Default::default() }).await?.into_inner();
    let (after, own) = (p.after, c.origin.clone());
    let events = s.filter_map(move |r| match r {
        Ok(r) if after.is_some_and(|a| r.leaf_index <= a) => None,
        Ok(r) => Some(Ok::<_, Infallible>(Event::default().data(row(&cells(&r, &own))))),
        Err(e) => Some(Ok(Event::default().event("failure").data(e.message().replace('\n', " ")))),
    });
    let mut resp = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_times_and_peers() {
        assert_eq!(parse_since("last 1h").unwrap(), std::time::Duration::from_secs(3600));
        assert_eq!(parse_since("last 1 h").unwrap(), std::time::Duration::from_secs(3600));
        assert!(parse_since("yesterday").is_err());
        assert_eq!(parse_peer("10.0.0.1:5432").unwrap(), ("10.0.0.1".into(), 5432));
        assert_eq!(parse_peer("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(parse_peer("::1").unwrap(), ("::1".into(), 0));
        assert!(parse_peer("10.0.0.1:http").is_err());
        let p = Params { since: "last 1h".into(), identity: "pod=a, ns=b".into(), ..Default::default() };
        let f = p.filter(7_200_000_000_000, 10).unwrap();
        assert_eq!((f.from_time_ns, f.identity.len()), (3_600_000_000_000, 2));
        assert!(Params { identity: "pod".into(), ..Default::default() }.filter(1, 1).is_err());
    }

    #[test]
    fn only_this_logs_leaves_link_to_its_record_page() {
        let r = |origin: &str| SearchResult { leaf_index: 7, origin: origin.into(), ..Default::default() };
        assert_eq!(leaf_link(&r("collector-a"), "collector-a"), "<a href=\"/record/7\">7</a>");
        assert_eq!(leaf_link(&r(""), "collector-a"), "<a href=\"/record/7\">7</a>");
        let other = leaf_link(&r("collector-<b>"), "collector-a");
        assert!(!other.contains("href") && other.contains("collector-&lt;b&gt; 7"), "{other}");
    }
}
