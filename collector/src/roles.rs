//! The roles file (`wiretrail serve --roles FILE`, schema in `docs/roles.md`):
//! what each client certificate identity may do: the agent ids it may ship
//! for, and its roles (agent, reviewer, auditor, admin; see [`crate::authz`]).
//!
//! ```yaml
//! version: 1
//! identities:
//!   - identity: "CN=node-pool-*; SAN=*"   # glob over the identity string
//!     agent_ids: ["node-a", "node-b"]      # globs too
//!     roles: [agent]                       # replaces the certificate's own roles
//! ```
//!
//! An agent id that some entry names (through an `agent_ids` pattern) may be
//! used only by identities of entries naming it, as many as there are. An
//! agent id no entry names belongs to the first identity that ships for it
//! (its first batch's leaves carry that identity, so the claim is in the log).

use std::path::{Path, PathBuf};

use crate::registry::glob_match;

/// Errors reading the roles file.
#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    /// The file cannot be read.
    #[error("roles file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid roles file.
    #[error("roles file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (with its line when known).
        message: String,
    },
}

/// One entry: an identity pattern and what it may do.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// Glob over the certificate identity (`CN=<cn>; SAN=<san>,...`).
    pub identity: String,
    /// Globs of the agent ids it may ship for.
    #[serde(default)]
    pub agent_ids: Vec<String>,
    /// Roles of the identities it matches (empty: the certificate's own).
    #[serde(default)]
    pub roles: Vec<crate::authz::Role>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    identities: Vec<Binding>,
}

/// The parsed roles file (empty: every agent id is first come, first owned).
#[derive(Debug, Clone, Default)]
pub struct Roles {
    /// Entries in file order.
    pub bindings: Vec<Binding>,
}

/// What the roles file says about an identity shipping for an agent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentIdRule {
    /// No entry names the agent id: first come, first owned.
    Unbound,
    /// Entries name the agent id and one of them names this identity.
    Allowed,
    /// Entries name the agent id, none of them this identity.
    Refused,
}

impl Roles {
    /// Parses the YAML text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Roles, RolesError> {
        let invalid = |message: String| RolesError::Invalid { path: path.to_path_buf(), message };
        // serde_yaml's messages name the line and column (an unknown role too).
        let f: File = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if f.version != 1 {
            return Err(invalid(format!("version {} is not supported (expected 1)", f.version)));
        }
        for (i, b) in f.identities.iter().enumerate() {
            if b.identity.is_empty() {
                return Err(invalid(format!("identities[{i}]: identity is empty")));
            }
            if b.agent_ids.iter().any(String::is_empty) {
                return Err(invalid(format!("identities[{i}]: an agent id pattern is empty")));
            }
        }
        Ok(Roles { bindings: f.identities })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Roles, RolesError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RolesError::Read { path: path.to_path_buf(), source })?;
        Roles::parse(path, &text)
    }

    /// The roles the file gives `identity` (every matching entry's), or
    /// `None` when no matching entry names roles.
    pub fn roles_of(&self, identity: &str) -> Option<Vec<crate::authz::Role>> {
        let mut out: Vec<crate::authz::Role> = Vec::new();
        for b in self.bindings.iter().filter(|b| !b.roles.is_empty() && glob_match(&b.identity, identity)) {
            out.extend(b.roles.iter().copied().filter(|r| !out.contains(r)).collect::<Vec<_>>());
        }
        (!out.is_empty()).then_some(out)
    }

    /// Whether `identity` may ship for `agent_id`.
    pub fn agent_id_rule(&self, identity: &str, agent_id: &str) -> AgentIdRule {
        let mut named = false;
        for b in &self.bindings {
            if b.agent_ids.iter().any(|p| glob_match(p, agent_id)) {
                named = true;
                if glob_match(&b.identity, identity) {
                    return AgentIdRule::Allowed;
                }
            }
        }
        if named { AgentIdRule::Refused } else { AgentIdRule::Unbound }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_ids_admit_only_their_identities() {
        let r = Roles::parse(
            Path::new("roles.yaml"),
            "version: 1\nidentities:\n  - identity: \"CN=a*\"\n    agent_ids: [shared]\n  - identity: \"CN=b; *\"\n    agent_ids: [shared, \"b-*\"]\n",
        )
        .unwrap();
        assert_eq!(r.agent_id_rule("CN=a1; SAN=", "shared"), AgentIdRule::Allowed);
        assert_eq!(r.agent_id_rule("CN=b; SAN=x", "shared"), AgentIdRule::Allowed);
        assert_eq!(r.agent_id_rule("CN=c; SAN=", "shared"), AgentIdRule::Refused);
        assert_eq!(r.agent_id_rule("CN=a1; SAN=", "b-7"), AgentIdRule::Refused);
        assert_eq!(r.agent_id_rule("CN=c; SAN=", "other"), AgentIdRule::Unbound);
        let e = Roles::parse(Path::new("r"), "version: 2\n").unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
        let e = Roles::parse(Path::new("r"), "version: 1\nidentities: [{identity: x, agent_id: [a]}]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn roles_map_identities_and_bad_roles_name_their_line() {
        use crate::authz::Role;
        let r = Roles::parse(
            Path::new("roles.yaml"),
            "version: 1\nidentities:\n  - identity: \"CN=alice; *\"\n    roles: [reviewer, auditor]\n  - identity: \"CN=a*\"\n    roles: [admin]\n  - identity: \"CN=node*\"\n    agent_ids: [n1]\n",
        )
        .unwrap();
        assert_eq!(r.roles_of("CN=alice; SAN="), Some(vec![Role::Reviewer, Role::Auditor, Role::Admin]));
        assert_eq!(r.roles_of("CN=node1; SAN="), None);
        let e = Roles::parse(
            Path::new("roles.yaml"),
            "version: 1\nidentities:\n  - identity: x\n    roles: [reviewer]\n  - identity: y\n    roles: [superuser]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("roles.yaml") && e.contains("superuser") && e.contains("line 6"), "{e}");
    }
}
