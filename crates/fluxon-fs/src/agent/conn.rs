//! One client connection: frames in, requests run concurrently on the blocking pool, replies
//! out in completion order (matched by request id on the client). Quick requests (metadata
//! lookups, read-only opens, closing a read-only file) are answered on the connection's own
//! task instead, and their replies are written from there too: handing them to another thread
//! costs more than the syscalls themselves.
//!
//! `Hello` and `Auth` are handled in arrival order before later requests start, so a request
//! always sees the token presented before it. Every other request checks the token's expiry and
//! the scope it needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use fluxon_fs_proto::scope::Grants;
use fluxon_fs_proto::token::{check_expiry, now_unix_ms};
use fluxon_fs_proto::{
    relpath, Claims, Frame, FrameError, Opened, Request, Response, PROTOCOL_VERSION,
};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::fsops::{FsError, FsResult};
use super::handles::OpenFile;
use super::AgentState;

/// Largest read served in one reply.
pub const MAX_READ_BYTES: u32 = 8 * 1024 * 1024;
/// Largest file returned inline on open, whatever the client asks for.
pub const MAX_INLINE_BYTES: u64 = 4 * 1024 * 1024;

struct Conn {
    state: Arc<AgentState>,
    claims: RwLock<Option<Arc<Claims>>>,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    peer: String,
}

/// Serves one connection until the peer closes it or sends garbage.
pub async fn serve(state: Arc<AgentState>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let (mut reader, writer) = stream.into_split();
    // Shared by the writer task (replies from the blocking pool, batched) and this task (quick
    // replies, written at once without waking another task).
    let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(
        256 * 1024,
        writer,
    )));
    let (tx, rx) = mpsc::channel::<Frame>(1024);
    let writer_task = tokio::spawn(write_loop(writer.clone(), rx));
    let conn = Arc::new(Conn {
        state,
        claims: RwLock::new(None),
        handles: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
        peer,
    });
    let mut greeted = false;
    loop {
        let frame = match Frame::read(&mut reader).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) => break,
            Err(e) => {
                tracing::debug!(peer = %conn.peer, "closing connection: {e}");
                break;
            }
        };
        let request: Request = match frame.decode() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %conn.peer, "undecodable request, closing: {e}");
                break;
            }
        };
        let id = frame.request_id;
        match request {
            Request::Hello { protocol_version } => {
                let reply = if protocol_version == PROTOCOL_VERSION {
                    greeted = true;
                    Response::Ok
                } else {
                    Response::error(
                        libc::EPROTO,
                        format!(
                            "agent speaks protocol {PROTOCOL_VERSION}, client {protocol_version}"
                        ),
                    )
                };
                send(&writer, id, &reply, Bytes::new()).await;
            }
            Request::Auth { token } => {
                let reply = match conn.authenticate(&token) {
                    Ok(()) => Response::Ok,
                    Err(e) => Response::error(e.errno, e.message),
                };
                send(&writer, id, &reply, Bytes::new()).await;
            }
            _ if !greeted => {
                send(
                    &writer,
                    id,
                    &Response::error(libc::EPROTO, "send Hello first"),
                    Bytes::new(),
                )
                .await;
            }
            request if conn.is_quick(&request) => {
                let (reply, data) = match conn.handle(request, frame.data) {
                    Ok(ok) => ok,
                    Err(e) => (Response::error(e.errno, e.message), Bytes::new()),
                };
                send(&writer, id, &reply, data).await;
            }
            request => {
                let conn = conn.clone();
                let tx = tx.clone();
                let data = frame.data;
                tokio::task::spawn_blocking(move || {
                    let (reply, data) = match conn.handle(request, data) {
                        Ok(ok) => ok,
                        Err(e) => (Response::error(e.errno, e.message), Bytes::new()),
                    };
                    if let Ok(frame) = Frame::encode(id, &reply, data) {
                        let _ = tx.blocking_send(frame);
                    }
                });
            }
        }
    }
    drop(tx);
    let _ = writer_task.await;
    // Unclosed handles are dropped here: staged files that were never published vanish.
    conn.handles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

type SharedWriter = Arc<tokio::sync::Mutex<BufWriter<tokio::net::tcp::OwnedWriteHalf>>>;

/// Writes one reply from the connection's own task. A failed write means the peer is gone;
/// the read side ends the connection.
async fn send(writer: &SharedWriter, id: u64, reply: &Response, data: Bytes) {
    if let Ok(frame) = Frame::encode(id, reply, data) {
        let mut writer = writer.lock().await;
        if write_frame(&mut *writer, &frame).await.is_ok() {
            let _ = writer.flush().await;
        }
    }
}

async fn write_loop(writer: SharedWriter, mut rx: mpsc::Receiver<Frame>) {
    while let Some(frame) = rx.recv().await {
        let mut writer = writer.lock().await;
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            if write_frame(&mut *writer, &frame).await.is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if writer.flush().await.is_err() {
            return;
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

impl Conn {
    /// Requests that only do a few fast syscalls (no data transfer, no fsync).
    fn is_quick(&self, request: &Request) -> bool {
        match request {
            Request::Ping
            | Request::Stat { .. }
            | Request::Access { .. }
            | Request::Readlink { .. }
            | Request::ListDir { .. }
            | Request::Fstat { .. } => true,
            Request::Open { flags, .. } => !flags.write && !flags.create && !flags.truncate,
            Request::Close { handle, .. } => self
                .handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(handle)
                .is_some_and(|f| !f.flags.write),
            _ => false,
        }
    }

    fn authenticate(&self, token: &str) -> FsResult<()> {
        let verifier = self
            .state
            .verifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(verifier) = verifier else {
            return Err(FsError::denied(
                "agent has not reached the master yet, so it cannot verify tokens; retry shortly",
            ));
        };
        let claims = verifier
            .verify(token, now_unix_ms())
            .map_err(|e| FsError::denied(format!("fs rpc auth failed: {e}")))?;
        *self.claims.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(claims));
        Ok(())
    }

    fn claims(&self) -> FsResult<Arc<Claims>> {
        let claims = self
            .claims
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let claims = claims.ok_or_else(|| FsError::denied("missing access token"))?;
        check_expiry(&claims, now_unix_ms()).map_err(|e| FsError::denied(e.to_string()))?;
        Ok(claims)
    }

    fn handle_of(&self, handle: u64) -> FsResult<Arc<OpenFile>> {
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&handle)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, "unknown file handle"))
    }

    fn handle(&self, request: Request, data: Bytes) -> FsResult<(Response, Bytes)> {
        let claims = self.claims()?;
        let op = request.op_name();
        let deny = |export: &str, path: &str, need: &str| {
            FsError::denied(format!(
                "fs {op} denied: username={} export_name={export} relpath={path} needs {need}",
                claims.username
            ))
        };
        let ok = |r: Response| Ok((r, Bytes::new()));
        match request {
            Request::Hello { .. } | Request::Auth { .. } => ok(Response::Ok),
            Request::Ping => ok(Response::Ok),
            Request::Stat {
                export,
                path,
                follow,
            } => {
                let root = self.state.export(&export)?;
                if !claims.can_browse(&export, &path) {
                    return Err(deny(&export, &path, "read"));
                }
                ok(Response::Stat(root.stat(&path, follow)?))
            }
            Request::ListDir { export, path } => {
                let root = self.state.export(&export)?;
                if !claims.can_browse(&export, &path) {
                    return Err(deny(&export, &path, "read"));
                }
                let entries = root.list_dir(&path, |name, stat| {
                    let child = relpath::join(&path, name);
                    claims.can_read(&export, &child)
                        || (stat.is_dir() && claims.can_browse(&export, &child))
                })?;
                ok(Response::Entries(entries))
            }
            Request::Access { export, path, mode } => {
                let root = self.state.export(&export)?;
                let wants_write = mode & (libc::W_OK as u32) != 0;
                let allowed = if wants_write {
                    claims.can_write(&export, &path)
                } else {
                    claims.can_browse(&export, &path)
                };
                ok(Response::Bool(allowed && root.access(&path, mode)?))
            }
            Request::Mkdir { export, path, mode } => {
                let root = self.writable(&claims, &export, &path, &deny)?;
                root.mkdir(&path, mode)?;
                ok(Response::Ok)
            }
            Request::Rmdir { export, path } => {
                self.writable(&claims, &export, &path, &deny)?
                    .rmdir(&path)?;
                ok(Response::Ok)
            }
            Request::Unlink { export, path } => {
                self.writable(&claims, &export, &path, &deny)?
                    .unlink(&path)?;
                ok(Response::Ok)
            }
            Request::Rename {
                export,
                src,
                dst,
                noreplace,
            } => {
                let root = self.writable(&claims, &export, &src, &deny)?;
                if !claims.can_write(&export, &dst) {
                    return Err(deny(&export, &dst, "read_write"));
                }
                root.rename(&src, &dst, noreplace)?;
                ok(Response::Ok)
            }
            Request::Chmod { export, path, mode } => {
                self.writable(&claims, &export, &path, &deny)?
                    .chmod(&path, mode)?;
                ok(Response::Ok)
            }
            Request::Utime {
                export,
                path,
                atime_ns,
                mtime_ns,
            } => {
                self.writable(&claims, &export, &path, &deny)?
                    .utime(&path, atime_ns, mtime_ns)?;
                ok(Response::Ok)
            }
            Request::Truncate { export, path, len } => {
                self.writable(&claims, &export, &path, &deny)?
                    .truncate(&path, len)?;
                ok(Response::Ok)
            }
            Request::Readlink { export, path } => {
                let root = self.state.export(&export)?;
                if !claims.can_read(&export, &path) {
                    return Err(deny(&export, &path, "read"));
                }
                ok(Response::Link(root.readlink(&path)?))
            }
            Request::Open {
                export,
                path,
                flags,
                mode,
                inline_max,
            } => {
                let root = self.state.export(&export)?;
                if flags.write && !claims.can_write(&export, &path) {
                    return Err(deny(&export, &path, "read_write"));
                }
                if !claims.can_read(&export, &path) {
                    return Err(deny(&export, &path, "read"));
                }
                let file = OpenFile::open(root, &self.state.coord, &path, flags, mode)?;
                let stat = file.stat()?;
                let limit = inline_max.min(MAX_INLINE_BYTES);
                if !flags.write && stat.size <= limit {
                    // Read size + 1 to notice growth; keep it only if the file did not change.
                    let content = file.read(0, stat.size as usize + 1)?;
                    let after = file.stat()?;
                    if content.len() as u64 == stat.size && after.same_version(&stat) {
                        let opened = Opened {
                            handle: 0,
                            stat,
                            inline: true,
                        };
                        return Ok((Response::Opened(opened), Bytes::from(content)));
                    }
                }
                let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                self.handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(handle, Arc::new(file));
                ok(Response::Opened(Opened {
                    handle,
                    stat,
                    inline: false,
                }))
            }
            Request::Read {
                handle,
                offset,
                len,
            } => {
                let file = self.handle_of(handle)?;
                if !claims.can_read(&file.export, &file.path) {
                    return Err(deny(&file.export, &file.path, "read"));
                }
                let data = file.read(offset, len.min(MAX_READ_BYTES) as usize)?;
                Ok((Response::Data, Bytes::from(data)))
            }
            Request::Write { handle, offset } => {
                let file = self.handle_of(handle)?;
                if !claims.can_write(&file.export, &file.path) {
                    return Err(deny(&file.export, &file.path, "read_write"));
                }
                ok(Response::Written {
                    len: file.write(offset, &data)?,
                })
            }
            Request::Append { handle } => {
                let file = self.handle_of(handle)?;
                if !claims.can_write(&file.export, &file.path) {
                    return Err(deny(&file.export, &file.path, "read_write"));
                }
                ok(Response::Appended {
                    end: file.append(&data)?,
                })
            }
            Request::FTruncate { handle, len } => {
                let file = self.handle_of(handle)?;
                if !claims.can_write(&file.export, &file.path) {
                    return Err(deny(&file.export, &file.path, "read_write"));
                }
                file.truncate(len)?;
                ok(Response::Ok)
            }
            Request::Fstat { handle } => ok(Response::Stat(self.handle_of(handle)?.stat()?)),
            Request::Close { handle, abort } => {
                let file = self
                    .handles
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&handle)
                    .ok_or_else(|| FsError::new(libc::EBADF, "unknown file handle"))?;
                if abort {
                    return ok(Response::Ok); // Dropping the file discards a staged write.
                }
                if file.flags.write && !claims.can_write(&file.export, &file.path) {
                    return Err(deny(&file.export, &file.path, "read_write"));
                }
                file.close()?;
                ok(Response::Ok)
            }
        }
    }

    fn writable<'s>(
        &'s self,
        claims: &Claims,
        export: &str,
        path: &str,
        deny: &dyn Fn(&str, &str, &str) -> FsError,
    ) -> FsResult<&'s super::fsops::ExportRoot> {
        let root = self.state.export(export)?;
        if !claims.can_write(export, path) {
            return Err(deny(export, path, "read_write"));
        }
        Ok(root)
    }
}
