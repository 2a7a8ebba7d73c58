//! ClickHouse servers for the collector's clustered-mode tests and for
//! `cargo xtask bench collector --store clickhouse`, on loopback ports picked
//! here, in a temp dir, killed on drop:
//!
//! - [`Cluster`]: Debian's clickhouse-server 18.16 as N replicas of one shard
//!   (cluster `wt`) with one ZooKeeper, for ReplicatedMergeTree (and so
//!   `insert_quorum`);
//! - [`Modern`]: ClickHouse 26.9 from PyPI `chdb-core` (in the project venv),
//!   one server, no replication.
//!
//! Missing binaries are an error naming `cargo xtask setup`; every wait is
//! bounded (60 s for a server to listen).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's clickhouse-server (18.16).
pub const CLICKHOUSE_SERVER: &str = "/usr/sbin/clickhouse-server";
/// ZooKeeper's jar (Debian's zookeeper package).
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A program or file the server needs is not installed.
    #[error("{what} missing ({path}): run `cargo xtask setup`")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// Where it was looked for.
        path: String,
    },
    /// The process could not be spawned.
    #[error("starting {what}: {source} (run `cargo xtask setup`)")]
    Spawn {
        /// Which server.
        what: &'static str,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it listened.
    #[error("{what} exited ({status}) before listening on 127.0.0.1:{port}; its log ends:\n{log_tail}")]
    Exited {
        /// Which server.
        what: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The port it should have listened on.
        port: u16,
        /// The end of its log (the temp dir holding it is removed).
        log_tail: String,
    },
    /// The process did not listen in time.
    #[error("{what} did not listen on 127.0.0.1:{port} within {LISTEN_TIMEOUT:?}; its log ends:\n{log_tail}")]
    NotListening {
        /// Which server.
        what: &'static str,
        /// The port.
        port: u16,
        /// The end of its log (the temp dir holding it is removed).
        log_tail: String,
    },
    /// Writing the configuration or creating the temp dir failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A replica was restarted while still running.
    #[error("replica on HTTP port {0} is still running")]
    Running(u16),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// The last 2000 bytes of `log` (or why it cannot be read).
fn tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(b) => String::from_utf8_lossy(&b[b.len().saturating_sub(2000)..]).into_owned(),
        Err(e) => format!("({}: {e})", log.display()),
    }
}

/// Waits until `port` accepts connections, or `child` exits, or the timeout.
fn wait_tcp(port: u16, what: &'static str, child: &mut Child, log: &Path) -> Result<(), ServerError> {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ServerError::Exited { what, status, port, log_tail: tail(log) });
        }
        if t.elapsed() > LISTEN_TIMEOUT {
            kill(child);
            return Err(ServerError::NotListening { what, port, log_tail: tail(log) });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One clickhouse-server replica.
pub struct Replica {
    /// HTTP port.
    pub http: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Its HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn start(&mut self) -> Result<(), ServerError> {
        let mut child = Command::new(CLICKHOUSE_SERVER)
            .arg(format!("--config-file={}", self.config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ServerError::Spawn { what: "clickhouse-server 18.16", source })?;
        wait_tcp(self.http, "clickhouse-server", &mut child, &self.log)?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs the replica.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Starts it again (same data, same ports).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        if self.child.is_some() {
            return Err(ServerError::Running(self.http));
        }
        self.start()
    }
}

/// ZooKeeper + replicas of one shard, cluster `wt`.
pub struct Cluster {
    /// The servers' data and configuration (removed on drop).
    pub dir: tempfile::TempDir,
    zk: Child,
    /// The replicas, in the order of the cluster definition.
    pub replicas: Vec<Replica>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            r.kill();
        }
        kill(&mut self.zk);
    }
}

fn zookeeper(dir: &Path) -> Result<(Child, u16), ServerError> {
    if !Path::new(ZOOKEEPER_JAR).exists() {
        return Err(ServerError::Missing { what: "zookeeper", path: ZOOKEEPER_JAR.into() });
    }
    let port = free_port();
    let conf = dir.join("zoo.cfg");
    std::fs::write(
        &conf,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n",
            dir.join("zkdata").display()
        ),
    )
    .map_err(io("writing zoo.cfg"))?;
    let mut cp = vec![ZOOKEEPER_JAR.to_string()];
    for e in std::fs::read_dir("/usr/share/java").map_err(io("listing /usr/share/java"))? {
        let p = e.map_err(io("listing /usr/share/java"))?.path();
        let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if ["zookeeper-jute", "slf4j-api", "netty-", "log4j", "commons-", "jline", "metrics-core", "snappy"]
            .iter()
            .any(|pre| n.starts_with(pre))
        {
            cp.push(p.display().to_string());
        }
    }
    let log = dir.join("zookeeper.log");
    let out = std::fs::File::create(&log).map_err(io("creating zookeeper.log"))?;
    let err = out.try_clone().map_err(io("creating zookeeper.log"))?;
    let mut child = Command::new("java")
        .args(["-Dzookeeper.admin.enableServer=false", "-cp", &cp.join(":")])
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| ServerError::Spawn { what: "java (for zookeeper)", source })?;
    wait_tcp(port, "zookeeper", &mut child, &log)?;
    Ok((child, port))
}

impl Cluster {
    /// ZooKeeper and two replicas (what the collector's tests use).
    pub fn start() -> Result<Cluster, ServerError> {
        Cluster::with_replicas(2)
    }

    /// ZooKeeper and `n` replicas (at least 1) of one shard, cluster `wt`.
    pub fn with_replicas(n: usize) -> Result<Cluster, ServerError> {
        if !Path::new(CLICKHOUSE_SERVER).exists() {
            return Err(ServerError::Missing { what: "clickhouse-server 18.16", path: CLICKHOUSE_SERVER.into() });
        }
        let dir = tempfile::tempdir().map_err(io("creating a temp dir"))?;
        let (zk, zk_port) = zookeeper(dir.path())?;
        // From here on the drop stops ZooKeeper and the replicas started so far.
        let mut cluster = Cluster { dir, zk, replicas: Vec::new() };
        let ports: Vec<(u16, u16, u16)> = (0..n.max(1)).map(|_| (free_port(), free_port(), free_port())).collect();
        let remote: String = ports
            .iter()
            .map(|(_, tcp, _)| format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>"))
            .collect();
        for (i, (http, tcp, inter)) in ports.iter().enumerate() {
            let d = cluster.dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
            let p = |s: &str| d.join(s).display().to_string() + "/";
            let config = d.join("config.xml");
            let log = d.join("err.log");
            std::fs::write(
                &config,
                format!(
                    r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{log}</log><errorlog>{err}</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port><interserver_http_port>{inter}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{data}</path><tmp_path>{tmp}</tmp_path><user_files_path>{uf}</user_files_path>
  <format_schema_path>{fs}</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>01</shard><replica>r{i}</replica></macros>
  <remote_servers><wt><shard><internal_replication>true</internal_replication>{remote}</shard></wt></remote_servers>
</yandex>
"#,
                    log = d.join("server.log").display(),
                    err = log.display(),
                    data = p("data"),
                    tmp = p("tmp"),
                    uf = p("uf"),
                    fs = p("fs"),
                ),
            )
            .map_err(io(format!("writing {}", config.display())))?;
            let mut r = Replica { http: *http, config, log, child: None };
            r.start()?;
            cluster.replicas.push(r);
        }
        Ok(cluster)
    }
}

/// The project venv's Python (holding `chdb-core`), from this crate's place
/// in the workspace.
pub fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python")
}

/// A modern engine: ClickHouse 26.9 from PyPI `chdb-core` (in the project
/// venv), serving HTTP and native from a clickhouse-local query
/// (`SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP` then a long sleeping
/// query) run in a folder whose config.xml sets the ports. No replication.
pub struct Modern {
    /// The server's folder (data, config.xml, chdb.log; removed on drop).
    pub dir: tempfile::TempDir,
    /// HTTP port.
    pub http: u16,
    child: Child,
}

impl Modern {
    /// Starts the server and waits until it listens.
    pub fn start() -> Result<Modern, ServerError> {
        let python = venv_python();
        if !python.exists() {
            return Err(ServerError::Missing {
                what: "the project venv (chdb-core)",
                path: python.display().to_string(),
            });
        }
        let dir = tempfile::tempdir().map_err(io("creating a temp dir"))?;
        let (http, tcp) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("config.xml"),
            format!(
                "<clickhouse><listen_host>127.0.0.1</listen_host><http_port>{http}</http_port><tcp_port>{tcp}</tcp_port></clickhouse>\n"
            ),
        )
        .map_err(io("writing the chdb config.xml"))?;
        let log = dir.path().join("chdb.log");
        let out = std::fs::File::create(&log).map_err(io("creating chdb.log"))?;
        let err = out.try_clone().map_err(io("creating chdb.log"))?;
        // The sleeping query keeps the servers up (at most ~3 days); the drop kills it.
        let script = "import chdb\nfrom chdb import _chdb\n_chdb.query('SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; \
                      SELECT sleep(3) FROM numbers(100000) SETTINGS max_block_size = 1', 'CSV')\n";
        let mut child = Command::new(python)
            .args(["-c", script])
            .current_dir(dir.path())
            // clickhouse-local keeps its data in a folder under the temp
            // directory, removed only on a clean exit: under ours, the drop
            // removes it after the kill (else 200 MB stayed in /tmp per run).
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ServerError::Spawn { what: "python (chdb)", source })?;
        wait_tcp(http, "chdb (clickhouse-local) HTTP", &mut child, &log)?;
        Ok(Modern { dir, http, child })
    }

    /// Its HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for Modern {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
