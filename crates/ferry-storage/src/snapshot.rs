//! Snapshot files: a group's whole state machine written from a consistent RocksDB snapshot to a file,
//! streamed to a lagging follower in chunks, and installed there. Memory stays bounded whatever the
//! size of the partition: nothing holds a whole snapshot in RAM.
//!
//! File format: `FERRYSNAP1`, then records `tag (1) ++ len (4) ++ key ++ len (4) ++ value`, where tag 0
//! is a state-machine key/value and tag 1 carries the applied state (key empty).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferry_types::GroupId;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use crate::db::{NodeDb, StorageError};
use crate::keys::{self, meta, CF_RAFT, CF_SM};

const MAGIC: &[u8] = b"FERRYSNAP1";
const TAG_KV: u8 = 0;
const TAG_APPLIED: u8 = 1;
/// Install writes in batches of about this many bytes.
const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// Chunk size when streaming a file to a follower.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A snapshot on disk. The file is removed when a newer snapshot of the group replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// A group's snapshot as openraft holds it.
#[derive(Clone)]
pub enum SnapshotData {
    /// A file: one received from a leader (kept until the group's state is durable past it), or one
    /// an older build wrote.
    File(SnapshotFile),
    /// The group's state as the node's database holds it durably: nothing is written until a
    /// follower needs a snapshot, and then a file of the state as it is at that moment.
    Durable(Arc<NodeDb>, GroupId),
}

impl fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(file) => write!(f, "file {}", file.path.display()),
            Self::Durable(_, group) => write!(f, "durable state of group {group}"),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::SnapshotIo {
        path: path.to_owned(),
        source,
    }
}

fn unique_path(db: &NodeDb, group: GroupId, suffix: &str) -> PathBuf {
    let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
    db.snapshot_dir()
        .join(format!("{group}-{}-{n}.{suffix}", std::process::id()))
}

impl SnapshotFile {
    /// Writes the group's current state and applied state to a new file. Reads from a RocksDB
    /// snapshot, so concurrent applies do not tear it. Returns the file and the applied state bytes.
    pub fn build(db: &NodeDb, group: GroupId) -> Result<(Self, Vec<u8>), StorageError> {
        let path = unique_path(db, group, "snap");
        let snapshot = db.db().snapshot();
        let applied = snapshot
            .get_cf(db.cf(CF_SM), keys::applied_key(group))?
            .unwrap_or_default();
        let file = File::create(&path).map_err(io_err(&path))?;
        let mut out = BufWriter::new(file);
        let write =
            |out: &mut BufWriter<File>, tag: u8, key: &[u8], value: &[u8]| -> io::Result<()> {
                out.write_all(&[tag])?;
                out.write_all(&(key.len() as u32).to_be_bytes())?;
                out.write_all(key)?;
                out.write_all(&(value.len() as u32).to_be_bytes())?;
                out.write_all(value)
            };
        out.write_all(MAGIC).map_err(io_err(&path))?;
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::group_end(group));
        let start = keys::sm_start(group);
        for item in snapshot.iterator_cf_opt(
            db.cf(CF_SM),
            options,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (key, value) = item?;
            write(&mut out, TAG_KV, &key[8..], &value).map_err(io_err(&path))?;
        }
        write(&mut out, TAG_APPLIED, &[], &applied).map_err(io_err(&path))?;
        let file = out.into_inner().map_err(|e| StorageError::SnapshotIo {
            path: path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&path))?;
        Ok((Self { path }, applied))
    }

    /// Replaces the group's state with the file's. A crash part-way leaves the INSTALLING marker, and
    /// [`SnapshotFile::resume_install`] finishes the job on restart.
    pub fn install(&self, db: &NodeDb, group: GroupId) -> Result<Vec<u8>, StorageError> {
        let marker = self.path.to_string_lossy().into_owned();
        db.put_group_meta(group, meta::INSTALLING, marker.as_bytes())?;
        db.db().delete_range_cf(
            db.cf(CF_SM),
            keys::group_start(group),
            keys::group_end(group),
        )?;
        let mut reader = BufReader::new(File::open(&self.path).map_err(io_err(&self.path))?);
        let mut magic = [0u8; MAGIC.len()];
        reader.read_exact(&mut magic).map_err(io_err(&self.path))?;
        if magic != MAGIC {
            return Err(StorageError::SnapshotIo {
                path: self.path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "not a Ferry snapshot"),
            });
        }
        let mut batch = WriteBatch::default();
        let mut applied = None;
        while let Some((tag, key, value)) = read_record(&mut reader).map_err(io_err(&self.path))? {
            match tag {
                TAG_KV => batch.put_cf(db.cf(CF_SM), keys::sm_key(group, &key), value),
                _ => applied = Some(value),
            }
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                db.db().write(std::mem::take(&mut batch))?;
            }
        }
        let applied = applied.ok_or_else(|| StorageError::SnapshotIo {
            path: self.path.clone(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "snapshot has no applied state",
            ),
        })?;
        batch.put_cf(db.cf(CF_SM), keys::applied_key(group), &applied);
        batch.delete_cf(db.cf(CF_RAFT), keys::meta_key(group, meta::INSTALLING));
        db.db().write(batch)?;
        Ok(applied)
    }

    /// Finishes an install that a crash interrupted, if any.
    pub fn resume_install(db: &NodeDb, group: GroupId) -> Result<(), StorageError> {
        if let Some(path) = db.group_meta(group, meta::INSTALLING)? {
            let file = SnapshotFile {
                path: PathBuf::from(String::from_utf8_lossy(&path).into_owned()),
            };
            tracing::warn!(%group, path = %file.path.display(), "resuming interrupted snapshot install");
            file.install(db, group)?;
        }
        Ok(())
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One record of a snapshot file: tag, key, value.
type Record = (u8, Vec<u8>, Vec<u8>);

fn read_record(reader: &mut impl Read) -> io::Result<Option<Record>> {
    let mut tag = [0u8; 1];
    match reader.read_exact(&mut tag) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let read_sized = |reader: &mut dyn Read| -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len)?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        reader.read_exact(&mut buf)?;
        Ok(buf)
    };
    let key = read_sized(reader)?;
    let value = read_sized(reader)?;
    Ok(Some((tag[0], key, value)))
}

/// Reads a snapshot file in chunks for sending.
pub struct SnapshotReader {
    file: File,
    path: PathBuf,
}

impl SnapshotReader {
    pub fn open(snapshot: &SnapshotFile) -> Result<Self, StorageError> {
        let file = File::open(&snapshot.path).map_err(io_err(&snapshot.path))?;
        Ok(Self {
            file,
            path: snapshot.path.clone(),
        })
    }

    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            let n = self
                .file
                .read(&mut buf[filled..])
                .map_err(io_err(&self.path))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok((filled > 0).then_some(buf))
    }
}

/// Receives a snapshot file chunk by chunk.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl SnapshotWriter {
    pub fn create(db: &NodeDb, group: GroupId) -> Result<Self, StorageError> {
        let path = unique_path(db, group, "recv");
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(Self {
            out: BufWriter::new(file),
            path,
        })
    }

    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        self.out.write_all(chunk).map_err(io_err(&self.path))
    }

    pub fn finish(self) -> Result<SnapshotFile, StorageError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| StorageError::SnapshotIo {
                path: path.clone(),
                source: e.into_error(),
            })?;
        file.sync_all().map_err(io_err(&path))?;
        Ok(SnapshotFile { path })
    }

    /// Abandons the transfer and removes the partial file.
    pub fn abort(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
