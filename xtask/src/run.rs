//! `cargo xtask run`: the main job on this host. Installs what is missing, builds
//! in release mode, creates a local CA and certificates (`.wiretrail/certs`),
//! starts the collector on its embedded store (`.wiretrail/data`, mTLS on
//! 127.0.0.1:7443) and the agent capturing every conversation on this host and
//! shipping to it, and prints each record as it is captured. A local nginx on a
//! private loopback port is curled every few seconds so records appear on a
//! quiet machine too. On Ctrl-C it stops both and prints what the collector
//! stored and the result of `wiretrail verify`.
use std::{
    net::SocketAddr,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use wiretrail_tests::{free_port, nginx::Nginx};

use crate::util::{cargo, root};

#[derive(clap::Args)]
pub struct Args {
    /// Skip `setup`.
    #[arg(long)]
    pub no_setup: bool,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Do not start the local nginx and its curl loop.
    #[arg(long)]
    pub no_demo_traffic: bool,
    /// Agent output format: `text` (one readable line per record) or `jsonl`.
    #[arg(long, default_value = "text")]
    pub output: String,
}

/// Set by SIGINT: xtask outlives Ctrl-C long enough to stop its children cleanly.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // A handler (not SIG_IGN) so that children still get the default disposition.
    // SAFETY: the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    if !args.no_setup {
        crate::setup::run(&crate::setup::Args { check: false })?;
    }
    anyhow::ensure!(crate::util::is_root(), "the agent loads eBPF programs: run `cargo xtask run` as root");
    cargo(&["build", "--release", "-p", "wiretrail-agent", "-p", "wiretrail-collector"])?;
    let agent_bin = root().join("target/release/wiretrail-agent");
    let wiretrail = root().join("target/release/wiretrail");
    let state = root().join(".wiretrail");
    let certs = state.join("certs");
    if !certs.join("ca.pem").exists() {
        crate::certs::generate(&certs, &["agent", "security"])?;
        eprintln!("run: local CA and certificates in {}", certs.display());
    }
    // Roles by name too, so certificates made before they carried roles keep
    // working (and the agent id stays with its certificate's name).
    let roles = state.join("roles.yaml");
    if !roles.exists() {
        std::fs::write(
            &roles,
            "version: 1\nidentities:\n  - identity: \"CN=agent; *\"\n    agent_ids: [agent]\n    roles: [agent]\n  \
             - identity: \"CN=security; *\"\n    roles: [reviewer, auditor]\n",
        )?;
    }
    let listen = "127.0.0.1:7443";
    let mut collector = Command::new(&wiretrail)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(state.join("data"))
        .arg("--roles")
        .arg(&roles)
        .arg("--tls-dir")
        .arg(&certs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(state.join("collector.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", wiretrail.display()))?;
    let up = wiretrail_tests::wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(listen).is_ok());
    anyhow::ensure!(up, "the collector did not start; see {}", state.join("collector.log").display());
    eprintln!(
        "run: collector on {listen}, data in {}, log in {}",
        state.join("data").display(),
        state.join("collector.log").display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut demo = None;
    let mut pinger = None;
    if !args.no_demo_traffic {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        demo = Some(Nginx::start(&[addr], None));
        let stop = stop.clone();
        pinger = Some(std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            while !stop.load(Ordering::Relaxed) {
                let _ =
                    Command::new("curl").args(["-s", "-o", "/dev/null", &format!("http://{addr}/index.html")]).status();
                for _ in 0..30 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
        eprintln!("run: demo nginx on http://{addr}/ (curled every 3 s)");
    }
    eprintln!("run: starting {} (Ctrl-C to stop)", agent_bin.display());
    let mut child = Command::new(&agent_bin)
        .args(["--output", &args.output])
        .args(["--collector", &format!("https://{listen}"), "--agent-id", "agent", "--tls-dir"])
        .arg(&certs)
        .arg("--spool-dir")
        .arg(state.join("spool"))
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if INTERRUPTED.load(Ordering::Relaxed)
            || args.duration.is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
        {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break Some(child.wait()?);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = pinger {
        let _ = p.join();
    }
    drop(demo);
    // What reached the collector, then verify its log against its checkpoints.
    let stored = Command::new(&wiretrail)
        .args(["query", "--json", "--server", listen, "--tls-dir"])
        .arg(&certs)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with('{')).count())
        .unwrap_or(0);
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    let _ = collector.wait();
    let verify = Command::new(&wiretrail).arg("verify").arg("--data-dir").arg(state.join("data")).output()?;
    eprintln!("run: the collector holds {stored} records (query limit applies); wiretrail verify:");
    eprint!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    match status {
        Some(st) if st.success() || st.signal_is_interrupt() => Ok(()),
        Some(st) => anyhow::bail!("agent exited with {st}"),
        None => Ok(()),
    }
}

trait InterruptExt {
    fn signal_is_interrupt(&self) -> bool;
}

impl InterruptExt for std::process::ExitStatus {
    fn signal_is_interrupt(&self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        self.signal() == Some(libc::SIGINT)
    }
}
