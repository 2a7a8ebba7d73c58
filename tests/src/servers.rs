//! Database and broker servers shared by the tests of one test binary:
//! Debian's mariadb-server, rabbitmq-server, nats-server and mosquitto, each
//! started once (on first use) on a loopback port it picks, with its data in
//! a temp dir, and stopped when the test binary exits (an `atexit` hook:
//! statics are never dropped). Every wait is bounded.
//!
//! Credentials: MariaDB user `trader` / [`PASSWORD`] owning database
//! `ledger`; NATS and mosquitto user `trader` / [`PASSWORD`]; RabbitMQ's
//! default `guest` / `guest` (allowed from loopback only).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use crate::{
    free_port,
    peers::{run_ok, wait_tcp},
    wait_until,
};

/// The password of the `trader` user on every server (the tests check it
/// never shows up in parsed fields).
pub const PASSWORD: &str = "s3cret-pw-8271";

type Cleanup = Box<dyn FnOnce() + Send>;

static CLEANUPS: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

extern "C" fn run_cleanups() {
    let all = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for f in all.into_iter().rev() {
        f();
    }
}

/// Runs `f` when the test binary exits (in reverse order of registration).
fn at_exit(f: Cleanup) {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        // SAFETY: registers a plain function; it runs once at exit.
        unsafe { libc::atexit(run_cleanups) };
    });
    CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()).push(f);
}

/// Spawns `cmd` in its own process group with output to `log`; the group is
/// stopped (SIGTERM, then SIGKILL after 20 s) and `dir` removed at exit.
fn spawn(mut cmd: Command, log: &Path, dir: &Path) -> u32 {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let child: Child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e} (run `cargo xtask setup`)"));
    let pid = child.id();
    let dir = dir.to_path_buf();
    at_exit(Box::new(move || {
        let mut child = child;
        // SAFETY: signals to the process group we created.
        unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
        if !wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten().is_some()) {
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }));
    pid
}

fn log_of(path: PathBuf) -> impl Fn() -> String {
    move || std::fs::read_to_string(&path).unwrap_or_default()
}

fn temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("tempdir").keep()
}

/// A running server: its loopback port and directory.
pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    pub pid: u32,
}

/// MariaDB with database `ledger` (table `orders`) and user `trader`.
pub fn mariadb() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = temp_dir("wiretrail-mariadb");
        let data = dir.join("data");
        run_ok(
            Command::new("mariadb-install-db")
                .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"])
                .arg(format!("--datadir={}", data.display())),
        );
        let port = free_port();
        let sock = dir.join("mysqld.sock");
        let mut cmd = Command::new("/usr/sbin/mariadbd");
        cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
            .arg(format!("--port={port}"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()));
        let pid = spawn(cmd, &dir.join("mariadbd.log"), &dir);
        wait_tcp(port, "mariadbd", log_of(dir.join("mariadbd.log")));
        let sql = format!(
            "CREATE DATABASE ledger; CREATE USER 'trader'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON ledger.* TO 'trader'@'%'; \
             CREATE TABLE ledger.orders (clordid VARCHAR(32), qty INT, px DECIMAL(12,4));"
        );
        run_ok(Command::new("mariadb").args(["--no-defaults", "-u", "root", "-S"]).arg(&sock).args(["-e", &sql]));
        Server { port, dir, pid }
    })
}

/// RabbitMQ with its own epmd (Erlang port mapper) on a private port, its
/// node name, cookie (HOME), database and logs in a temp dir. Erlang takes
/// tens of seconds to boot: the wait is bounded at 120 s.
pub fn rabbitmq() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = temp_dir("wiretrail-rabbitmq");
        let epmd_port = free_port();
        let mut epmd = Command::new("epmd");
        epmd.args(["-port", &epmd_port.to_string()]).env("HOME", &dir);
        spawn(epmd, &dir.join("epmd.log"), &dir);
        wait_tcp(epmd_port, "epmd", log_of(dir.join("epmd.log")));
        let (port, dist) = (free_port(), free_port());
        let node = format!("wiretrail{port}@localhost");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let mut cmd = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        cmd.env("HOME", &dir)
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"));
        let pid = spawn(cmd, &dir.join("rabbitmq.log"), &dir);
        let log = log_of(dir.join("rabbitmq.log"));
        let up = wait_until(Duration::from_secs(120), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "rabbitmq-server did not listen on 127.0.0.1:{port} within 120 s:\n{}", log());
        Server { port, dir, pid }
    })
}

/// nats-server with user `trader`.
pub fn nats() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = temp_dir("wiretrail-nats");
        let port = free_port();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "--user", "trader", "--pass", PASSWORD]);
        let pid = spawn(cmd, &dir.join("nats.log"), &dir);
        wait_tcp(port, "nats-server", log_of(dir.join("nats.log")));
        Server { port, dir, pid }
    })
}

/// mosquitto with a password file holding user `trader`, no persistence.
pub fn mosquitto() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = temp_dir("wiretrail-mosquitto");
        let passwd = dir.join("passwd");
        run_ok(Command::new("mosquitto_passwd").args(["-b", "-c"]).arg(&passwd).args(["trader", PASSWORD]));
        let port = free_port();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nuser root\npersistence false\nlog_dest stderr\n",
            passwd.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut cmd = Command::new("mosquitto");
        cmd.arg("-c").arg(dir.join("mosquitto.conf"));
        let pid = spawn(cmd, &dir.join("mosquitto.log"), &dir);
        wait_tcp(port, "mosquitto", log_of(dir.join("mosquitto.log")));
        Server { port, dir, pid }
    })
}
