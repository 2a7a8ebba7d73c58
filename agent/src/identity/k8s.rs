//! Kubernetes enrichment: a watcher of the pods on this node (field selector
//! `spec.nodeName=<node>`, list + watch, reconnecting with backoff) feeding the
//! [`PodIndex`]. API errors are logged and counted (`kube_api_errors`), never
//! fatal: identities simply lack pod fields until the index fills.
use std::{path::PathBuf, pin::pin, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio_util::sync::CancellationToken;

use super::pods::PodIndex;
use crate::{cli::RunArgs, metrics::Metrics};

/// How to reach the API server and which node's pods to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// A kubeconfig file; without it, the in-cluster service account (or the
    /// usual `KUBECONFIG` / `~/.kube/config` inference).
    pub kubeconfig: Option<PathBuf>,
    pub node: String,
}

impl KubeOptions {
    /// Enrichment is on with `--kube`, or when running in a cluster
    /// (`KUBERNETES_SERVICE_HOST` set). The node defaults to the host name
    /// (kubelet's default node name).
    pub fn from_args(args: &RunArgs, in_cluster: bool) -> Option<KubeOptions> {
        (args.kube || in_cluster).then(|| KubeOptions {
            kubeconfig: args.kubeconfig.clone(),
            node: args.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
            }),
        })
    }

    /// The field selector of the pod watch.
    pub fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }
}

/// Starts the pod watcher when enrichment is on; the index it fills.
pub fn start(args: &RunArgs, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Option<Arc<PodIndex>> {
    let opts = KubeOptions::from_args(args, std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())?;
    tracing::info!(node = %opts.node, kubeconfig = ?opts.kubeconfig, "watching this node's pods for workload identity");
    let index = Arc::new(PodIndex::default());
    tokio::spawn(run(opts, index.clone(), metrics, shutdown));
    Some(index)
}

async fn client(opts: &KubeOptions) -> anyhow::Result<Client> {
    let config = match &opts.kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Keeps `index` equal to the node's pods until `shutdown`.
pub async fn run(opts: KubeOptions, index: Arc<PodIndex>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let client = loop {
        match client(&opts).await {
            Ok(c) => break c,
            Err(e) => {
                metrics.kube_api_errors.inc();
                tracing::error!(error = %e, "Kubernetes client configuration; records carry no pod identity (retrying in 30 s)");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&opts.field_selector());
    let mut stream = pin!(watcher(api, config).default_backoff());
    // A (re)list: pods are applied as they come and the complete list then
    // replaces the index (dropping pods deleted while the watch was down).
    let mut listed: Vec<Pod> = Vec::new();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else {
            tracing::error!("the pod watch ended; records carry no further pod changes");
            return;
        };
        match ev {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(p)) => {
                index.apply(&p);
                listed.push(p);
            }
            Ok(watcher::Event::InitDone) => {
                index.replace_all(&listed);
                listed.clear();
                tracing::info!(pods = index.len(), "pod list loaded");
            }
            Ok(watcher::Event::Apply(p)) => {
                metrics.kube_pod_events.inc();
                index.apply(&p);
            }
            Ok(watcher::Event::Delete(p)) => {
                metrics.kube_pod_events.inc();
                index.delete(&p);
            }
            Err(e) => {
                metrics.kube_api_errors.inc();
                tracing::warn!(error = %e, "pod watch error; retrying with backoff");
            }
        }
        metrics.kube_pods.set(index.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;
    use wiretrail_tests::kube_api::{FakeKubeApi, pod};

    use super::*;

    const C1: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const C2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn watcher_follows_the_api_server() {
        let api = FakeKubeApi::start();
        api.set_pods(vec![pod("web-1", "shop", "uid-1", "node-a", "10.244.0.5", &[C1], json!({"app": "web"}))]);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path());
        let opts = KubeOptions { kubeconfig: Some(kubeconfig), node: "node-a".into() };
        let index = Arc::new(PodIndex::default());
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(opts, index.clone(), metrics.clone(), shutdown.clone()));

        until("the listed pod", || index.by_container(C1).is_some()).await;
        let p = index.by_container(C1).unwrap();
        assert_eq!((p.name.as_str(), p.namespace.as_str(), p.node.as_str()), ("web-1", "shop", "node-a"));
        assert_eq!(p.service_account, "sa-web-1");
        assert_eq!(p.labels["app"], "web");
        assert_eq!(p.ips, vec!["10.244.0.5".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(index.by_ip("10.244.0.5".parse().unwrap()).unwrap().uid, "uid-1");

        until("the watch request", || api.requests().iter().any(|r| r.contains("watch=true"))).await;
        api.event("ADDED", pod("db-1", "shop", "uid-2", "node-a", "10.244.0.6", &[C2], json!({"app": "db"})));
        until("the added pod", || index.by_container(C2).is_some()).await;
        api.event(
            "MODIFIED",
            pod("web-1", "shop", "uid-1", "node-a", "10.244.0.5", &[C1], json!({"app": "web", "v": "2"})),
        );
        until("the label change", || index.by_container(C1).is_some_and(|p| p.labels.contains_key("v"))).await;
        // Another node's pod never reaches this node's index.
        const C3: &str = "aaaabbbbccccddddeeeeffff00001111aaaabbbbccccddddeeeeffff00001111";
        api.event("ADDED", pod("far-1", "shop", "uid-3", "node-b", "10.244.7.7", &[C3], json!({})));
        api.event("DELETED", pod("db-1", "shop", "uid-2", "node-a", "10.244.0.6", &[C2], json!({"app": "db"})));
        until("the deletion", || index.by_container(C2).is_none()).await;
        assert_eq!(index.len(), 1);
        assert!(index.by_container(C3).is_none());
        assert!(metrics.kube_pod_events.get() >= 3);
        assert_eq!(metrics.kube_pods.get(), 1);

        // Every request asked for this node's pods only.
        let reqs = api.requests();
        assert!(reqs.len() >= 2, "{reqs:?}");
        for r in &reqs {
            assert!(r.starts_with("GET /api/v1/pods?"), "{r}");
            assert!(r.contains("fieldSelector=spec.nodeName%3Dnode-a"), "{r}");
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("watcher stops").unwrap();
    }

    #[tokio::test]
    async fn api_errors_are_counted_not_fatal() {
        // Nothing listens on the kubeconfig's server.
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let kubeconfig = wiretrail_tests::kube_api::write_kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"));
        let opts = KubeOptions { kubeconfig: Some(kubeconfig), node: "node-a".into() };
        let index = Arc::new(PodIndex::default());
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(opts, index.clone(), metrics.clone(), shutdown.clone()));
        until("an API error", || metrics.kube_api_errors.get() >= 1).await;
        assert!(!task.is_finished(), "errors never stop the watcher");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("watcher stops").unwrap();
    }

    #[test]
    fn enabled_by_flag_or_cluster() {
        use clap::Parser as _;
        let cli = |a: &[&str]| crate::cli::Cli::parse_from([&["wiretrail-agent"], a].concat()).run;
        assert_eq!(KubeOptions::from_args(&cli(&[]), false), None);
        let o = KubeOptions::from_args(&cli(&["--kube", "--node-name", "n1"]), false).unwrap();
        assert_eq!(o.field_selector(), "spec.nodeName=n1");
        let o = KubeOptions::from_args(&cli(&["--node-name", "n2", "--kubeconfig", "/k"]), true).unwrap();
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(o.node, "n2");
    }
}
