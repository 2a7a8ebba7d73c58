//! Who may call what: every RPC's allowed roles ([`allowed`]) and the one
//! check every service method makes first ([`Authz::check`]).
//!
//! A client's roles come from its certificate identity: each URI SAN of the
//! form `spiffe://<trust domain>/role/<role>[/<name>...]` gives one role (a
//! certificate may carry several). A roles file entry (`roles:`, see
//! [`crate::roles`]) matching the identity replaces them. A collector serving
//! plaintext (tests only, `--insecure-plaintext`) has no identities: every
//! role is granted and recorded as `plaintext:<role>`.

use std::sync::Arc;

use tonic::Request;

use crate::error::Error;
use crate::roles::Roles;
use wiretrail_log::text::escape;

/// What a certificate may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ships batches (Ingest only).
    Agent,
    /// Searches, views and exports records.
    Reviewer,
    /// Proofs, checkpoints, exports of the access log, the access log.
    Auditor,
    /// Registry, retention, holds (inventory and alerts today).
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Agent, Role::Reviewer, Role::Auditor, Role::Admin];

    /// Its name (as in certificates and roles files).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Every RPC the collector serves (Search split by what it reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Ingest.Ingest`.
    Ingest,
    /// `Query.Search` of records and collector entries other than access entries.
    Search,
    /// `Query.Search` with `entry_kind: access` (exporting the access log).
    SearchAccessEntries,
    /// `Query.View`.
    View,
    /// `Query.IssueCheckpoint`.
    IssueCheckpoint,
    /// `Query.LatestCheckpoint`.
    LatestCheckpoint,
    /// `Query.InclusionProof`.
    InclusionProof,
    /// `Query.ConsistencyProof`.
    ConsistencyProof,
    /// `Query.Inventory`.
    Inventory,
    /// `Query.Alerts`.
    Alerts,
    /// `Query.AccessLog`.
    AccessLog,
    /// `Review.ReviewMark`.
    ReviewMark,
    /// `Review.ReviewList`.
    ReviewList,
    /// `Review.SealExport`.
    SealExport,
    /// `Keys.RotateSigningKey`.
    RotateSigningKey,
    /// `Keys.KeyHistory`.
    KeyHistory,
    /// `Retention.HoldPlace`, `HoldLift`, `HoldList`.
    Hold,
    /// `Retention.RetentionDelete`.
    RetentionDelete,
}

impl Rpc {
    /// Every RPC.
    pub const ALL: [Rpc; 18] = [
        Rpc::Ingest,
        Rpc::Search,
        Rpc::SearchAccessEntries,
        Rpc::View,
        Rpc::IssueCheckpoint,
        Rpc::LatestCheckpoint,
        Rpc::InclusionProof,
        Rpc::ConsistencyProof,
        Rpc::Inventory,
        Rpc::Alerts,
        Rpc::AccessLog,
        Rpc::ReviewMark,
        Rpc::ReviewList,
        Rpc::SealExport,
        Rpc::RotateSigningKey,
        Rpc::KeyHistory,
        Rpc::Hold,
        Rpc::RetentionDelete,
    ];
}

/// The roles allowed to call `rpc`. Proofs and checkpoints reveal no record
/// content; reviewers need them to export.
pub fn allowed(rpc: Rpc) -> &'static [Role] {
    use Role::*;
    match rpc {
        Rpc::Ingest => &[Agent],
        Rpc::Search | Rpc::View => &[Reviewer],
        Rpc::SearchAccessEntries | Rpc::AccessLog => &[Auditor],
        Rpc::IssueCheckpoint
        | Rpc::LatestCheckpoint
        | Rpc::InclusionProof
        | Rpc::ConsistencyProof
        | Rpc::KeyHistory => &[Auditor, Reviewer],
        Rpc::Inventory | Rpc::Alerts => &[Reviewer, Auditor, Admin],
        // Supervisory review is the reviewer's act (an admin runs the
        // collector, it does not supervise); auditors check it was done.
        Rpc::ReviewMark => &[Reviewer],
        Rpc::ReviewList => &[Reviewer, Auditor],
        // Whoever may export (records: reviewers; the access log: auditors).
        Rpc::SealExport => &[Reviewer, Auditor],
        Rpc::RotateSigningKey => &[Admin],
        Rpc::Hold | Rpc::RetentionDelete => &[Admin],
    }
}

/// Roles named by the URI SANs of a certificate identity
/// (`CN=<cn>; SAN=<san>,<san>`): known ones, and unknown role names.
pub fn certificate_roles(identity: &str) -> (Vec<Role>, Vec<String>) {
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let sans = identity.split_once("SAN=").map(|(_, s)| s).unwrap_or("");
    for san in sans.split(',') {
        let Some(rest) = san.trim().strip_prefix("URI:spiffe://") else { continue };
        let mut path = rest.split('/').skip(1);
        if path.next() != Some("role") {
            continue;
        }
        match path.next().filter(|r| !r.is_empty()) {
            Some(name) => match Role::parse(name) {
                Some(r) if !known.contains(&r) => known.push(r),
                Some(_) => {}
                None => unknown.push(name.to_string()),
            },
            None => unknown.push(String::new()),
        }
    }
    (known, unknown)
}

/// Who is calling, and the role that let them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The certificate identity.
    pub identity: String,
    /// The role that allowed the call (`plaintext:<role>` without TLS).
    pub role: String,
}

/// The role check.
#[derive(Debug, Clone)]
pub struct Authz {
    /// The roles file.
    roles: Arc<Roles>,
    /// The collector serves without TLS (tests only): everything is allowed.
    plaintext: bool,
}

impl Authz {
    /// A check using `roles`; `plaintext` when the collector has no TLS.
    pub fn new(roles: Arc<Roles>, plaintext: bool) -> Self {
        Authz { roles, plaintext }
    }

    /// Whether the client of `req` may call `rpc`: its grant, or
    /// PERMISSION_DENIED naming the roles needed and the ones it has.
    pub fn check<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<Grant, Error> {
        self.check_identity(&crate::ingest::peer_identity(req), rpc)
    }

    /// [`Authz::check`] for a known identity.
    pub fn check_identity(&self, identity: &str, rpc: Rpc) -> Result<Grant, Error> {
        let need = allowed(rpc);
        if self.plaintext {
            return Ok(Grant { identity: identity.to_string(), role: format!("plaintext:{}", need[0].as_str()) });
        }
        let (has, unknown) = match self.roles.roles_of(identity) {
            Some(r) => (r, Vec::new()),
            None => certificate_roles(identity),
        };
        if let Some(r) = need.iter().find(|r| has.contains(r)) {
            return Ok(Grant { identity: identity.to_string(), role: r.as_str().to_string() });
        }
        let names = |rs: &[Role]| rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ");
        let held = match (has.is_empty(), unknown.is_empty()) {
            (true, true) => "no role".to_string(),
            (true, false) => format!("no known role (unknown: {})", escape(&unknown.join(", "))),
            _ => format!("role {}", names(&has)),
        };
        tracing::warn!(identity = %escape(identity), rpc = ?rpc, "permission denied");
        Err(Error::PermissionDenied(format!(
            "{rpc:?} needs role {}; certificate {} has {held}",
            names(need),
            escape(identity)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_spiffe_role_paths() {
        let id = "CN=alice; SAN=URI:spiffe://wiretrail/role/reviewer/alice,URI:spiffe://x/role/auditor,DNS:a";
        assert_eq!(certificate_roles(id), (vec![Role::Reviewer, Role::Auditor], vec![]));
        assert_eq!(certificate_roles("CN=a; SAN=URI:spiffe://wiretrail/agent"), (vec![], vec![]));
        let (k, u) = certificate_roles("CN=m; SAN=URI:spiffe://wiretrail/role/superuser/m");
        assert!(k.is_empty() && u == ["superuser"]);
    }

    #[test]
    fn every_rpc_names_a_role_and_refusals_name_it() {
        let a = Authz::new(Arc::new(Roles::default()), false);
        let agent = "CN=agent; SAN=URI:spiffe://wiretrail/role/agent/agent";
        for rpc in Rpc::ALL {
            assert!(!allowed(rpc).is_empty());
            let r = a.check_identity(agent, rpc);
            assert_eq!(r.is_ok(), rpc == Rpc::Ingest, "{rpc:?}");
        }
        let e = a.check_identity(agent, Rpc::Search).unwrap_err().to_string();
        assert!(e.contains("Search needs role reviewer") && e.contains("has role agent"), "{e}");
        let e = a.check_identity("CN=m; SAN=URI:spiffe://w/role/root/m", Rpc::Ingest).unwrap_err().to_string();
        assert!(e.contains("needs role agent") && e.contains("unknown: root"), "{e}");
    }
}
