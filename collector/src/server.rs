//! `run`: the collector server (ingest + query API) on a listener, until shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use wiretrail_proto::v1::ingest_server::IngestServer;
use wiretrail_proto::v1::query_server::QueryServer;
use wiretrail_proto::v1::retention_server::RetentionServer;

use crate::alerts::delivery::{DeliveryConfig, DeliveryError};
use crate::alerts::monitor::{Monitor, SilenceConfig};
use crate::checkpointer::Checkpointer;
use crate::index::{self, IndexConfig, IndexError, IndexProgress};
use crate::ingest::commit::{self, CommitStats};
use crate::ingest::state::LogState;
use crate::ingest::{IngestLimits, IngestService};
use crate::query::limits::QueryLimits;
use crate::query::service::QueryService;
use crate::registry::{RegistryError, RegistryHandle};
use crate::retention::service::RetentionService;
use crate::roles::{Roles, RolesError};
use crate::tls::{ReloadingServerConfig, TlsError, TlsFiles};
use wiretrail_log::store::{StoreConfig, StoreError, Writer};
use wiretrail_log::verify::background::{self as verification, VerifyConfig};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Store settings.
    pub store: StoreConfig,
    /// Index settings.
    pub index: IndexConfig,
    /// Batch limits.
    pub limits: IngestLimits,
    /// mTLS files; `None` serves plaintext (tests only; `serve` requires an explicit flag).
    pub tls: Option<TlsFiles>,
    /// How often a checkpoint is issued when the log grew.
    pub checkpoint_interval: Duration,
    /// Largest gRPC message accepted (bigger batches get RESOURCE_EXHAUSTED).
    pub max_message_bytes: usize,
    /// Identity registry file; `None` = an empty registry (every identity is shadow).
    pub registry: Option<PathBuf>,
    /// How often the registry file's mtime is checked for changes (it is also re-read on SIGHUP).
    pub registry_check_interval: Duration,
    /// Roles file (agent id bindings, roles); `None` = every agent id is owned by the first identity
    /// using it and roles come from the certificates alone.
    pub roles: Option<PathBuf>,
    /// Follow-stream and query concurrency limits.
    pub query: QueryLimits,
    /// Background verification schedule.
    pub verify: VerifyConfig,
    /// When an agent counts as silent.
    pub silence: SilenceConfig,
    /// Alert destinations (webhooks, syslog).
    pub delivery: DeliveryConfig,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None` = not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Retention file and pass schedule.
    pub retention: crate::retention::RetentionConfig,
    /// Where to serve the console (HTTPS with the API's certificates and roles); `None` = not served.
    pub console_addr: Option<std::net::SocketAddr>,
    /// Clustered mode: leaves and checkpoints also go to ClickHouse before acks.
    pub clickhouse: Option<crate::clickhouse::ClickHouseConfig>,
}

impl ServeConfig {
    /// Defaults for `data_dir`, no TLS.
    pub fn new(data_dir: PathBuf) -> Self {
        ServeConfig {
            data_dir,
            store: StoreConfig::default(),
            index: IndexConfig::default(),
            limits: IngestLimits::default(),
            tls: None,
            checkpoint_interval: Duration::from_secs(10),
            max_message_bytes: 32 << 20,
            registry: None,
            registry_check_interval: Duration::from_secs(2),
            roles: None,
            query: QueryLimits::default(),
            verify: VerifyConfig::default(),
            silence: SilenceConfig::default(),
            delivery: DeliveryConfig::default(),
            metrics_addr: None,
            retention: crate::retention::RetentionConfig::default(),
            console_addr: None,
            clickhouse: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// Opening the index failed.
    #[error("opening the index: {0}")]
    Index(#[from] IndexError),
    /// The identity registry is unusable.
    #[error("identity registry: {0}")]
    Registry(#[from] RegistryError),
    /// The retention file is invalid or the holds could not be rebuilt.
    #[error("retention: {0}")]
    Retention(#[from] crate::retention::RetentionError),
    /// The roles file is unusable.
    #[error("{0}")]
    Roles(#[from] RolesError),
    /// TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An alert destination is unusable.
    #[error("{0}")]
    Delivery(#[from] DeliveryError),
    /// The metrics endpoint could not start.
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The console could not start.
    #[error("{0}")]
    Console(#[from] crate::console::ConsoleError),
    /// ClickHouse (clustered mode) is unusable at start.
    #[error("{0}")]
    ClickHouse(#[from] crate::clickhouse::ClickHouseError),
    /// A start-up task panicked.
    #[error("start-up task failed: {0}")]
    Join(String),
}

/// Serves ingest and the query API on `listener` until `shutdown` resolves,
/// then drains: every batch received is committed and acked, a final
/// checkpoint is issued.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let registry = Arc::new(RegistryHandle::open(config.registry.clone())?);
    let roles = Arc::new(match &config.roles {
        Some(p) => Roles::load(p)?,
        None => Roles::default(),
    });
    let dir = config.data_dir.clone();
    let store_cfg = config.store.clone();
    let (writer, shared, state, seeds) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let (mut writer, shared) = Writer::open(&dir, store_cfg)?;
        record_cuts(&mut writer)?;
        let (state, _) = LogState::open(&shared)?;
        let seeds = crate::alerts::monitor::seeds(&shared, &state)?;
        Ok((writer, shared, state, seeds))
    })
    .await
    .map_err(|e| ServeError::Join(e.to_string()))??;
    let stats = Arc::new(CommitStats::default());
    let authz = crate::authz::Authz::new(roles.clone(), config.tls.is_none());
    let authz_retention = authz.clone();
    let (sink, checkpoint_shipper) = match &config.clickhouse {
        None => (None, None),
        Some(ch) => {
            let sink = crate::clickhouse::writer::Sink::open(ch.clone(), shared.clone()).await.inspect_err(|e| {
                tracing::error!(error = %e, "clustered mode: ClickHouse unusable at start");
            })?;
            (Some(sink), Some(crate::clickhouse::writer::spawn_checkpoints(ch.clone(), shared.clone())))
        }
    };
    let hold_entries = state.hold_entries.clone();
    let (jobs, commit_thread) = commit::spawn(writer, state, roles, stats.clone(), sink);
    let verify_status = Arc::new(verification::Status::default());
    let entries = jobs.clone();
    let verifying = verification::spawn(
        shared.clone(),
        config.verify,
        verify_status.clone(),
        Box::new(move |detail| {
            let e = wiretrail_log::entry::new(
                wiretrail_log::entry::VERIFICATION_FAILED,
                wiretrail_log::store::now_ns(),
                "log",
                detail,
                vec![],
            );
            commit::append_entry_blocking(&entries, e, "").map(|_| ()).map_err(|e| e.to_string())
        }),
    );
    let mirror = match &config.clickhouse {
        None => None,
        Some(ch) => Some(Arc::new(crate::clickhouse::expiry::Mirror::open(ch.clone(), shared.verifier().name).await?)),
    };
    let mirror_stats = mirror.as_ref().map(|m| m.stats());
    let shared_holds = match &config.clickhouse {
        None => None,
        Some(ch) => Some(crate::clickhouse::holds::ClusterHolds::open(ch).await?),
    };
    let retention = {
        let origin = shared.verifier().name;
        let (shared, app) = (shared.clone(), Arc::new(jobs.clone()) as Arc<dyn crate::retention::Append>);
        let file = config.retention.file.clone();
        let clock = Arc::new(crate::when::SystemClock { offset_ns: config.retention.clock_offset_ns });
        let r = tokio::task::spawn_blocking(move || {
            crate::retention::Retention::open(shared, app, file, clock, &hold_entries)
        })
        .await
        .map_err(|e| ServeError::Join(e.to_string()))??;
        Arc::new(match (mirror, shared_holds) {
            (Some(m), Some(h)) => {
                let orphans = match &config.clickhouse {
                    Some(ch) => crate::clickhouse::orphans::Orphans::open(ch, origin, m.clone()).await?,
                    None => None,
                };
                let r = r
                    .with_mirror(m as Arc<dyn crate::retention::Mirror>)
                    .with_shared_holds(Arc::new(h) as Arc<dyn crate::retention::SharedHolds>);
                match orphans {
                    Some(o) => r.with_orphans(Arc::new(o) as Arc<dyn crate::retention::Orphans>),
                    None => r,
                }
            }
            _ => r,
        })
    };
    let retention_pass = config.retention.interval.map(|i| retention.spawn(i));
    let monitor = Monitor::new(&config.silence, Arc::new(crate::when::SystemClock::default()), jobs.clone());
    monitor.seed(seeds);
    let monitor_timer = monitor.spawn_timer();
    let (delivery_stats, delivery_tasks) = crate::alerts::delivery::spawn(&config.data_dir, &config.delivery)?;
    let logger = crate::access::Logger::new(&jobs);
    let progress = Arc::new(IndexProgress::default());
    let indexer = index::spawn(shared.clone(), config.index.clone(), progress.clone(), registry.clone())?;
    let registry_watcher = registry.spawn_watcher(config.registry_check_interval);
    let metrics = match config.metrics_addr {
        None => None,
        Some(addr) => {
            let sources = crate::metrics::Sources {
                verify: verify_status.clone(),
                delivery: delivery_stats.clone(),
                commit: stats.clone(),
                index: progress.clone(),
                shared: shared.clone(),
                mirror: mirror_stats,
            };
            Some(crate::metrics::spawn(addr, sources).await?.1)
        }
    };
    let (checkpointer, checkpoint_thread) = Checkpointer::spawn(shared.clone(), config.checkpoint_interval);

    let review = wiretrail_proto::v1::review_server::ReviewServer::new(crate::review::service::ReviewService::new(
        shared.clone(),
        progress.clone(),
        config.query.clone(),
        authz.clone(),
        &jobs,
    ));
    let mut ingest_service =
        IngestService::new(jobs, config.limits.clone(), shared.clone(), progress.clone(), authz.clone())
            .with_monitor(monitor.clone());
    if config.clickhouse.is_some() {
        ingest_service = ingest_service.with_row_columns();
    }
    let ingest = IngestServer::new(ingest_service)
        .max_decoding_message_size(config.max_message_bytes)
        // Agents send batches zstd-compressed (records repeat identities and headers).
        .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let keys = wiretrail_proto::v1::keys_server::KeysServer::new(crate::keys::service::KeysService::new(
        shared.clone(),
        authz.clone(),
        logger.clone(),
    ));
    let logger_tls = logger.clone();
    let mut query_service = QueryService::new(
        shared.clone(),
        progress.clone(),
        registry.clone(),
        checkpointer,
        config.query.clone(),
        authz,
        logger,
    );
    if let Some(ch) = &config.clickhouse {
        // Searches answer from every collector's log (see `query::clustered`).
        query_service = query_service.with_clickhouse(crate::clickhouse::reader::Reader::open(ch).await?);
    }
    let query = QueryServer::new(query_service).max_encoding_message_size(config.max_message_bytes);
    // The console calls these same service instances in-process.
    let console = match config.console_addr {
        None => None,
        Some(addr) => {
            let routes =
                tonic::service::Routes::new(query.clone()).add_service(review.clone()).add_service(keys.clone());
            let console = crate::console::Console {
                backend: crate::console::Backend::new(routes),
                origin: shared.verifier().name,
            };
            Some(crate::console::spawn(addr, config.tls.clone(), console).await?.1)
        }
    };
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ingest)
        .add_service(query)
        .add_service(review)
        .add_service(keys)
        .add_service(RetentionServer::new(RetentionService::new(retention.clone(), authz_retention)));
    tracing::info!(addr = ?listener.local_addr().ok(), tls = config.tls.is_some(), "collector serving");
    let served = match &config.tls {
        None => {
            router
                .serve_with_incoming_shutdown(
                    // Small responses (acks, search results) must not wait for
                    // Nagle + delayed ACK (~40 ms per round trip).
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
                        s.inspect(|s| {
                            if let Err(e) = s.set_nodelay(true) {
                                tracing::warn!(error = %e, "TCP_NODELAY not set");
                            }
                        })
                    }),
                    shutdown,
                )
                .await
        }
        Some(files) => {
            let tls = Arc::new(ReloadingServerConfig::new(files.clone())?.with_listener(tls_entries(logger_tls)));
            let tls_watch = spawn_tls_watch(tls.clone());
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let acceptor_task = tokio::spawn(async move {
                loop {
                    let (tcp, peer) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!(%peer, error = %e, "TCP_NODELAY not set");
                    }
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.get());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok::<_, std::io::Error>(s)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::warn!(%peer, error = %e, "TLS handshake refused")
                            }
                            Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            });
            let r =
                router.serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown).await;
            acceptor_task.abort();
            tls_watch.abort();
            r
        }
    };
    if let Some(w) = registry_watcher {
        w.abort();
    }
    monitor.close();
    monitor_timer.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(c) = console {
        c.abort();
    }
    for t in &delivery_tasks {
        t.abort();
    }
    for (name, s) in &delivery_stats {
        tracing::info!(destination = %name, delivered = s.delivered.load(Ordering::Relaxed),
            failures = s.failures.load(Ordering::Relaxed), skipped = s.skipped.load(Ordering::Relaxed),
            pending = s.pending.load(Ordering::Relaxed), "alert delivery stopped");
    }
    // The services (and their job senders) are gone, and with the
    // verification thread its sender: the commit thread drains and stops.
    let _ = tokio::task::spawn_blocking(move || {
        verifying.stop();
        // The retention pass and holds append through the commit thread too.
        if let Some(p) = retention_pass {
            p.stop();
        }
        drop(retention);
        commit_thread.join()
    })
    .await;
    // The services (and their checkpointer handles) are gone: the thread stops.
    let _ = tokio::task::spawn_blocking(move || checkpoint_thread.join()).await;
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || s.issue_checkpoint()).await {
        Ok(Ok(cp)) => {
            tracing::info!(size = cp.checkpoint.size, "final checkpoint");
            if let Some(ch) = &config.clickhouse {
                crate::clickhouse::writer::ship_final(ch, &cp).await;
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "final checkpoint failed"),
        Err(e) => tracing::error!(error = %e, "final checkpoint task failed"),
    }
    if let Some(t) = checkpoint_shipper {
        t.abort();
    }
    progress.stop.store(true, Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || indexer.join()).await;
    tracing::info!(
        batches = stats.batches.load(Ordering::Relaxed),
        records = stats.records.load(Ordering::Relaxed),
        duplicates = stats.duplicates.load(Ordering::Relaxed),
        conflicts = stats.conflicts.load(Ordering::Relaxed),
        refused = stats.refused.load(Ordering::Relaxed),
        storage_refused = stats.storage_refused.load(Ordering::Relaxed),
        out_of_sequence = stats.out_of_sequence.load(Ordering::Relaxed),
        commits = stats.commits.load(Ordering::Relaxed),
        "collector stopped"
    );
    served?;
    Ok(())
}

/// Appends a `recovery` entry for each torn write recovery cut at open.
fn record_cuts(writer: &mut Writer) -> Result<(), StoreError> {
    let cuts = writer.recovered_cuts().to_vec();
    if cuts.is_empty() {
        return Ok(());
    }
    for c in cuts {
        let subject = c.batch.as_ref().map(|b| b.0.clone()).unwrap_or_default();
        let detail = serde_json::to_value(&c).expect("cut serializes");
        let e = wiretrail_log::entry::new(
            wiretrail_log::entry::RECOVERY,
            wiretrail_log::store::now_ns(),
            "log",
            detail,
            Vec::new(),
        );
        writer.append(&[wiretrail_log::entry::leaf(e, &subject)])?;
    }
    writer.commit()?;
    Ok(())
}

/// Appends a `tls_reload` entry for each reload attempt (asynchronously:
/// the connection that noticed the change does not wait for it).
fn tls_entries(logger: crate::access::Logger) -> crate::tls::reload::Listener {
    let rt = tokio::runtime::Handle::current();
    Arc::new(move |event| {
        let detail = crate::tls::reload::entry_detail(&event);
        let e = wiretrail_log::entry::new(
            wiretrail_log::entry::TLS_RELOAD,
            wiretrail_log::store::now_ns(),
            "tls",
            detail,
            Vec::new(),
        );
        let logger = logger.clone();
        rt.spawn(async move {
            if let Err(e) = logger.append_entry(e).await {
                tracing::error!(error = %e, "tls_reload entry not stored");
            }
        });
    })
}

/// Reloads the TLS files on SIGHUP (always) and every 2 s when they changed,
/// so a new certificate is recorded even before the next connection.
fn spawn_tls_watch(tls: Arc<ReloadingServerConfig>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "no SIGHUP handler; TLS files are reloaded on change only"))
            .ok();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let tls = tls.clone();
            let _ = tokio::task::spawn_blocking(move || tls.check(force)).await;
        }
    })
}
