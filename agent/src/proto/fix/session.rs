//! FIX session tracking: per direction (one sender), the MsgSeqNum the
//! receiver expects next, and the session events a reviewer needs to judge
//! whether the trading conversation is complete:
//!
//! - a **gap**: MsgSeqNum above the expected one (messages the sender never
//!   sent on this connection, or sent on a connection not captured);
//! - **too low**: MsgSeqNum below the expected one without PossDupFlag (a
//!   session error: FIX says the receiver must log out);
//! - a **resend**: PossDupFlag=Y below the expected number (a retransmission,
//!   counted once), and whether it answers the peer's ResendRequest;
//! - **ResendRequest** (BeginSeqNo, EndSeqNo; 0 = up to the latest), remembered
//!   so that the other direction's retransmissions are linked to it;
//! - **SequenceReset** in gap-fill mode (the range it skips) or reset mode
//!   (the new number, no check of its own MsgSeqNum), and Logon with
//!   ResetSeqNumFlag (141=Y), which starts both directions again.
//!
//! Only messages whose BodyLength and CheckSum are right move the state: FIX
//! ignores a garbled message, so does the tracker (its record says so).
//! A capture gap in a direction forgets that direction's expectation: the
//! next message sets a new baseline and is flagged as such.
//!
//! The state also keeps the identity of each direction's sender as it was
//! last stated (SenderCompID, SenderSubID, SenderLocationID, TargetCompID,
//! TargetSubID, BeginString): [`crate::proto::Parser::sender_attributes`].
use serde::Serialize;

use super::{FixMessage, parse_uint};
use crate::proto::{AppAttrs, fields::Text};

/// Longest identity value kept for `sender_attributes` (CompIDs are short).
const MAX_ID_BYTES: usize = 128;

/// A range of sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SeqRange {
    /// First number.
    pub begin: u64,
    /// Last number; 0 means "up to the latest" (ResendRequest EndSeqNo=0).
    pub end: u64,
}

/// MsgSeqNum higher than expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SeqGap {
    /// The number the receiver expected.
    pub expected: u64,
    /// The number received.
    pub received: u64,
    /// Messages missing in between.
    pub missing: u64,
}

/// A SequenceReset (35=4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SeqReset {
    /// NewSeqNo (36).
    pub new_seq_no: u64,
    /// GapFillFlag (123) is Y: the numbers from MsgSeqNum to NewSeqNo-1 are skipped.
    pub gap_fill: bool,
}

/// What the session tracker concluded about one message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FixSession {
    /// The MsgSeqNum the receiver expected (`None` before a baseline).
    pub expected_seq_num: Option<u64>,
    /// First message of this sender seen on the connection (or after a
    /// capture gap): it sets the baseline, nothing is checked against it.
    pub baseline: bool,
    /// Not counted: the message is garbled (BodyLength/CheckSum), has no
    /// MsgSeqNum, or was cut short.
    pub ignored: bool,
    /// MsgSeqNum above the expected one.
    pub gap: Option<SeqGap>,
    /// MsgSeqNum below the expected one without PossDupFlag.
    pub seq_too_low: bool,
    /// A retransmission (PossDupFlag=Y at or below the expected number).
    pub resent: bool,
    /// The message falls in a range the other side asked for with ResendRequest.
    pub answers_resend_request: bool,
    /// This message is a ResendRequest for this range of the other side's messages.
    pub resend_request: Option<SeqRange>,
    /// This message is a SequenceReset.
    pub sequence_reset: Option<SeqReset>,
    /// Logon with ResetSeqNumFlag=Y: both sides start again at 1.
    pub reset_seq_num: bool,
}

/// The sender of one direction, as last stated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SenderIds {
    begin_string: Option<String>,
    sender_comp_id: Option<String>,
    sender_sub_id: Option<String>,
    sender_location_id: Option<String>,
    target_comp_id: Option<String>,
    target_sub_id: Option<String>,
}

/// Per-direction session state.
#[derive(Clone, Debug, Default)]
struct DirState {
    /// Next MsgSeqNum expected from this sender.
    expected: Option<u64>,
    /// A ResendRequest the other side sent for this sender's messages.
    requested: Option<SeqRange>,
    /// This sender's Logon with ResetSeqNumFlag awaits the other side's.
    reset_sent: bool,
    ids: SenderIds,
    /// `ids` as identity attributes, rebuilt when they change (every record
    /// of the connection shares it).
    attrs: AppAttrs,
}

/// Session state of one connection (index: direction).
#[derive(Clone, Debug, Default)]
pub struct SessionTracker {
    dirs: [DirState; 2],
}

fn field(m: &FixMessage, tag: u32) -> Option<&Text> {
    m.fields.iter().find(|f| f.tag == tag).map(|f| &f.value)
}

fn flag(m: &FixMessage, tag: u32) -> bool {
    field(m, tag).is_some_and(|v| &v.0[..] == b"Y")
}

fn num(m: &FixMessage, tag: u32) -> Option<u64> {
    field(m, tag).and_then(|v| parse_uint(&v.0))
}

/// Store `v` in `slot` when it is a plausible id and differs (no allocation
/// when it is the same as before, the common case).
/// Sets `slot` to `v` (when usable); true when that changed it.
fn set(slot: &mut Option<String>, v: Option<&Text>) -> bool {
    let Some(v) = v.filter(|v| !v.0.is_empty() && v.0.len() <= MAX_ID_BYTES) else { return false };
    if slot.as_deref().map(str::as_bytes) == Some(&v.0[..]) {
        return false;
    }
    *slot = Some(v.to_string_lossy());
    true
}

impl SessionTracker {
    /// Track message `m` sent in direction index `i`; returns the flags for
    /// its record. `counted` is false for garbled or incomplete messages.
    pub fn observe(&mut self, i: usize, m: &FixMessage, counted: bool) -> FixSession {
        let mut s = FixSession { expected_seq_num: self.dirs[i].expected, ..FixSession::default() };
        let Some(seq) = m.msg_seq_num.filter(|_| counted) else {
            s.ignored = true;
            return s;
        };
        self.learn_ids(i, m);
        let msg_type = m.msg_type.as_ref().map(|t| &t.0[..]);
        let poss_dup = m.poss_dup;
        if msg_type == Some(b"A") && flag(m, 141) {
            // ResetSeqNumFlag: this side starts at this message, and the
            // other at 1 unless this Logon answers the other side's reset.
            s.reset_seq_num = true;
            self.dirs[i].expected = Some(seq.saturating_add(1));
            if self.dirs[1 - i].reset_sent {
                self.dirs[1 - i].reset_sent = false;
            } else {
                self.dirs[1 - i].expected = Some(1);
                self.dirs[i].reset_sent = true;
            }
            self.dirs[i].requested = None;
            self.dirs[1 - i].requested = None;
            return s;
        }
        if msg_type == Some(b"4") {
            let gap_fill = flag(m, 123);
            let new_seq_no = num(m, 36).unwrap_or(0);
            s.sequence_reset = Some(SeqReset { new_seq_no, gap_fill });
            s.answers_resend_request = self.in_requested(i, seq) && (gap_fill || poss_dup);
            if !gap_fill {
                // Reset mode: MsgSeqNum is ignored, NewSeqNo is next.
                if self.dirs[i].expected.is_none() {
                    s.baseline = true;
                }
                self.dirs[i].expected = Some(new_seq_no);
                self.close_request(i, new_seq_no);
                return s;
            }
            self.check(i, seq, poss_dup, &mut s);
            if new_seq_no > seq && self.dirs[i].expected.is_some_and(|e| new_seq_no > e) {
                self.dirs[i].expected = Some(new_seq_no);
            }
            self.close_request(i, new_seq_no);
            return s;
        }
        if msg_type == Some(b"2") {
            let range = SeqRange { begin: num(m, 7).unwrap_or(0), end: num(m, 16).unwrap_or(0) };
            s.resend_request = Some(range);
            // It asks the other direction's sender to send again.
            self.dirs[1 - i].requested = Some(range);
        }
        s.answers_resend_request = poss_dup && self.in_requested(i, seq);
        self.check(i, seq, poss_dup, &mut s);
        s
    }

    /// Compare `seq` with the expectation and advance it.
    fn check(&mut self, i: usize, seq: u64, poss_dup: bool, s: &mut FixSession) {
        let d = &mut self.dirs[i];
        match d.expected {
            None => {
                s.baseline = true;
                d.expected = Some(seq.saturating_add(1));
            }
            Some(e) if seq == e => d.expected = Some(seq.saturating_add(1)),
            Some(e) if seq > e => {
                s.gap = Some(SeqGap { expected: e, received: seq, missing: seq - e });
                d.expected = Some(seq.saturating_add(1));
            }
            Some(_) => {
                if poss_dup {
                    s.resent = true;
                } else {
                    s.seq_too_low = true;
                }
            }
        }
        if s.resent && s.answers_resend_request {
            let next = seq.saturating_add(1);
            self.close_request(i, next);
        }
    }

    fn in_requested(&self, i: usize, seq: u64) -> bool {
        self.dirs[i].requested.is_some_and(|r| seq >= r.begin && (r.end == 0 || seq <= r.end))
    }

    /// The resend range is answered up to `next - 1`.
    fn close_request(&mut self, i: usize, next: u64) {
        if let Some(r) = self.dirs[i].requested
            && r.end != 0
            && next > r.end
        {
            self.dirs[i].requested = None;
        }
    }

    fn learn_ids(&mut self, i: usize, m: &FixMessage) {
        let ids = &mut self.dirs[i].ids;
        let mut changed = set(&mut ids.begin_string, Some(&m.begin_string));
        changed |= set(&mut ids.sender_comp_id, m.sender_comp_id.as_ref());
        changed |= set(&mut ids.target_comp_id, m.target_comp_id.as_ref());
        // Optional header fields come right after the standard ones.
        for f in m.fields.iter().take(32) {
            changed |= match f.tag {
                50 => set(&mut ids.sender_sub_id, Some(&f.value)),
                142 => set(&mut ids.sender_location_id, Some(&f.value)),
                57 => set(&mut ids.target_sub_id, Some(&f.value)),
                _ => false,
            };
        }
        if changed {
            let ids = &self.dirs[i].ids;
            self.dirs[i].attrs = [
                ("fix.sender_comp_id", &ids.sender_comp_id),
                ("fix.sender_sub_id", &ids.sender_sub_id),
                ("fix.sender_location_id", &ids.sender_location_id),
                ("fix.target_comp_id", &ids.target_comp_id),
                ("fix.target_sub_id", &ids.target_sub_id),
                ("fix.begin_string", &ids.begin_string),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
            .collect();
        }
    }

    /// Bytes of direction `i` were lost: its expectation and pending resend
    /// range no longer hold.
    pub fn gap(&mut self, i: usize) {
        self.dirs[i].expected = None;
        self.dirs[i].requested = None;
    }

    /// The identity attributes of the sender of direction `i`.
    pub fn sender_attributes(&self, i: usize) -> AppAttrs {
        self.dirs[i].attrs.clone()
    }
}
