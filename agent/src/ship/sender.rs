//! The sender: streams spooled batches to the collector in spool order and
//! removes each from the spool once its ack arrives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use wiretrail_proto::v1::Batch;
use wiretrail_proto::v1::ingest_client::IngestClient;

use super::tls::{Refresh, ReloadingClientTls};
use super::{ShipConfig, ShipError, ShipStats};

/// Status metadata naming the seq the collector expects (see the collector's `EXPECTED_SEQ`).
const EXPECTED_SEQ: &str = "x-wiretrail-expected-seq";
/// A record below this size is never what made a batch too large.
const MIN_SHRINK_BYTES: usize = 1 << 20;
use crate::spool::{BatchKey, Spool, SpoolError};

/// Why a session with the collector ended early (all are retried).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// Connecting failed; the message names the cause (unknown CA, name mismatch...).
    #[error("connecting: {why}")]
    Connect {
        /// The cause in words.
        why: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The collector ended the stream with an error.
    #[error("collector said {}: {}", .0.code(), .0.message())]
    Status(#[source] tonic::Status),
    /// The collector closed the stream.
    #[error("collector closed the stream")]
    Closed,
    /// No ack within the ack timeout.
    #[error("no ack for {0:?}")]
    AckTimeout(Duration),
    /// An ack that does not match the oldest batch in flight.
    #[error("unexpected ack: {0}")]
    BadAck(String),
    /// Reading or removing a spooled batch failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Settings or TLS files are unusable.
    #[error(transparent)]
    Setup(#[from] ShipError),
}

/// How a session ended without error.
enum Outcome {
    /// Shutting down: drained, or the drain time is over.
    Done,
    /// Reconnect now (new TLS files are in force).
    Reconnect,
}

/// Everything a session needs.
struct Ctx {
    /// Settings.
    cfg: ShipConfig,
    /// The spool.
    spool: Arc<Spool>,
    /// Signalled by the batcher after each append.
    notify: Arc<Notify>,
    /// Counters.
    stats: Arc<ShipStats>,
    /// Cancelled when the agent stops.
    shutdown: CancellationToken,
    /// Cancelled when the batcher has spooled its last batch.
    batcher_done: CancellationToken,
    /// Set at shutdown: when to stop waiting for acks.
    drain_deadline: Option<Instant>,
    /// The client TLS configuration in force (with TLS).
    tls: Option<ReloadingClientTls>,
}

/// Runs until shutdown (and drain). Errors are retried with capped
/// exponential backoff, reset after each ack.
pub async fn run(
    cfg: ShipConfig,
    spool: Arc<Spool>,
    notify: Arc<Notify>,
    stats: Arc<ShipStats>,
    shutdown: CancellationToken,
    batcher_done: CancellationToken,
) -> Result<(), ShipError> {
    let mut backoff = cfg.backoff_initial;
    let tls = cfg.tls.clone().map(ReloadingClientTls::new);
    let mut ctx = Ctx { cfg, spool, notify, stats, shutdown, batcher_done, drain_deadline: None, tls };
    loop {
        let mut progressed = false;
        match session(&mut ctx, &mut progressed).await {
            Ok(Outcome::Done) => break,
            Ok(Outcome::Reconnect) => continue,
            Err(e) => {
                ShipStats::add(&ctx.stats.send_errors, 1);
                if progressed {
                    backoff = ctx.cfg.backoff_initial;
                }
                match &e {
                    SessionError::Status(s) if s.code() == tonic::Code::FailedPrecondition => {
                        tracing::error!(error = %e, retry_in = ?backoff, "collector refused a batch sequence")
                    }
                    SessionError::Spool(_) | SessionError::Setup(_) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "shipping failed")
                    }
                    _ => tracing::warn!(error = %e, retry_in = ?backoff, "shipping interrupted"),
                }
            }
        }
        let wake = Instant::now() + backoff;
        backoff = (backoff * 2).min(ctx.cfg.backoff_max);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = ctx.shutdown.cancelled(), if ctx.drain_deadline.is_none() => {
                ctx.drain_deadline = Some(Instant::now() + ctx.cfg.drain_timeout);
            }
            _ = sleep_until(ctx.drain_deadline) => break,
        }
    }
    let left = ctx.spool.len();
    if left > 0 {
        tracing::warn!(
            batches = left,
            bytes = ctx.spool.used_bytes(),
            "shipper stopped with unacknowledged batches; they stay spooled for the next start"
        );
    } else {
        tracing::info!("shipper stopped; spool empty");
    }
    Ok(())
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f).await.expect("spool task panicked")
}

fn drained(ctx: &Ctx) -> bool {
    ctx.drain_deadline.is_some() && ctx.batcher_done.is_cancelled() && ctx.spool.is_empty()
}

/// Re-reads the TLS files if they changed and counts what happened; returns
/// whether new files were put in force.
fn refresh_tls(ctx: &mut Ctx) -> Result<bool, ShipError> {
    let Some(tls) = ctx.tls.as_mut() else { return Ok(false) };
    Ok(match tls.refresh()? {
        Refresh::Reloaded => {
            ShipStats::add(&ctx.stats.tls_reloads, 1);
            true
        }
        Refresh::Rejected => {
            ShipStats::add(&ctx.stats.tls_rejected, 1);
            false
        }
        Refresh::Loaded | Refresh::Unchanged => false,
    })
}

/// Connects with the TLS configuration in force (re-read first if its files changed).
async fn connect(ctx: &mut Ctx) -> Result<tonic::transport::Channel, SessionError> {
    refresh_tls(ctx)?;
    let cfg = &ctx.cfg;
    let endpoint = &cfg.endpoint;
    let bad = |source| ShipError::Endpoint { endpoint: endpoint.clone(), source };
    let mut ep = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .map_err(bad)?
        .connect_timeout(cfg.connect_timeout)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(t) = ctx.tls.as_ref().and_then(ReloadingClientTls::config) {
        ep = ep.tls_config(t).map_err(bad)?;
    }
    ep.connect().await.map_err(|source| SessionError::Connect {
        why: super::tls::explain(&source, ctx.tls.as_ref().map(ReloadingClientTls::files)),
        source,
    })
}

/// One connection: send batches in spool order, remove them on ack.
async fn session(ctx: &mut Ctx, progressed: &mut bool) -> Result<Outcome, SessionError> {
    if drained(ctx) {
        return Ok(Outcome::Done);
    }
    let shutdown = ctx.shutdown.clone();
    let (drain_deadline, drain_timeout) = (ctx.drain_deadline, ctx.cfg.drain_timeout);
    let channel = tokio::select! {
        c = connect(ctx) => c?,
        _ = shutdown.cancelled(), if drain_deadline.is_none() => {
            ctx.drain_deadline = Some(Instant::now() + drain_timeout);
            return Err(SessionError::Closed);
        }
        _ = sleep_until(drain_deadline) => return Ok(Outcome::Done),
    };
    // Records of one batch repeat identities, addresses and headers: zstd
    // takes the wire to a fraction of the encoded size.
    let mut client = IngestClient::new(channel).send_compressed(tonic::codec::CompressionEncoding::Zstd);
    let (tx, rx) = mpsc::channel::<Batch>(ctx.cfg.window);
    let mut acks = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(SessionError::Status)?
        .into_inner();
    ShipStats::add(&ctx.stats.connections, 1);
    tracing::debug!(endpoint = %ctx.cfg.endpoint, "ingest stream open");
    let mut in_flight: VecDeque<(BatchKey, u64)> = VecDeque::new();
    let mut cursor: Option<BatchKey> = None;
    let mut last_progress = Instant::now();
    let mut tls_tick = tokio::time::interval(ctx.cfg.tls_check_interval);
    tls_tick.tick().await;
    let mut done_seen = ctx.batcher_done.is_cancelled();
    loop {
        while in_flight.len() < ctx.cfg.window {
            let Some(k) = ctx.spool.next_after(cursor.as_ref()) else {
                break;
            };
            let (spool, key) = (ctx.spool.clone(), k.clone());
            let batch = blocking(move || spool.read(&key)).await?;
            let seq = batch.seq;
            if in_flight.is_empty() {
                last_progress = Instant::now();
            }
            if tx.send(batch).await.is_err() {
                break;
            }
            in_flight.push_back((k.clone(), seq));
            cursor = Some(k);
        }
        if in_flight.is_empty() && drained(ctx) {
            return Ok(Outcome::Done);
        }
        let ack_deadline = (!in_flight.is_empty()).then(|| last_progress + ctx.cfg.ack_timeout);
        tokio::select! {
            a = acks.next() => {
                let ack = match a {
                    Some(Ok(a)) => a,
                    Some(Err(s)) => {
                        if let Some((key, seq)) = in_flight.front() {
                            refused(ctx, key, *seq, &s).await?;
                        }
                        return Err(SessionError::Status(s));
                    }
                    None => return Err(SessionError::Closed),
                };
                let Some((key, seq)) = in_flight.pop_front() else {
                    return Err(SessionError::BadAck(format!("ack for seq {} with nothing in flight", ack.seq)));
                };
                if ack.seq != seq {
                    return Err(SessionError::BadAck(format!("ack for seq {} but oldest batch in flight is {seq}", ack.seq)));
                }
                let spool = ctx.spool.clone();
                blocking(move || spool.remove(&key)).await?;
                ShipStats::add(&ctx.stats.batches_acked, 1);
                if ack.duplicate {
                    ShipStats::add(&ctx.stats.batches_duplicate, 1);
                }
                if ack.conflict {
                    ShipStats::add(&ctx.stats.batches_conflict, 1);
                    tracing::error!(seq, first_leaf = ack.first_leaf_index,
                        "the collector already holds other content under this batch's seq; it kept this one as a conflict");
                }
                last_progress = Instant::now();
                *progressed = true;
            }
            _ = ctx.notify.notified(), if in_flight.len() < ctx.cfg.window => {}
            _ = sleep_until(ack_deadline) => return Err(SessionError::AckTimeout(ctx.cfg.ack_timeout)),
            _ = ctx.shutdown.cancelled(), if ctx.drain_deadline.is_none() => {
                ctx.drain_deadline = Some(Instant::now() + ctx.cfg.drain_timeout);
            }
            _ = ctx.batcher_done.cancelled(), if !done_seen => done_seen = true,
            _ = sleep_until(ctx.drain_deadline) => return Ok(Outcome::Done),
            _ = tls_tick.tick(), if ctx.tls.is_some() => {
                // Unusable new files keep this connection (and the certificates in force).
                if refresh_tls(ctx)? {
                    tracing::info!("reconnecting with the new TLS certificates");
                    return Ok(Outcome::Reconnect);
                }
            }
        }
    }
}

/// The collector refused batch `key` (seq `seq`, the oldest in flight): when
/// it names batches missing from the spool, spool a gap batch standing for
/// them; when the batch is too large, replace its largest record by a gap
/// record. Either way the next session resends from the start of the spool.
async fn refused(ctx: &Ctx, key: &BatchKey, seq: u64, s: &tonic::Status) -> Result<(), SessionError> {
    let expected = s.metadata().get(EXPECTED_SEQ).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match (s.code(), expected) {
        (tonic::Code::FailedPrecondition, Some(from)) if from < seq => {
            let (spool, k) = (ctx.spool.clone(), key.clone());
            let host = ctx.cfg.host.clone();
            let n = blocking(move || {
                let b = spool.read(&k)?;
                let quarantined = (from..seq).filter(|q| spool.quarantined(&k.boot_dir, *q)).count();
                let why = match quarantined {
                    0 => "deleted".to_string(),
                    q if q as u64 == seq - from => "quarantined as corrupt".to_string(),
                    q => format!("{q} quarantined as corrupt, the others deleted"),
                };
                let gap = super::gap::lost_batches(&b.agent_id, &b.boot_id, &host, from, seq - 1, &why);
                spool.replace(&BatchKey { boot_dir: k.boot_dir.clone(), seq: from }, &gap)?;
                Ok(seq - from)
            })
            .await?;
            ShipStats::add(&ctx.stats.batches_lost, n);
            tracing::error!(boot = %key.boot_dir, first_seq = from, last_seq = seq - 1,
                "batches missing from the spool; a gap batch records them and shipping continues");
        }
        (tonic::Code::ResourceExhausted, _) => {
            let (spool, k, why) = (ctx.spool.clone(), key.clone(), s.message().to_string());
            let shrunk = blocking(move || {
                let mut b = spool.read(&k)?;
                let Some((i, len)) =
                    b.records.iter().map(prost::Message::encoded_len).enumerate().max_by_key(|(_, n)| *n)
                else {
                    return Ok(None);
                };
                if len < MIN_SHRINK_BYTES {
                    return Ok(None);
                }
                b.records[i] = super::gap::too_large(&b.records[i], &why);
                spool.replace(&k, &b)?;
                Ok(Some(len))
            })
            .await?;
            match shrunk {
                Some(bytes) => {
                    ShipStats::add(&ctx.stats.records_too_large, 1);
                    tracing::warn!(seq, bytes, reason = %s.message(),
                        "the collector refused a record as too large; it is replaced by a gap record")
                }
                None => tracing::error!(seq, reason = %s.message(), "the collector refused a batch as too large"),
            }
        }
        _ => {}
    }
    Ok(())
}
