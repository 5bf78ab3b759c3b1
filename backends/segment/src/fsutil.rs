//! Small file-system primitives with the durability steps spelled out.
//!
//! `write_atomic` is the one way this backend replaces a small file (metadata, group offsets,
//! the log start checkpoint): write a temporary sibling, fsync it, rename it over the target,
//! fsync the directory. After a crash the target holds either the old or the new contents.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use weir_storage::{Result, StorageError};

/// fsyncs a directory, so that creations, renames and deletions in it are durable.
///
/// # Errors
/// The I/O error, with the directory named.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("syncing directory {}", dir.display()), e))
}

/// Creates `dir` (and parents) and fsyncs its parent when it was new.
///
/// # Errors
/// The I/O error, with the directory named.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("creating directory {}", dir.display()), e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably (write, fsync, rename, fsync dir).
/// A temporary file that could not be completed is removed (on a full disk it would hold
/// space for nothing).
///
/// # Errors
/// The I/O error, with the file named.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StorageError::io(ctx("creating"), e))?;
    let written = f
        .write_all(contents)
        .map_err(|e| StorageError::io(ctx("writing"), e))
        .and_then(|()| {
            f.sync_all()
                .map_err(|e| StorageError::io(ctx("syncing"), e))
        });
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        StorageError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Removes `path`, treating "not found" as success.
///
/// # Errors
/// Any other I/O error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(format!("removing {}", path.display()), e)),
    }
}

/// Reads a whole small file; `None` when it does not exist.
///
/// # Errors
/// Any other I/O error.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
    }
}

/// Escapes a name for use as a file name: `[A-Za-z0-9._]` stay, everything else (including `-`,
/// which separates topic and partition, and `%` itself) becomes `%XX` per byte.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." are not usable as names on their own.
    if out.chars().all(|c| c == '.') {
        out = out.replace('.', "%2E");
    }
    out
}

/// Reverses [`escape`]; `None` for a name [`escape`] cannot have produced.
pub(crate) fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = *bytes.get(i)?;
        if b == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips() {
        for name in [
            "topic",
            "a-b",
            "..",
            ".",
            "ünï/code %",
            "with.dots_and-dash",
            "",
        ] {
            let e = escape(name);
            assert!(!e.contains('/') && !e.contains('-'), "{e}");
            assert_ne!(e, ".");
            assert_ne!(e, "..");
            assert_eq!(unescape(&e).as_deref(), Some(name));
        }
    }
}
