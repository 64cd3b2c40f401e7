//! Finding the initial peers: the static `PEERS` list (`host[:port]` or `id=host[:port]` of
//! each peer's internal API), or the Flux API's app locations for `DB_APPNAME` (each location's
//! IP, with `API_PORT` as the port, like upstream).

use std::time::Duration;

use serde::Deserialize;

use super::contract::NodeId;

/// One configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Known when given as `id=host:port`; otherwise learned from the peer.
    pub id: Option<NodeId>,
    /// `host:port` of its internal API.
    pub addr: String,
}

/// Parses a comma list of `host`, `host:port`, `[v6]:port` or `id=…` of those.
pub fn parse_peers(list: &str, default_port: u16) -> Result<Vec<PeerSpec>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, hostport) = match item.split_once('=') {
            Some((id, rest)) => (
                Some(
                    id.trim()
                        .parse::<NodeId>()
                        .map_err(|_| format!("peer `{item}`: `{id}` is not a node id"))?,
                ),
                rest.trim(),
            ),
            None => (None, item),
        };
        let addr = with_port(hostport, default_port)
            .ok_or_else(|| format!("peer `{item}` is not host[:port]"))?;
        out.push(PeerSpec { id, addr });
    }
    Ok(out)
}

/// `host` → `host:port`; keeps an explicit port; brackets bare IPv6 addresses.
pub fn with_port(hostport: &str, default_port: u16) -> Option<String> {
    let s = hostport.trim();
    if s.is_empty() || s.contains('/') || s.contains(' ') {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return match tail.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok().map(|p| format!("[{host}]:{p}")),
            None if tail.is_empty() => Some(format!("[{host}]:{default_port}")),
            None => None,
        };
    }
    match s.matches(':').count() {
        0 => Some(format!("{s}:{default_port}")),
        1 => {
            let (h, p) = s.split_once(':')?;
            let p: u16 = p.parse().ok()?;
            (!h.is_empty()).then(|| format!("{h}:{p}"))
        }
        // A bare IPv6 address.
        _ => Some(format!("[{s}]:{default_port}")),
    }
}

#[derive(Debug, Deserialize)]
struct Locations {
    status: Option<String>,
    data: Option<Vec<Location>>,
}

#[derive(Debug, Deserialize)]
struct Location {
    ip: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("Flux API {url}: {message}")]
    Api { url: String, message: String },
}

/// Asks the Flux API where `app` runs: `GET {base}/apps/location/{app}`. The port part of an
/// `ip:port` location (UPnP nodes) is dropped; `api_port` is every peer's internal API port.
pub async fn flux_locations(
    base: &str,
    app: &str,
    api_port: u16,
    timeout: Duration,
) -> Result<Vec<PeerSpec>, DiscoveryError> {
    let url = format!("{}/apps/location/{}", base.trim_end_matches('/'), app);
    let fail = |m: String| DiscoveryError::Api {
        url: url.clone(),
        message: m,
    };
    let body = super::http_get::get(&url, timeout).await.map_err(fail)?;
    let locs: Locations =
        serde_json::from_slice(&body).map_err(|e| fail(format!("unexpected answer: {e}")))?;
    if locs.status.as_deref().is_some_and(|s| s != "success") {
        return Err(fail(format!("status {:?}", locs.status)));
    }
    let mut out = Vec::new();
    for l in locs.data.unwrap_or_default() {
        let ip = l.ip.trim();
        let host = if ip.matches(':').count() == 1 {
            ip.split_once(':').map_or(ip, |(h, _)| h)
        } else {
            ip
        };
        if let Some(addr) = with_port(host, api_port) {
            if !out.iter().any(|p: &PeerSpec| p.addr == addr) {
                out.push(PeerSpec { id: None, addr });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flux_locations_from_a_local_api() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(req.starts_with("GET /apps/location/db1 "), "{req}");
            let body = r#"{"status":"success","data":[{"ip":"10.1.1.1:16127","osUptime":5},{"ip":"10.1.1.2"},{"ip":"10.1.1.1"}]}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        let peers = flux_locations(&base, "db1", 17071, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            peers.iter().map(|p| p.addr.as_str()).collect::<Vec<_>>(),
            ["10.1.1.1:17071", "10.1.1.2:17071"]
        );
        let err = flux_locations("http://127.0.0.1:1", "db1", 1, Duration::from_secs(2)).await;
        assert!(err.is_err());
    }

    #[test]
    fn peers_parse_with_ids_ports_and_v6() {
        let p = parse_peers(" 1=10.0.0.1:17071, node2 ,[::1]:9000, 3=db3", 7071).unwrap();
        assert_eq!(
            p,
            vec![
                PeerSpec {
                    id: Some(1),
                    addr: "10.0.0.1:17071".into()
                },
                PeerSpec {
                    id: None,
                    addr: "node2:7071".into()
                },
                PeerSpec {
                    id: None,
                    addr: "[::1]:9000".into()
                },
                PeerSpec {
                    id: Some(3),
                    addr: "db3:7071".into()
                },
            ]
        );
        assert!(parse_peers("x=host", 1).is_err());
        assert!(parse_peers("host:port", 1).is_err());
        assert_eq!(parse_peers("", 1).unwrap(), vec![]);
    }
}
