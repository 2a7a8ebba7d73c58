//! `wiretrail hold` (legal holds) and `wiretrail retention` (early deletion),
//! both admin role; and the retention flags of `wiretrail serve`.

use std::path::PathBuf;
use std::time::Duration;

use wiretrail_proto::v1::retention_client::RetentionClient;
use wiretrail_proto::v1::{HoldFilter, HoldLiftRequest, HoldListRequest, HoldPlaceRequest, RetentionDeleteRequest};

use super::{Conn, connect};

/// Retention flags of `wiretrail serve`.
#[derive(clap::Args, Debug)]
pub(super) struct RetentionServeArgs {
    /// Retention classes (YAML, see docs/retention.md); re-read at each pass. Without it:
    /// communications records 3 years, the collector's own entries 6 years.
    #[arg(long, env = "WIRETRAIL_RETENTION")]
    retention: Option<PathBuf>,
    /// Seconds between retention passes (expired, unheld segments are deleted); 0 = no passes.
    #[arg(long, default_value_t = 3600)]
    retention_interval_secs: u64,
    /// Tests only: the retention clock runs this many seconds ahead of the system clock.
    #[arg(long, default_value_t = 0, hide = true)]
    test_clock_offset_secs: i64,
}

impl RetentionServeArgs {
    /// Sets the retention part of `cfg`.
    pub(super) fn apply(self, cfg: &mut crate::ServeConfig) {
        cfg.retention = crate::retention::RetentionConfig {
            file: self.retention,
            interval: (self.retention_interval_secs > 0).then(|| Duration::from_secs(self.retention_interval_secs)),
            clock_offset_ns: self.test_clock_offset_secs.saturating_mul(1_000_000_000),
        };
    }
}

/// `wiretrail hold ...`.
#[derive(clap::Args)]
pub(super) struct HoldArgs {
    #[command(subcommand)]
    cmd: HoldCmd,
}

#[derive(clap::Subcommand)]
enum HoldCmd {
    /// Place a legal hold: matching records are not deleted while it stands (recorded in the log).
    Place {
        #[command(flatten)]
        conn: Conn,
        /// Case id (one hold per case).
        #[arg(long)]
        case: String,
        /// Glob on a record's key=value identity labels (e.g. "team=trading*").
        #[arg(long, default_value = "")]
        identity: String,
        /// Glob on the application protocol.
        #[arg(long, default_value = "")]
        protocol: String,
        /// Glob on the agent id.
        #[arg(long, default_value = "")]
        agent: String,
        /// Records received in this window (default: all).
        #[command(flatten)]
        window: super::window::WindowArgs,
    },
    /// Lift the hold of a case (recorded in the log).
    Lift {
        #[command(flatten)]
        conn: Conn,
        /// Case id.
        #[arg(long)]
        case: String,
    },
    /// List the holds in force (one JSON object per line).
    List {
        #[command(flatten)]
        conn: Conn,
    },
}

/// `wiretrail retention ...`.
#[derive(clap::Args)]
pub(super) struct RetentionArgs {
    #[command(subcommand)]
    cmd: RetentionCmd,
}

#[derive(clap::Subcommand)]
enum RetentionCmd {
    /// Delete the closed segments holding a leaf range now (whole segments, all
    /// or none). Refused (and the refusal recorded in the log) unless every
    /// record in them is expired and none is held.
    Delete {
        #[command(flatten)]
        conn: Conn,
        /// First leaf of the range.
        #[arg(long)]
        leaf: u64,
        /// Last leaf of the range (inclusive; default: --leaf).
        #[arg(long)]
        to: Option<u64>,
        /// The log the leaves are numbered in (the collector's origin);
        /// required in clustered mode, where leaf numbers are per collector.
        #[arg(long, default_value = "")]
        origin: String,
    },
}

fn hold_json(h: &wiretrail_proto::v1::Hold) -> serde_json::Value {
    let f = h.filter.clone().unwrap_or_default();
    serde_json::json!({
        "case": h.case_id, "identity": f.identity, "protocol": f.protocol, "agent": f.agent,
        "from_ns": f.from_ns, "to_ns": f.to_ns, "placed_by": h.placed_by, "placed_ns": h.placed_ns,
        "entry_leaf": h.entry_leaf, "origin": h.origin,
    })
}

/// Runs `wiretrail hold`.
pub(super) async fn run_hold(a: HoldArgs) -> anyhow::Result<()> {
    match a.cmd {
        HoldCmd::Place { conn, case, identity, protocol, agent, window } => {
            let w = window.window()?;
            let (from_ns, to_ns) = (w.from_ns, w.to_ns);
            let mut c = RetentionClient::new(connect(&conn).await?);
            let filter = HoldFilter { identity, protocol, agent, from_ns, to_ns };
            let r = c.hold_place(HoldPlaceRequest { case_id: case, filter: Some(filter) }).await?.into_inner();
            println!("{}", hold_json(&r.hold.unwrap_or_default()));
        }
        HoldCmd::Lift { conn, case } => {
            let mut c = RetentionClient::new(connect(&conn).await?);
            let r = c.hold_lift(HoldLiftRequest { case_id: case }).await?.into_inner();
            println!("{}", hold_json(&r.hold.unwrap_or_default()));
        }
        HoldCmd::List { conn } => {
            let mut c = RetentionClient::new(connect(&conn).await?);
            for h in c.hold_list(HoldListRequest {}).await?.into_inner().holds {
                println!("{}", hold_json(&h));
            }
        }
    }
    Ok(())
}

/// Runs `wiretrail retention`.
pub(super) async fn run_retention(a: RetentionArgs) -> anyhow::Result<()> {
    match a.cmd {
        RetentionCmd::Delete { conn, leaf, to, origin } => {
            let mut c = RetentionClient::new(connect(&conn).await?);
            let req = RetentionDeleteRequest { first_leaf: leaf, last_leaf: to.unwrap_or(leaf), origin };
            for d in c.retention_delete(req).await?.into_inner().deleted {
                println!(
                    "{}",
                    serde_json::json!({"segment": d.segment, "first_leaf": d.first_leaf, "end_leaf": d.end_leaf,
                        "entry_leaf": d.entry_leaf})
                );
            }
        }
    }
    Ok(())
}
