//! [`File`]: an open remote file with explicit offsets.
//!
//! - Small read-only files arrive whole with the open reply (`inline`); reads are served from
//!   memory and [`File::inline_fd`] hands out a memfd copy.
//! - Larger reads go out as chunk requests (several in flight); a sequential reader gets the
//!   next chunks fetched ahead. A read-only file whose connection died (agent restarted) is
//!   reopened on a new connection if it is unchanged; otherwise the read fails with `ESTALE`.
//! - Writes are pipelined: `pwrite` returns once the bytes are queued (bounded by the write
//!   window); `flush`/`close` wait for every acknowledgement and report the first error.
//!   Reads, appends, truncates and overlapping writes wait for queued writes first.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use fluxon_fs_proto::{OpenFlags, Request, Response, StatInfo};
use tokio::task::JoinHandle;

use crate::conn::Conn;
use crate::error::{ClientError, Result};
use crate::runtime;
use crate::session::{unexpected, Inner};

/// Where read data goes: a growing `Vec` (`pread`) or the caller's buffer (`pread_into`).
trait Sink {
    fn put(&mut self, data: &[u8]);
    /// Forgets what was put (a read is retried from its start).
    fn reset(&mut self);
}

impl Sink for Vec<u8> {
    fn put(&mut self, data: &[u8]) {
        self.extend_from_slice(data);
    }
    fn reset(&mut self) {
        self.clear();
    }
}

/// The caller's buffer; reads never ask for more than its length.
struct SliceSink<'a> {
    buf: &'a mut [u8],
    filled: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, data: &[u8]) {
        let n = data.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
    }
    fn reset(&mut self) {
        self.filled = 0;
    }
}

/// Largest payload of one write request.
const WRITE_PIECE: usize = 4 * 1024 * 1024;

enum Chunk {
    Pending {
        requested: u64,
        task: JoinHandle<Result<Bytes>>,
    },
    Ready {
        requested: u64,
        data: Bytes,
    },
}

impl Chunk {
    fn requested(&self) -> u64 {
        match self {
            Chunk::Pending { requested, .. } | Chunk::Ready { requested, .. } => *requested,
        }
    }
}

struct PendingWrite {
    start: u64,
    end: u64,
    task: JoinHandle<Result<()>>,
}

struct State {
    conn: Option<Arc<Conn>>,
    handle: u64,
    stat: StatInfo,
    inline: Option<Bytes>,
    closed: bool,
    writes: VecDeque<PendingWrite>,
    pending_bytes: u64,
    error: Option<ClientError>,
    chunks: BTreeMap<u64, Chunk>,
    last_end: Option<u64>,
}

/// An open remote file. Safe to share between threads (calls are serialised).
pub struct File {
    inner: Arc<Inner>,
    export: String,
    path: String,
    flags: OpenFlags,
    state: Mutex<State>,
}

async fn open_on(
    inner: &Inner,
    export: &str,
    path: &str,
    flags: OpenFlags,
    mode: u32,
    inline_max: u64,
) -> Result<(Arc<Conn>, fluxon_fs_proto::Opened, Bytes)> {
    let conn = inner.conn_for(export).await?;
    let req = Request::Open {
        export: export.to_string(),
        path: path.to_string(),
        flags,
        mode,
        inline_max,
    };
    match conn.call(&req, Bytes::new()).await? {
        (Response::Opened(opened), data) => Ok((conn, opened, data)),
        (other, _) => Err(unexpected(&other)),
    }
}

async fn read_chunk(
    conn: Arc<Conn>,
    handle: u64,
    offset: u64,
    len: u64,
    timeout: std::time::Duration,
) -> Result<Bytes> {
    let req = Request::Read {
        handle,
        offset,
        len: len as u32,
    };
    match tokio::time::timeout(timeout, conn.call(&req, Bytes::new())).await {
        Ok(Ok((Response::Data, data))) => Ok(data),
        Ok(Ok((other, _))) => Err(unexpected(&other)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ClientError::Timeout {
            what: format!("agent at {} (read)", conn.addr),
            after: timeout,
        }),
    }
}

async fn write_piece(
    conn: Arc<Conn>,
    handle: u64,
    offset: u64,
    data: Bytes,
    timeout: std::time::Duration,
) -> Result<()> {
    let len = data.len() as u64;
    let req = Request::Write { handle, offset };
    match tokio::time::timeout(timeout, conn.call(&req, data)).await {
        Ok(Ok((Response::Written { len: n }, _))) if n == len => Ok(()),
        Ok(Ok((Response::Written { len: n }, _))) => Err(ClientError::os(
            libc::EIO,
            format!("short write: {n} of {len} bytes"),
        )),
        Ok(Ok((other, _))) => Err(unexpected(&other)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ClientError::Timeout {
            what: format!("agent at {} (write)", conn.addr),
            after: timeout,
        }),
    }
}

fn is_connection_lost(e: &ClientError) -> bool {
    matches!(e.errno(), Some(libc::ECONNRESET))
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("export", &self.export)
            .field("path", &self.path)
            .field("flags", &self.flags)
            .finish()
    }
}

impl File {
    pub(crate) fn open(
        inner: Arc<Inner>,
        export: &str,
        path: &str,
        flags: OpenFlags,
        mode: u32,
    ) -> Result<File> {
        let timeout = inner.options.timeout;
        let inline_max = if flags.write {
            0
        } else {
            inner.options.inline_max
        };
        let opened = runtime::block_on(async {
            match tokio::time::timeout(
                timeout,
                open_on(&inner, export, path, flags, mode, inline_max),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(ClientError::Timeout {
                    what: format!("agent for export {export} (open)"),
                    after: timeout,
                }),
            }
        });
        let (conn, opened, data) = opened.map_err(|e| e.with_path(path))?;
        let (conn, inline) = if opened.inline {
            (None, Some(data))
        } else {
            (Some(conn), None)
        };
        Ok(File {
            inner,
            export: export.to_string(),
            path: path.to_string(),
            flags,
            state: Mutex::new(State {
                conn,
                handle: opened.handle,
                stat: opened.stat,
                inline,
                closed: false,
                writes: VecDeque::new(),
                pending_bytes: 0,
                error: None,
                chunks: BTreeMap::new(),
                last_end: None,
            }),
        })
    }

    pub fn export(&self) -> &str {
        &self.export
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn flags(&self) -> OpenFlags {
        self.flags
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(&self, st: &State) -> Result<()> {
        if st.closed {
            return Err(ClientError::InvalidArgument(
                "I/O operation on closed file".into(),
            ));
        }
        Ok(())
    }

    fn timeout(&self) -> std::time::Duration {
        self.inner.options.timeout
    }

    /// A memfd holding the whole content of an inline (small, read-only) file.
    pub fn inline_fd(&self) -> Result<Option<RawFd>> {
        let st = self.lock();
        self.check_open(&st)?;
        let Some(data) = st.inline.as_ref() else {
            return Ok(None);
        };
        let fd = rustix::fs::memfd_create("fluxon-inline", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| ClientError::os(e.raw_os_error(), format!("memfd_create failed: {e}")))?;
        let mut written = 0;
        while written < data.len() {
            let n = rustix::io::write(&fd, &data[written..]).map_err(|e| {
                ClientError::os(e.raw_os_error(), format!("writing the memfd failed: {e}"))
            })?;
            written += n;
        }
        rustix::fs::seek(&fd, rustix::fs::SeekFrom::Start(0)).map_err(|e| {
            ClientError::os(e.raw_os_error(), format!("seeking the memfd failed: {e}"))
        })?;
        Ok(Some(fd.into_raw_fd()))
    }

    /// Size now (after queued writes for a writable file; at open for a read-only one).
    pub fn size(&self) -> Result<u64> {
        Ok(self.fstat()?.size)
    }

    pub fn fstat(&self) -> Result<StatInfo> {
        let mut st = self.lock();
        self.check_open(&st)?;
        if st.inline.is_some() || !self.flags.write {
            return Ok(st.stat);
        }
        let stat = runtime::block_on(async {
            self.flush_writes(&mut st).await?;
            let conn = self.conn(&mut st).await?;
            match self
                .call(&conn, Request::Fstat { handle: st.handle }, Bytes::new())
                .await?
            {
                (Response::Stat(s), _) => Ok(s),
                (other, _) => Err(unexpected(&other)),
            }
        })
        .map_err(|e| e.with_path(&self.path))?;
        st.stat = stat;
        Ok(stat)
    }

    /// Up to `len` bytes at `offset`; fewer only at end of file.
    pub fn pread(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len.min(64 * 1024 * 1024));
        self.read_into_sink(offset, len, &mut out)?;
        Ok(out)
    }

    /// Reads into `buf` at `offset` (straight from the received chunks, no intermediate
    /// buffer); returns the number of bytes read, short only at end of file.
    pub fn pread_into(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut sink = SliceSink { buf, filled: 0 };
        let len = sink.buf.len();
        self.read_into_sink(offset, len, &mut sink)?;
        Ok(sink.filled)
    }

    fn read_into_sink<S: Sink>(&self, offset: u64, len: usize, out: &mut S) -> Result<()> {
        let mut st = self.lock();
        self.check_open(&st)?;
        if !self.flags.read {
            return Err(
                ClientError::os(libc::EBADF, "file not open for reading").with_path(&self.path)
            );
        }
        if let Some(data) = &st.inline {
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(len).min(data.len());
            out.put(&data[start..end]);
            return Ok(());
        }
        runtime::block_on(async {
            self.flush_writes(&mut st).await?;
            match self.read_at(&mut st, offset, len, out).await {
                Err(e) if is_connection_lost(&e) && !self.flags.write => {
                    // The agent may be back: reopen once on a fresh connection.
                    st.conn = None;
                    st.chunks.clear();
                    out.reset();
                    self.read_at(&mut st, offset, len, out).await
                }
                other => other,
            }
        })
        .map_err(|e| e.with_path(&self.path))
    }

    /// A live connection with a valid handle, reopening a read-only file if needed.
    async fn conn(&self, st: &mut State) -> Result<Arc<Conn>> {
        if let Some(conn) = &st.conn {
            if conn.is_alive() && conn.epoch == runtime::epoch() {
                return Ok(conn.clone());
            }
        }
        if self.flags.write {
            return Err(ClientError::os(
                libc::EIO,
                "the connection to the agent was lost while the file was open for writing; unflushed data is lost, reopen the file",
            ));
        }
        let flags = OpenFlags {
            read: true,
            ..OpenFlags::default()
        };
        let timeout = self.timeout();
        let reopened = tokio::time::timeout(
            timeout,
            open_on(&self.inner, &self.export, &self.path, flags, 0, 0),
        )
        .await;
        let (conn, opened, _) = match reopened {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    what: format!("agent for export {} (reopen)", self.export),
                    after: timeout,
                })
            }
        };
        if !opened.stat.same_version(&st.stat) {
            return Err(ClientError::os(
                libc::ESTALE,
                "the file changed on the agent while it was open; reopen it",
            ));
        }
        st.handle = opened.handle;
        st.chunks.clear();
        st.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn call(&self, conn: &Conn, req: Request, data: Bytes) -> Result<(Response, Bytes)> {
        let timeout = self.timeout();
        let op = req.op_name();
        match tokio::time::timeout(timeout, conn.call(&req, data)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: format!("agent at {} ({op})", conn.addr),
                after: timeout,
            }),
        }
    }

    async fn read_at<S: Sink>(
        &self,
        st: &mut State,
        offset: u64,
        len: usize,
        out: &mut S,
    ) -> Result<()> {
        let conn = self.conn(st).await?;
        let chunk = self.inner.options.read_chunk.max(4096) as u64;
        let ahead = self.inner.options.readahead_chunks as u64;
        let end = offset.saturating_add(len as u64);
        let sequential = st.last_end == Some(offset) || (offset == 0 && st.last_end.is_none());
        if !sequential {
            st.chunks
                .retain(|start, c| *start <= offset && offset < start + c.requested());
        }
        // Readahead stops at the size seen at open for files nobody writes through us.
        let hint_end = if self.flags.write {
            end
        } else {
            st.stat.size.max(end)
        };
        let mut pos = offset;
        let mut eof = false;
        while pos < end && !eof {
            // Keep a window of chunk requests in flight from `pos`.
            let target = if sequential {
                (end + ahead * chunk).min(hint_end.max(end))
            } else {
                end
            };
            let window = target.min(pos + (ahead + 1) * chunk).max(pos + 1);
            let mut next = pos;
            while next < window {
                let covering = st
                    .chunks
                    .range(..=next)
                    .next_back()
                    .filter(|(s, c)| next < **s + c.requested())
                    .map(|(s, c)| *s + c.requested());
                match covering {
                    Some(chunk_end) => next = chunk_end,
                    None => {
                        let want = chunk.min(window.max(end.min(next + chunk)) - next).max(1);
                        let task = tokio::spawn(read_chunk(
                            conn.clone(),
                            st.handle,
                            next,
                            want,
                            self.timeout(),
                        ));
                        st.chunks.insert(
                            next,
                            Chunk::Pending {
                                requested: want,
                                task,
                            },
                        );
                        next += want;
                    }
                }
            }
            // Consume the chunk covering `pos`.
            let Some((&start, _)) = st.chunks.range(..=pos).next_back() else {
                break;
            };
            let Some(chunk_entry) = st.chunks.remove(&start) else {
                break;
            };
            let (requested, data) = match chunk_entry {
                Chunk::Ready { requested, data } => (requested, data),
                Chunk::Pending { requested, task } => match task.await {
                    Ok(Ok(data)) => (requested, data),
                    Ok(Err(e)) => {
                        st.chunks.clear();
                        return Err(e);
                    }
                    Err(e) => {
                        st.chunks.clear();
                        return Err(ClientError::os(libc::EIO, format!("read task failed: {e}")));
                    }
                },
            };
            let skip = (pos - start) as usize;
            if skip >= data.len() {
                eof = true;
            } else {
                let n = (data.len() - skip).min((end - pos) as usize);
                out.put(&data[skip..skip + n]);
                pos += n as u64;
                if (data.len() as u64) < requested && pos >= start + data.len() as u64 {
                    eof = true;
                }
            }
            if pos < start + requested && !eof {
                st.chunks.insert(start, Chunk::Ready { requested, data });
            } else if (data.len() as u64) < requested {
                // Keep short (end-of-file) chunks out: a later read re-asks the agent.
            }
        }
        st.chunks.retain(|s, c| s + c.requested() > pos);
        st.last_end = Some(pos);
        Ok(())
    }

    /// Queues a write of `data` at `offset`; returns its length. Errors surface at the latest
    /// at `flush`/`close`.
    pub fn pwrite(&self, offset: u64, data: &[u8]) -> Result<usize> {
        self.pwrite_owned(offset, data.to_vec())
    }

    /// [`File::pwrite`] taking ownership of the data (sent without another copy).
    pub fn pwrite_owned(&self, offset: u64, data: Vec<u8>) -> Result<usize> {
        let data = Bytes::from(data);
        let mut st = self.lock();
        self.check_open(&st)?;
        if !self.flags.write {
            return Err(
                ClientError::os(libc::EBADF, "file not open for writing").with_path(&self.path)
            );
        }
        if let Some(e) = st.error.clone() {
            return Err(e);
        }
        let window = self.inner.options.write_window as u64;
        let timeout = self.timeout();
        runtime::block_on(async {
            let conn = self.conn(&mut st).await?;
            st.chunks.clear();
            let end = offset + data.len() as u64;
            if st.writes.iter().any(|w| w.start < end && offset < w.end) {
                self.flush_writes(&mut st).await?;
            }
            for (i, at) in (0..data.len()).step_by(WRITE_PIECE).enumerate() {
                let bytes = data.slice(at..(at + WRITE_PIECE).min(data.len()));
                let piece_len = bytes.len() as u64;
                while st.pending_bytes + piece_len > window && !st.writes.is_empty() {
                    self.wait_oldest(&mut st).await?;
                }
                let start = offset + (i * WRITE_PIECE) as u64;
                let task =
                    tokio::spawn(write_piece(conn.clone(), st.handle, start, bytes, timeout));
                st.pending_bytes += piece_len;
                st.writes.push_back(PendingWrite {
                    start,
                    end: start + piece_len,
                    task,
                });
            }
            Ok::<usize, ClientError>(data.len())
        })
        .map_err(|e| e.with_path(&self.path))
    }

    async fn wait_oldest(&self, st: &mut State) -> Result<()> {
        let Some(w) = st.writes.pop_front() else {
            return Ok(());
        };
        st.pending_bytes = st.pending_bytes.saturating_sub(w.end - w.start);
        let result = match w.task.await {
            Ok(r) => r,
            Err(e) => Err(ClientError::os(
                libc::EIO,
                format!("write task failed: {e}"),
            )),
        };
        if let Err(e) = &result {
            st.error.get_or_insert_with(|| e.clone());
        }
        result
    }

    async fn flush_writes(&self, st: &mut State) -> Result<()> {
        while !st.writes.is_empty() {
            // Drain everything even after an error; report the first one.
            let _ = self.wait_oldest(st).await;
        }
        match &st.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Appends at the true end of file; returns the offset after the data.
    pub fn append(&self, data: &[u8]) -> Result<u64> {
        let mut st = self.lock();
        self.check_open(&st)?;
        if !self.flags.write {
            return Err(
                ClientError::os(libc::EBADF, "file not open for writing").with_path(&self.path)
            );
        }
        runtime::block_on(async {
            self.flush_writes(&mut st).await?;
            let conn = self.conn(&mut st).await?;
            st.chunks.clear();
            let mut end: u64 = 0;
            let pieces: Vec<&[u8]> = if data.is_empty() {
                vec![data]
            } else {
                data.chunks(WRITE_PIECE).collect()
            };
            for piece in pieces {
                let req = Request::Append { handle: st.handle };
                match self.call(&conn, req, Bytes::copy_from_slice(piece)).await? {
                    (Response::Appended { end: e }, _) => end = e,
                    (other, _) => return Err(unexpected(&other)),
                }
            }
            Ok::<u64, ClientError>(end)
        })
        .map_err(|e| e.with_path(&self.path))
    }

    pub fn truncate(&self, len: u64) -> Result<()> {
        let mut st = self.lock();
        self.check_open(&st)?;
        if !self.flags.write {
            return Err(
                ClientError::os(libc::EINVAL, "file not open for writing").with_path(&self.path)
            );
        }
        runtime::block_on(async {
            self.flush_writes(&mut st).await?;
            let conn = self.conn(&mut st).await?;
            st.chunks.clear();
            match self
                .call(
                    &conn,
                    Request::FTruncate {
                        handle: st.handle,
                        len,
                    },
                    Bytes::new(),
                )
                .await?
            {
                (Response::Ok, _) => Ok(()),
                (other, _) => Err(unexpected(&other)),
            }
        })
        .map_err(|e| e.with_path(&self.path))
    }

    /// Waits for every queued write; reports the first failure.
    pub fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        if st.closed {
            return Ok(());
        }
        runtime::block_on(self.flush_writes(&mut st)).map_err(|e| e.with_path(&self.path))
    }

    pub fn closed(&self) -> bool {
        self.lock().closed
    }

    /// Flushes, publishes a staged write and releases the handle. Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut st = self.lock();
        if st.closed {
            return Ok(());
        }
        st.closed = true;
        st.inline = None;
        let Some(conn) = st.conn.clone() else {
            return Ok(());
        };
        if conn.epoch != runtime::epoch() {
            return Ok(()); // Opened before fork(): the parent owns the handle.
        }
        runtime::block_on(async {
            let flushed = self.flush_writes(&mut st).await;
            for (_, chunk) in std::mem::take(&mut st.chunks) {
                if let Chunk::Pending { task, .. } = chunk {
                    task.abort();
                }
            }
            if !conn.is_alive() {
                return flushed.and(Err(ClientError::os(
                    libc::EIO,
                    "the connection to the agent was lost before close; written data was not published",
                )));
            }
            let req = Request::Close {
                handle: st.handle,
                abort: flushed.is_err(),
            };
            let closed = self.call(&conn, req, Bytes::new()).await;
            flushed?;
            match closed? {
                (Response::Ok, _) => Ok(()),
                (other, _) => Err(unexpected(&other)),
            }
        })
        .map_err(|e| e.with_path(&self.path))
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return;
        }
        let Some(conn) = st.conn.take() else {
            return;
        };
        if conn.epoch != runtime::epoch() || !conn.is_alive() {
            std::mem::forget(conn);
            return;
        }
        // Never published: a file must be closed explicitly for its writes to count.
        let handle = st.handle;
        runtime::handle().spawn(async move {
            let _ = conn
                .call(
                    &Request::Close {
                        handle,
                        abort: true,
                    },
                    Bytes::new(),
                )
                .await;
        });
    }
}
