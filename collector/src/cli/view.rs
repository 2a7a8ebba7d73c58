//! `wiretrail view`: the records at a leaf range (reviewer role; logged).

use tokio_stream::StreamExt;
use wiretrail_proto::v1::ViewRequest;

use super::{Case, Conn, client};

/// Arguments of `wiretrail view`.
#[derive(clap::Args)]
pub(super) struct ViewArgs {
    /// Collector connection.
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    case: Case,
    /// First leaf index.
    #[arg(long)]
    leaf: u64,
    /// Last leaf index (inclusive; default: --leaf).
    #[arg(long)]
    to: Option<u64>,
    /// Rendered text instead of one JSON object per line.
    #[arg(long)]
    text: bool,
}

/// Runs `wiretrail view`.
pub(super) async fn run(a: ViewArgs) -> anyhow::Result<()> {
    let mut q = client(&a.conn, &a.case).await?;
    let req = ViewRequest { first_leaf: a.leaf, last_leaf: a.to.unwrap_or(a.leaf) };
    let mut s = q.view(req).await?.into_inner();
    while let Some(r) = s.next().await {
        let r = r?;
        let l = r.decoded.unwrap_or_default();
        if a.text {
            print!("{}", wiretrail_log::bundle::render::record_text(r.leaf_index, &l));
            for m in &r.review_marks {
                println!("reviewed: {}", super::review::mark_line(m));
            }
        } else {
            let mut v = wiretrail_log::record_json::to_json(r.leaf_index, &l);
            v["review_marks"] = r.review_marks.iter().map(super::review::mark_json).collect::<Vec<_>>().into();
            println!("{v}");
        }
    }
    Ok(())
}
