//! Policy errors. Every error names the position of the offending YAML node.
use std::string::String;

/// A position in the policy file (both 1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl core::fmt::Display for Pos {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a policy file was rejected. `Display` is `line L, column C: message`;
/// the caller prefixes the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not YAML, a wrong type, an unknown or missing field (from the YAML parser).
    #[error("{at}: {msg}")]
    Yaml { at: Pos, msg: String },
    #[error("{at}: unsupported policy version {found} (expected 1)")]
    Version { at: Pos, found: String },
    #[error("{at}: invalid zone name {name:?} (allowed: letters, digits, '_', '.', '-')")]
    ZoneName { at: Pos, name: String },
    #[error("{at}: duplicate zone name {name:?} (first defined on line {first_line})")]
    DuplicateZone { at: Pos, name: String, first_line: u32 },
    #[error("{at}: invalid rule name {name:?} (allowed: letters, digits, '_', '.', '-')")]
    RuleName { at: Pos, name: String },
    #[error("{at}: duplicate rule name {name:?} (first used on line {first_line})")]
    DuplicateRule { at: Pos, name: String, first_line: u32 },
    #[error("{at}: zone {zone:?} has no members")]
    NoMembers { at: Pos, zone: String },
    #[error("{at}: {msg}")]
    Member { at: Pos, msg: String },
    #[error("{at}: {what} is already a member of zone {other:?} (line {other_line})")]
    ClaimedTwice { at: Pos, what: String, other: String, other_line: u32 },
    #[error("{at}: invalid cgroup glob {glob:?}: {msg}")]
    Glob { at: Pos, glob: String, msg: String },
    #[error("{at}: invalid CIDR {text:?}: {msg}")]
    Cidr { at: Pos, text: String, msg: String },
    #[error("{at}: CIDR {text:?} has host bits set: did you mean {suggestion}?")]
    HostBits { at: Pos, text: String, suggestion: String },
    #[error("{at}: address range {cidr} is already owned by zone {other:?}")]
    DuplicateAddress { at: Pos, cidr: String, other: String },
    #[error("{at}: unknown zone {name:?}")]
    UnknownZone { at: Pos, name: String },
    #[error("{at}: {msg}")]
    Peer { at: Pos, msg: String },
    #[error("{at}: a rule needs a zone on at least one side (cidr to cidr is not enforceable)")]
    CidrToCidr { at: Pos },
    #[error("{at}: {msg}")]
    Port { at: Pos, msg: String },
    #[error("{at}: rule {rule:?} expands to {keys} map keys (at most {max})")]
    TooManyKeys { at: Pos, rule: String, keys: u64, max: u64 },
}

impl PolicyError {
    /// Where the error is.
    pub fn pos(&self) -> Pos {
        use PolicyError::*;
        match self {
            Yaml { at, .. }
            | Version { at, .. }
            | ZoneName { at, .. }
            | DuplicateZone { at, .. }
            | RuleName { at, .. }
            | DuplicateRule { at, .. }
            | NoMembers { at, .. }
            | Member { at, .. }
            | ClaimedTwice { at, .. }
            | Glob { at, .. }
            | Cidr { at, .. }
            | HostBits { at, .. }
            | DuplicateAddress { at, .. }
            | UnknownZone { at, .. }
            | Peer { at, .. }
            | CidrToCidr { at }
            | Port { at, .. }
            | TooManyKeys { at, .. } => *at,
        }
    }

    pub fn line(&self) -> u32 {
        self.pos().line
    }

    pub fn column(&self) -> u32 {
        self.pos().column
    }

    /// A serde_yaml error, with its position taken out of the message.
    pub(crate) fn from_yaml(e: &serde_yaml::Error) -> Self {
        use std::string::ToString;
        let loc = e.location();
        let at =
            loc.map(|l| Pos { line: l.line() as u32, column: l.column() as u32 }).unwrap_or(Pos { line: 1, column: 1 });
        let mut msg = e.to_string();
        if let Some(i) = msg.rfind(" at line ") {
            msg.truncate(i);
        }
        PolicyError::Yaml { at, msg }
    }
}
