//! `wiretrail rotate-signing-key` (admin role) and `wiretrail key-history`.

use wiretrail_proto::v1::keys_client::KeysClient;
use wiretrail_proto::v1::{KeyHistoryRequest, RotateSigningKeyRequest};

use super::{Conn, connect};

/// Arguments of `wiretrail rotate-signing-key`.
#[derive(clap::Args)]
pub(super) struct RotateArgs {
    /// Collector connection (an admin certificate: `--cert-name admin`).
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `wiretrail key-history`.
#[derive(clap::Args)]
pub(super) struct HistoryArgs {
    /// Collector connection (auditor or reviewer).
    #[command(flatten)]
    conn: Conn,
}

/// Rotates the collector's checkpoint signing key and prints the rotation (JSON).
pub(super) async fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let mut k = KeysClient::new(connect(&a.conn).await?);
    let r = k.rotate_signing_key(RotateSigningKeyRequest {}).await?.into_inner();
    let out = serde_json::json!({
        "old_key": r.old_key, "new_key": r.new_key, "entry_index": r.entry_index,
        "old_key_last_size": r.old_key_last_size, "old_key_checkpoint": r.old_key_checkpoint,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!(
        "signing key rotated: checkpoints of more than {} leaves are signed by {}; keep verifying from the first key",
        r.old_key_last_size, r.new_key
    );
    Ok(())
}

/// Prints the first key and each rotation, after checking the chain.
pub(super) async fn history(a: HistoryArgs) -> anyhow::Result<()> {
    let mut k = KeysClient::new(connect(&a.conn).await?);
    let h = k.key_history(KeyHistoryRequest {}).await?.into_inner();
    let (_, links) = wiretrail_log::keychain::ring_of_history(&h)?;
    println!("{}", serde_json::json!({"first_key": h.first_key}));
    for l in &links {
        let r = &l.rotation;
        println!(
            "{}",
            serde_json::json!({"old_key": r.old_key, "new_key": r.new_key, "entry_index": r.entry_index,
                "old_key_last_size": r.old_last_size})
        );
    }
    eprintln!("key chain: {} rotation(s), every one proven from the first key", links.len());
    Ok(())
}
