use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiretrail_agent::{
    capture::{
        self, CaptureOptions,
        floor::FloorHooks,
        selfcheck,
        tls::{
            TlsManager,
            worker::{self, Request},
        },
    },
    cli::{Cli, Command, LogFormat, OutputFormat},
    conn::{ConnConfig, ConnTable},
    metrics::{self, Metrics},
    output::Sink,
    pipeline,
    record::Record,
    segment::{self, Segmentation},
    ship::{ClientTlsFiles, ShipConfig, ShipHandle},
    spool::SpoolConfig,
};

#[global_allocator]
static ALLOC: wiretrail_alloc::MiMalloc = wiretrail_alloc::MiMalloc;

/// mimalloc's `purge_delay` option (the same number in its v2 and v3 option enums).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Milliseconds freed memory stays resident before mimalloc returns it.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// mimalloc (v3) keeps freed pages resident for 1 s by default; the agent
/// frees bursts of short-lived buffers (events, records, batches), which then
/// count in its RSS: peak 126 MiB under `cargo xtask bench tls`, 111 MiB with
/// immediate purging (BENCHMARKS.md, issue 13). 10 ms (mimalloc v2's default)
/// returns them almost as soon. `MIMALLOC_PURGE_DELAY` still overrides it.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting a mimalloc option is thread-safe and takes effect on later purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

fn init_logs(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = wiretrail_agent::config::parse_cli()?;
    init_logs(&cli);
    match cli.command {
        Some(Command::Check) => {
            selfcheck::run_for(selfcheck::Needs { tls: !cli.run.no_tls })?;
            println!(
                "wiretrail-agent: self-check passed (kernel version, capabilities, kernel BTF, cgroup v2, tracefs)"
            );
            Ok(())
        }
        Some(Command::Floor { hooks: FloorHooks::Capture, ref ready_file, ref library }) => {
            anyhow::ensure!(library.is_empty(), "--library goes with --hooks tls, not --hooks capture");
            let args = &cli.run;
            let opts = CaptureOptions {
                ring_bytes: args.ring_bytes,
                conn_cap_bytes: args.conn_cap_bytes,
                keep_tls_ciphertext: args.keep_tls_ciphertext,
                syscalls: true,
                tls: false,
            };
            let shutdown = cancel_on_signal()?;
            println!("wiretrail-agent: capture programs attaching; events are read and dropped, no record is made");
            let r = capture::drain_floor::run(&opts, ready_file.clone(), shutdown).await?;
            println!(
                "wiretrail-agent: {} events read and dropped, {} written, {} lost (a floor, not a capture)",
                r.read, r.written, r.lost
            );
            Ok(())
        }
        Some(Command::Floor { hooks, ref ready_file, ref library }) => {
            let (_attached, n) = capture::floor::attach(hooks, library)?;
            if let Some(f) = ready_file {
                std::fs::write(f, b"").with_context(|| format!("writing {}", f.display()))?;
            }
            println!("wiretrail-agent: {n} no-op {hooks:?} hooks attached; SIGTERM or Ctrl-C detaches them");
            cancel_on_signal()?.cancelled().await;
            Ok(())
        }
        Some(Command::Run) | None => run(cli).await,
    }
}

/// A token cancelled at the first SIGTERM or Ctrl-C (the floor modes' end).
fn cancel_on_signal() -> std::io::Result<CancellationToken> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        stop.cancel();
    });
    Ok(token)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let args = &cli.run;
    // Redaction rules first: a bad rule stops the agent before it attaches anything.
    let rules = args.redaction.compile().context("loading the redaction rules")?;
    let sink = match (args.output, &args.output_file) {
        (OutputFormat::None, _) => Sink::Discard,
        (OutputFormat::Jsonl, Some(p)) => Sink::file(&p.to_string_lossy())?,
        (OutputFormat::Jsonl, None) => Sink::stdout(),
        (OutputFormat::Text, Some(p)) => Sink::file(&p.to_string_lossy())?.into_text(),
        (OutputFormat::Text, None) => Sink::stdout().into_text(),
    };
    let (loaded, ring) = capture::start(&CaptureOptions {
        ring_bytes: args.ring_bytes,
        conn_cap_bytes: args.conn_cap_bytes,
        keep_tls_ciphertext: args.keep_tls_ciphertext,
        syscalls: !args.no_capture,
        tls: !(args.no_tls || args.no_capture),
    })?;
    // The key once capture could attach (a host that cannot capture gets no key file).
    let redactor = Arc::new(
        wiretrail_agent::redact::Redactor::from_rules(rules, &args.redact_key_file)
            .context("loading the redaction key")?,
    );
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();

    // Bounded: a slow output backs up into the ring buffer, where loss is counted.
    let (tx, rx) = mpsc::channel(32);
    let drained = capture::reader::Drained::default();
    let reader = tokio::spawn(capture::reader::run(ring, tx, metrics.clone(), drained.clone(), shutdown.clone()));
    let conn_config = ConnConfig {
        reorder_window_ns: args.reorder_window_ms * 1_000_000,
        idle_timeout_ns: args.idle_timeout_s * 1_000_000_000,
        max_conns: args.max_conns,
        twins: !args.no_twins,
        ..ConnConfig::default()
    };
    let mut loaded = loaded;
    let mut tls = if args.no_tls || args.no_capture { None } else { Some(TlsManager::new(&mut loaded.ebpf)?) };
    let registry = tls.as_ref().map(|t| t.registry.clone()).unwrap_or_default();
    // Discovery runs on its own thread; main only attaches what it finds.
    let (found_tx, mut found_rx) = mpsc::channel(1024);
    let discovery = if tls.is_some() {
        let (req_tx, req_rx) = std::sync::mpsc::sync_channel(4096);
        std::thread::Builder::new()
            .name("tls-discovery".into())
            .spawn(move || worker::run(req_rx, found_tx))
            .context("starting the TLS discovery thread")?;
        let _ = req_tx.try_send(Request::All);
        Some(req_tx)
    } else {
        drop(found_tx);
        None
    };
    // Records made outside the capture path: TLS and policy notices, policy decisions.
    let (note_tx, note_rx) = mpsc::channel::<Record>(1024);
    // The rule set in force (and any built-in rule turned off) is on the record.
    note_tx.try_send(redactor.notice()).context("queueing the redaction notice")?;
    let hasher = wiretrail_agent::identity::ExeHasher::start(args.exe_hash_max_bytes, metrics.clone());
    let exes = Arc::new(wiretrail_agent::identity::ExecCache::with_hasher(Some(hasher.clone())));
    if let Some(ring) = loaded.execs.take() {
        tokio::spawn(capture::execs::run(ring, discovery.clone(), exes.clone(), metrics.clone(), shutdown.clone()));
    }
    // The shipper outlives the pipeline: it is stopped only after the pipeline
    // has handed over its last record.
    let ship_shutdown = CancellationToken::new();
    let (ship, ship_task) = match &args.collector {
        Some(endpoint) => {
            let host = wiretrail_agent::host::hostname();
            let agent_id = args.agent_id.clone().unwrap_or_else(|| host.clone());
            let mut spool = SpoolConfig::new(args.spool_dir.clone());
            spool.max_bytes = args.spool_bytes;
            let mut config = ShipConfig::new(endpoint.clone(), agent_id.clone(), host.clone(), spool);
            config.tls =
                args.tls_dir.as_ref().map(|d| ClientTlsFiles::in_dir(d, &args.tls_cert_name, &args.collector_name));
            let handle = ShipHandle::spawn(config, ship_shutdown.clone()).await.context("starting the shipper")?;
            tracing::info!(%endpoint, %agent_id, boot_id = %handle.boot_id, "shipping records to the collector");
            let sources = wiretrail_agent::heartbeat::Sources {
                metrics: metrics.clone(),
                ship: handle.stats.clone(),
                spool: handle.spool.clone(),
                host: host.clone(),
                boot_start_ns: wiretrail_agent::clock::now_utc_ns() as i64,
                extra_error_ns: args.test_clock_error_ms.saturating_mul(1_000_000),
            };
            if args.test_clock_error_ms > 0 {
                tracing::warn!(ms = args.test_clock_error_ms, "test hook: heartbeats overstate the clock error");
            }
            wiretrail_agent::heartbeat::spawn(sources, args.heartbeat_ms, handle.records.clone(), shutdown.clone())
                .context("starting heartbeats")?;
            (Some(pipeline::Ship { tx: handle.records, host }), Some((handle.task, handle.stats)))
        }
        None => (None, None),
    };
    let identity = wiretrail_agent::identity::Sources {
        execs: exes,
        hasher: Some(hasher),
        pods: wiretrail_agent::identity::k8s::start(args, metrics.clone(), shutdown.clone()),
    };
    // Signalled when the kernel reports a new cgroup (policy membership).
    let new_cgroups = Arc::new(tokio::sync::Notify::new());
    let mut policy = match &args.policy {
        Some(path) => {
            let want =
                segment::decisions::Wanted { records: args.output != OutputFormat::None || args.collector.is_some() };
            let s = Segmentation::start(
                &mut loaded.ebpf,
                path,
                identity.clone(),
                want,
                note_tx.clone(),
                new_cgroups.clone(),
                metrics.clone(),
                shutdown.clone(),
            )
            .await?;
            Some(s)
        }
        None => None,
    };
    let table =
        ConnTable::new(conn_config, wiretrail_agent::identity::IdentityResolver::new(identity.clone()), registry);
    let pipe = tokio::spawn(pipeline::run(
        rx,
        note_rx,
        table,
        pipeline::Outputs { sink, ship, redactor: redactor.clone() },
        metrics.clone(),
        drained,
    ));
    if let Some(addr) = args.metrics_addr {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics address {addr}"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(metrics::serve(listener, metrics.clone(), shutdown.clone()));
    }
    // Ready means attached: apply the first full discovery pass before saying so
    // (a TLS client started right after must find libssl already hooked).
    if let Some(t) = tls.as_mut() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match tokio::time::timeout_at(deadline, found_rx.recv()).await {
                Ok(Some(worker::Found::Live(live))) => {
                    let _ = t.apply(&mut loaded.ebpf, worker::Found::Live(live), &metrics);
                    break;
                }
                Ok(Some(found)) => {
                    if let Some(n) = t.apply(&mut loaded.ebpf, found, &metrics) {
                        let _ = note_tx.try_send(n.record());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("initial TLS discovery still running after 60 s; continuing in the background");
                    break;
                }
            }
        }
        metrics.tls_libraries.set(t.attached() as u64);
        tracing::info!(libraries = t.attached(), "TLS libraries hooked");
    }
    if let Some(p) = &args.ready_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", p.display()))?;
    }
    tracing::info!(pid = std::process::id(), "capturing; SIGINT or SIGTERM to stop");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    const RESCAN: Duration = Duration::from_secs(5);
    // The first full scan was applied above: the next is due in 5 s, not now.
    let mut rescan = tokio::time::interval_at(tokio::time::Instant::now() + RESCAN, RESCAN);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            Some(found) = found_rx.recv() => {
                if let Some(t) = tls.as_mut() {
                    if let Some(n) = t.apply(&mut loaded.ebpf, found, &metrics)
                        && note_tx.try_send(n.record()).is_err()
                    {
                        tracing::warn!("TLS report channel full; the report is in this log only");
                    }
                    metrics.tls_libraries.set(t.attached() as u64);
                }
            }
            _ = new_cgroups.notified() => {
                if let Some(p) = policy.as_mut() {
                    p.enforcer.refresh();
                }
            }
            _ = hup.recv() => {
                // A replaced key file: the new tokenization key from the next record on.
                match redactor.reload_key() {
                    Ok(Some(n)) => {
                        if note_tx.try_send(n).is_err() {
                            tracing::warn!("notice channel full; the key rotation is in this log only");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: redaction key not reloaded; the key in force stays");
                        let n = Record::notice("redaction_key_rejected", serde_json::json!({"error": e.to_string()}));
                        let _ = note_tx.try_send(n);
                    }
                }
                if let Some(p) = policy.as_mut() {
                    p.reload().await;
                } else {
                    tracing::info!("SIGHUP: no policy configured; nothing to reload");
                }
            }
            _ = rescan.tick() => {
                if let Some(tx) = &discovery {
                    let _ = tx.try_send(Request::All);
                }
            }
            _ = every.tick() => {
                match loaded.kernel_stats() {
                    Ok(k) => {
                        if k.lost_events > metrics.kernel_lost_events.get() {
                            tracing::warn!(lost_events = k.lost_events, lost_bytes = k.lost_bytes, "kernel ring buffer overflowed; the affected bytes are reported as gaps");
                        }
                        k.publish(&metrics);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading kernel counters"),
                }
                if let Some(p) = policy.as_mut() {
                    p.tick().await;
                }
            }
        }
    }
    tracing::info!("stopping: detaching programs");
    // Detach first so no new events arrive (and no more are lost), then read
    // the final counters and drain what is in the ring.
    loaded.stop_capture();
    let final_kernel = loaded.kernel_stats().ok();
    // Published before the pipeline finishes: it states the lost bytes no
    // stream's gaps hold, against this count.
    if let Some(k) = final_kernel {
        k.publish(&metrics);
    }
    shutdown.cancel();
    drop(discovery);
    reader.await.context("reader task")??;
    if let Some(p) = policy.take() {
        p.finish().await.context("policy decisions task")?;
    }
    drop(note_tx);
    pipe.await.context("pipeline task")??;
    if let Some((task, stats)) = ship_task {
        ship_shutdown.cancel();
        task.await.context("shipper task")??;
        tracing::info!(stats = ?stats.get(), "shipper stopped");
    }
    if let Some(k) = final_kernel {
        k.publish(&metrics);
    }
    drop(loaded);
    let summary = metrics.snapshot();
    tracing::info!(%summary, "final counters");
    if let Some(p) = &args.stats_file {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing stats file {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            panic!("unset MIMALLOC_PURGE_DELAY to run this test: it checks mimalloc's own default");
        }
        // SAFETY: reading and setting mimalloc options is thread-safe.
        // Option 15 is purge_delay if it holds mimalloc v3's default, 1000 ms.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        tune_allocator();
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, PURGE_DELAY_MS);
    }
}
