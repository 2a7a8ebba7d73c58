//! Times a full rebuild of the search index from a data directory's log:
//! `cargo run --release -p wiretrail-collector --example index_rebuild -- DIR [LEAVES [TXN_ROWS]]`.
//!
//! DIR is a data directory no collector is using (e.g. one kept by
//! `cargo xtask bench collector --keep`). Its `index.sqlite` is removed and the
//! indexer rebuilds it with an empty registry, as a collector does at start;
//! the rate is printed every second and at the end. LEAVES stops it after that
//! many leaves (default: the whole log); TXN_ROWS sets the records per index
//! transaction (default: the collector's). Meant for profiling the indexer
//! (`perf record` this process).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wiretrail_collector::index::{self, IndexConfig, IndexProgress};
use wiretrail_collector::registry::RegistryHandle;
use wiretrail_log::store::{StoreConfig, Writer};

/// The collector's own allocator, so the figures are the collector's.
#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let usage = || anyhow::anyhow!("usage: index_rebuild DIR [LEAVES [TXN_ROWS]]");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().ok_or_else(usage)?);
    let number = |i: usize| -> anyhow::Result<Option<u64>> {
        args.get(i).map(|a| a.parse::<u64>().map_err(|e| anyhow::anyhow!("{a:?}: {e}"))).transpose()
    };
    let (leaves, txn_rows) = (number(1)?, number(2)?);
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p)?;
        }
    }
    let (writer, shared) = Writer::open(&dir, StoreConfig::default())?;
    let size = leaves.map_or(shared.size(), |n| n.min(shared.size()));
    let mut config = IndexConfig::default();
    if let Some(rows) = txn_rows {
        config.txn_rows = rows as usize;
    }
    let progress = Arc::new(IndexProgress::default());
    let registry = Arc::new(RegistryHandle::open(None)?);
    let t = Instant::now();
    let handle = index::spawn(shared.clone(), config, progress.clone(), registry)?;
    let mut last = (0.0, 0u64);
    loop {
        let done = progress.indexed.load(Ordering::Acquire);
        let secs = t.elapsed().as_secs_f64();
        if done >= size {
            println!("indexed {size} leaves in {secs:.2} s: {:.0} leaves/s", size as f64 / secs);
            break;
        }
        if secs - last.0 >= 1.0 {
            eprintln!("  {done} indexed, {:.0}/s", (done - last.1) as f64 / (secs - last.0));
            last = (secs, done);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    progress.stop.store(true, Ordering::Release);
    let _ = handle.join();
    drop(writer);
    Ok(())
}
