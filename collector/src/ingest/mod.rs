//! Agent → collector ingest: validation, leaf encoding, durable acks.

pub mod commit;
pub mod dedup;
mod peer;
pub mod state;

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use wiretrail_proto::v1::{Ack, Batch, StoredLeaf, ingest_server::Ingest};

use crate::error::Error;
use commit::{Job, Work};
pub use peer::peer_identity;

/// Limits applied to each batch.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Most records in one batch.
    pub max_records: usize,
    /// Longest agent id / boot id.
    pub max_id_len: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits { max_records: 20_000, max_id_len: 256 }
    }
}

/// The `wiretrail.v1.Ingest` service.
pub struct IngestService {
    /// Queue to the commit thread.
    jobs: mpsc::Sender<Work>,
    /// Batch limits.
    limits: IngestLimits,
    /// The log (for the index back-pressure check).
    shared: Arc<wiretrail_log::store::Log>,
    /// The indexer's mark and the lag it allows.
    progress: Arc<crate::index::IndexProgress>,
    /// Told of the heartbeats of each acknowledged batch.
    monitor: Option<Arc<crate::alerts::monitor::Monitor>>,
    /// The role check (agents only).
    authz: crate::authz::Authz,
    /// Clustered mode: compute each leaf's ClickHouse columns here.
    row_columns: bool,
}

impl IngestService {
    /// A service feeding `jobs`.
    pub fn new(
        jobs: mpsc::Sender<Work>,
        limits: IngestLimits,
        shared: Arc<wiretrail_log::store::Log>,
        progress: Arc<crate::index::IndexProgress>,
        authz: crate::authz::Authz,
    ) -> Self {
        IngestService { jobs, limits, shared, progress, monitor: None, authz, row_columns: false }
    }

    /// Clustered mode: each leaf's ClickHouse columns are computed from its
    /// record here, on the ingest tasks, for the commit thread's sink.
    pub fn with_row_columns(mut self) -> Self {
        self.row_columns = true;
        self
    }

    /// Reports the heartbeats of acknowledged batches to `monitor`.
    pub fn with_monitor(mut self, monitor: Arc<crate::alerts::monitor::Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }
}

/// Heartbeats of a batch in flight: (agent id, boot id, heartbeat records).
type Beats = Option<(String, String, Vec<wiretrail_proto::v1::Record>)>;

/// Bytes of a leaf besides its record (ids, peer identity, batch fields); a
/// record may be at most `MAX_LEAF_LEN` minus this.
pub const LEAF_OVERHEAD: usize = 4096;

/// Largest encoded record accepted (larger ones are refused for their stream).
pub const MAX_RECORD_BYTES: usize = wiretrail_log::frame::MAX_LEAF_LEN - LEAF_OVERHEAD;

fn validate(b: &Batch, l: &IngestLimits) -> Result<(), Error> {
    if b.agent_id.is_empty() || b.boot_id.is_empty() {
        return Err(Error::InvalidArgument("agent_id and boot_id are required".into()));
    }
    if b.agent_id.len() > l.max_id_len || b.boot_id.len() > l.max_id_len {
        return Err(Error::InvalidArgument(format!("agent_id/boot_id longer than {} bytes", l.max_id_len)));
    }
    if b.agent_id.chars().chain(b.boot_id.chars()).any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "agent_id {:?} / boot_id {:?} contain control characters",
            wiretrail_log::text::escape(&b.agent_id),
            wiretrail_log::text::escape(&b.boot_id)
        )));
    }
    if b.records.is_empty() {
        return Err(Error::InvalidArgument(format!("batch {} has no records", b.seq)));
    }
    if b.records.len() > l.max_records {
        return Err(Error::TooLarge(format!(
            "batch {} has {} records; at most {}",
            b.seq,
            b.records.len(),
            l.max_records
        )));
    }
    if b.covers_through_seq != 0 && b.covers_through_seq <= b.seq {
        return Err(Error::InvalidArgument(format!(
            "batch {}: covers_through_seq {} must be above its seq",
            b.seq, b.covers_through_seq
        )));
    }
    if let Some((i, n)) = b.records.iter().map(Message::encoded_len).enumerate().find(|(_, n)| *n > MAX_RECORD_BYTES) {
        return Err(Error::TooLarge(format!(
            "batch {} record {i} is {n} bytes; a record may be at most {MAX_RECORD_BYTES} bytes",
            b.seq
        )));
    }
    Ok(())
}

/// SHA-256 of a batch's content: its records (each encoded with its map
/// fields emptied, then those maps' entries sorted, all length-prefixed) and
/// `covers_through_seq`. Map order is not stable in protobuf encodings, hence
/// the canonical form; a retry of the same batch always has the same hash.
pub fn content_hash(b: &mut Batch) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"wiretrail-batch-v1\0");
    h.update(b.covers_through_seq.to_le_bytes());
    h.update((b.records.len() as u64).to_le_bytes());
    let mut buf = Vec::new();
    let put = |h: &mut sha2::Sha256, bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for r in &mut b.records {
        let identity = std::mem::take(&mut r.identity);
        let peer = std::mem::take(&mut r.peer_identity);
        buf.clear();
        r.encode(&mut buf).expect("encoding to a Vec");
        put(&mut h, &buf);
        for map in [&identity, &peer] {
            let mut kv: Vec<_> = map.iter().collect();
            kv.sort();
            h.update((kv.len() as u64).to_le_bytes());
            for (k, v) in kv {
                put(&mut h, k.as_bytes());
                put(&mut h, v.as_bytes());
            }
        }
        r.identity = identity;
        r.peer_identity = peer;
    }
    h.finalize().into()
}

/// Turns a batch into its leaves (`StoredLeaf` encodings); `hash` is its [`content_hash`].
pub fn encode_leaves(b: Batch, peer: &str, received_time_ns: i64, hash: &[u8; 32]) -> Vec<Vec<u8>> {
    let Batch { agent_id, boot_id, seq, records, covers_through_seq } = b;
    let n = records.len() as u32;
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            StoredLeaf {
                agent_id: agent_id.clone(),
                boot_id: boot_id.clone(),
                seq,
                index_in_batch: i as u32,
                peer_identity: peer.to_string(),
                received_time_ns,
                record: Some(r),
                entry: None,
                batch_records: n,
                batch_sha256: hash.to_vec(),
                covers_through_seq,
            }
            .encode_to_vec()
        })
        .collect()
}

/// The status an agent gets for a stream that failed to decode: too large
/// messages are RESOURCE_EXHAUSTED (split the batch), others INVALID_ARGUMENT.
fn decode_failure(s: &Status) -> Error {
    let msg = s.message().to_string();
    if s.code() == tonic::Code::OutOfRange || s.code() == tonic::Code::ResourceExhausted || msg.contains("too large") {
        Error::TooLarge(format!("batch message refused: {msg}"))
    } else {
        Error::InvalidArgument(format!("batch does not decode: {msg}"))
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type IngestStream = AckStream;

    async fn ingest(&self, req: Request<Streaming<Batch>>) -> Result<Response<AckStream>, Status> {
        let peer = self.authz.check(&req, crate::authz::Rpc::Ingest)?.identity;
        let mut input = req.into_inner();
        let jobs = self.jobs.clone();
        let limits = self.limits.clone();
        let (shared, progress) = (self.shared.clone(), self.progress.clone());
        let row_columns = self.row_columns;
        // Acks are returned in batch order; up to 64 batches in flight per stream.
        let (pending_tx, mut pending_rx) = mpsc::channel::<(oneshot::Receiver<Result<Ack, Error>>, Beats)>(64);
        let monitor = self.monitor.clone();
        let watching = monitor.is_some();
        let (out_tx, out_rx) = mpsc::channel::<Result<Ack, Status>>(64);
        tokio::spawn(async move {
            // Errors travel through the same ordered queue as acks, after them.
            let fail = |e: Error| {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(e));
                (rx, None)
            };
            while let Some(item) = input.next().await {
                let mut batch = match item {
                    Ok(b) => b,
                    Err(s) => {
                        let e = decode_failure(&s);
                        tracing::warn!(error = %e, peer = %wiretrail_log::text::escape(&peer), "ingest stream failed");
                        let _ = pending_tx.send(fail(e)).await;
                        return;
                    }
                };
                if let Err(e) = validate(&batch, &limits) {
                    tracing::warn!(error = %e, peer = %wiretrail_log::text::escape(&peer), "rejected batch");
                    let _ = pending_tx.send(fail(e)).await;
                    return;
                }
                while progress.behind(shared.size()) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                let hash = content_hash(&mut batch);
                let (agent_id, boot_id, seq) = (batch.agent_id.clone(), batch.boot_id.clone(), batch.seq);
                let through = batch.covers_through_seq.max(seq);
                let beats: Beats = watching.then(|| {
                    let hb = wiretrail_proto::v1::RecordKind::Heartbeat;
                    let v: Vec<_> = batch.records.iter().filter(|r| r.kind() == hb).cloned().collect();
                    (agent_id.clone(), boot_id.clone(), v)
                });
                let heartbeat = (batch.records.iter().enumerate())
                    .filter(|(_, r)| r.kind() == wiretrail_proto::v1::RecordKind::Heartbeat && r.heartbeat.is_some())
                    .max_by_key(|(k, r)| (r.capture_time_ns, *k))
                    .map(|(k, r)| (k as u32, r.capture_time_ns));
                let received_ns = wiretrail_log::store::now_ns();
                let columns = if row_columns {
                    let of = |r| crate::clickhouse::writer::Columns::of_record(r, &agent_id, received_ns);
                    batch.records.iter().map(of).collect()
                } else {
                    Vec::new()
                };
                let leaves = encode_leaves(batch, &peer, received_ns, &hash);
                // Hashing and compressing here, on the ingest tasks, leaves the
                // one commit thread only copying frames into the segment.
                let prepared = match wiretrail_log::frame::prepare_all(shared.compression(), &leaves) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "zstd could not set up; batch refused");
                        let _ = pending_tx.send(fail(Error::Unavailable(format!("compression: {e}")))).await;
                        return;
                    }
                };
                let (reply, rx) = oneshot::channel();
                let job = Job {
                    agent_id,
                    boot_id,
                    seq,
                    through,
                    peer: peer.clone(),
                    hash,
                    leaves,
                    prepared,
                    columns,
                    heartbeat,
                    reply,
                };
                if jobs.send(Work::Batch(job)).await.is_err() {
                    let _ = pending_tx.send(fail(Error::Unavailable("collector is shutting down".into()))).await;
                    return;
                }
                if pending_tx.send((rx, beats)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some((rx, beats)) = pending_rx.recv().await {
                let res = match rx.await {
                    Ok(Ok(ack)) => {
                        if let (Some(m), Some((agent, boot, records))) = (&monitor, beats)
                            && !ack.conflict
                            && !records.is_empty()
                        {
                            m.observe(&agent, &boot, &records);
                        }
                        Ok(ack)
                    }
                    Ok(Err(e)) => Err(Status::from(e)),
                    Err(_) => Err(Status::unavailable("commit thread stopped")),
                };
                let stop = res.is_err();
                if out_tx.send(res).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }
}
