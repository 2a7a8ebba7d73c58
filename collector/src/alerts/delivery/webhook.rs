//! Webhook destination: each alert is POSTed as one JSON object
//! (`application/json`) to an `http://` URL; any 2xx answer accepts it.
//!
//! Signature: with a secret configured, the header
//! `X-Wiretrail-Signature: sha256=<hex HMAC-SHA256(secret, body)>` lets the
//! receiver check the body came from the collector unchanged;
//! `X-Wiretrail-Alert-Id` carries the alert id (a receiver deduplicates on
//! it: delivery is at least once).

use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use sha2::Sha256;
use wiretrail_proto::v1::Alert;

use super::{DeliveryError, Sink};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-wiretrail-signature";

/// One webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host:port/path`.
    pub url: String,
    /// HMAC-SHA256 key for the signature header (`None`: unsigned).
    pub secret: Option<Vec<u8>>,
    /// Longest wait for the answer.
    pub timeout: Duration,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// The JSON body of an alert.
pub fn body(a: &Alert) -> Vec<u8> {
    let detail: serde_json::Value =
        serde_json::from_str(&a.detail_json).unwrap_or_else(|_| serde_json::Value::String(a.detail_json.clone()));
    serde_json::to_vec(&serde_json::json!({
        "id": a.id, "time_ns": a.time_ns, "kind": a.kind, "severity": a.severity,
        "identity_key": a.identity_key, "leaf_index": a.leaf_index, "detail": detail,
    }))
    .expect("JSON serializes")
}

/// A webhook destination.
pub struct Webhook {
    index: usize,
    config: WebhookConfig,
    uri: hyper::Uri,
    authority: String,
}

impl Webhook {
    /// Checks the URL (`http://` only).
    pub fn new(index: usize, config: WebhookConfig) -> Result<Webhook, DeliveryError> {
        let uri: hyper::Uri =
            config.url.parse().map_err(|e| DeliveryError::Config(format!("webhook URL {:?}: {e}", config.url)))?;
        if uri.scheme_str() != Some("http") {
            return Err(DeliveryError::Config(format!(
                "webhook URL {:?}: only http:// is supported (put a TLS proxy in front for https)",
                config.url
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| DeliveryError::Config(format!("webhook URL {:?} has no host", config.url)))?
            .to_string();
        Ok(Webhook { index, config, uri, authority })
    }

    async fn post(&self, body: Vec<u8>, id: u64) -> Result<(), DeliveryError> {
        let addr = if self.uri.port().is_some() { self.authority.clone() } else { format!("{}:80", self.authority) };
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| DeliveryError::Io { what: format!("connecting to webhook {addr}"), source })?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(DeliveryError::Http)?;
        let conn = tokio::spawn(conn);
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-wiretrail-alert-id", id.to_string());
        if let Some(k) = &self.config.secret {
            req = req.header(SIGNATURE_HEADER, signature(k, &body));
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| DeliveryError::Config(e.to_string()))?;
        let resp = send.send_request(req).await.map_err(DeliveryError::Http)?;
        let status = resp.status();
        // Read the answer so the connection ends cleanly.
        let _ = resp.into_body().collect().await;
        conn.abort();
        if status.is_success() { Ok(()) } else { Err(DeliveryError::Status(status.as_u16())) }
    }
}

#[tonic::async_trait]
impl Sink for Webhook {
    fn name(&self) -> String {
        format!("webhook-{}", self.index)
    }

    async fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = body(alert);
        match tokio::time::timeout(self.config.timeout, self.post(body, alert.id)).await {
            Ok(r) => r,
            Err(_) => Err(DeliveryError::Timeout(format!("webhook {}", self.config.url))),
        }
    }
}
