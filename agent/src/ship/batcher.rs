//! The batcher: groups records into numbered batches and spools them; turns
//! records that do not fit into one gap record per episode.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wiretrail_proto::v1::{Batch, GapReason, Record, RecordKind};

use super::gap::PendingGap;
use super::{ShipConfig, ShipError, ShipStats};
use crate::spool::{Spool, SpoolError, file::HEADER_LEN};

/// State of the batching task.
pub struct Batcher {
    /// Agent id put on every batch.
    agent_id: String,
    /// This boot's id.
    boot_id: String,
    /// This boot's spool directory.
    boot_dir: String,
    /// Host stamped on gap records.
    host: String,
    /// The spool.
    spool: Arc<Spool>,
    /// Wakes the sender after an append.
    notify: Arc<Notify>,
    /// Counters.
    stats: Arc<ShipStats>,
    /// Batch limits.
    max_records: usize,
    /// Batch byte limit.
    max_bytes: usize,
    /// Batch time limit.
    max_delay: Duration,
    /// Largest record shipped as is.
    max_record: usize,
    /// The spool's bound for ordinary batches (to decide when a gap can end).
    spool_max: u64,
    /// Seq of the next batch of this boot.
    next_seq: u64,
    /// Records received this boot (numbers records for gap positions).
    record_no: u64,
    /// The batch being filled.
    current: Vec<Record>,
    /// Serialized size of `current`.
    current_bytes: usize,
    /// When `current` must be spooled.
    deadline: Option<Instant>,
    /// Records not kept, waiting to be recorded as one gap.
    gap: Option<PendingGap>,
    /// Largest batch file refused in the current gap episode: the episode
    /// ends only when such a batch would fit again (plus the gap record).
    refused_bytes: u64,
}

impl Batcher {
    /// A batcher for a new boot.
    pub fn new(
        cfg: &ShipConfig,
        spool: Arc<Spool>,
        boot_dir: String,
        boot_id: String,
        notify: Arc<Notify>,
        stats: Arc<ShipStats>,
    ) -> Self {
        Batcher {
            agent_id: cfg.agent_id.clone(),
            boot_id,
            boot_dir,
            host: cfg.host.clone(),
            spool,
            notify,
            stats,
            max_records: cfg.max_batch_records,
            max_bytes: cfg.max_batch_bytes,
            max_delay: cfg.max_batch_delay,
            max_record: cfg.max_record_bytes,
            spool_max: cfg.spool.max_bytes,
            next_seq: 0,
            record_no: 0,
            current: Vec::new(),
            current_bytes: 0,
            deadline: None,
            gap: None,
            refused_bytes: 0,
        }
    }

    /// Runs until `shutdown`, then drains the channel into the spool and
    /// records any pending gap; cancels `done` on return.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Record>,
        shutdown: CancellationToken,
        done: CancellationToken,
    ) -> Result<(), ShipError> {
        let _done = done.drop_guard();
        let mut tick = tokio::time::interval(self.max_delay.max(Duration::from_millis(10)));
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => self.push(r).await?,
                    None => break,
                },
                _ = sleep_until(self.deadline), if self.deadline.is_some() => self.flush().await?,
                _ = tick.tick() => self.try_end_gap().await?,
                _ = shutdown.cancelled() => break,
            }
        }
        rx.close();
        while let Some(r) = rx.recv().await {
            self.push(r).await?;
        }
        self.flush().await?;
        self.try_end_gap().await?;
        if let Some(g) = self.gap.take() {
            // Last chance: the gap reserve.
            self.spool_gap(g, true).await?;
        }
        Ok(())
    }

    async fn push(&mut self, r: Record) -> Result<(), ShipError> {
        ShipStats::add(&self.stats.records_in, 1);
        if r.kind() == RecordKind::Heartbeat {
            return self.heartbeat(r).await;
        }
        let mut r = r;
        let mut len = r.encoded_len();
        if len > self.max_record {
            tracing::warn!(bytes = len, max = self.max_record, "record too large to ship; replaced by a gap record");
            r = super::gap::too_large(&r, &format!("{len} bytes, above max_record_bytes {}", self.max_record));
            len = r.encoded_len();
            ShipStats::add(&self.stats.records_too_large, 1);
        }
        if !self.current.is_empty()
            && (self.current.len() >= self.max_records || self.current_bytes + len > self.max_bytes)
        {
            self.flush().await?;
        }
        if self.current.is_empty() {
            self.deadline = Some(Instant::now() + self.max_delay);
        }
        self.current_bytes += len;
        self.current.push(r);
        if self.current.len() >= self.max_records || self.current_bytes >= self.max_bytes {
            self.flush().await?;
        }
        Ok(())
    }

    /// Spools a heartbeat alone, after the records before it; it may use the
    /// gap reserve so it is kept while ordinary records are not.
    async fn heartbeat(&mut self, r: Record) -> Result<(), ShipError> {
        self.flush().await?;
        let first_no = self.record_no;
        self.record_no += 1;
        let batch = self.batch(vec![r]);
        let need = (batch.encoded_len() + HEADER_LEN) as u64;
        match self.append(batch, true).await {
            (_, Ok(_)) => {
                self.next_seq += 1;
                ShipStats::add(&self.stats.batches_spooled, 1);
                ShipStats::add(&self.stats.records_spooled, 1);
                self.notify.notify_one();
            }
            (b, Err(e)) => self.lose(b.records, first_no, need, Some(e)),
        }
        Ok(())
    }

    fn batch(&self, records: Vec<Record>) -> Batch {
        Batch {
            agent_id: self.agent_id.clone(),
            boot_id: self.boot_id.clone(),
            seq: self.next_seq,
            records,
            covers_through_seq: 0,
        }
    }

    /// Appends on a blocking thread; hands the batch back with the result.
    async fn append(&self, batch: Batch, gap: bool) -> (Batch, Result<u64, SpoolError>) {
        let spool = self.spool.clone();
        let dir = self.boot_dir.clone();
        tokio::task::spawn_blocking(move || {
            let r = spool.append(&dir, &batch, gap);
            (batch, r)
        })
        .await
        .expect("spool append task panicked")
    }

    /// Spools the current batch (or adds it to the pending gap).
    async fn flush(&mut self) -> Result<(), ShipError> {
        self.deadline = None;
        if self.current.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.current);
        let first_no = self.record_no;
        self.record_no += records.len() as u64;
        self.current_bytes = 0;
        let batch = self.batch(records);
        if let Some(g) = &self.gap {
            // The gap ends only when it and this batch both fit under the bound.
            let need = (batch.encoded_len() + HEADER_LEN) as u64;
            let gap_need = (self.batch(vec![g.record(&self.host)]).encoded_len() + HEADER_LEN) as u64;
            if self.spool.used_bytes() + need + gap_need > self.spool_max {
                self.lose(batch.records, first_no, need, None);
                return Ok(());
            }
            let g = self.gap.take().expect("checked");
            if !self.spool_gap(g, false).await? {
                self.lose(batch.records, first_no, need, None);
                return Ok(());
            }
        }
        let batch = Batch { seq: self.next_seq, ..batch };
        let n = batch.records.len() as u64;
        let need = (batch.encoded_len() + HEADER_LEN) as u64;
        match self.append(batch, false).await {
            (_, Ok(_)) => {
                self.next_seq += 1;
                ShipStats::add(&self.stats.batches_spooled, 1);
                ShipStats::add(&self.stats.records_spooled, n);
                self.notify.notify_one();
            }
            (b, Err(e)) => self.lose(b.records, first_no, need, Some(e)),
        }
        Ok(())
    }

    /// Adds records that could not be spooled (a batch file of `need` bytes) to the pending gap.
    fn lose(&mut self, records: Vec<Record>, first_no: u64, need: u64, err: Option<SpoolError>) {
        if self.gap.is_none() {
            self.refused_bytes = 0;
        }
        self.refused_bytes = self.refused_bytes.max(need);
        let g = self.gap.get_or_insert_with(|| {
            let (reason, cause) = match &err {
                Some(SpoolError::Full { .. }) | None => {
                    (GapReason::SpoolFull, err.as_ref().map(ToString::to_string).unwrap_or_default())
                }
                Some(SpoolError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {
                    (GapReason::SpoolFull, err.as_ref().expect("some").to_string())
                }
                Some(e) => (GapReason::Other, e.to_string()),
            };
            tracing::warn!(
                first_record = first_no,
                %cause,
                "spool cannot take more records; the newest records are replaced by a gap record until there is room"
            );
            PendingGap::new(first_no, reason, cause)
        });
        let mut bytes = 0;
        for r in &records {
            let b = r.encoded_len() as u64;
            bytes += b;
            g.add(r, b);
        }
        ShipStats::add(&self.stats.records_dropped, records.len() as u64);
        ShipStats::add(&self.stats.bytes_dropped, bytes);
    }

    /// Ends the gap episode once the spool has room again under the bound
    /// (for the gap record and a batch as large as the largest refused one).
    async fn try_end_gap(&mut self) -> Result<(), ShipError> {
        let Some(g) = &self.gap else { return Ok(()) };
        let need = (self.batch(vec![g.record(&self.host)]).encoded_len() + HEADER_LEN) as u64;
        if self.spool.used_bytes() + need + self.refused_bytes <= self.spool_max {
            let g = self.gap.take().expect("checked");
            self.spool_gap(g, false).await?;
        }
        Ok(())
    }

    /// Writes the gap batch; `reserve` lets it use the spool's gap reserve.
    /// Returns whether it was written; without `reserve` a failure keeps the gap pending.
    async fn spool_gap(&mut self, g: PendingGap, reserve: bool) -> Result<bool, ShipError> {
        let batch = self.batch(vec![g.record(&self.host)]);
        match self.append(batch, true).await {
            (_, Ok(_)) => {
                self.next_seq += 1;
                ShipStats::add(&self.stats.batches_spooled, 1);
                ShipStats::add(&self.stats.gap_records, 1);
                self.notify.notify_one();
                tracing::warn!(
                    records = g.records,
                    bytes = g.bytes,
                    first_time_ns = g.first_time_ns,
                    last_time_ns = g.last_time_ns,
                    "records not kept by the spool were replaced by one gap record"
                );
                Ok(true)
            }
            (_, Err(e)) if !reserve => {
                // Not even the reserve had room: keep accumulating.
                tracing::debug!(error = %e, "gap record does not fit yet");
                self.gap = Some(g);
                Ok(false)
            }
            (_, Err(e)) => {
                ShipStats::add(&self.stats.gap_records_unwritten, 1);
                tracing::error!(
                    error = %e,
                    records = g.records,
                    bytes = g.bytes,
                    first_time_ns = g.first_time_ns,
                    last_time_ns = g.last_time_ns,
                    "could not spool the gap record: these records are lost and only this log line says so"
                );
                Err(e.into())
            }
        }
    }
}

async fn sleep_until(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
