//! `fluxon_py._native`: the PyO3 binding of the fluxon-fs client core, exactly as described by
//! `python/fluxon_py/_native.pyi`.
//!
//! Every call that waits on the network releases the GIL. Errors become
//! `OSError(errno, message[, filename])` (so CPython picks `FileNotFoundError`,
//! `PermissionError`, ... from the errno), `TimeoutError` for a peer that did not answer in
//! time, and `ValueError` for unusable arguments.

use std::sync::Arc;
use std::time::Duration;

use fluxon_fs_client::{Client, ClientError, ClientOptions, OpenFlags, StatInfo};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

type StatTuple = (u32, u64, u64, u64, u32, u32, u64, i64, i64, i64, u64, u64);

fn stat_tuple(s: &StatInfo) -> StatTuple {
    (
        s.mode, s.ino, s.dev, s.nlink, s.uid, s.gid, s.size, s.atime_ns, s.mtime_ns, s.ctime_ns,
        s.blksize, s.blocks,
    )
}

fn to_py(e: ClientError) -> PyErr {
    match e {
        ClientError::Os {
            errno,
            message,
            path,
        } => match path {
            Some(path) => PyOSError::new_err((errno, message, path)),
            None => PyOSError::new_err((errno, message)),
        },
        e @ ClientError::Timeout { .. } => PyTimeoutError::new_err(e.to_string()),
        ClientError::InvalidArgument(message) => PyValueError::new_err(message),
    }
}

/// Abandons the runtime and connections inherited from the parent (call in a fork child).
#[pyfunction]
fn after_fork_in_child() {
    fluxon_fs_client::runtime::after_fork_in_child();
}

/// One authenticated identity on one master and its agents.
#[pyclass(module = "fluxon_py._native", frozen)]
struct Session {
    client: Client,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (master_addr, username, password, timeout_secs = 10.0))]
    fn new(
        py: Python<'_>,
        master_addr: String,
        username: String,
        password: String,
        timeout_secs: f64,
    ) -> PyResult<Self> {
        if !timeout_secs.is_finite() || timeout_secs <= 0.0 {
            return Err(PyValueError::new_err(format!(
                "timeout_secs must be a positive number of seconds, got {timeout_secs}"
            )));
        }
        let options = ClientOptions {
            timeout: Duration::from_secs_f64(timeout_secs),
            ..ClientOptions::default()
        };
        let client = py
            .allow_threads(|| Client::connect(&master_addr, &username, &password, options))
            .map_err(to_py)?;
        Ok(Session { client })
    }

    fn master_instance_key(&self, py: Python<'_>) -> PyResult<String> {
        py.allow_threads(|| self.client.master_instance_key())
            .map_err(to_py)
    }

    fn exports(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.allow_threads(|| self.client.exports()).map_err(to_py)
    }

    fn cache_config_yaml(&self, py: Python<'_>) -> PyResult<String> {
        py.allow_threads(|| self.client.cache_config_yaml())
            .map_err(to_py)
    }

    #[pyo3(signature = (export, path, follow_symlinks = true))]
    fn stat(
        &self,
        py: Python<'_>,
        export: &str,
        path: &str,
        follow_symlinks: bool,
    ) -> PyResult<StatTuple> {
        let st = py
            .allow_threads(|| self.client.stat(export, path, follow_symlinks))
            .map_err(to_py)?;
        Ok(stat_tuple(&st))
    }

    fn listdir(
        &self,
        py: Python<'_>,
        export: &str,
        path: &str,
    ) -> PyResult<Vec<(String, StatTuple)>> {
        let entries = py
            .allow_threads(|| self.client.listdir(export, path))
            .map_err(to_py)?;
        Ok(entries
            .iter()
            .map(|e| (e.name.clone(), stat_tuple(&e.stat)))
            .collect())
    }

    fn access(&self, py: Python<'_>, export: &str, path: &str, mode: u32) -> PyResult<bool> {
        py.allow_threads(|| self.client.access(export, path, mode))
            .map_err(to_py)
    }

    #[pyo3(signature = (export, path, mode = 0o777))]
    fn mkdir(&self, py: Python<'_>, export: &str, path: &str, mode: u32) -> PyResult<()> {
        py.allow_threads(|| self.client.mkdir(export, path, mode))
            .map_err(to_py)
    }

    fn rmdir(&self, py: Python<'_>, export: &str, path: &str) -> PyResult<()> {
        py.allow_threads(|| self.client.rmdir(export, path))
            .map_err(to_py)
    }

    fn unlink(&self, py: Python<'_>, export: &str, path: &str) -> PyResult<()> {
        py.allow_threads(|| self.client.unlink(export, path))
            .map_err(to_py)
    }

    /// `replace` is accepted for the contract; on Linux both forms replace the target.
    #[pyo3(signature = (export, src, dst, replace = true))]
    fn rename(
        &self,
        py: Python<'_>,
        export: &str,
        src: &str,
        dst: &str,
        replace: bool,
    ) -> PyResult<()> {
        let _ = replace;
        py.allow_threads(|| self.client.rename(export, src, dst, false))
            .map_err(to_py)
    }

    fn chmod(&self, py: Python<'_>, export: &str, path: &str, mode: u32) -> PyResult<()> {
        py.allow_threads(|| self.client.chmod(export, path, mode))
            .map_err(to_py)
    }

    fn utime(
        &self,
        py: Python<'_>,
        export: &str,
        path: &str,
        atime_ns: i64,
        mtime_ns: i64,
    ) -> PyResult<()> {
        py.allow_threads(|| self.client.utime(export, path, atime_ns, mtime_ns))
            .map_err(to_py)
    }

    fn truncate(&self, py: Python<'_>, export: &str, path: &str, length: i64) -> PyResult<()> {
        let length = u64::try_from(length)
            .map_err(|_| PyOSError::new_err((22, "Invalid argument", path.to_string())))?;
        py.allow_threads(|| self.client.truncate(export, path, length))
            .map_err(to_py)
    }

    fn readlink(&self, py: Python<'_>, export: &str, path: &str) -> PyResult<String> {
        py.allow_threads(|| self.client.readlink(export, path))
            .map_err(to_py)
    }

    #[pyo3(signature = (export, path, flags, mode = 0o666))]
    fn open(
        &self,
        py: Python<'_>,
        export: &str,
        path: &str,
        flags: i32,
        mode: u32,
    ) -> PyResult<File> {
        let flags = OpenFlags::from_linux(flags);
        let file = py
            .allow_threads(|| self.client.open(export, path, flags, mode))
            .map_err(to_py)?;
        Ok(File {
            file: Arc::new(file),
        })
    }
}

/// An open remote file with explicit offsets.
#[pyclass(module = "fluxon_py._native", frozen)]
struct File {
    file: Arc<fluxon_fs_client::File>,
}

fn to_offset(value: i64) -> PyResult<u64> {
    u64::try_from(value).map_err(|_| PyValueError::new_err(format!("negative offset {value}")))
}

#[pymethods]
impl File {
    fn inline_fd(&self) -> PyResult<Option<i32>> {
        self.file.inline_fd().map_err(to_py)
    }

    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        py.allow_threads(|| self.file.size()).map_err(to_py)
    }

    fn fstat(&self, py: Python<'_>) -> PyResult<StatTuple> {
        let st = py.allow_threads(|| self.file.fstat()).map_err(to_py)?;
        Ok(stat_tuple(&st))
    }

    fn pread<'py>(
        &self,
        py: Python<'py>,
        offset: i64,
        length: i64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let at = to_offset(offset)?;
        let len = usize::try_from(length)
            .map_err(|_| PyValueError::new_err(format!("negative length {length}")))?;
        let data = py
            .allow_threads(|| self.file.pread(at, len))
            .map_err(to_py)?;
        Ok(PyBytes::new(py, &data))
    }

    fn readinto(&self, py: Python<'_>, offset: i64, buffer: PyBuffer<u8>) -> PyResult<usize> {
        let at = to_offset(offset)?;
        if buffer.readonly() || !buffer.is_c_contiguous() {
            return Err(PyValueError::new_err(
                "readinto needs a writable contiguous buffer",
            ));
        }
        let len = buffer.len_bytes();
        // Filled without the GIL, as socket.recv_into does: the exporter stays locked (it
        // cannot be resized or freed) while `buffer` holds the view.
        let addr = buffer.buf_ptr() as usize;
        py.allow_threads(|| {
            // SAFETY: `addr` points to `len` writable, C-contiguous bytes kept alive by the
            // buffer view `buffer`, which outlives this closure; nothing else writes them
            // through this view meanwhile.
            let out = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
            self.file.pread_into(at, out)
        })
        .map_err(to_py)
    }

    fn pwrite(&self, py: Python<'_>, offset: i64, data: PyBuffer<u8>) -> PyResult<usize> {
        let at = to_offset(offset)?;
        let bytes = data.to_vec(py)?;
        py.allow_threads(|| self.file.pwrite_owned(at, bytes))
            .map_err(to_py)
    }

    fn append(&self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<u64> {
        let bytes = data.to_vec(py)?;
        py.allow_threads(|| self.file.append(&bytes)).map_err(to_py)
    }

    fn truncate(&self, py: Python<'_>, length: i64) -> PyResult<()> {
        let len = to_offset(length)?;
        py.allow_threads(|| self.file.truncate(len)).map_err(to_py)
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.file.flush()).map_err(to_py)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.file.close()).map_err(to_py)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.file.closed()
    }
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_class::<Session>()?;
    m.add_class::<File>()?;
    Ok(())
}
