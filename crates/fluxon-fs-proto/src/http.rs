//! A small bounded JSON-over-HTTP/1.1 client for the master's control API.
//!
//! One connection per call (control calls are rare); connect, send and receive together are
//! bounded by the caller's timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::master_api::ErrorBody;

/// Why a control call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("master at {addr} did not answer {path} within {timeout:?}")]
    Timeout {
        addr: String,
        path: String,
        timeout: Duration,
    },
    #[error("master at {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("master at {addr} refused {path}: {message} (HTTP {status})")]
    Status {
        addr: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("master at {addr} sent a malformed reply to {path}: {reason}")]
    Malformed {
        addr: String,
        path: String,
        reason: String,
    },
}

impl HttpError {
    /// HTTP status of a refusal, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Calls `method path` on `addr` (`host:port`) with an optional JSON body and bearer token.
pub async fn call_json<B: Serialize, R: DeserializeOwned>(
    addr: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&B>,
    timeout: Duration,
) -> Result<R, HttpError> {
    match tokio::time::timeout(timeout, call_inner(addr, method, path, bearer, body)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout {
            addr: addr.to_string(),
            path: path.to_string(),
            timeout,
        }),
    }
}

async fn call_inner<B: Serialize, R: DeserializeOwned>(
    addr: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<&B>,
) -> Result<R, HttpError> {
    let unreachable = |reason: String| HttpError::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let malformed = |reason: String| HttpError::Malformed {
        addr: addr.to_string(),
        path: path.to_string(),
        reason,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let conn_task = tokio::spawn(conn);
    let payload = match body {
        Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| malformed(e.to_string()))?),
        None => Bytes::new(),
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr)
        .header(CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .body(Full::new(payload))
        .map_err(|e| malformed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    conn_task.abort();
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(HttpError::Status {
            addr: addr.to_string(),
            path: path.to_string(),
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))
}
