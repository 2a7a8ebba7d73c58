//! TLS test peers: a self-signed certificate, nginx over HTTPS, Go clients
//! built with Debian's Go, and a rustls client and server built with cargo.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// A self-signed certificate for 127.0.0.1/localhost in `dir`: (cert, key).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// Source of a Go HTTPS client: GET `https://ADDR/index.html`, print the body.
const GO_CLIENT: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	// TLS linked into a new binary is hooked when the agent sees the exec
	// (~100 ms); a real service lives longer than that.
	time.Sleep(500 * time.Millisecond)
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: false, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	c := &http.Client{Transport: tr}
	resp, err := c.Get("https://" + os.Args[1] + "/index.html")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(b)
}
"#;

/// Builds the Go client into `dir` (stripped of its symbol table if `strip`).
/// The Go build cache lives under the workspace's `target/` so reruns are fast.
pub fn build_go_client(dir: &Path, strip: bool) -> PathBuf {
    std::fs::write(dir.join("main.go"), GO_CLIENT).unwrap();
    std::fs::write(dir.join("go.mod"), "module wtclient\n\ngo 1.19\n").unwrap();
    let bin = dir.join(if strip { "go-https-client-stripped" } else { "go-https-client" });
    let cache = crate::target_bin_dir().parent().map(|t| t.join("go-cache")).unwrap_or_else(|| dir.join("cache"));
    let mut cmd = Command::new("go");
    cmd.arg("build").arg("-o").arg(&bin);
    if strip {
        cmd.arg("-ldflags=-s -w");
    }
    let out = cmd
        .arg(".")
        .current_dir(dir)
        .env("GOCACHE", &cache)
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go (apt-get install golang-go)");
    assert!(out.status.success(), "go build: {}", String::from_utf8_lossy(&out.stderr));
    bin
}

/// nginx serving TLS on a free loopback port (its address), and the Go client
/// built into `dir`.
pub fn nginx_and_go_client(dir: &Path) -> (std::net::SocketAddr, crate::nginx::Nginx, PathBuf) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse().unwrap();
    let nginx = crate::nginx::Nginx::start_tls(&[addr]);
    (addr, nginx, build_go_client(dir, false))
}

/// Runs the Go client built by [`build_go_client`] against `addr` (nginx
/// serving [`crate::nginx::INDEX`]), asserts it got the page, and returns its pid.
pub fn run_go_client(bin: &Path, addr: &str) -> u32 {
    let c = Command::new(bin).arg(addr).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = c.id();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{} failed", bin.display());
    assert_eq!(out.stdout, crate::nginx::INDEX);
    pid
}

/// Builds `tests/peers/rustls-peer` (a rustls client and server) in release,
/// as a user's program is built, from the crates the workspace already
/// fetched; its own target directory, `target/rustls-peer`, keeps reruns
/// fast. Returns the binary.
pub fn build_rustls_peer() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = tests.join("peers/rustls-peer");
    let target = tests.parent().expect("workspace root").join("target/rustls-peer");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--offline", "--locked", "--quiet", "--manifest-path"])
        .arg(src.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo");
    assert!(out.status.success(), "cargo build of the rustls peer: {}", String::from_utf8_lossy(&out.stderr));
    target.join("release/rustls-peer")
}
