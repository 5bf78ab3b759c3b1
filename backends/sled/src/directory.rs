//! Which sled directories this process holds, and opening one this process just let go of.
//!
//! sled takes an exclusive `flock` on its `db` file and holds it as long as any internal
//! reference to the file lives. Dropping the last `Db` handle does not end all of them: sled's
//! I/O thread pool may still be running a file truncation (`set_len` and `fsync`, a few ms) that
//! it started while shutting down, and it keeps the file, and so the lock, until it finishes
//! (sled issues #1234 and #1289). No sled API waits for that, so a storage closed and at once
//! reopened in the same process can find its own directory locked.
//!
//! The lock is right to refuse meanwhile: the old instance is still changing the file. So
//! [`open_db`] waits for that release, but only where it can be that: when this process opened
//! the directory before and no storage of this process has it open now. It retries the lock
//! (sled fails at the lock, before any recovery work) with a short backoff, for at most
//! [`RELEASE_WAIT`]. Any other contention, another process or a second open in this one, fails
//! at once.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_storage::{Result, StorageError};

use crate::lock;

/// Canonical paths this process has opened, and whether a storage holds each right now.
static DIRECTORIES: Mutex<BTreeMap<PathBuf, bool>> = Mutex::new(BTreeMap::new());

/// The longest [`open_db`] waits for this process's previous instance to let go of the lock.
pub(crate) const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// A storage's hold on its directory within this process; released by
/// [`DirectoryClaim::release`] or on drop.
#[derive(Debug)]
pub(crate) struct DirectoryClaim {
    canonical: PathBuf,
    /// This process opened the directory before (and closed it since).
    reopened: bool,
    /// sled opened the database under this claim: once released, the directory counts as
    /// opened before. A claim whose open failed leaves the record as it found it.
    pub(crate) opened: bool,
}

impl DirectoryClaim {
    /// Creates the directory if needed and claims it for one storage of this process.
    ///
    /// # Errors
    /// The directory cannot be created or resolved, or a storage of this process has it open
    /// ([`StorageError::Io`] with [`io::ErrorKind::WouldBlock`], like sled's own lock error).
    pub(crate) fn new(path: &Path) -> Result<DirectoryClaim> {
        let io_err = |e| StorageError::io(format!("creating {}", path.display()), e);
        std::fs::create_dir_all(path).map_err(io_err)?;
        let canonical = path.canonicalize().map_err(io_err)?;
        let mut dirs = lock(&DIRECTORIES);
        let reopened = match dirs.get(&canonical) {
            Some(true) => {
                return Err(StorageError::io(
                    "opening the database",
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is already open in this process", canonical.display()),
                    ),
                ))
            }
            Some(false) => true,
            None => false,
        };
        dirs.insert(canonical.clone(), true);
        Ok(DirectoryClaim {
            canonical,
            reopened,
            opened: false,
        })
    }

    /// Marks the directory as no longer open by this process. Call it after dropping the last
    /// sled handle. Idempotent.
    pub(crate) fn release(&self) {
        let mut dirs = lock(&DIRECTORIES);
        if self.opened || self.reopened {
            dirs.insert(self.canonical.clone(), false);
        } else {
            dirs.remove(&self.canonical);
        }
    }
}

impl Drop for DirectoryClaim {
    fn drop(&mut self) {
        self.release();
    }
}

/// sled reports its lock as an `io::ErrorKind::Other` whose message names it.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Opens the database, waiting (see the module docs) for a lock this process just released.
///
/// # Errors
/// sled's error, the lock error included once [`RELEASE_WAIT`] has passed.
pub(crate) fn open_db(config: &sled::Config, claim: &DirectoryClaim) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + RELEASE_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match config.open() {
            Err(e) if claim.reopened && is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}
