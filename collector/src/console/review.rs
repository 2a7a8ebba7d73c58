//! Review: mark records or a conversation reviewed (action + comment,
//! reviewer role) and list marks (reviewer or auditor role).

use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::response::{Html, Redirect};
use tokio_stream::StreamExt;
use wiretrail_proto::v1::review_client::ReviewClient;
use wiretrail_proto::v1::{ReviewConversation, ReviewListRequest, ReviewMarkRequest};

use super::Console;
use super::fail::Failure;
use super::html::{esc, input, page as frame, table, time};
use super::principal::Principal;

/// The actions a mark may record.
pub const ACTIONS: [&str; 4] = ["no_action", "escalated", "closed", "follow_up"];

/// A mark: leaves, or one conversation.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct MarkForm {
    /// Leaf indexes, commas or spaces between them.
    pub leaves: String,
    /// Conversation: agent id, boot id, connection id.
    pub agent: String,
    /// Boot id.
    pub boot: String,
    /// Connection id.
    pub conn: String,
    /// One of [`ACTIONS`].
    pub action: String,
    /// Free text.
    pub comment: String,
}

/// List filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct ListParams {
    /// Glob over the reviewer's identity.
    pub reviewer: String,
    /// Only this action.
    pub action: String,
    /// The entry of the mark just made (shown as done).
    pub marked: Option<u64>,
}

/// The mark form, for `leaves` (text) or a conversation.
pub fn mark_form(leaves: &str, conversation: Option<(&str, &str, u64)>) -> String {
    let opts: String = ACTIONS.iter().map(|a| format!("<option value=\"{a}\">{a}</option>")).collect();
    let target = match conversation {
        Some((agent, boot, conn)) => format!(
            "<input type=\"hidden\" name=\"agent\" value=\"{}\"><input type=\"hidden\" name=\"boot\" value=\"{}\">\
             <input type=\"hidden\" name=\"conn\" value=\"{conn}\"><p>Conversation {conn} of {}</p>",
            esc(agent),
            esc(boot),
            esc(agent)
        ),
        None => input("leaves", "Leaves (e.g. 12, 13)", leaves, "12, 13"),
    };
    format!(
        "<form class=\"filters\" method=\"post\" action=\"/review\" aria-label=\"Mark reviewed\">{target}\
         <div><label for=\"f-action\">Action</label><select id=\"f-action\" name=\"action\">{opts}</select></div>\
         {}<div class=\"actions\"><button type=\"submit\" id=\"mark\">Mark reviewed</button></div></form>",
        input("comment", "Comment", "", "why")
    )
}

fn request(f: &MarkForm) -> Result<ReviewMarkRequest, Failure> {
    let mut req = ReviewMarkRequest { action: f.action.clone(), comment: f.comment.clone(), ..Default::default() };
    if !f.agent.is_empty() {
        let conn_id = f.conn.trim().parse().map_err(|_| Failure::Input(format!("connection id {:?}", f.conn)))?;
        req.conversation = Some(ReviewConversation { agent_id: f.agent.clone(), boot_id: f.boot.clone(), conn_id });
    } else {
        for l in f.leaves.split(|c: char| c == ',' || c.is_whitespace()).filter(|l| !l.is_empty()) {
            req.leaves.push(l.parse().map_err(|_| Failure::Input(format!("leaf {l:?} is not a number")))?);
        }
    }
    Ok(req)
}

async fn list(c: &Console, who: &Principal, p: &ListParams) -> Result<String, Failure> {
    let mut r = ReviewClient::new(c.backend.channel(who).await?);
    let req =
        ReviewListRequest { reviewer: p.reviewer.clone(), action: p.action.clone(), limit: 500, ..Default::default() };
    let mut s = r.review_list(req).await?.into_inner();
    let mut rows = Vec::new();
    while let Some(m) = s.next().await {
        let m = m?;
        let item = match &m.conversation {
            Some(c) => format!(
                "<a href=\"/conversation?agent={}&amp;boot={}&amp;conn={}\">conversation {}</a>",
                esc(&super::html::url(&c.agent_id)),
                esc(&super::html::url(&c.boot_id)),
                c.conn_id,
                c.conn_id
            ),
            None => m.leaves.iter().map(|l| format!("<a href=\"/record/{l}\">{l}</a>")).collect::<Vec<_>>().join(" "),
        };
        rows.push(vec![
            m.leaf_index.to_string(),
            time(m.time_ns),
            esc(&m.reviewer),
            esc(&m.action),
            item,
            esc(&m.comment),
        ]);
    }
    rows.reverse();
    Ok(table("marks", &["Mark", "When (UTC)", "Reviewer", "Action", "Item", "Comment"], &rows))
}

/// `GET /review`.
pub async fn page(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Query(p): Query<ListParams>,
) -> Result<Html<String>, Failure> {
    let marks = list(&c, &who, &p).await?;
    // After a mark (the POST redirects here): the entry it appended.
    let done = match p.marked {
        Some(leaf) => format!(
            "<p id=\"marked\" role=\"status\" class=\"verified\">Marked: review entry {leaf} appended to the log.</p>"
        ),
        None => String::new(),
    };
    let body = format!("{done}<h2>Mark reviewed</h2>{}<h2>Marks (newest first)</h2>{marks}", mark_form("", None));
    Ok(Html(frame(&who, "/review", "Review", &body)))
}

/// `POST /review`: one mark, then (see other) the list, so reloading the page
/// does not mark again.
pub async fn mark(
    State(c): State<Console>,
    Extension(who): Extension<Principal>,
    Form(f): Form<MarkForm>,
) -> Result<Redirect, Failure> {
    let req = request(&f)?;
    let mut r = ReviewClient::new(c.backend.channel(&who).await?);
    let done = r.review_mark(req).await?.into_inner();
    Ok(Redirect::to(&format!("/review?marked={}", done.leaf_index)))
}
