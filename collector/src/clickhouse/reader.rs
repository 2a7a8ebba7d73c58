//! Reading from ClickHouse alone: search across every log stored there, and
//! verify each log against its signed checkpoints.
//!
//! Verify, per origin: rows are read in leaf order (one per leaf index; two
//! different rows for one index are a finding); each row's leaf hash is
//! recomputed from its bytes and checked against the stored `leaf_hash`
//! and the next row's `prev_hash` (so a changed or reordered row is named
//! by its leaf index); then the Merkle root of the recomputed hashes is
//! checked against every stored checkpoint the rows cover, whose signature
//! is checked with the origin's verifier key. A row rewritten with all its
//! hashes recomputed still fails the root: the finding then names the first
//! checkpoint that fails (the change lies below its size).

use prost::Message;
use serde::Serialize;
use wiretrail_proto::v1::{Filter, StoredLeaf};

use super::schema::{CHECKPOINTS, LEAVES, ORIGINS};
use super::writer::{CheckpointRow, LeafRow, OriginRow};
use super::{ClickHouseConfig, ClickHouseError};
use crate::merkle::{Hash, Verifier, leaf_hash, root_of_leaf_hashes};

/// A read-only ClickHouse handle.
pub struct Reader {
    client: clickhouse::Client,
}

/// One search hit.
pub struct Hit {
    /// The log.
    pub origin: String,
    /// Leaf index in that log.
    pub leaf_index: u64,
    /// The decoded leaf.
    pub leaf: StoredLeaf,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'").replace('?', "??")
}

impl Reader {
    /// Connects (checks the version).
    pub async fn open(cfg: &ClickHouseConfig) -> Result<Reader, ClickHouseError> {
        let c = super::client(cfg).with_database(&cfg.database);
        let v = super::server_version(&c).await?;
        Ok(Reader { client: c.with_validation(v.validation()) })
    }

    /// Records matching `f` across all logs, oldest first (one per (origin, leaf)).
    pub async fn search(&self, f: &Filter) -> Result<Vec<Hit>, ClickHouseError> {
        let mut w = vec!["1".to_string()];
        if f.from_time_ns != 0 {
            w.push(format!("time_ns >= {}", f.from_time_ns));
        }
        if f.to_time_ns != 0 {
            w.push(format!("time_ns < {}", f.to_time_ns));
        }
        for (col, v) in [("agent_id", &f.agent_id), ("host", &f.host), ("protocol", &f.app_protocol)] {
            if !v.is_empty() {
                w.push(format!("{col} = '{}'", esc(v)));
            }
        }
        for id in &f.identity {
            w.push(format!("has(splitByChar('\\n', identity), '{}')", esc(id)));
        }
        if !f.peer_address.is_empty() {
            let port = if f.peer_port != 0 { f.peer_port.to_string() } else { "%".into() };
            w.push(format!("peer LIKE '{}:{port}'", esc(&f.peer_address).replace('%', "\\%")));
        }
        if !f.payload_text.is_empty() {
            w.push(format!("position(leaf, '{}') > 0", esc(&f.payload_text)));
        }
        if !f.entry_kind.is_empty() {
            w.push(format!("kind = 'entry:{}'", esc(&f.entry_kind)));
        } else {
            w.push("kind = 'record'".into());
        }
        let limit = if f.limit == 0 { 1000 } else { f.limit };
        let sql = format!(
            "SELECT ?fields FROM {LEAVES} WHERE {} ORDER BY time_ns, origin, leaf_index LIMIT 1 BY origin, leaf_index LIMIT {limit}",
            w.join(" AND ")
        );
        let rows: Vec<LeafRow> = self.client.query(&sql).fetch_all().await.map_err(ClickHouseError::query("search"))?;
        rows.into_iter()
            .map(|r| {
                let leaf = StoredLeaf::decode(r.leaf.as_slice()).map_err(|e| {
                    ClickHouseError::Store(crate::store::StoreError::Inconsistent(format!(
                        "{} leaf {} does not decode: {e}",
                        r.origin, r.leaf_index
                    )))
                })?;
                Ok(Hit { origin: r.origin, leaf_index: r.leaf_index, leaf })
            })
            .collect()
    }

    /// Verifies every log (origin) stored in ClickHouse.
    pub async fn verify(&self) -> Result<Vec<OriginReport>, ClickHouseError> {
        let origins: Vec<OriginRow> = self
            .client
            .query(&format!("SELECT ?fields FROM {ORIGINS} ORDER BY origin LIMIT 1 BY origin"))
            .fetch_all()
            .await
            .map_err(ClickHouseError::query("reading origins"))?;
        let mut out = Vec::new();
        for o in origins {
            out.push(self.verify_origin(&o).await?);
        }
        Ok(out)
    }

    async fn verify_origin(&self, o: &OriginRow) -> Result<OriginReport, ClickHouseError> {
        let mut rep = OriginReport { origin: o.origin.clone(), verifier_key_id: String::new(), ..Default::default() };
        let v = Verifier::parse(&o.verifier_key)
            .map_err(|source| ClickHouseError::Note { origin: o.origin.clone(), source })?;
        rep.verifier_key_id = v.id_hex();
        let rows: Vec<LeafRow> = self
            .client
            .query(&format!("SELECT DISTINCT ?fields FROM {LEAVES} WHERE origin = ? ORDER BY leaf_index"))
            .bind(&o.origin)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query(format!("reading the leaves of {}", o.origin)))?;
        let mut hashes: Vec<Hash> = Vec::with_capacity(rows.len());
        let mut prev_row: Option<&LeafRow> = None;
        for r in &rows {
            rep.bytes += r.leaf.len() as u64;
            if let Some(p) = prev_row
                && p.leaf_index == r.leaf_index
            {
                rep.fail(r.leaf_index, "two different rows for this leaf index");
                continue;
            }
            let i = hashes.len() as u64;
            if r.leaf_index != i {
                rep.fail(i, "missing from ClickHouse");
                break;
            }
            let h = leaf_hash(&r.leaf);
            if h != r.leaf_hash {
                rep.fail(i, "leaf bytes do not hash to the stored leaf hash (row changed)");
            }
            let expected_prev = hashes.last().copied().unwrap_or([0u8; 32]);
            if r.prev_hash != expected_prev {
                rep.fail(i, "previous-leaf hash does not match the leaf before it (row moved or order changed)");
            }
            hashes.push(h);
            prev_row = Some(r);
        }
        rep.leaves = hashes.len() as u64;
        let cps: Vec<CheckpointRow> = self
            .client
            .query(&format!("SELECT DISTINCT ?fields FROM {CHECKPOINTS} WHERE origin = ? ORDER BY size"))
            .bind(&o.origin)
            .fetch_all()
            .await
            .map_err(ClickHouseError::query(format!("reading the checkpoints of {}", o.origin)))?;
        for c in cps {
            let signed = match v.open(&c.note) {
                Ok(s) => s,
                Err(e) => {
                    rep.fail(
                        c.size,
                        &format!("checkpoint of size {} does not verify with the origin key: {e}", c.size),
                    );
                    continue;
                }
            };
            if signed.checkpoint.size != c.size || signed.checkpoint.root != c.root {
                rep.fail(c.size, &format!("checkpoint row of size {} differs from its signed note", c.size));
                continue;
            }
            if c.size > rep.leaves {
                rep.uncovered_checkpoints += 1;
                continue;
            }
            if root_of_leaf_hashes(&hashes[..c.size as usize]) != signed.checkpoint.root {
                let first_bad = rep.verified_size;
                // A leaf already named explains it; else the range start is the first suspect.
                let named = rep.first_bad_leaf;
                rep.fail(
                    first_bad,
                    &format!(
                        "root of leaves [0, {}) differs from the signed checkpoint: a leaf in [{first_bad}, {}) was changed",
                        c.size, c.size
                    ),
                );
                if named.is_some() {
                    rep.first_bad_leaf = named;
                }
                break;
            }
            rep.verified_size = c.size;
            rep.checkpoints += 1;
        }
        rep.ok = rep.problems.is_empty() && rep.checkpoints > 0;
        Ok(rep)
    }
}

/// What verifying one log from ClickHouse found.
#[derive(Debug, Default, Serialize)]
pub struct OriginReport {
    /// The log.
    pub origin: String,
    /// Key id of the verifier key stored for it.
    pub verifier_key_id: String,
    /// Leaves read (contiguous from 0).
    pub leaves: u64,
    /// Leaf bytes read.
    pub bytes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Largest tree size matching a signed checkpoint.
    pub verified_size: u64,
    /// Checkpoints beyond the leaves stored (not acknowledged leaves, or still arriving).
    pub uncovered_checkpoints: u64,
    /// The first bad leaf, if any.
    pub first_bad_leaf: Option<u64>,
    /// Every finding, "leaf N: what".
    pub problems: Vec<String>,
    /// No problem and at least one checkpoint verified.
    pub ok: bool,
}

impl OriginReport {
    fn fail(&mut self, leaf: u64, what: &str) {
        if self.first_bad_leaf.is_none_or(|f| leaf < f) {
            self.first_bad_leaf = Some(leaf);
        }
        self.problems.push(format!("leaf {leaf}: {what}"));
    }
}
