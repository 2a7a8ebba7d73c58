//! The file as written: the serde view of the YAML schema (see docs/policy.md).
//! Fields whose shape varies (peers, ports) stay YAML values here and are
//! interpreted by `build`, which knows their positions.
use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;

use serde::Deserialize;

use super::{Mode, Protocol};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub version: serde_yaml::Value,
    #[serde(default)]
    pub zones: Vec<RawZone>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub members: Vec<RawMember>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    pub cgroup: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub name: Option<String>,
    pub from: serde_yaml::Value,
    pub to: serde_yaml::Value,
    #[serde(default)]
    pub ports: Vec<serde_yaml::Value>,
    #[serde(default)]
    pub protocol: Protocol,
}
