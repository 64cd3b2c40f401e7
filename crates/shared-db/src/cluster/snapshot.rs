//! Snapshot files on disk and their transfer between nodes.
//!
//! A snapshot is the directory the state machine's `build_snapshot` wrote (`data/`), kept under
//! `<data dir>/raft/snapshots/<id>/` beside a `meta.json` that records the raft metadata. The
//! leader sends it to a lagging or new node over the internal API in three steps:
//! `POST /raft/snapshot/begin` (metadata and a manifest of files with their SHA-256; the
//! receiver answers how much of each file it already has, so an interrupted transfer resumes),
//! `POST /raft/snapshot/chunk` (bytes at an offset, at most [`CHUNK`] per request) and
//! `POST /raft/snapshot/finish` (the receiver verifies every file and the snapshot checksum, then
//! installs it).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::contract::SnapshotMeta;
use super::types::{RaftSnapshotMeta, Vote};

/// Largest chunk sent in one request.
pub const CHUNK: usize = 1 << 20;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What `meta.json` holds and what `begin` carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub raft: RaftSnapshotMeta,
    pub sm: SnapshotMeta,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BeginRequest {
    pub vote: Vote,
    pub snapshot: StoredSnapshot,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BeginResponse {
    /// Bytes the receiver already holds per file (resume points).
    pub have: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FinishRequest {
    pub vote: Vote,
    pub snapshot_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot path `{0}` is not a plain relative path")]
    BadPath(String),
    #[error("snapshot file {path}: checksum mismatch")]
    Checksum { path: String },
    #[error("snapshot: {0}")]
    Protocol(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lists the regular files under `dir` (recursively) in name order, with size and SHA-256.
pub fn manifest(dir: &Path) -> Result<Vec<FileEntry>, SnapshotError> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> Result<(), SnapshotError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io(&path))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(|_| SnapshotError::BadPath(path.display().to_string()))?;
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let (size, sha256) = hash_file(&path)?;
            out.push(FileEntry {
                path: rel,
                size,
                sha256,
            });
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String), SnapshotError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// The snapshot checksum of the contract: SHA-256 over the files' contents, in name order
/// (relative paths with `/`), and their total size. State machines should use this to fill
/// [`SnapshotMeta::checksum`] and [`SnapshotMeta::size_bytes`].
pub fn checksum_dir(dir: &Path) -> Result<(u64, String), SnapshotError> {
    let files = manifest(dir)?;
    let mut h = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    for f in &files {
        let path = dir.join(&f.path);
        let mut file = std::fs::File::open(&path).map_err(io(&path))?;
        loop {
            let n = file.read(&mut buf).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        total += f.size;
    }
    Ok((total, hex::encode(h.finalize())))
}

/// Resolves a relative path from a peer inside `root`, refusing anything that could escape it.
pub fn contained(root: &Path, rel: &str) -> Result<PathBuf, SnapshotError> {
    let p = Path::new(rel);
    if rel.is_empty()
        || rel.len() > 1024
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(SnapshotError::BadPath(rel.to_string()));
    }
    Ok(root.join(p))
}

/// The snapshot id as a directory name: only `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Writes `meta.json` into a snapshot directory (fsynced).
pub fn write_meta(snap_dir: &Path, meta: &StoredSnapshot) -> Result<(), SnapshotError> {
    let path = snap_dir.join("meta.json");
    let bytes =
        serde_json::to_vec_pretty(meta).map_err(|e| SnapshotError::Protocol(e.to_string()))?;
    let mut f = std::fs::File::create(&path).map_err(io(&path))?;
    f.write_all(&bytes).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))
}

pub fn read_meta(snap_dir: &Path) -> Result<StoredSnapshot, SnapshotError> {
    let path = snap_dir.join("meta.json");
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Protocol(e.to_string()))
}

/// Reads up to [`CHUNK`] bytes of `path` from `offset`.
pub fn read_chunk(path: &Path, offset: u64) -> Result<Vec<u8>, SnapshotError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    let mut buf = Vec::with_capacity(CHUNK);
    f.take(CHUNK as u64)
        .read_to_end(&mut buf)
        .map_err(io(path))?;
    Ok(buf)
}

/// Appends `bytes` to `path`, which must currently be exactly `offset` bytes long.
pub fn write_chunk(path: &Path, offset: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    if len != offset {
        return Err(SnapshotError::Protocol(format!(
            "chunk at offset {offset} but {} has {len} bytes",
            path.display()
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    Ok(())
}

/// Current sizes of the files of `files` present under `data` (for resuming).
pub fn resume_points(data: &Path, files: &[FileEntry]) -> BTreeMap<String, u64> {
    let mut have = BTreeMap::new();
    for f in files {
        if let Ok(p) = contained(data, &f.path) {
            if let Ok(m) = std::fs::metadata(&p) {
                // A file longer than announced is corrupt: start it again.
                if m.len() <= f.size {
                    have.insert(f.path.clone(), m.len());
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
    have
}

/// Fsyncs every file under `dir` and the directories holding them (a snapshot the log has been
/// purged behind must survive an OS crash).
pub fn sync_tree(dir: &Path) -> Result<(), SnapshotError> {
    let mut dirs = std::collections::BTreeSet::from([dir.to_path_buf()]);
    for f in manifest(dir)? {
        let p = contained(dir, &f.path)?;
        std::fs::File::open(&p)
            .and_then(|file| file.sync_all())
            .map_err(io(&p))?;
        if let Some(parent) = p.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    dirs.iter().try_for_each(|d| sync_dir(d))
}

pub fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Checks every file of the manifest (and that there are no others) and fsyncs them.
pub fn verify(data: &Path, files: &[FileEntry]) -> Result<(), SnapshotError> {
    for f in files {
        let p = contained(data, &f.path)?;
        let (size, sha) = hash_file(&p)?;
        if size != f.size || sha != f.sha256 {
            return Err(SnapshotError::Checksum {
                path: f.path.clone(),
            });
        }
        let file = std::fs::File::open(&p).map_err(io(&p))?;
        file.sync_all().map_err(io(&p))?;
    }
    let actual = manifest(data)?;
    if actual.len() != files.len() {
        return Err(SnapshotError::Protocol(format!(
            "{} files received, {} announced",
            actual.len(),
            files.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_checksum_and_containment() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("db1")).unwrap();
        std::fs::write(d.path().join("b.sql"), b"world").unwrap();
        std::fs::write(d.path().join("db1/a.sql"), b"hello ").unwrap();
        let m = manifest(d.path()).unwrap();
        assert_eq!(
            m.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["b.sql", "db1/a.sql"]
        );
        let (size, sum) = checksum_dir(d.path()).unwrap();
        assert_eq!(size, 11);
        assert_eq!(sum, hex::encode(Sha256::digest(b"worldhello ")));
        verify(d.path(), &m).unwrap();
        std::fs::write(d.path().join("b.sql"), b"w0rld").unwrap();
        assert!(verify(d.path(), &m).is_err());
        assert!(contained(d.path(), "../x").is_err());
        assert!(contained(d.path(), "/etc/passwd").is_err());
        assert!(contained(d.path(), "db1/a.sql").is_ok());
        assert!(valid_id("3-17-ab12"));
        assert!(!valid_id("../x"));
    }

    #[test]
    fn chunks_resume_at_the_right_offset() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_chunk(&p, 0, b"abc").unwrap();
        assert!(write_chunk(&p, 0, b"abc").is_err());
        write_chunk(&p, 3, b"def").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");
        assert_eq!(read_chunk(&p, 2).unwrap(), b"cdef");
    }
}
