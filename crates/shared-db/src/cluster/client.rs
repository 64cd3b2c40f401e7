//! A signed HTTP client for the internal API of any peer: every request carries the cluster
//! HMAC (see [`super::auth`]) and every call is bounded by a timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::auth::{ClusterSecret, H_BODY, H_NODE, H_NONCE, H_SIGNATURE, H_TIMESTAMP};
use super::contract::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{addr}{path}: no answer within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
    #[error("{addr}{path}: {message}")]
    Unreachable {
        addr: String,
        path: String,
        message: String,
    },
    #[error("{addr}{path}: HTTP {status}: {body}")]
    Status {
        addr: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("bad request: {0}")]
    Request(String),
}

/// Signs and sends requests to peers' internal APIs. Cheap to clone (shares its connections).
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Full<Bytes>>,
    secret: Option<ClusterSecret>,
    node_id: NodeId,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    /// `secret` `None` sends unsigned requests (only a cluster of one runs without a secret).
    pub fn new(secret: Option<ClusterSecret>, node_id: NodeId) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(conn);
        PeerClient {
            http,
            secret,
            node_id,
        }
    }

    /// Sends `body` to `http://{addr}{path}` and returns the response body of a 2xx answer.
    pub async fn call(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        self.call_checked(addr, method, path, body, timeout, None)
            .await
            .map(|(bytes, _)| bytes)
    }

    /// Like [`PeerClient::call`], also returning the value of the response header `header`.
    pub async fn call_with_header(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        header: &'static str,
    ) -> Result<(Bytes, Option<String>), PeerError> {
        self.call_checked(addr, method, path, body, timeout, Some(header))
            .await
    }

    async fn call_checked(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        header: Option<&'static str>,
    ) -> Result<(Bytes, Option<String>), PeerError> {
        let (status, bytes, value) = self.send(addr, method, path, body, timeout, header).await?;
        if !status.is_success() {
            return Err(PeerError::Status {
                addr: addr.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
            });
        }
        Ok((bytes, value))
    }

    /// Like [`PeerClient::call`] but returns any status with its body.
    pub async fn call_raw(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), PeerError> {
        self.send(addr, method, path, body, timeout, None)
            .await
            .map(|(status, bytes, _)| (status, bytes))
    }

    async fn send(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
        header: Option<&'static str>,
    ) -> Result<(StatusCode, Bytes, Option<String>), PeerError> {
        let uri = format!("http://{addr}{path}");
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(H_NODE, self.node_id.to_string());
        if let Some(secret) = &self.secret {
            let s = secret.sign(method.as_str(), path, &body);
            req = req
                .header(H_BODY, s.body_sha256)
                .header(H_TIMESTAMP, s.timestamp_ms.to_string())
                .header(H_NONCE, s.nonce)
                .header(H_SIGNATURE, s.signature);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PeerError::Request(e.to_string()))?;
        let unreachable = |m: String| PeerError::Unreachable {
            addr: addr.to_string(),
            path: path.to_string(),
            message: m,
        };
        let work = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let value = header.and_then(|h| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, bytes, value))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(PeerError::Timeout {
                addr: addr.to_string(),
                path: path.to_string(),
                timeout,
            }),
        }
    }

    /// GET a JSON document.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<T, PeerError> {
        let b = self
            .call(addr, Method::GET, path, Vec::new(), timeout)
            .await?;
        serde_json::from_slice(&b).map_err(|e| PeerError::Unreachable {
            addr: addr.to_string(),
            path: path.to_string(),
            message: format!("bad JSON: {e}"),
        })
    }

    /// POST a JSON document and parse a JSON answer.
    pub async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<T, PeerError> {
        let body = serde_json::to_vec(body).map_err(|e| PeerError::Request(e.to_string()))?;
        let b = self.call(addr, Method::POST, path, body, timeout).await?;
        serde_json::from_slice(&b).map_err(|e| PeerError::Unreachable {
            addr: addr.to_string(),
            path: path.to_string(),
            message: format!("bad JSON: {e}"),
        })
    }
}
