//! Content-addressed blobs: `blobs/sha256/<hex>`, each visible only once its size and digest are verified.
//!
//! Incoming bytes go to `incoming/<hex>.partial` under an exclusive lock on `incoming/<hex>.lock`, so two
//! processes fetching the same blob take turns and the second finds it already present. A partial file
//! outlives an interrupted download so the next attempt resumes from where it stopped; garbage collection
//! removes one left untouched for a day, unless a writer holds its lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{StoreError, io_error};
use crate::digest::Digest;

/// An exclusive advisory lock on a file, released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub(crate) fn exclusive(path: &Path) -> Result<Self, StoreError> {
        let file = open_lock_file(path)?;
        file.lock().map_err(io_error(path))?;
        Ok(Self { _file: file })
    }

    /// The lock if nobody holds it, `None` if someone does.
    pub(crate) fn try_exclusive(path: &Path) -> Result<Option<Self>, StoreError> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(path)(e)),
        }
    }

    pub(crate) fn shared(path: &Path) -> Result<Self, StoreError> {
        let file = open_lock_file(path)?;
        file.lock_shared().map_err(io_error(path))?;
        Ok(Self { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error(path))
}

/// Where the bytes of one blob are being gathered. Dropping it keeps the partial file for a later resume.
#[derive(Debug)]
pub struct PartialBlob {
    expected: Digest,
    expected_size: u64,
    partial_path: PathBuf,
    final_path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    _lock: FileLock,
}

/// What the store holds of a blob someone wants to write.
#[derive(Debug)]
pub enum BlobIngest {
    /// Already stored and verified: nothing to fetch.
    Present,
    /// Not stored yet: write the rest of it (from `PartialBlob::offset`).
    Partial(Box<PartialBlob>),
}

pub(crate) fn begin(
    blobs_dir: &Path,
    incoming_dir: &Path,
    digest: &Digest,
    size: u64,
) -> Result<BlobIngest, StoreError> {
    let final_path = blobs_dir.join(digest.hex());
    if blob_is_present(&final_path, size) {
        return Ok(BlobIngest::Present);
    }
    let lock = FileLock::exclusive(&incoming_dir.join(format!("{}.lock", digest.hex())))?;
    // Another process may have finished it while we waited for the lock.
    if blob_is_present(&final_path, size) {
        return Ok(BlobIngest::Present);
    }
    let partial_path = partial_path(incoming_dir, digest);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial_path)
        .map_err(io_error(&partial_path))?;
    let mut hasher = Sha256::new();
    let mut written = file.metadata().map_err(io_error(&partial_path))?.len();
    if written > size {
        written = 0;
        file.set_len(0).map_err(io_error(&partial_path))?;
    } else if written > 0 {
        hash_prefix(&mut file, written, &mut hasher).map_err(io_error(&partial_path))?;
    }
    file.seek(SeekFrom::Start(written))
        .map_err(io_error(&partial_path))?;
    Ok(BlobIngest::Partial(Box::new(PartialBlob {
        expected: digest.clone(),
        expected_size: size,
        partial_path,
        final_path,
        file,
        hasher,
        written,
        _lock: lock,
    })))
}

/// Where a blob's bytes gather while it is fetched.
pub(crate) fn partial_path(incoming_dir: &Path, digest: &Digest) -> PathBuf {
    incoming_dir.join(format!("{}.partial", digest.hex()))
}

/// Deletes partial and temporary files in `incoming_dir` untouched for longer than `max_age`, except those of
/// blobs whose lock a writer holds (a live pull, however old its bytes). Returns the bytes freed. Lock files
/// stay: deleting one a waiter has opened would let a newcomer lock a fresh file beside it.
pub(crate) fn remove_stale_partials(
    incoming_dir: &Path,
    max_age: Duration,
) -> Result<u64, StoreError> {
    let now = SystemTime::now();
    let mut freed = 0;
    for entry in fs::read_dir(incoming_dir).map_err(io_error(incoming_dir))? {
        let entry = entry.map_err(io_error(incoming_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix(".partial")
            .or_else(|| name.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if age.is_none_or(|age| age <= max_age) {
            continue;
        }
        let _held = match Digest::parse(&format!("sha256:{stem}")) {
            Ok(digest) => {
                match FileLock::try_exclusive(&incoming_dir.join(format!("{}.lock", digest.hex())))?
                {
                    Some(lock) => Some(lock),
                    None => continue,
                }
            }
            // Imports and atomic writes have no lock; while alive they keep their file's time fresh.
            Err(_) => None,
        };
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => freed += meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
    }
    Ok(freed)
}

/// Bytes free for an unprivileged writer on the file system holding `path`.
#[cfg(unix)]
#[allow(clippy::useless_conversion)] // the statvfs field widths differ between platforms
pub(crate) fn available_bytes(path: &Path) -> Result<u64, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path holds a NUL byte",
        ))
    })?;
    // SAFETY: statvfs only writes into the zeroed struct we own, reading the NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io_error(path)(io::Error::last_os_error()));
    }
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Without statvfs the check is left to the writes themselves.
#[cfg(not(unix))]
pub(crate) fn available_bytes(_path: &Path) -> Result<u64, StoreError> {
    Ok(u64::MAX)
}

fn blob_is_present(path: &Path, size: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// Feeds the first `len` bytes already on disk to the hasher, so a resumed download verifies as a whole.
fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut remaining = len;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        remaining -= want as u64;
    }
    Ok(())
}

impl PartialBlob {
    /// Bytes already held: where a download resumes.
    pub fn offset(&self) -> u64 {
        self.written
    }

    pub fn expected_size(&self) -> u64 {
        self.expected_size
    }

    /// Throws away what was held, for a source that cannot resume.
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .and_then(|_| self.file.seek(SeekFrom::Start(0)))
            .map_err(io_error(&self.partial_path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.written + bytes.len() as u64 > self.expected_size {
            let received = self.written + bytes.len() as u64;
            self.discard();
            return Err(StoreError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.expected_size,
                actual: received,
            });
        }
        self.file
            .write_all(bytes)
            .map_err(io_error(&self.partial_path))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Verifies size and digest, then makes the blob visible with an atomic rename. A mismatch deletes the
    /// partial data: resuming from bytes that hash wrong could never succeed.
    pub fn commit(mut self) -> Result<(), StoreError> {
        if self.written != self.expected_size {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.to_string(),
                expected: self.expected_size,
                actual: self.written,
            });
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            self.discard();
            return Err(StoreError::DigestMismatch {
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.file.sync_all().map_err(io_error(&self.partial_path))?;
        fs::rename(&self.partial_path, &self.final_path).map_err(io_error(&self.final_path))?;
        Ok(())
    }

    /// Deletes what was gathered: for bytes shown to be wrong, which no resume could make right.
    pub fn discard(&mut self) {
        let _ = fs::remove_file(&self.partial_path);
    }
}

/// Copies a local file into the store, hashing it on the way, and returns its digest and size.
pub(crate) fn import_file(
    blobs_dir: &Path,
    incoming_dir: &Path,
    source: &Path,
    on_progress: &mut dyn FnMut(u64),
) -> Result<(Digest, u64), StoreError> {
    let mut input = File::open(source).map_err(io_error(source))?;
    let temp_path = incoming_dir.join(format!(
        "import-{}-{}.partial",
        std::process::id(),
        unique()
    ));
    let result = (|| {
        let mut out = File::create(&temp_path).map_err(io_error(&temp_path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(io_error(source))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_error(&temp_path))?;
            total += n as u64;
            on_progress(total);
        }
        out.sync_all().map_err(io_error(&temp_path))?;
        let digest = Digest::from_hasher(hasher);
        let final_path = blobs_dir.join(digest.hex());
        if blob_is_present(&final_path, total) {
            fs::remove_file(&temp_path).map_err(io_error(&temp_path))?;
        } else {
            fs::rename(&temp_path, &final_path).map_err(io_error(&final_path))?;
        }
        Ok((digest, total))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// Writes small content (a manifest, a config) under its digest, atomically.
pub(crate) fn put_bytes(
    dir: &Path,
    incoming_dir: &Path,
    bytes: &[u8],
) -> Result<Digest, StoreError> {
    let digest = Digest::of_bytes(bytes);
    let final_path = dir.join(digest.hex());
    if blob_is_present(&final_path, bytes.len() as u64) {
        return Ok(digest);
    }
    write_atomically(incoming_dir, &final_path, bytes)?;
    Ok(digest)
}

/// Writes a whole file through a temporary sibling and a rename, so readers never see half of it.
pub(crate) fn write_atomically(
    temp_dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let temp_path = temp_dir.join(format!("write-{}-{}.tmp", std::process::id(), unique()));
    let result = (|| {
        let mut f = File::create(&temp_path).map_err(io_error(&temp_path))?;
        f.write_all(bytes).map_err(io_error(&temp_path))?;
        f.sync_all().map_err(io_error(&temp_path))?;
        fs::rename(&temp_path, path).map_err(io_error(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp_path);
    }
    result
}

/// A name part unique within this process.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
