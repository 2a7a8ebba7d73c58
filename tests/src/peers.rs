//! Third-party servers and clients the protocol tests talk to, each started on
//! a private loopback port in its own temp dir and stopped on drop:
//! PostgreSQL (`initdb` + `pg_ctl` as the `postgres` user), redis-server,
//! dnsmasq as a DNS server, and Python scripts run with the venv `cargo xtask
//! setup` creates at `target/pyvenv` (grpcio, simplefix).
use std::{
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::wait_until;

/// A child process stopped with SIGTERM (then SIGKILL) on drop; its stdout and
/// stderr go to a log file in its directory.
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e} (run `cargo xtask setup`)"));
        Proc { child: Some(child), log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits up to `timeout` for the process to exit by itself; panics with its
    /// log otherwise or on a non-zero exit.
    pub fn wait_success(&mut self, timeout: Duration) {
        let c = self.child.as_mut().expect("running");
        let done = wait_until(timeout, || c.try_wait().ok().flatten().is_some());
        assert!(done, "{:?} did not finish within {timeout:?}:\n{}", c.id(), self.log());
        let status = c.wait().expect("wait");
        assert!(status.success(), "process exited with {status}:\n{}", self.log());
        self.child = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if !wait_until(Duration::from_secs(10), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_tcp(port: u16, what: &str, log: impl Fn() -> String) {
    let up = wait_until(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "{what} did not listen on 127.0.0.1:{port}:\n{}", log());
}

/// Runs `cmd` to completion, panicking with its output on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e} (run `cargo xtask setup`)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Debian's PostgreSQL binaries (`/usr/lib/postgresql/<major>/bin`), newest first.
fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql (apt-get install postgresql; `cargo xtask setup` does it)")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("{name} not found under /usr/lib/postgresql/*/bin"))
}

/// A PostgreSQL cluster in a temp dir owned by `postgres`, listening on
/// 127.0.0.1:`port` with trust authentication; stopped on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Postgres {
    /// Trust authentication for every connection.
    pub fn start() -> Postgres {
        Postgres::start_auth(None)
    }

    /// With `Some(password)`: TCP logins as `postgres` need that password,
    /// sent in clear in a PasswordMessage (`password` method); local socket
    /// logins are trusted.
    pub fn start_auth(password: Option<&str>) -> Postgres {
        let dir = tempfile::Builder::new().prefix("wiretrail-pg").tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        run_ok(Command::new("chown").arg("postgres:postgres").arg(dir.path()));
        let data = dir.path().join("data");
        let mut initdb = Command::new("runuser");
        initdb.args(["-u", "postgres", "--"]).arg(pg_bin("initdb"));
        match password {
            None => initdb.args(["-A", "trust"]),
            Some(pw) => {
                let file = dir.path().join("pwfile");
                std::fs::write(&file, format!("{pw}\n")).unwrap();
                run_ok(Command::new("chown").arg("postgres:postgres").arg(&file));
                initdb.args(["--auth-local=trust", "--auth-host=password", "--pwfile"]).arg(file)
            }
        };
        run_ok(initdb.args(["-U", "postgres", "--no-sync", "-D"]).arg(&data));
        let port = crate::free_port();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c logging_collector=off",
            dir.path().display()
        );
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &opts, "-w", "-t", "30", "start"]),
        );
        let pg = Postgres { dir, port };
        wait_tcp(port, "postgres", || pg.log());
        pg
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// redis-server on 127.0.0.1:`port`, no persistence.
pub struct Redis {
    pub proc: Proc,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra);
        let proc = Proc::spawn(cmd, &dir.path().join("redis.log"));
        wait_tcp(port, "redis-server", || proc.log());
        Redis { proc, _dir: dir, port }
    }
}

/// dnsmasq answering `name` A `ip` on 127.0.0.1:`port` (UDP), with no
/// upstream, hosts file or other config.
pub struct Dnsmasq {
    pub proc: Proc,
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl Dnsmasq {
    pub fn start(name: &str, ip: &str) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
            .args(["--bind-interfaces", "--listen-address=127.0.0.1", "--except-interface=nonexistent0"])
            .arg(format!("--port={port}"))
            .arg(format!("--host-record={name},{ip}"))
            .arg(format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()))
            .arg("--user=root");
        let proc = Proc::spawn(cmd, &dir.path().join("dnsmasq.log"));
        let mut d = Dnsmasq { proc, _dir: dir, port };
        // Ready once it answers (UDP: poll with dig).
        let ok = wait_until(Duration::from_secs(15), || {
            !d.proc.exited()
                && Command::new("dig")
                    .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+tries=1", "+time=1", name, "A"])
                    .output()
                    .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == ip)
        });
        assert!(ok, "dnsmasq did not answer on 127.0.0.1:{port}:\n{}", d.proc.log());
        d
    }
}

/// The venv's Python (`target/pyvenv/bin/python`, made by `cargo xtask setup`).
pub fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    assert!(
        p.is_file(),
        "{} missing: run `cargo xtask setup` (it creates the venv with grpcio and simplefix)",
        p.display()
    );
    p
}
