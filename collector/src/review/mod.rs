//! Supervisory review marks (FINRA 3110.07: reviewer, item, date, action).
//!
//! A reviewer marks records (leaf indexes) or a conversation (one connection
//! of one agent boot, covering all its records) as reviewed, with an action
//! from a fixed set and a comment. The mark is a `review_mark` collector
//! entry appended to the log through the commit thread, so it is covered by
//! the checkpoints and verified like every other leaf; the reviewer is the
//! caller's certificate identity, never a name the client sends.
//!
//! The indexer keeps one `review_marks` row per marked item ([`SCHEMA`],
//! [`index_entry`]) so marks are listed by reviewer, item, action and time
//! without reading the log ([`list`]); `Query.View` attaches the marks
//! covering each record it returns. [`service`] serves `wiretrail.v1.Review`.

pub mod list;
pub mod service;

use rusqlite::{Transaction, params};
use wiretrail_proto::v1::{CollectorEntry, ReviewConversation, ReviewMarkRecord};

use crate::error::Error;

/// Actions a mark may record.
pub const ACTIONS: [&str; 4] = ["no_action", "escalated", "closed", "follow_up"];
/// Most leaves one mark names.
pub const MAX_LEAVES: usize = 10_000;
/// Longest comment accepted (characters).
pub const MAX_COMMENT: usize = 4_000;

/// Index rows: one per marked item (`leaf:<n>` or `conv:<json>`).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS review_marks(leaf INTEGER NOT NULL, t INTEGER NOT NULL, reviewer TEXT NOT NULL,
  action TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS review_marks_item ON review_marks(item, leaf);
CREATE INDEX IF NOT EXISTS review_marks_reviewer ON review_marks(reviewer, leaf);
CREATE INDEX IF NOT EXISTS review_marks_action ON review_marks(action, leaf);
CREATE INDEX IF NOT EXISTS review_marks_t ON review_marks(t);
";

/// Empties the review index (with the rest of the index).
pub const CLEAR: &str = "DELETE FROM review_marks;";

/// Checks an action name.
pub fn check_action(action: &str) -> Result<(), Error> {
    if ACTIONS.contains(&action) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!("unknown review action {action:?}; one of {}", ACTIONS.join(", "))))
}

/// Checks a conversation selector.
pub fn check_conversation(c: &ReviewConversation) -> Result<(), Error> {
    if c.agent_id.is_empty() || c.boot_id.is_empty() || c.conn_id == 0 {
        return Err(Error::InvalidArgument(
            "a conversation needs agent_id, boot_id and a non-zero conn_id (AGENT/BOOT/CONN)".into(),
        ));
    }
    Ok(())
}

/// The index key of a record leaf.
pub fn leaf_item(leaf: u64) -> String {
    format!("leaf:{leaf}")
}

/// The index key of a conversation (unambiguous whatever its ids contain).
pub fn conv_item(c: &ReviewConversation) -> String {
    format!("conv:{}", serde_json::json!([c.agent_id, c.boot_id, c.conn_id]))
}

/// The conversation a stored record belongs to (`None` for collector entries
/// and records without a connection id).
pub fn conversation_of(l: &wiretrail_proto::v1::StoredLeaf) -> Option<ReviewConversation> {
    let r = l.record.as_ref()?;
    (r.conn_id != 0).then(|| ReviewConversation {
        agent_id: l.agent_id.clone(),
        boot_id: l.boot_id.clone(),
        conn_id: r.conn_id,
    })
}

/// The items a stored record is covered by: itself and its conversation.
pub fn items_of(leaf: u64, l: &wiretrail_proto::v1::StoredLeaf) -> Vec<String> {
    let mut v = vec![leaf_item(leaf)];
    v.extend(conversation_of(l).map(|c| conv_item(&c)));
    v
}

/// The detail JSON of a mark entry.
pub fn detail(
    grant: &crate::authz::Grant,
    action: &str,
    comment: &str,
    case_id: &str,
    leaves: &[u64],
    conversation: Option<&ReviewConversation>,
) -> serde_json::Value {
    serde_json::json!({
        "reviewer": grant.identity, "role": grant.role, "action": action, "comment": comment,
        "case_id": case_id, "leaves": leaves,
        "conversation": conversation.map(|c| serde_json::json!({"agent_id": c.agent_id, "boot_id": c.boot_id,
            "conn_id": c.conn_id})),
    })
}

/// The mark stored in entry `e` at `leaf_index` (`None` when `e` is not a
/// well-formed mark).
pub fn record(leaf_index: u64, e: &CollectorEntry) -> Option<ReviewMarkRecord> {
    if e.kind != wiretrail_log::entry::REVIEW_MARK {
        return None;
    }
    let d: serde_json::Value = serde_json::from_str(&e.detail_json).ok()?;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let conversation = d.get("conversation").and_then(|c| c.as_object()).map(|c| ReviewConversation {
        agent_id: c.get("agent_id").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
        boot_id: c.get("boot_id").and_then(|v| v.as_str()).unwrap_or_default().to_string(),
        conn_id: c.get("conn_id").and_then(|v| v.as_u64()).unwrap_or(0),
    });
    Some(ReviewMarkRecord {
        leaf_index,
        time_ns: e.time_ns,
        reviewer: s("reviewer"),
        role: s("role"),
        action: s("action"),
        comment: s("comment"),
        case_id: s("case_id"),
        leaves: d
            .get("leaves")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
            .unwrap_or_default(),
        conversation,
    })
}

/// The index keys a mark covers.
pub fn items(m: &ReviewMarkRecord) -> Vec<String> {
    let mut v: Vec<String> = m.leaves.iter().map(|l| leaf_item(*l)).collect();
    v.extend(m.conversation.as_ref().map(conv_item));
    v
}

/// Indexes the `review_mark` entry `e` at leaf `i` (other kinds are ignored).
pub fn index_entry(tx: &Transaction<'_>, i: u64, e: &CollectorEntry) -> Result<(), rusqlite::Error> {
    let Some(m) = record(i, e) else { return Ok(()) };
    let mut st = tx.prepare_cached("INSERT INTO review_marks(leaf,t,reviewer,action,item) VALUES (?,?,?,?,?)")?;
    for item in items(&m) {
        st.execute(params![i as i64, m.time_ns, m.reviewer, m.action, item])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Grant;

    #[test]
    fn a_mark_entry_round_trips_and_names_its_items() {
        let g = Grant { identity: "CN=r; SAN=URI:spiffe://w/role/reviewer/r".into(), role: "reviewer".into() };
        let conv = ReviewConversation { agent_id: "a\"1".into(), boot_id: "b".into(), conn_id: 7 };
        let d = detail(&g, "escalated", "looks odd", "CASE-1", &[3, 9], Some(&conv));
        let e = wiretrail_log::entry::new(wiretrail_log::entry::REVIEW_MARK, 42, &g.identity, d, vec![]);
        let m = record(12, &e).expect("a mark");
        assert_eq!((m.leaf_index, m.time_ns, m.action.as_str(), m.case_id.as_str()), (12, 42, "escalated", "CASE-1"));
        assert_eq!(m.reviewer, g.identity);
        assert_eq!(items(&m), vec!["leaf:3".to_string(), "leaf:9".into(), r#"conv:["a\"1","b",7]"#.into()]);
        let other = wiretrail_log::entry::new(wiretrail_log::entry::ACCESS, 1, "x", serde_json::json!({}), vec![]);
        assert!(record(1, &other).is_none());
    }

    #[test]
    fn unknown_actions_and_incomplete_conversations_are_refused() {
        for a in ACTIONS {
            check_action(a).unwrap();
        }
        let e = check_action("approve").unwrap_err().to_string();
        assert!(e.contains("unknown review action \"approve\"") && e.contains("follow_up"), "{e}");
        let c = ReviewConversation { agent_id: "a".into(), boot_id: String::new(), conn_id: 1 };
        assert!(check_conversation(&c).is_err());
    }
}
