//! The raft log's entries on disk: append-only segment files (`<raft dir>/wal/<first index>.seg`)
//! of checksummed records, made durable with one `fdatasync` per batch.
//!
//! A record is `[payload length u32][crc32 u32][index u64][payload]`, little-endian; the CRC
//! covers the index and the payload. At open every segment is read through: a record cut short
//! or failing its CRC at the end of the newest segment is a write torn by a crash and is cut off
//! (it was never reported durable); anywhere else it is corruption and opening fails.
//!
//! The newest segment's file is allocated ahead of its records, a few MiB at a time, so that
//! the sync after an append does not also have to commit a new file size; the zeros after the
//! last record are the end of the data.
//!
//! One writer (the log store's writer thread) appends, truncates and purges; readers find a
//! record's place under a short lock and read it with `pread`, without waiting on a sync.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HEADER: usize = 16;
/// A segment is closed and a new one started once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// The newest segment's file grows by this much when its records reach its end.
const PREALLOCATE: u64 = 4 << 20;
/// Bigger payloads are refused (a length this large in a record is corruption).
const MAX_PAYLOAD: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: corrupt record at byte {offset}")]
    Corrupt { path: String, offset: u64 },
    #[error("entry {0} is not in the log")]
    Missing(u64),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Length of the file (records, then zeros).
    allocated: u64,
}

#[derive(Clone, Copy)]
struct Place {
    /// Key of the segment in `Wal::segments` (its first index).
    segment: u64,
    offset: u64,
    len: u32,
}

/// The segment files of one log.
pub struct Wal {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    places: BTreeMap<u64, Place>,
    /// Bytes appended to the newest segment and not yet written.
    buffer: Vec<u8>,
    buffered: Vec<(u64, Place)>,
    /// Segments written since the last sync.
    dirty: std::collections::BTreeSet<u64>,
    /// Segments were created or removed since the last sync (the directory needs one too).
    dir_dirty: bool,
    segment_bytes: u64,
    /// The file system allocates ahead (off once it refused).
    preallocate: bool,
}

/// What a sync must make durable; run without holding the [`Wal`] (readers go on meanwhile).
#[must_use]
pub struct SyncJob {
    files: Vec<(Arc<File>, PathBuf)>,
    dir: Option<PathBuf>,
}

impl SyncJob {
    pub fn run(self) -> Result<(), WalError> {
        for (f, path) in &self.files {
            f.sync_data().map_err(io(path))?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(())
    }
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

impl Wal {
    /// Opens (or creates) the log in `dir`, cutting off a torn record at its end.
    pub fn open(dir: &Path) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(n);
            }
        }
        firsts.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: BTreeMap::new(),
            places: BTreeMap::new(),
            buffer: Vec::new(),
            buffered: Vec::new(),
            dirty: Default::default(),
            dir_dirty: false,
            segment_bytes: SEGMENT_BYTES,
            preallocate: true,
        };
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let newest = n + 1 == count;
            let path = dir.join(segment_name(first));
            let file = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let data = std::fs::read(&path).map_err(io(&path))?;
            let mut offset = 0usize;
            let mut allocated = data.len() as u64;
            while offset < data.len() {
                if data[offset..].iter().all(|b| *b == 0) {
                    // Allocated ahead, never written.
                    break;
                }
                match parse(&data[offset..]) {
                    Some((index, len)) => {
                        wal.places.insert(
                            index,
                            Place {
                                segment: first,
                                offset: offset as u64,
                                len: len as u32,
                            },
                        );
                        offset += HEADER + len;
                    }
                    None if newest => {
                        tracing::warn!(
                            path = %path.display(),
                            offset,
                            "cutting off a torn record at the end of the raft log"
                        );
                        file.set_len(offset as u64).map_err(io(&path))?;
                        file.sync_all().map_err(io(&path))?;
                        allocated = offset as u64;
                        break;
                    }
                    None => {
                        return Err(WalError::Corrupt {
                            path: path.display().to_string(),
                            offset: offset as u64,
                        })
                    }
                }
            }
            wal.segments.insert(
                first,
                Segment {
                    first,
                    path,
                    file: Arc::new(file),
                    len: offset.min(data.len()) as u64,
                    allocated,
                },
            );
        }
        Ok(wal)
    }

    /// Index of the last record, if any.
    pub fn last_index(&self) -> Option<u64> {
        self.buffered
            .last()
            .map(|(i, _)| *i)
            .or_else(|| self.places.keys().next_back().copied())
    }

    /// Indexes of the records held, oldest first.
    pub fn indexes(&self) -> impl Iterator<Item = u64> + '_ {
        self.places.keys().copied()
    }

    /// Appends a record (written by the next [`Wal::sync`] or sooner). An index at or before the
    /// last one replaces the records from it on.
    pub fn append(&mut self, index: u64, payload: &[u8]) -> Result<(), WalError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(WalError::Io {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(format!(
                    "log entry {index} is {} bytes; at most {MAX_PAYLOAD}",
                    payload.len()
                )),
            });
        }
        if self.last_index().is_some_and(|last| index <= last) {
            self.truncate(index)?;
        }
        let roll = match self.segments.values().next_back() {
            None => true,
            Some(s) => s.len + self.buffer.len() as u64 >= self.segment_bytes,
        };
        if roll {
            self.write_buffer()?;
            self.new_segment(index)?;
        }
        let Some(seg) = self.segments.values().next_back() else {
            return Err(WalError::Missing(index));
        };
        let place = Place {
            segment: seg.first,
            offset: seg.len + self.buffer.len() as u64,
            len: payload.len() as u32,
        };
        self.buffer
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buffer
            .extend_from_slice(&crc(index, payload).to_le_bytes());
        self.buffer.extend_from_slice(&index.to_le_bytes());
        self.buffer.extend_from_slice(payload);
        self.buffered.push((index, place));
        Ok(())
    }

    fn new_segment(&mut self, first: u64) -> Result<(), WalError> {
        // The closed segment gives back what it did not use.
        if let Some(prev) = self.segments.values_mut().next_back() {
            if prev.allocated > prev.len {
                prev.file.set_len(prev.len).map_err(io(&prev.path))?;
                prev.allocated = prev.len;
                self.dirty.insert(prev.first);
            }
        }
        let path = self.dir.join(segment_name(first));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        self.segments.insert(
            first,
            Segment {
                first,
                path,
                file: Arc::new(file),
                len: 0,
                allocated: 0,
            },
        );
        self.dir_dirty = true;
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(seg) = self.segments.values_mut().next_back() else {
            return Err(WalError::Missing(0));
        };
        let end = seg.len + self.buffer.len() as u64;
        if self.preallocate && end > seg.allocated {
            let want = end.div_ceil(PREALLOCATE) * PREALLOCATE;
            match rustix::fs::fallocate(
                &*seg.file,
                rustix::fs::FallocateFlags::empty(),
                seg.allocated,
                want - seg.allocated,
            ) {
                Ok(()) => seg.allocated = want,
                Err(e) => {
                    tracing::debug!(error = %e, "the file system does not allocate ahead; appending");
                    self.preallocate = false;
                }
            }
        }
        seg.file
            .write_all_at(&self.buffer, seg.len)
            .map_err(io(&seg.path))?;
        seg.len += self.buffer.len() as u64;
        seg.allocated = seg.allocated.max(seg.len);
        self.dirty.insert(seg.first);
        self.buffer.clear();
        for (i, p) in self.buffered.drain(..) {
            self.places.insert(i, p);
        }
        Ok(())
    }

    /// Writes what was appended; the returned job makes it durable.
    pub fn write(&mut self) -> Result<SyncJob, WalError> {
        self.write_buffer()?;
        let files = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|k| self.segments.get(&k))
            .map(|s| (Arc::clone(&s.file), s.path.clone()))
            .collect();
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        Ok(SyncJob { files, dir })
    }

    /// Writes what was appended and makes it durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.write()?.run()
    }

    /// Removes the records from `from` on (durable at the next [`Wal::sync`]).
    pub fn truncate(&mut self, from: u64) -> Result<(), WalError> {
        self.write_buffer()?;
        let Some(cut) = self.places.get(&from).copied() else {
            return Ok(());
        };
        let later: Vec<u64> = self
            .segments
            .range(cut.segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for k in later {
            if let Some(s) = self.segments.remove(&k) {
                std::fs::remove_file(&s.path).map_err(io(&s.path))?;
                self.dir_dirty = true;
            }
        }
        if let Some(seg) = self.segments.get_mut(&cut.segment) {
            seg.file.set_len(cut.offset).map_err(io(&seg.path))?;
            seg.len = cut.offset;
            seg.allocated = cut.offset;
            self.dirty.insert(cut.segment);
        }
        let _ = self.places.split_off(&from);
        Ok(())
    }

    /// Forgets the records up to `upto` and deletes the segments holding nothing else.
    pub fn purge(&mut self, upto: u64) -> Result<(), WalError> {
        let keep = self.places.split_off(&(upto + 1));
        self.places = keep;
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            // Every record of a segment is before the next segment's first.
            if pair[1] <= upto + 1 {
                if let Some(s) = self.segments.remove(&pair[0]) {
                    std::fs::remove_file(&s.path).map_err(io(&s.path))?;
                    self.dir_dirty = true;
                }
            }
        }
        Ok(())
    }

    /// Where each record in `[start, end)` is, for [`read_at`] (records not held are skipped).
    pub fn locate(&self, start: u64, end: Option<u64>) -> Vec<Located> {
        let range = match end {
            Some(e) if e <= start => return Vec::new(),
            Some(e) => self.places.range(start..e),
            None => self.places.range(start..),
        };
        range
            .filter_map(|(i, p)| {
                self.segments.get(&p.segment).map(|s| Located {
                    index: *i,
                    file: Arc::clone(&s.file),
                    path: s.path.clone(),
                    offset: p.offset,
                    len: p.len,
                })
            })
            .collect()
    }
}

/// A record found by [`Wal::locate`].
pub struct Located {
    pub index: u64,
    file: Arc<File>,
    path: PathBuf,
    offset: u64,
    len: u32,
}

impl Located {
    /// Reads and checks the record's payload.
    pub fn read(&self) -> Result<Vec<u8>, WalError> {
        let mut buf = vec![0u8; HEADER + self.len as usize];
        self.file
            .read_exact_at(&mut buf, self.offset)
            .map_err(io(&self.path))?;
        match parse(&buf) {
            Some((index, len)) if index == self.index && len == self.len as usize => {
                buf.drain(..HEADER);
                Ok(buf)
            }
            _ => Err(WalError::Corrupt {
                path: self.path.display().to_string(),
                offset: self.offset,
            }),
        }
    }
}

/// Parses the record at the start of `data`: its index and payload length, or `None` if it is
/// cut short or fails its checksum.
fn parse(data: &[u8]) -> Option<(u64, usize)> {
    let header = data.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let index = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = data.get(HEADER..HEADER + len)?;
    (crc(index, payload) == sum).then_some((index, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(w: &Wal) -> Vec<(u64, Vec<u8>)> {
        w.locate(0, None)
            .iter()
            .map(|l| (l.index, l.read().unwrap()))
            .collect()
    }

    fn payload(i: u64) -> Vec<u8> {
        format!("entry-{i}").into_bytes()
    }

    #[test]
    fn appended_records_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        for i in 1..=50 {
            w.append(i, &payload(i)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        let all = read_all(&w);
        assert_eq!(all.len(), 50);
        assert!(all.iter().all(|(i, p)| *p == payload(*i)));
        assert_eq!(w.last_index(), Some(50));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_appending_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        for i in 1..=3 {
            w.append(i, &payload(i)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let seg = dir.path().join(segment_name(1));
        let end: u64 = (1..=3).map(|i| (HEADER + payload(i).len()) as u64).sum();
        // A crash in the middle of writing record 3: its last bytes never reached the disk.
        File::options()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&[0, 0, 0], end - 3)
            .unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last_index(), Some(2));
        w.append(3, b"again").unwrap();
        w.sync().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(read_all(&w)[2], (3, b"again".to_vec()));
    }

    #[test]
    fn space_allocated_ahead_is_not_read_as_records_and_closed_segments_give_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        for i in 1..=3 {
            w.append(i, &payload(i)).unwrap();
        }
        w.sync().unwrap();
        let seg = dir.path().join(segment_name(1));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), PREALLOCATE);
        drop(w);
        let mut w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last_index(), Some(3));
        w.append(4, &payload(4)).unwrap();
        w.sync().unwrap();
        drop(w);
        let mut w = Wal::open(dir.path()).unwrap();
        assert_eq!(read_all(&w).len(), 4);
        // Rolling to a new segment trims the old one to its records.
        w.segment_bytes = 1;
        w.append(5, &payload(5)).unwrap();
        w.sync().unwrap();
        let used: u64 = (1..=4).map(|i| (HEADER + payload(i).len()) as u64).sum();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), used);
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(read_all(&w).len(), 5);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        for i in 1..=3 {
            w.append(i, &payload(i)).unwrap();
        }
        w.sync().unwrap();
        let located = w.locate(2, Some(3));
        drop(w);
        let seg = dir.path().join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = HEADER + payload(1).len() + HEADER + 1;
        bytes[at] ^= 0xFF;
        std::fs::write(&seg, &bytes).unwrap();
        assert!(matches!(located[0].read(), Err(WalError::Corrupt { .. })));
        // At open, the damaged record and what follows it are cut off.
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last_index(), Some(1));
    }

    #[test]
    fn truncation_and_purging_keep_the_rest_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        w.segment_bytes = 100;
        let big = vec![7u8; 30];
        for i in 1..=10 {
            w.append(i, &big).unwrap();
        }
        w.sync().unwrap();
        let segments = w.segments.len();
        assert!(segments >= 3, "{segments} segments");
        w.truncate(8).unwrap();
        w.append(8, b"new 8").unwrap();
        w.sync().unwrap();
        w.purge(5).unwrap();
        w.sync().unwrap();
        assert!(w.segments.len() < segments);
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        let held: Vec<u64> = w.indexes().filter(|i| *i > 5).collect();
        assert_eq!(held, vec![6, 7, 8]);
        assert_eq!(w.locate(8, Some(9))[0].read().unwrap(), b"new 8");
    }

    #[test]
    fn appending_an_earlier_index_replaces_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Wal::open(dir.path()).unwrap();
        for i in 1..=5 {
            w.append(i, &payload(i)).unwrap();
        }
        w.append(3, b"three").unwrap();
        w.sync().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        let all = read_all(&w);
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], (3, b"three".to_vec()));
    }
}
