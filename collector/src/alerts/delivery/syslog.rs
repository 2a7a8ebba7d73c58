//! Syslog destination: each alert is one RFC 5424 message over TCP (or TLS,
//! RFC 5425, with a CA file), framed by octet counting (RFC 6587 3.4.1:
//! `<length> <message>`).
//!
//! The message: `<PRI>1 TIMESTAMP HOSTNAME wiretrail PROCID KIND
//! [wiretrail@32473 id=".." kind=".." severity=".." identity=".." leaf=".."]
//! BOM{alert JSON}`; facility 13 (log audit); severity high → 3 (error),
//! medium → 4 (warning), low → 5 (notice). TCP gives no application ack: a
//! message counts as delivered once written and flushed; a write error
//! reconnects and resends it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use wiretrail_proto::v1::Alert;

use super::{DeliveryError, Sink};

/// The private enterprise number of the structured data id (32473: reserved for documentation, RFC 5612).
pub const SD_ID: &str = "wiretrail@32473";
/// Facility "log audit".
const FACILITY: u8 = 13;

/// One syslog receiver.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `host:port`.
    pub addr: String,
    /// CA file (PEM) of the receiver's certificate: TLS when set.
    pub tls_ca: Option<PathBuf>,
    /// TLS server name (default: the host of `addr`).
    pub tls_name: Option<String>,
    /// Connect and write timeout.
    pub timeout: Duration,
}

fn severity(s: &str) -> u8 {
    match s {
        "high" => 3,
        "medium" => 4,
        _ => 5,
    }
}

/// Escapes a structured data parameter value (RFC 5424 6.3.3: `"`, `\` and `]`).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable US-ASCII, at most `max` characters, "-" when empty.
fn header_field(v: &str, max: usize) -> String {
    let s: String = v.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if s.is_empty() { "-".into() } else { s }
}

/// RFC 3339 time with microseconds (RFC 5424 allows at most 6 fraction digits).
fn timestamp(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// The RFC 5424 message of an alert (without framing).
pub fn message(a: &Alert, hostname: &str, pid: u32) -> Vec<u8> {
    let pri = FACILITY * 8 + severity(&a.severity);
    let mut m = format!(
        "<{pri}>1 {} {} wiretrail {pid} {} [{SD_ID} id=\"{}\" kind=\"{}\" severity=\"{}\" identity=\"{}\" leaf=\"{}\"] ",
        timestamp(a.time_ns),
        header_field(hostname, 255),
        header_field(&a.kind, 32),
        a.id,
        sd_escape(&a.kind),
        sd_escape(&a.severity),
        sd_escape(&a.identity_key),
        a.leaf_index
    )
    .into_bytes();
    m.extend_from_slice("\u{feff}".as_bytes());
    m.extend_from_slice(&super::webhook::body(a));
    m
}

/// Octet-counting frame of `msg`.
pub fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = format!("{} ", msg.len()).into_bytes();
    f.extend_from_slice(msg);
    f
}

/// This host's name ("-" when unknown).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if r == 0 { String::from_utf8_lossy(&buf[..end]).into_owned() } else { "-".into() }
}

type Conn = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// A syslog destination.
pub struct Syslog {
    index: usize,
    config: SyslogConfig,
    tls: Option<(tokio_rustls::TlsConnector, tokio_rustls::rustls::pki_types::ServerName<'static>)>,
    hostname: String,
    conn: Option<Conn>,
}

impl Syslog {
    /// Checks the settings and loads the CA.
    pub fn new(index: usize, config: SyslogConfig) -> Result<Syslog, DeliveryError> {
        let bad = |m: String| DeliveryError::Config(format!("syslog {}: {m}", config.addr));
        let host = config
            .addr
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .ok_or_else(|| bad("expected host:port".into()))?;
        let tls = match &config.tls_ca {
            None => None,
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| bad(format!("reading CA {}: {e}", ca.display())))?;
                let mut roots = tokio_rustls::rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let c = c.map_err(|e| bad(format!("CA {}: {e}", ca.display())))?;
                    roots.add(c).map_err(|e| bad(format!("CA {}: {e}", ca.display())))?;
                }
                let cfg =
                    tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
                let name = config.tls_name.clone().unwrap_or_else(|| host.to_string());
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name)
                    .map_err(|e| bad(format!("TLS name: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
            }
        };
        Ok(Syslog { index, config, tls, hostname: hostname(), conn: None })
    }

    async fn connect(&self) -> Result<Conn, DeliveryError> {
        let io = |what: &str| {
            let what = format!("{what} syslog {}", self.config.addr);
            move |source| DeliveryError::Io { what, source }
        };
        let tcp = tokio::net::TcpStream::connect(&self.config.addr).await.map_err(io("connecting to"))?;
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some((c, name)) => Box::new(c.connect(name.clone(), tcp).await.map_err(io("TLS handshake with"))?),
        })
    }

    async fn send(&mut self, frame: &[u8]) -> Result<(), DeliveryError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let w = async {
            conn.write_all(frame).await?;
            conn.flush().await
        };
        w.await
            .map_err(|source| DeliveryError::Io { what: format!("writing to syslog {}", self.config.addr), source })?;
        self.conn = Some(conn);
        Ok(())
    }
}

#[tonic::async_trait]
impl Sink for Syslog {
    fn name(&self) -> String {
        format!("syslog-{}", self.index)
    }

    async fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let f = frame(&message(alert, &self.hostname, std::process::id()));
        match tokio::time::timeout(self.config.timeout, self.send(&f)).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(DeliveryError::Timeout(format!("syslog {}", self.config.addr)))
            }
        }
    }
}
