//! Debian's nginx started on private ports with its own config in a temp dir.
use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::wait_until;

/// A running nginx (master in the foreground); stopped on drop.
pub struct Nginx {
    child: Child,
    /// Config, document root, logs and temp paths.
    pub dir: tempfile::TempDir,
    /// Addresses it listens on.
    pub listen: Vec<SocketAddr>,
}

/// The body served at `/index.html`.
pub const INDEX: &[u8] =
    b"<html><body>wiretrail capture test: the quick brown fox jumps over the lazy dog</body></html>\n";

impl Nginx {
    /// Starts nginx listening on every address in `listen`, optionally inside
    /// network namespace `netns`, and waits until it accepts connections.
    pub fn start(listen: &[SocketAddr], netns: Option<&str>) -> Nginx {
        Self::start_with(listen, netns, 1)
    }

    pub fn start_with(listen: &[SocketAddr], netns: Option<&str>, workers: u32) -> Nginx {
        Self::start_inner(listen, netns, workers, None)
    }

    /// nginx over HTTPS with a self-signed certificate (see `tls::self_signed`).
    pub fn start_tls(listen: &[SocketAddr]) -> Nginx {
        let certs = tempfile::tempdir().expect("tempdir");
        let (cert, key) = crate::tls::self_signed(certs.path());
        // nginx reads the certificate files at start; the directory may go after.
        Self::start_inner(listen, None, 1, Some((cert, key)))
    }

    fn start_inner(
        listen: &[SocketAddr],
        netns: Option<&str>,
        workers: u32,
        tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("www")).unwrap();
        std::fs::write(d.join("www/index.html"), INDEX).unwrap();
        let ssl = if tls.is_some() { " ssl" } else { "" };
        let mut listens: String = listen.iter().map(|a| format!("    listen {a}{ssl};\n")).collect();
        if let Some((cert, key)) = &tls {
            listens.push_str(&format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n",
                cert.display(),
                key.display()
            ));
        }
        let conf = format!(
            "user root;\nworker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  keepalive_requests 1000000;\n\
             \n  server {{\n{listens}    root {d}/www;\n    location /upload {{ client_max_body_size 16m; client_body_buffer_size 16m; return 200 \"uploaded\\n\"; }}\n  }}\n}}\n",
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nginx"]);
                c
            }
            None => Command::new("nginx"),
        };
        let child = cmd
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (apt-get install nginx-light; `cargo xtask setup` does it)");
        let nginx = Nginx { child, dir, listen: listen.to_vec() };
        if netns.is_none() {
            let up = wait_until(Duration::from_secs(10), || listen.iter().all(|a| TcpStream::connect(a).is_ok()));
            assert!(up, "nginx did not start:\n{}", nginx.error_log());
        } else {
            let pid = nginx.dir.path().join("nginx.pid");
            assert!(
                wait_until(Duration::from_secs(10), || pid.exists()),
                "nginx did not start:\n{}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: fast shutdown of master and workers.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if !wait_until(Duration::from_secs(10), || self.child.try_wait().ok().flatten().is_some()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
