//! Errors of the storage layer: [`BatchError`] for bytes that are not a valid RecordBatch, and
//! [`StorageError`] for everything a backend can report.
//!
//! Both are `#[non_exhaustive]`: callers match the variants they act on and treat the rest as
//! opaque failures. Messages carry the structured fields that explain them (offsets, sizes,
//! paths), so a log line alone is enough to start an investigation.

use std::path::PathBuf;

use crate::batch::Compression;
use crate::Offset;

/// Why a byte buffer is not an acceptable Kafka RecordBatch v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the fixed 61-byte header, or than the batch length announces.
    #[error("batch truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header says the batch occupies (or the header size).
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// The batch length field is negative, smaller than the header, or not equal to the buffer.
    #[error("invalid batch length {length} for a buffer of {available} bytes")]
    InvalidLength {
        /// The `batchLength` field.
        length: i64,
        /// Bytes present.
        available: usize,
    },
    /// Only magic 2 (RecordBatch v2) is supported.
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    UnsupportedMagic(i8),
    /// The CRC-32C over attributes..end does not match the stored one.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC stored in the batch header.
        stored: u32,
        /// The CRC computed over the batch contents.
        computed: u32,
    },
    /// Header fields that contradict each other (record count, last offset delta).
    #[error("inconsistent batch header: {0}")]
    InconsistentHeader(String),
    /// Compression bits name a codec that does not exist.
    #[error("unknown compression codec {0}")]
    UnknownCompression(u8),
    /// The codec failed to compress.
    #[error("{codec:?} compression failed: {detail}")]
    Compress {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        detail: String,
    },
    /// The compressed payload is not valid for its codec.
    #[error("{codec:?} decompression failed: {detail}")]
    Decompress {
        /// The codec.
        codec: Compression,
        /// What the codec said.
        detail: String,
    },
    /// Decompressing would exceed the caller's bound on uncompressed bytes.
    #[error("{codec:?} payload decompresses to more than {max} bytes")]
    DecompressedTooLarge {
        /// The codec.
        codec: Compression,
        /// The bound that was hit.
        max: usize,
    },
    /// A record inside the batch is malformed (bad varint, length past the end, bad UTF-8 ...).
    #[error("malformed record {index}: {detail}")]
    MalformedRecord {
        /// Zero-based index of the record within the batch.
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A batch needs at least one record.
    #[error("a batch must hold at least one record")]
    Empty,
    /// More records or bytes than one batch can describe.
    #[error("batch too large: {0}")]
    TooLarge(String),
}

/// Everything a storage backend can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A read or lookup named an offset outside `[start, end]` of the log.
    #[error("offset {requested} out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log start offset.
        start: Offset,
        /// The log end offset (next offset to be written).
        end: Offset,
    },
    /// A batch handed to `append` is not acceptable; nothing of that append was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// An I/O error. The log that saw it is now failed (see [`StorageError::Failed`]).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the backend was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A write found no room: a full device (ENOSPC), a quota (EDQUOT) or a file-size limit
    /// (EFBIG). Nothing of the operation was kept and the log stays usable: the same operation
    /// succeeds once there is room. (A failed fsync is never this: it is [`StorageError::Io`].)
    #[error("no space left while {context}: {source}")]
    NoSpace {
        /// What the backend was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is damaged somewhere recovery cannot safely cut (not a torn tail).
    #[error("corrupt data in {path} at byte {position}: {detail}")]
    Corrupt {
        /// The damaged file (or tree) name.
        path: PathBuf,
        /// Byte position (or key) of the damage.
        position: u64,
        /// What was found.
        detail: String,
    },
    /// The log failed earlier (fail-stop) and refuses every further operation until reopened.
    #[error("log is failed after an earlier error and must be reopened: {reason}")]
    Failed {
        /// The first error, as text.
        reason: String,
    },
    /// The log or storage was closed.
    #[error("log or storage is closed")]
    Closed,
    /// An argument outside what the backend accepts (a name it cannot store, a negative size).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An error from an embedded engine (sled) that is not a plain I/O error.
    #[error("backend error: {0}")]
    Backend(String),
}

impl StorageError {
    /// Wraps an I/O error with what the backend was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }

    /// True for the I/O errors of a write that found no room: a full device, a quota, a
    /// file-size limit ([`StorageError::NoSpace`] when the backend could undo the write).
    pub fn is_out_of_space(e: &std::io::Error) -> bool {
        matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull
                | std::io::ErrorKind::QuotaExceeded
                | std::io::ErrorKind::FileTooLarge
        )
    }

    /// True when the error means the log can no longer be used until it is reopened.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StorageError::Io { .. }
                | StorageError::Corrupt { .. }
                | StorageError::Failed { .. }
                | StorageError::Backend(_)
        )
    }
}

/// The result type of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
