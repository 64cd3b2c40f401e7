//! One persistent, multiplexed connection to an agent.
//!
//! Requests get ids; each caller writes its frame itself under the connection's write lock (no
//! hand-off to another thread on the latency path) and a reader task routes each reply to its
//! waiting caller, so any number of requests can be in flight. A caller cancelled in the middle
//! of writing a frame poisons the connection (it is marked dead), since the stream is no longer
//! at a frame boundary. When the socket fails every
//! waiting caller gets an error at once and the connection is marked dead; the session then
//! dials a new one for later calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fluxon_fs_proto::{Frame, FrameError, Request, Response, PROTOCOL_VERSION};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::error::{ClientError, Result};

type Waiter = oneshot::Sender<std::result::Result<Frame, String>>;

/// A live (or dead) connection.
pub struct Conn {
    pub addr: String,
    /// Fork epoch this connection belongs to.
    pub epoch: u64,
    /// Generation of the token last presented on this connection.
    pub token_gen: AtomicU64,
    writer: tokio::sync::Mutex<BufWriter<OwnedWriteHalf>>,
    pending: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_id: AtomicU64,
    alive: Arc<AtomicBool>,
}

impl Conn {
    /// Dials `addr` and says hello; bounded by `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Arc<Conn>> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let errno = e.raw_os_error().unwrap_or(libc::EHOSTUNREACH);
                return Err(ClientError::os(
                    errno,
                    format!("agent at {addr} is unreachable: {e}"),
                ));
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: format!("agent at {addr} (connect)"),
                    after: timeout,
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        let pending: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::new(Mutex::new(HashMap::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let conn = Arc::new(Conn {
            addr: addr.to_string(),
            epoch: crate::runtime::epoch(),
            token_gen: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(BufWriter::with_capacity(256 * 1024, writer)),
            pending: pending.clone(),
            next_id: AtomicU64::new(1),
            alive: alive.clone(),
        });
        tokio::spawn(async move {
            let reason = loop {
                match Frame::read(&mut reader).await {
                    Ok(frame) => {
                        let waiter = pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&frame.request_id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(Ok(frame));
                        }
                    }
                    Err(FrameError::Closed) => break "agent closed the connection".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            fail_all(&alive, &pending, &reason);
        });
        let hello = Request::Hello {
            protocol_version: PROTOCOL_VERSION,
        };
        match tokio::time::timeout(timeout, conn.call(&hello, Bytes::new())).await {
            Ok(Ok((Response::Ok, _))) => Ok(conn),
            Ok(Ok((Response::Err(e), _))) => Err(ClientError::os(e.errno, e.message)),
            Ok(Ok(_)) => Err(ClientError::os(
                libc::EPROTO,
                format!("agent at {addr}: unexpected reply to hello"),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout {
                what: format!("agent at {addr} (hello)"),
                after: timeout,
            }),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Sends one request and waits for its reply (unbounded: callers wrap it in a timeout).
    pub async fn call(&self, request: &Request, data: Bytes) -> Result<(Response, Bytes)> {
        let lost = |reason: &str| {
            ClientError::os(
                libc::ECONNRESET,
                format!(
                    "connection to agent at {} lost during {}: {reason}",
                    self.addr,
                    request.op_name()
                ),
            )
        };
        if !self.is_alive() {
            return Err(lost("connection is closed"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::encode(id, request, data)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let (waiter, reply) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, waiter);
        // Removes the waiter if this future is dropped (timeout) before the reply.
        let guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        {
            let mut writer = self.writer.lock().await;
            if !self.is_alive() {
                return Err(lost("connection is closed"));
            }
            let mut sending = SendGuard {
                conn: self,
                done: false,
            };
            let sent = async {
                write_frame(&mut *writer, &frame).await?;
                writer.flush().await
            }
            .await;
            sending.done = true;
            if let Err(e) = sent {
                let reason = format!("send failed: {e}");
                fail_all(&self.alive, &self.pending, &reason);
                return Err(lost(&reason));
            }
        }
        let frame = match reply.await {
            Ok(Ok(frame)) => frame,
            Ok(Err(reason)) => return Err(lost(&reason)),
            Err(_) => return Err(lost("connection is closed")),
        };
        drop(guard);
        let response: Response = frame
            .decode()
            .map_err(|e| ClientError::os(libc::EPROTO, format!("agent at {}: {e}", self.addr)))?;
        Ok((response, frame.data))
    }
}

struct PendingGuard<'a> {
    pending: &'a Mutex<HashMap<u64, Waiter>>,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn fail_all(alive: &AtomicBool, pending: &Mutex<HashMap<u64, Waiter>>, reason: &str) {
    alive.store(false, Ordering::Release);
    let waiters: Vec<Waiter> = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .map(|(_, w)| w)
        .collect();
    for waiter in waiters {
        let _ = waiter.send(Err(reason.to_string()));
    }
}

/// Marks the connection dead if a frame write did not finish (its future was dropped).
struct SendGuard<'a> {
    conn: &'a Conn,
    done: bool,
}

impl Drop for SendGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            fail_all(
                &self.conn.alive,
                &self.conn.pending,
                "a request was cancelled while being sent",
            );
        }
    }
}

async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &Frame,
) -> std::io::Result<()> {
    let header = frame
        .header()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    writer.write_all(&header).await?;
    writer.write_all(&frame.message).await?;
    writer.write_all(&frame.data).await
}
