//! Test workloads: processes placed in cgroups of our own (and, optionally, in
//! a network namespace), like containers are.
use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` or, on hybrid
/// hosts, `/sys/fs/cgroup/unified`).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup v2 mount")
}

/// A cgroup `/<parent>/<name>` of our own; its processes are killed and the
/// directories removed on drop.
pub struct Cgroup {
    /// Absolute directory.
    pub dir: PathBuf,
    /// Path relative to the cgroup v2 root (what policies and records name).
    pub path: String,
    /// The parent we created (removed when empty).
    parent: PathBuf,
}

impl Cgroup {
    pub fn new(parent: &str, name: &str) -> Cgroup {
        let root = cgroup2_root();
        let parent = root.join(parent);
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        let path = format!("/{}", dir.strip_prefix(&root).unwrap().display());
        Cgroup { dir, path, parent }
    }

    /// Runs `program args` in this cgroup (and in network namespace `netns`):
    /// a shell moves itself in, then execs the program.
    pub fn command(&self, netns: Option<&str>, program: &str, args: &[&str]) -> Command {
        let mut script = format!("echo $$ > {} && exec ", self.dir.join("cgroup.procs").display());
        if let Some(ns) = netns {
            script.push_str(&format!("ip netns exec {ns} "));
        }
        script.push_str("\"$@\"");
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).arg("sh").arg(program).args(args);
        c
    }

    fn kill_all(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            if procs.trim().is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// A TCP echo server on several ports (all IPv4 and IPv6 addresses), in Python. It prints
/// `listening` once every port is bound and listening.
pub const ECHO_SERVER: &str = r#"
import socket, sys, threading
def echo(c):
    with c:
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
def listen(family, addr, port):
    s = socket.socket(family)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(64)
    return s
def serve(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
ports = [int(p) for p in sys.argv[1:]]
listeners = [listen(socket.AF_INET, "0.0.0.0", p) for p in ports]
listeners += [listen(socket.AF_INET6, "::", p) for p in ports]
# Every port is bound and listening before the server says so.
print("listening", flush=True)
for s in listeners[1:]:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
serve(listeners[0])
"#;

/// A TCP client: connects to argv[1]:argv[2] (IPv4 or IPv6), then for each
/// line on stdin sends it and prints `ok <echo>`; prints `err <errno>` and
/// exits 1 if the connection fails (`err 110`, ETIMEDOUT, when nothing answers
/// within 3 s). Without stdin lines (`once`), sends one ping.
pub const ECHO_CLIENT: &str = r#"
import errno, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
except socket.timeout:
    print("err", errno.ETIMEDOUT, flush=True)
    sys.exit(1)
except OSError as e:
    print("err", e.errno, flush=True)
    sys.exit(1)
print("connected", flush=True)
lines = ["ping\n"] if len(sys.argv) > 3 and sys.argv[3] == "once" else sys.stdin
for line in lines:
    try:
        s.sendall(line.encode())
        print("ok", s.recv(4096).decode().strip(), flush=True)
    except OSError as e:
        print("err", e.errno, flush=True)
        sys.exit(1)
"#;

/// Runs a one-shot echo client in `cg`/`netns`: Ok(()) if it got its echo,
/// Err(errno) if connect failed (`err 1` is EPERM).
pub fn connect_once(cg: &Cgroup, netns: Option<&str>, host: &str, port: u16) -> Result<(), i32> {
    let out = cg
        .command(netns, "python3", &["-c", ECHO_CLIENT, host, &port.to_string(), "once"])
        .stdin(Stdio::null())
        .output()
        .expect("run python3 client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.lines().any(|l| l == "ok ping") {
        return Ok(());
    }
    let errno = text.lines().find_map(|l| l.strip_prefix("err ")).and_then(|e| e.trim().parse().ok());
    Err(errno.unwrap_or_else(|| {
        panic!("client neither echoed nor failed cleanly: {text} {}", String::from_utf8_lossy(&out.stderr))
    }))
}

/// A long-lived echo client: one connection, one round trip per `roundtrip`.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    pub fn open(cg: &Cgroup, netns: Option<&str>, host: &str, port: u16) -> Session {
        let mut child = cg
            .command(netns, "python3", &["-c", ECHO_CLIENT, host, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 client");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("client output");
        assert_eq!(line.trim(), "connected", "session did not connect");
        Session { child, stdin, stdout }
    }

    /// Sends `msg` and returns the client's report (`ok <msg>` on success).
    pub fn roundtrip(&mut self, msg: &str) -> String {
        writeln!(self.stdin, "{msg}").expect("write to client");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("client output");
        line.trim().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process kept running in `cg`/`netns` (killed on drop).
pub struct Running(pub Child);

impl Running {
    pub fn start(cg: &Cgroup, netns: Option<&str>, program: &str, args: &[&str]) -> Running {
        let mut child = cg
            .command(netns, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        if program == "python3" {
            // The echo server says when it listens.
            let mut line = String::new();
            BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).expect("server output");
            assert_eq!(line.trim(), "listening");
        }
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one UDP datagram from `cg`/`netns` with sendto() (IPv4 or IPv6): Ok(()) if sent,
/// Err(errno) if refused (`1` is EPERM).
pub fn udp_send_once(cg: &Cgroup, netns: Option<&str>, host: &str, port: u16) -> Result<(), i32> {
    const SCRIPT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    print("sent", flush=True)
except OSError as e:
    print("err", e.errno, flush=True)
"#;
    let out = cg.command(netns, "python3", &["-c", SCRIPT, host, &port.to_string()]).output().expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.trim() == "sent" {
        return Ok(());
    }
    Err(text.trim().strip_prefix("err ").and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("udp sender: {text}")))
}
