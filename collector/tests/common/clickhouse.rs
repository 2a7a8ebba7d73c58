//! ClickHouse servers for the clustered-mode tests, on loopback ports picked
//! here, in a temp dir, killed on drop: Debian's clickhouse-server 18.16 as
//! two replicas of one shard (cluster `wt`) with one ZooKeeper for
//! ReplicatedMergeTree. Missing binaries fail loudly (`cargo xtask setup`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_tcp(port: u16, what: &str, child: &mut Child) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(s)) = child.try_wait() {
            panic!("{what} exited ({s}) before listening on {port}");
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{what} did not listen on {port} within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One clickhouse-server replica.
pub struct Replica {
    pub http: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn start(&mut self) {
        let mut child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", self.config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server 18.16 missing: run `cargo xtask setup`");
        wait_tcp(self.http, "clickhouse-server", &mut child);
        self.child = Some(child);
    }

    /// SIGKILLs the replica.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (same data, same ports).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "replica still running");
        self.start();
    }
}

/// ZooKeeper + two replicas of one shard, cluster `wt`.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    zk: Child,
    pub replicas: Vec<Replica>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            r.kill();
        }
        let _ = self.zk.kill();
        let _ = self.zk.wait();
    }
}

fn zookeeper(dir: &Path) -> (Child, u16) {
    let port = free_port();
    let conf = dir.join("zoo.cfg");
    std::fs::write(
        &conf,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n",
            dir.join("zkdata").display()
        ),
    )
    .unwrap();
    let mut cp = vec!["/usr/share/java/zookeeper.jar".to_string()];
    for e in std::fs::read_dir("/usr/share/java").expect("/usr/share/java (zookeeper missing: run `cargo xtask setup`)")
    {
        let p = e.unwrap().path();
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        if ["zookeeper-jute", "slf4j-api", "netty-", "log4j", "commons-", "jline", "metrics-core", "snappy"]
            .iter()
            .any(|pre| n.starts_with(pre))
        {
            cp.push(p.display().to_string());
        }
    }
    assert!(Path::new("/usr/share/java/zookeeper.jar").exists(), "zookeeper missing: run `cargo xtask setup`");
    let mut child = Command::new("java")
        .args(["-Dzookeeper.admin.enableServer=false", "-cp", &cp.join(":")])
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java (for zookeeper) missing: run `cargo xtask setup`");
    wait_tcp(port, "zookeeper", &mut child);
    (child, port)
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let (zk, zk_port) = zookeeper(dir.path());
        let ports: Vec<(u16, u16, u16)> = (0..2).map(|_| (free_port(), free_port(), free_port())).collect();
        let remote: String = ports
            .iter()
            .map(|(_, tcp, _)| format!("<replica><host>127.0.0.1</host><port>{tcp}</port></replica>"))
            .collect();
        let mut replicas = Vec::new();
        for (i, (http, tcp, inter)) in ports.iter().enumerate() {
            let d = dir.path().join(format!("r{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = |s: &str| d.join(s).display().to_string() + "/";
            let config = d.join("config.xml");
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
                    err = d.join("err.log").display(),
                    data = p("data"),
                    tmp = p("tmp"),
                    uf = p("uf"),
                    fs = p("fs"),
                ),
            )
            .unwrap();
            let mut r = Replica { http: *http, config, child: None };
            r.start();
            replicas.push(r);
        }
        Cluster { dir, zk, replicas }
    }
}

/// Runs `sql` over HTTP against `url`; the body, or a panic with the server's error.
pub async fn sql(url: &str, sql: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "--data-binary", sql, url])
        .output()
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{sql}: {body} {}", String::from_utf8_lossy(&out.stderr));
    body
}

/// A modern engine: ClickHouse 26.9 from PyPI `chdb-core` (in the project
/// venv), serving HTTP and native from a clickhouse-local query
/// (`SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP` then a long sleeping
/// query) run in a folder whose config.xml sets the ports. No replication.
pub struct Modern {
    pub dir: tempfile::TempDir,
    pub http: u16,
    child: Child,
}

impl Modern {
    pub fn start() -> Modern {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
        assert!(python.exists(), "{} missing: run `cargo xtask setup` (chdb-core)", python.display());
        let dir = tempfile::tempdir().unwrap();
        let (http, tcp) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("config.xml"),
            format!(
                "<clickhouse><listen_host>127.0.0.1</listen_host><http_port>{http}</http_port><tcp_port>{tcp}</tcp_port></clickhouse>\n"
            ),
        )
        .unwrap();
        // The sleeping query keeps the servers up (at most ~3 days); the drop kills it.
        let script = "import chdb\nfrom chdb import _chdb\n_chdb.query('SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; \
                      SELECT sleep(3) FROM numbers(100000) SETTINGS max_block_size = 1', 'CSV')\n";
        let mut child = Command::new(python)
            .args(["-c", script])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_tcp(http, "chdb (clickhouse-local) HTTP", &mut child);
        Modern { dir, http, child }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for Modern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
