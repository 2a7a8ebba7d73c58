//! `wiretrail review mark|list`: supervisory review marks (reviewer role to
//! mark; reviewer or auditor to list).

use anyhow::{Context, bail};
use tokio_stream::StreamExt;
use wiretrail_proto::v1::review_client::ReviewClient;
use wiretrail_proto::v1::{ReviewConversation, ReviewListRequest, ReviewMarkRecord, ReviewMarkRequest};

use super::{Case, Conn, connect};
use wiretrail_log::text::escape;

/// Arguments of `wiretrail review`.
#[derive(clap::Args)]
pub(super) struct ReviewArgs {
    #[command(subcommand)]
    cmd: ReviewCmd,
}

#[derive(clap::Subcommand)]
enum ReviewCmd {
    /// Mark records (--leaf, repeatable) or a conversation (--conn) as reviewed.
    Mark {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        case: Case,
        /// Leaf index of a record reviewed (repeatable).
        #[arg(long, required_unless_present = "conversation", conflicts_with = "conversation")]
        leaf: Vec<u64>,
        /// A conversation reviewed, as AGENT/BOOT/CONN (the records' agent_id, boot_id, conn_id).
        #[arg(long = "conn", visible_alias = "conv", value_name = "AGENT/BOOT/CONN", id = "conversation")]
        conversation: Option<String>,
        /// no_action, escalated, closed or follow_up.
        #[arg(long)]
        action: String,
        /// What the reviewer found or did.
        #[arg(long)]
        comment: String,
    },
    /// List review marks (all conditions given must hold).
    List {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        case: Case,
        /// Reviewer's certificate identity (glob, e.g. "*role/reviewer/alice*").
        #[arg(long, default_value = "")]
        reviewer: String,
        /// Marks covering this record (naming it, or its conversation).
        #[arg(long)]
        leaf: Option<u64>,
        /// Marks on this conversation (AGENT/BOOT/CONN).
        #[arg(long = "conn", visible_alias = "conv", value_name = "AGENT/BOOT/CONN")]
        conversation: Option<String>,
        /// Only this action.
        #[arg(long, default_value = "")]
        action: String,
        /// When the marks were made.
        #[command(flatten)]
        window: super::window::WindowArgs,
        /// Most marks listed (0 = 1,000).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `AGENT/BOOT/CONN` (the agent id may itself contain slashes).
fn parse_conversation(s: &str) -> anyhow::Result<ReviewConversation> {
    let mut parts = s.rsplitn(3, '/');
    let (Some(conn), Some(boot), Some(agent)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--conn {s:?}: expected AGENT/BOOT/CONN");
    };
    let conn_id = conn.parse().with_context(|| format!("--conn {s:?}: connection id {conn:?} is not a number"))?;
    Ok(ReviewConversation { agent_id: agent.into(), boot_id: boot.into(), conn_id })
}

/// A mark as one JSON object.
pub(super) fn mark_json(m: &ReviewMarkRecord) -> serde_json::Value {
    serde_json::json!({"leaf_index": m.leaf_index, "time_ns": m.time_ns, "reviewer": m.reviewer, "role": m.role,
        "action": m.action, "comment": m.comment, "case_id": m.case_id, "leaves": m.leaves,
        "conversation": m.conversation.as_ref().map(conv_text)})
}

fn conv_text(c: &ReviewConversation) -> String {
    format!("{}/{}/{}", c.agent_id, c.boot_id, c.conn_id)
}

/// A mark as one line of text.
pub(super) fn mark_line(m: &ReviewMarkRecord) -> String {
    let items = match &m.conversation {
        Some(c) => format!("conversation {}", escape(&conv_text(c))),
        None => format!("leaves {}", m.leaves.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
    };
    format!(
        "{:>10}  {:<30}  {:<40}  {:<10}  {:<10}  {}  {}",
        m.leaf_index,
        crate::when::fmt_ns(m.time_ns),
        escape(&m.reviewer),
        m.action,
        escape(&m.case_id),
        items,
        escape(&m.comment)
    )
}

/// Runs `wiretrail review`.
pub(super) async fn run(a: ReviewArgs) -> anyhow::Result<()> {
    match a.cmd {
        ReviewCmd::Mark { conn, case, leaf, conversation, action, comment } => {
            let conversation = conversation.as_deref().map(parse_conversation).transpose()?;
            let mut c = ReviewClient::with_interceptor(connect(&conn).await?, case.meta()?);
            let r = c.review_mark(ReviewMarkRequest { leaves: leaf, conversation, action, comment }).await?;
            let r = r.into_inner();
            println!(
                "{}",
                serde_json::json!({"leaf_index": r.leaf_index, "time_ns": r.time_ns, "reviewer": r.reviewer})
            );
            eprintln!("review mark stored at leaf {} (reviewer {})", r.leaf_index, escape(&r.reviewer));
        }
        ReviewCmd::List { conn, case, reviewer, leaf, conversation, action, window, limit, json } => {
            let w = window.window()?;
            let (from_time_ns, to_time_ns) = (w.from_ns, w.to_ns);
            let conversation = conversation.as_deref().map(parse_conversation).transpose()?;
            let req = ReviewListRequest { reviewer, leaf, conversation, action, from_time_ns, to_time_ns, limit };
            let mut c = ReviewClient::with_interceptor(connect(&conn).await?, case.meta()?);
            let mut s = c.review_list(req).await?.into_inner();
            if !json {
                println!(
                    "{:>10}  {:<30}  {:<40}  {:<10}  {:<10}  items  comment",
                    "leaf", "time (UTC)", "reviewer", "action", "case"
                );
            }
            while let Some(m) = s.next().await {
                let m = m?;
                if json {
                    println!("{}", mark_json(&m));
                } else {
                    println!("{}", mark_line(&m));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_parse_or_say_why_not() {
        let c = parse_conversation("node/a/b/9").unwrap();
        assert_eq!((c.agent_id.as_str(), c.boot_id.as_str(), c.conn_id), ("node/a", "b", 9));
        assert!(parse_conversation("a/9").unwrap_err().to_string().contains("AGENT/BOOT/CONN"));
        assert!(parse_conversation("a/b/x").unwrap_err().to_string().contains("not a number"));
    }
}
