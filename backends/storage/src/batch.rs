//! The Kafka RecordBatch v2, the unit Weir appends, stores and serves.
//!
//! Every layer passes a batch as bytes ([`Batch`] wraps a [`Bytes`]): the Kafka protocol receives
//! it and serves it unchanged, storage keeps it as-is, the native protocol carries it as a `bin`.
//! Constructing a `Batch` checks the framing, the magic and the CRC-32C once; after that the
//! header accessors are plain big-endian loads at fixed positions, and nothing on the hot path
//! decodes records. Only [`Batch::records`] looks inside (compaction, timestamp lookups, clients).
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//!  0 baseOffset i64        | outside the CRC: the broker
//!  8 batchLength i32       | writes the base offset in
//! 12 partitionLeaderEpoch  | place without touching it
//! 16 magic i8 (= 2)        |
//! 17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16   23 lastOffsetDelta i32   27 baseTimestamp i64   35 maxTimestamp i64
//! 43 producerId i64   51 producerEpoch i16     53 baseSequence i32    57 recordCount i32
//! 61 records (compressed as a whole when attributes & 7 != 0)
//! ```
//!
//! A record is `length varint, attributes i8, timestampDelta varlong, offsetDelta varint,
//! keyLength varint (-1 = null), key, valueLength varint (-1 = null), value, headerCount varint,
//! headers (keyLength varint, key UTF-8, valueLength varint (-1 = null), value)`, with zig-zag
//! varints. Duplicate header keys are kept in order, as Kafka allows.
//!
//! Decoding never allocates by a count or length it has not bounded by the bytes that remain:
//! a record takes at least 7 bytes, so a record count larger than `remaining / 7` is rejected
//! before any vector is sized, and decompression stops at a caller-given bound.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression;
use crate::error::BatchError;
use crate::Offset;

/// Size of the fixed RecordBatch v2 header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before the `batchLength`-counted part: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// The header bytes the broker owns: base offset, batch length, partition leader epoch (see
/// [`Batch::stored_prefix`]).
pub const STORED_PREFIX_LEN: usize = 16;
/// The magic byte of RecordBatch v2.
pub const MAGIC_V2: i8 = 2;
/// Default bound on the uncompressed size of one batch when decoding its records.
pub const DEFAULT_MAX_UNCOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

const CRC_OFFSET: usize = 17;
const CRC_START: usize = 21;
/// The smallest possible encoded record: length, attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each.
const MIN_RECORD_BYTES: usize = 7;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
/// Kafka's delete-horizon flag (KIP-534): the base timestamp holds the time after which the
/// batch's tombstones may go, and record timestamps are deltas from it.
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Compression codec of a batch, as stored in the low three attribute bits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None = 0,
    /// gzip (RFC 1952).
    Gzip = 1,
    /// snappy in xerial framing (what Kafka's Java client writes); raw snappy is read too.
    Snappy = 2,
    /// lz4 frame format.
    Lz4 = 3,
    /// zstd frame format.
    Zstd = 4,
}

impl Compression {
    /// All codecs, for tests and benchmarks.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec named by the low three attribute bits.
    ///
    /// # Errors
    /// [`BatchError::UnknownCompression`] for 5, 6 and 7.
    pub fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match (attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
}

/// Which timestamp a batch carries: the producer's create time or the broker's append time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    /// Set by the producer.
    #[default]
    CreateTime,
    /// Overwritten by the broker when it appended the batch.
    LogAppendTime,
}

/// One record header. Kafka allows duplicate keys and null values; both survive a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header key (UTF-8, as Kafka requires).
    pub key: String,
    /// The header value; `None` is Kafka's null.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a non-null value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record as a producer sends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order, duplicates allowed.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a value, no key, no headers.
    pub fn new(timestamp_ms: i64, value: impl Into<Bytes>) -> Self {
        Record {
            timestamp_ms,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

/// A record read back from a log: its offset plus what the producer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's offset in its partition.
    pub offset: Offset,
    /// The record attributes byte (unused by Kafka today, kept for byte-exact re-encoding).
    pub attributes: i8,
    /// The record itself. Under `LogAppendTime` its timestamp is the batch's max timestamp.
    pub record: Record,
}

/// A validated Kafka RecordBatch v2.
///
/// Invariants, checked by [`Batch::new`]: the buffer is exactly `12 + batchLength` bytes, at least
/// [`HEADER_LEN`], magic 2, and the CRC matches. The only mutation is [`Batch::set_base_offset`],
/// which touches bytes outside the CRC.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    buf: Bytes,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("base_offset", &self.base_offset())
            .field("records", &self.record_count())
            .field("bytes", &self.buf.len())
            .field("compression", &self.compression())
            .finish()
    }
}

/// A batch travels as one MessagePack `bin` (or any serde byte string); deserializing validates
/// it like [`Batch::new`], so a malformed batch is a decode error, never a `Batch`.
impl serde::Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.buf)
    }
}

thread_local! {
    /// The buffer batches are being deserialized from, set by [`deserialize_from`].
    static SOURCE: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a serde deserialization reading from `source`'s bytes) so that every [`Batch`] it
/// deserializes is a zero-copy slice of `source` rather than a copy. Without it, batches are
/// copied out of the deserializer's input. Deserializers that hand out borrowed bytes
/// (`rmp_serde::from_slice`, for one) benefit; any other path still works and copies.
pub fn deserialize_from<R>(source: &Bytes, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            SOURCE.with(|s| *s.borrow_mut() = prev);
        }
    }
    let _restore = Restore(SOURCE.with(|s| s.replace(Some(source.clone()))));
    f()
}

/// `v` as a slice of the current [`deserialize_from`] source when it lies inside it, else a copy.
fn share_or_copy(v: &[u8]) -> Bytes {
    SOURCE.with(|s| match &*s.borrow() {
        Some(src) => {
            let (start, end) = (src.as_ptr() as usize, src.as_ptr() as usize + src.len());
            let at = v.as_ptr() as usize;
            if at >= start && at + v.len() <= end {
                src.slice(at - start..at - start + v.len())
            } else {
                Bytes::copy_from_slice(v)
            }
        }
        None => Bytes::copy_from_slice(v),
    })
}

struct BatchBytesVisitor;

impl<'de> serde::de::Visitor<'de> for BatchBytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record batch as bytes")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share_or_copy(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // The size hint comes from the input: not trusted for an allocation.
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

impl<'de> serde::Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buf = d.deserialize_bytes(BatchBytesVisitor)?;
        Batch::new(buf).map_err(serde::de::Error::custom)
    }
}

macro_rules! be {
    ($buf:expr, $at:expr, $ty:ty) => {{
        const N: usize = std::mem::size_of::<$ty>();
        let mut a = [0u8; N];
        a.copy_from_slice(&$buf[$at..$at + N]);
        <$ty>::from_be_bytes(a)
    }};
}

impl Batch {
    /// Validates `buf` as one RecordBatch v2: framing, magic, CRC-32C, and header consistency.
    ///
    /// # Errors
    /// A [`BatchError`] naming the first check that failed.
    pub fn new(buf: Bytes) -> Result<Batch, BatchError> {
        let total = Self::frame_len(&buf)?;
        if total != buf.len() {
            return Err(BatchError::InvalidLength {
                length: total as i64 - LOG_OVERHEAD as i64,
                available: buf.len(),
            });
        }
        let batch = Batch { buf };
        let magic = batch.magic();
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        let stored = batch.crc();
        let computed = batch.compute_crc();
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        if batch.record_count() < 0 || batch.last_offset_delta() < 0 {
            return Err(BatchError::InconsistentHeader(format!(
                "record count {} and last offset delta {} must not be negative",
                batch.record_count(),
                batch.last_offset_delta()
            )));
        }
        // The base offset lies outside the CRC: a torn or hostile header may hold any value, and
        // `next_offset` must not overflow.
        if batch
            .base_offset()
            .checked_add(i64::from(batch.last_offset_delta()) + 1)
            .is_none()
        {
            return Err(BatchError::InconsistentHeader(format!(
                "base offset {} plus last offset delta {} overflows",
                batch.base_offset(),
                batch.last_offset_delta()
            )));
        }
        Ok(batch)
    }

    /// The total size (`12 + batchLength`) announced by the first 12 bytes of `buf`.
    ///
    /// Used to split a stream of batches (a segment file, a Kafka record set) without trusting the
    /// length: it is checked to be at least a header, and `buf` must hold the whole batch.
    ///
    /// # Errors
    /// [`BatchError::Truncated`] when `buf` is shorter than the header or the announced batch;
    /// [`BatchError::InvalidLength`] when the length is smaller than a header.
    pub fn frame_len(buf: &[u8]) -> Result<usize, BatchError> {
        let len = Self::peek_len(buf)?;
        if buf.len() < len {
            return Err(BatchError::Truncated {
                needed: len,
                available: buf.len(),
            });
        }
        Ok(len)
    }

    /// Like [`Batch::frame_len`] but needs only the first 12 bytes, not the whole batch.
    ///
    /// # Errors
    /// As [`Batch::frame_len`], except that a short body is not an error.
    pub fn peek_len(buf: &[u8]) -> Result<usize, BatchError> {
        if buf.len() < LOG_OVERHEAD {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let length = be!(buf, 8, i32);
        if (length as i64) < (HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(BatchError::InvalidLength {
                length: length as i64,
                available: buf.len(),
            });
        }
        Ok(length as usize + LOG_OVERHEAD)
    }

    /// Checks what an append needs beyond [`Batch::new`]: at least one record, and a last offset
    /// delta of exactly `count - 1` (a producer's batch has dense offsets; only compaction leaves
    /// gaps), so the log can assign offsets from the header alone.
    ///
    /// # Errors
    /// [`BatchError::Empty`] or [`BatchError::InconsistentHeader`].
    pub fn validate_for_append(&self) -> Result<(), BatchError> {
        let count = self.record_count();
        if count < 1 {
            return Err(BatchError::Empty);
        }
        if self.last_offset_delta() != count - 1 {
            return Err(BatchError::InconsistentHeader(format!(
                "record count {count} does not match last offset delta {}",
                self.last_offset_delta()
            )));
        }
        Ok(())
    }

    /// The CRC-32C of bytes 21..end, as stored in the header.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.buf[CRC_START..])
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> Offset {
        be!(self.buf, 0, i64)
    }
    /// The `batchLength` field: bytes after it.
    pub fn batch_length(&self) -> i32 {
        be!(self.buf, 8, i32)
    }
    /// The partition leader epoch (outside the CRC).
    pub fn partition_leader_epoch(&self) -> i32 {
        be!(self.buf, 12, i32)
    }
    /// The magic byte (always 2 for a valid batch).
    pub fn magic(&self) -> i8 {
        self.buf[16] as i8
    }
    /// The stored CRC.
    pub fn crc(&self) -> u32 {
        be!(self.buf, CRC_OFFSET, u32)
    }
    /// The attributes (compression, timestamp type, transactional, control).
    pub fn attributes(&self) -> i16 {
        be!(self.buf, 21, i16)
    }
    /// Offset delta of the last record.
    pub fn last_offset_delta(&self) -> i32 {
        be!(self.buf, 23, i32)
    }
    /// The base timestamp (`baseTimestamp`): the first record's timestamp, or the delete horizon
    /// when the batch carries one ([`Batch::delete_horizon_ms`]). Record timestamps are deltas
    /// from it either way.
    pub fn first_timestamp(&self) -> i64 {
        be!(self.buf, 27, i64)
    }
    /// When compaction may remove the tombstones this batch holds (Kafka's delete horizon,
    /// KIP-534): set by the first compaction pass that kept one of them, `None` before.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & ATTR_DELETE_HORIZON != 0).then(|| self.first_timestamp())
    }
    /// Largest record timestamp (or the append time under `LogAppendTime`).
    pub fn max_timestamp(&self) -> i64 {
        be!(self.buf, 35, i64)
    }
    /// Producer id, -1 without idempotence.
    pub fn producer_id(&self) -> i64 {
        be!(self.buf, 43, i64)
    }
    /// Producer epoch, -1 without idempotence.
    pub fn producer_epoch(&self) -> i16 {
        be!(self.buf, 51, i16)
    }
    /// Sequence number of the first record, -1 without idempotence.
    pub fn base_sequence(&self) -> i32 {
        be!(self.buf, 53, i32)
    }
    /// Number of records in the batch.
    pub fn record_count(&self) -> i32 {
        be!(self.buf, 57, i32)
    }
    /// The compression codec (an invalid codec is reported by [`Batch::records`]).
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_attributes(self.attributes())
    }
    /// Create time or log append time.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_LOG_APPEND_TIME != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    /// Part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    /// A control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    /// Offset of the last record.
    pub fn last_offset(&self) -> Offset {
        self.base_offset() + self.last_offset_delta() as i64
    }
    /// The offset after this batch: `base + last_offset_delta + 1` (Kafka's high watermark rule).
    pub fn next_offset(&self) -> Offset {
        self.last_offset() + 1
    }
    /// Size in bytes, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Never true for a valid batch; present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The batch's bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }
    /// The batch's bytes, by value.
    pub fn into_bytes(self) -> Bytes {
        self.buf
    }

    /// Writes the base offset in place. The CRC does not cover it, so the batch stays valid.
    ///
    /// Copies the buffer only when it is shared with another `Bytes` handle.
    pub fn set_base_offset(&mut self, offset: Offset) {
        if self.base_offset() == offset {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut owned = match buf.try_into_mut() {
            Ok(owned) => owned,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        owned[0..8].copy_from_slice(&offset.to_be_bytes());
        self.buf = owned.freeze();
    }

    /// The batch's first [`STORED_PREFIX_LEN`] bytes (base offset, batch length, partition
    /// leader epoch: none of them under the CRC) as they read once the batch is stored at
    /// `base_offset` with `leader_epoch`. Written in front of `&as_bytes()[STORED_PREFIX_LEN..]`
    /// they give the bytes [`Batch::set_base_offset`] and [`Batch::set_partition_leader_epoch`]
    /// would, without copying the batch.
    pub fn stored_prefix(&self, base_offset: Offset, leader_epoch: i32) -> [u8; STORED_PREFIX_LEN] {
        let mut prefix = [0u8; STORED_PREFIX_LEN];
        prefix[0..8].copy_from_slice(&base_offset.to_be_bytes());
        prefix[8..12].copy_from_slice(&self.buf[8..12]);
        prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        prefix
    }

    /// Marks the batch as stamped by the broker at `timestamp_ms` (Kafka's `LogAppendTime`): the
    /// timestamp-type attribute and the max timestamp change, and the CRC is computed again.
    /// Every record then reads as `timestamp_ms`; the records themselves are not touched.
    ///
    /// Copies the buffer only when it is shared with another `Bytes` handle.
    pub fn set_log_append_time(&mut self, timestamp_ms: i64) {
        let buf = std::mem::take(&mut self.buf);
        let mut owned = match buf.try_into_mut() {
            Ok(owned) => owned,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        let attributes = i16::from_be_bytes([owned[21], owned[22]]) | ATTR_LOG_APPEND_TIME;
        owned[21..23].copy_from_slice(&attributes.to_be_bytes());
        owned[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        let crc = crc32c::crc32c(&owned[CRC_START..]);
        owned[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.buf = owned.freeze();
    }

    /// Writes the partition leader epoch in place (outside the CRC, owned by the broker).
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        if self.partition_leader_epoch() == epoch {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut owned = match buf.try_into_mut() {
            Ok(owned) => owned,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        owned[12..16].copy_from_slice(&epoch.to_be_bytes());
        self.buf = owned.freeze();
    }

    /// Decodes every record, decompressing with [`DEFAULT_MAX_UNCOMPRESSED_BYTES`] as the bound.
    ///
    /// # Errors
    /// See [`Batch::records_with_limit`].
    pub fn records(&self) -> Result<Vec<LogRecord>, BatchError> {
        self.records_with_limit(DEFAULT_MAX_UNCOMPRESSED_BYTES)
    }

    /// Decodes every record; a compressed payload may expand to at most `max_uncompressed` bytes.
    ///
    /// The decoded records take several times the bytes they were encoded in (a record of 7
    /// bytes becomes a [`LogRecord`] of about 120): code that only looks at each record once
    /// uses [`Batch::for_each_record`], which holds one at a time.
    ///
    /// # Errors
    /// Unknown codec, a payload that does not decompress or exceeds the bound, or a malformed
    /// record (bad varint, a length past the end, invalid UTF-8 in a header key, trailing bytes).
    pub fn records_with_limit(
        &self,
        max_uncompressed: usize,
    ) -> Result<Vec<LogRecord>, BatchError> {
        // Start small and grow: the count is bounded by the bytes present, but a record's decoded
        // form is larger than its 7-byte minimum encoding, so reserving `count` up front would
        // let a small compressed batch reserve far more than it will ever fill.
        let mut out =
            Vec::with_capacity(usize::try_from(self.record_count()).unwrap_or(0).min(1024));
        self.for_each_record(max_uncompressed, |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    /// Calls `f` with each record in order, decoded one at a time, until `f` returns `false`;
    /// memory: the decompressed payload (at most `max_uncompressed` bytes) and one record.
    ///
    /// # Errors
    /// As [`Batch::records_with_limit`]; trailing bytes only when `f` saw every record.
    pub fn for_each_record(
        &self,
        max_uncompressed: usize,
        mut f: impl FnMut(LogRecord) -> bool,
    ) -> Result<(), BatchError> {
        let codec = self.compression()?;
        let payload = self.buf.slice(HEADER_LEN..);
        let data = match codec {
            Compression::None => payload,
            c => Bytes::from(compression::decompress(c, &payload, max_uncompressed)?),
        };
        let count = self.record_count();
        let count = usize::try_from(count).map_err(|_| {
            BatchError::InconsistentHeader(format!("negative record count {count}"))
        })?;
        if count > data.len() / MIN_RECORD_BYTES {
            return Err(BatchError::InconsistentHeader(format!(
                "{count} records cannot fit in {} bytes",
                data.len()
            )));
        }
        let base = self.base_offset();
        let first_ts = self.first_timestamp();
        let append_time =
            (self.timestamp_type() == TimestampType::LogAppendTime).then(|| self.max_timestamp());
        let mut r = Reader {
            data: &data,
            pos: 0,
        };
        for index in 0..count {
            let rec = decode_record(&mut r, &data, base, first_ts, append_time)
                .map_err(|detail| BatchError::MalformedRecord { index, detail })?;
            if !f(rec) {
                return Ok(());
            }
        }
        if r.pos != data.len() {
            return Err(BatchError::MalformedRecord {
                index: count,
                detail: format!(
                    "{} trailing bytes after the last record",
                    data.len() - r.pos
                ),
            });
        }
        Ok(())
    }
}

impl Batch {
    /// This batch with only the records `keep` accepts, as compaction rewrites it: the same base
    /// offset and last offset delta (so the offsets it covers, and the producer's last sequence,
    /// survive), producer identity, partition leader epoch, attributes and codec; every record
    /// keeps its offset. The base timestamp becomes the first kept record's and the max timestamp
    /// the largest kept one, except under `LogAppendTime`, where both stay. `None` when `keep`
    /// accepts no record. Records are decoded and re-encoded one at a time.
    ///
    /// # Errors
    /// Records that do not decode (within [`DEFAULT_MAX_UNCOMPRESSED_BYTES`]) or whose offsets
    /// do not ascend inside the batch ([`BatchError::InconsistentHeader`]); a compression
    /// failure.
    pub fn filtered(
        &self,
        keep: impl FnMut(&LogRecord) -> bool,
    ) -> Result<Option<Batch>, BatchError> {
        self.rebuild(self.compression()?, keep, self.delete_horizon_ms())
    }

    /// [`Batch::filtered`], stamped with the delete horizon `horizon_ms` unless the batch
    /// already carries one (which stays): the base timestamp becomes the horizon, the
    /// delete-horizon attribute is set, and every record keeps its timestamp (as a delta from
    /// the horizon, negative if need be), as Kafka's cleaner writes it.
    ///
    /// # Errors
    /// As [`Batch::filtered`].
    pub fn filtered_with_delete_horizon(
        &self,
        keep: impl FnMut(&LogRecord) -> bool,
        horizon_ms: i64,
    ) -> Result<Option<Batch>, BatchError> {
        let horizon = self.delete_horizon_ms().unwrap_or(horizon_ms);
        self.rebuild(self.compression()?, keep, Some(horizon))
    }

    /// This batch with its records compressed by `codec` instead (a topic's
    /// `compression.type`): everything else as [`Batch::filtered`] keeps it, every record
    /// included. The same batch when it already uses `codec`.
    ///
    /// # Errors
    /// As [`Batch::filtered`].
    pub fn recompressed(&self, codec: Compression) -> Result<Batch, BatchError> {
        if self.compression()? == codec {
            return Ok(self.clone());
        }
        self.rebuild(codec, |_| true, self.delete_horizon_ms())?
            .ok_or(BatchError::Empty)
    }

    /// The batch with the records `keep` accepts, compressed by `codec`; with a delete horizon
    /// when `horizon` is set (see [`Batch::filtered_with_delete_horizon`]).
    fn rebuild(
        &self,
        codec: Compression,
        mut keep: impl FnMut(&LogRecord) -> bool,
        horizon: Option<i64>,
    ) -> Result<Option<Batch>, BatchError> {
        let (base, last) = (self.base_offset(), self.last_offset());
        let append_time = self.timestamp_type() == TimestampType::LogAppendTime;
        let mut records = BytesMut::new();
        let mut prev: Option<Offset> = None;
        let mut first_ts: Option<i64> = None;
        let mut max_ts = i64::MIN;
        let mut count = 0i32;
        let mut failed: Option<BatchError> = None;
        self.for_each_record(DEFAULT_MAX_UNCOMPRESSED_BYTES, |r| {
            if r.offset < base || r.offset > last || prev.is_some_and(|p| r.offset <= p) {
                failed = Some(BatchError::InconsistentHeader(format!(
                    "record offset {} outside {base}..={last} or not ascending",
                    r.offset
                )));
                return false;
            }
            prev = Some(r.offset);
            if !keep(&r) {
                return true;
            }
            let ts = r.record.timestamp_ms;
            let first = *first_ts.get_or_insert(ts);
            let base_ts = horizon.unwrap_or(first);
            max_ts = max_ts.max(ts);
            // Under LogAppendTime the decoded timestamps are the batch's; the deltas are unused.
            let ts_delta = if append_time {
                0
            } else {
                ts.wrapping_sub(base_ts)
            };
            // In range: checked above against `base..=last`, and `last - base` is an i32.
            if let Err(e) = put_record(&mut records, &r.record, ts_delta, (r.offset - base) as i32)
            {
                failed = Some(e);
                return false;
            }
            count += 1;
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        let Some(first_ts) = first_ts else {
            return Ok(None);
        };
        let (base_timestamp, max_timestamp) = match (horizon, append_time) {
            (Some(h), true) => (h, self.max_timestamp()),
            (Some(h), false) => (h, max_ts),
            (None, true) => (self.first_timestamp(), self.max_timestamp()),
            (None, false) => (first_ts, max_ts),
        };
        let horizon_flag = if horizon.is_some() {
            ATTR_DELETE_HORIZON
        } else {
            0
        };
        let header = BatchHeader {
            base_offset: base,
            partition_leader_epoch: self.partition_leader_epoch(),
            attributes: (self.attributes() & !(ATTR_COMPRESSION_MASK | ATTR_DELETE_HORIZON))
                | codec as i16
                | horizon_flag,
            last_offset_delta: self.last_offset_delta(),
            base_timestamp,
            max_timestamp,
            producer_id: self.producer_id(),
            producer_epoch: self.producer_epoch(),
            base_sequence: self.base_sequence(),
            record_count: count,
        };
        let mut out = BytesMut::with_capacity(HEADER_LEN + records.len());
        out.put_bytes(0, HEADER_LEN);
        if codec == Compression::None {
            out.put_slice(&records);
        } else {
            out.put_slice(&compression::compress(codec, &records)?);
        }
        finish_batch(out, &header).map(Some)
    }
}

/// A cursor over record bytes; every read is bounds-checked and reports what went wrong.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| "unexpected end of record data".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    fn varlong(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.byte()?;
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err("varlong longer than 10 bytes".into())
    }

    fn varint(&mut self) -> Result<i32, String> {
        let mut raw: u32 = 0;
        for i in 0..5 {
            let b = self.byte()?;
            raw |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32));
            }
        }
        Err("varint longer than 5 bytes".into())
    }

    /// Reads a length-prefixed field; `-1` is null. Returns the byte range.
    fn nullable(&mut self, what: &str) -> Result<Option<std::ops::Range<usize>>, String> {
        let len = self.varint()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("negative {what} length {len}"))?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| format!("{what} length {len} runs past the end"))?;
        let range = self.pos..end;
        self.pos = end;
        Ok(Some(range))
    }
}

fn decode_record(
    r: &mut Reader<'_>,
    data: &Bytes,
    base: Offset,
    first_ts: i64,
    append_time: Option<i64>,
) -> Result<LogRecord, String> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| format!("negative record length {len}"))?;
    let end = r
        .pos
        .checked_add(len)
        .filter(|&end| end <= r.data.len())
        .ok_or_else(|| format!("record length {len} runs past the end"))?;
    let attributes = r.byte()? as i8;
    let ts_delta = r.varlong()?;
    let offset_delta = r.varint()?;
    let key = r.nullable("key")?.map(|range| data.slice(range));
    let value = r.nullable("value")?.map(|range| data.slice(range));
    let header_count = r.varint()?;
    let header_count = usize::try_from(header_count)
        .map_err(|_| format!("negative header count {header_count}"))?;
    // A header takes at least two bytes (key length, value length).
    if header_count > end.saturating_sub(r.pos) / 2 {
        return Err(format!("{header_count} headers cannot fit in the record"));
    }
    let mut headers = Vec::with_capacity(header_count.min(16));
    for _ in 0..header_count {
        let key = r
            .nullable("header key")?
            .ok_or_else(|| "null header key".to_string())?;
        let key = std::str::from_utf8(&r.data[key])
            .map_err(|e| format!("header key is not UTF-8: {e}"))?
            .to_owned();
        let value = r.nullable("header value")?.map(|range| data.slice(range));
        headers.push(Header { key, value });
    }
    if r.pos != end {
        return Err(format!(
            "record length {len} disagrees with its fields ({} bytes)",
            len as isize + r.pos as isize - end as isize
        ));
    }
    let offset = base
        .checked_add(i64::from(offset_delta))
        .ok_or_else(|| format!("offset delta {offset_delta} overflows base offset {base}"))?;
    Ok(LogRecord {
        offset,
        attributes,
        record: Record {
            timestamp_ms: append_time.unwrap_or(first_ts.wrapping_add(ts_delta)),
            key,
            value,
            headers,
        },
    })
}

fn put_varint(out: &mut BytesMut, v: i32) {
    put_varlong(out, v as i64);
}

fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) -> Result<(), BatchError> {
    match v {
        None => put_varint(out, -1),
        Some(b) => {
            let len = i32::try_from(b.len())
                .map_err(|_| BatchError::TooLarge(format!("field of {} bytes", b.len())))?;
            put_varint(out, len);
            out.put_slice(b);
        }
    }
    Ok(())
}

/// Length of a nullable field's encoding.
fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// Writes one record (length-prefixed) with its deltas; the length is computed, not buffered.
fn put_record(
    out: &mut BytesMut,
    r: &Record,
    timestamp_delta: i64,
    offset_delta: i32,
) -> Result<(), BatchError> {
    let hc = i32::try_from(r.headers.len())
        .map_err(|_| BatchError::TooLarge(format!("{} headers", r.headers.len())))?;
    let len = 1
        + varlong_len(timestamp_delta)
        + varlong_len(i64::from(offset_delta))
        + nullable_len(r.key.as_deref())
        + nullable_len(r.value.as_deref())
        + varlong_len(i64::from(hc))
        + r.headers
            .iter()
            .map(|h| nullable_len(Some(h.key.as_bytes())) + nullable_len(h.value.as_deref()))
            .sum::<usize>();
    let len =
        i32::try_from(len).map_err(|_| BatchError::TooLarge(format!("record of {len} bytes")))?;
    out.reserve(5 + len as usize);
    put_varint(out, len);
    out.put_i8(0);
    put_varlong(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_nullable(out, r.key.as_deref())?;
    put_nullable(out, r.value.as_deref())?;
    put_varint(out, hc);
    for h in &r.headers {
        put_nullable(out, Some(h.key.as_bytes()))?;
        put_nullable(out, h.value.as_deref())?;
    }
    Ok(())
}

/// An upper bound of the bytes `r` takes encoded.
fn size_estimate(r: &Record) -> usize {
    24 + r.key.as_ref().map_or(0, Bytes::len)
        + r.value.as_ref().map_or(0, Bytes::len)
        + r.headers
            .iter()
            .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}

/// Builds a RecordBatch v2 from records, the way Kafka's producers do.
///
/// The first record's timestamp becomes `baseTimestamp`; the batch's max timestamp is the largest
/// record timestamp. Offsets deltas are dense from 0; the base offset is whatever the caller gives
/// (a log assigns the real one on append).
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    records: Vec<Record>,
    size_estimate: usize,
}

impl BatchBuilder {
    /// An empty builder with the given codec and no producer identity.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            records: Vec::new(),
            size_estimate: HEADER_LEN,
        }
    }

    /// Sets the idempotent producer identity of the batch.
    #[must_use]
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch transactional.
    #[must_use]
    pub fn transactional(mut self, yes: bool) -> Self {
        self.transactional = yes;
        self
    }

    /// Adds a record.
    pub fn push(&mut self, record: Record) {
        self.size_estimate += size_estimate(&record);
        self.records.push(record);
    }

    /// Number of records added so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// An upper-bound estimate of the uncompressed batch size, for "is the batch full" checks.
    pub fn size_estimate(&self) -> usize {
        self.size_estimate
    }

    /// Encodes the batch with the given base offset.
    ///
    /// # Errors
    /// [`BatchError::Empty`] without records, [`BatchError::TooLarge`] past `i32` limits, or a
    /// compression failure.
    pub fn build(&self, base_offset: Offset) -> Result<Batch, BatchError> {
        let first = self.records.first().ok_or(BatchError::Empty)?;
        let count = i32::try_from(self.records.len())
            .map_err(|_| BatchError::TooLarge(format!("{} records", self.records.len())))?;
        let base_ts = first.timestamp_ms;
        let max_ts = self
            .records
            .iter()
            .map(|r| r.timestamp_ms)
            .max()
            .unwrap_or(base_ts);

        let mut attributes = self.compression as i16;
        if self.transactional {
            attributes |= ATTR_TRANSACTIONAL;
        }
        let header = BatchHeader {
            base_offset,
            partition_leader_epoch: -1, // unknown until a leader writes it
            attributes,
            last_offset_delta: count - 1,
            base_timestamp: base_ts,
            max_timestamp: max_ts,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            record_count: count,
        };
        let records = self
            .records
            .iter()
            .enumerate()
            .map(|(delta, r)| (r, r.timestamp_ms.wrapping_sub(base_ts), delta as i32));
        encode_batch(&header, self.compression, self.size_estimate, records)
    }
}

/// The header fields of a batch being encoded (everything but the length and the CRC).
struct BatchHeader {
    base_offset: Offset,
    partition_leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

/// Encodes a batch: `records` as (record, timestamp delta, offset delta), compressed with
/// `compression` (which must match the codec bits of `header.attributes`), then the header and
/// the CRC. `size_estimate` sizes the buffers.
fn encode_batch<'a>(
    header: &BatchHeader,
    compression: Compression,
    size_estimate: usize,
    records: impl Iterator<Item = (&'a Record, i64, i32)>,
) -> Result<Batch, BatchError> {
    // Uncompressed, the records are written straight after a header placeholder; compressed,
    // they are written into a scratch buffer that is compressed after the header.
    let compressed = compression != Compression::None;
    let mut out = BytesMut::with_capacity(HEADER_LEN + size_estimate);
    out.put_bytes(0, HEADER_LEN);
    let mut scratch = BytesMut::new();
    let records_out = if compressed {
        scratch.reserve(size_estimate);
        &mut scratch
    } else {
        &mut out
    };
    for (r, timestamp_delta, offset_delta) in records {
        put_record(records_out, r, timestamp_delta, offset_delta)?;
    }
    if compressed {
        let payload = compression::compress(compression, &scratch)?;
        out.put_slice(&payload);
    }
    finish_batch(out, header)
}

/// Writes `header`, the batch length and the CRC into the first [`HEADER_LEN`] bytes of `out`,
/// which holds a placeholder there followed by the (compressed) records.
fn finish_batch(mut out: BytesMut, header: &BatchHeader) -> Result<Batch, BatchError> {
    let total = out.len();
    let batch_length = i32::try_from(total - LOG_OVERHEAD)
        .map_err(|_| BatchError::TooLarge(format!("batch of {total} bytes")))?;
    let mut h = &mut out[..HEADER_LEN];
    h.put_i64(header.base_offset);
    h.put_i32(batch_length);
    h.put_i32(header.partition_leader_epoch);
    h.put_i8(MAGIC_V2);
    h.put_u32(0); // CRC, filled below
    h.put_i16(header.attributes);
    h.put_i32(header.last_offset_delta);
    h.put_i64(header.base_timestamp);
    h.put_i64(header.max_timestamp);
    h.put_i64(header.producer_id);
    h.put_i16(header.producer_epoch);
    h.put_i32(header.base_sequence);
    h.put_i32(header.record_count);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Batch { buf: out.freeze() })
}

/// The end of a transaction in one partition: the record of a control batch (Kafka's
/// `EndTransactionMarker`). Its key is `(version: i16 = 0, type: i16)`, type 0 aborting and 1
/// committing; its value `(version: i16 = 0, coordinator epoch: i32)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    /// Commit (`true`) or abort.
    pub commit: bool,
    /// The epoch of the coordinator that wrote it.
    pub coordinator_epoch: i32,
}

impl TxnMarker {
    /// The control batch carrying this marker for `producer_id` at `epoch`: transactional and
    /// control attributes, one record, no sequence (-1), base offset 0 (the log assigns it).
    ///
    /// # Errors
    /// None in practice (one small uncompressed record); the builder's errors otherwise.
    pub fn batch(
        self,
        producer_id: i64,
        epoch: i16,
        timestamp_ms: i64,
    ) -> Result<Batch, BatchError> {
        let mut key = Vec::with_capacity(4);
        key.extend_from_slice(&0i16.to_be_bytes());
        key.extend_from_slice(&i16::from(self.commit).to_be_bytes());
        let mut value = Vec::with_capacity(6);
        value.extend_from_slice(&0i16.to_be_bytes());
        value.extend_from_slice(&self.coordinator_epoch.to_be_bytes());
        let record = Record::new(timestamp_ms, value).with_key(key);
        let header = BatchHeader {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
            last_offset_delta: 0,
            base_timestamp: timestamp_ms,
            max_timestamp: timestamp_ms,
            producer_id,
            producer_epoch: epoch,
            base_sequence: -1,
            record_count: 1,
        };
        let size = HEADER_LEN + size_estimate(&record);
        encode_batch(
            &header,
            Compression::None,
            size,
            std::iter::once((&record, 0, 0)),
        )
    }

    /// The marker a control batch carries; `None` for a batch that is not a control batch or
    /// whose first record is not a marker Kafka defines (an unknown control type is skipped by
    /// readers, as Kafka's clients do).
    pub fn of(batch: &Batch) -> Option<TxnMarker> {
        if !batch.is_control() {
            return None;
        }
        let mut marker = None;
        let _ = batch.for_each_record(1024, |r| {
            marker = TxnMarker::decode(&r.record);
            false
        });
        marker
    }

    fn decode(record: &Record) -> Option<TxnMarker> {
        let key = record.key.as_deref()?;
        let value = record.value.as_deref().unwrap_or(&[]);
        let (&[k0, k1, t0, t1], Some(epoch)) = (key, value.get(2..6)) else {
            return None;
        };
        if i16::from_be_bytes([k0, k1]) < 0 {
            return None;
        }
        let commit = match i16::from_be_bytes([t0, t1]) {
            0 => false,
            1 => true,
            _ => return None,
        };
        let coordinator_epoch = i32::from_be_bytes(epoch.try_into().ok()?);
        Some(TxnMarker {
            commit,
            coordinator_epoch,
        })
    }
}

/// Splits a buffer holding consecutive whole batches (a segment, a Kafka record set).
///
/// # Errors
/// The first batch that fails [`Batch::new`]; a trailing partial batch is an error too.
pub fn split_batches(mut buf: Bytes) -> Result<Vec<Batch>, BatchError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = Batch::frame_len(&buf)?;
        out.push(Batch::new(buf.split_to(len))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::new(1_700_000_000_000, "v0").with_key("k0"),
            Record {
                timestamp_ms: 1_700_000_000_005,
                key: None,
                value: None,
                headers: vec![
                    Header::new("dup", "a"),
                    Header::new("dup", "b"),
                    Header {
                        key: "null".into(),
                        value: None,
                    },
                ],
            },
            Record::new(1_699_999_999_000, Bytes::new()).with_key(""),
        ]
    }

    fn build(c: Compression, recs: &[Record]) -> Batch {
        let mut b = BatchBuilder::new(c);
        for r in recs {
            b.push(r.clone());
        }
        b.build(0).expect("build")
    }

    #[test]
    fn header_fields() {
        let b = build(Compression::None, &sample());
        assert_eq!(b.base_offset(), 0);
        assert_eq!(b.record_count(), 3);
        assert_eq!(b.last_offset_delta(), 2);
        assert_eq!(b.first_timestamp(), 1_700_000_000_000);
        assert_eq!(b.max_timestamp(), 1_700_000_000_005);
        assert_eq!(b.producer_id(), -1);
        assert_eq!(b.producer_epoch(), -1);
        assert_eq!(b.base_sequence(), -1);
        assert_eq!(b.magic(), 2);
        assert_eq!(b.next_offset(), 3);
        assert_eq!(b.batch_length() as usize + LOG_OVERHEAD, b.len());
        b.validate_for_append().expect("valid");
        assert_eq!(Batch::new(b.as_bytes().clone()).expect("revalidate"), b);
    }

    #[test]
    fn round_trip_every_codec_is_byte_exact() {
        for c in Compression::ALL {
            let recs = sample();
            let b = build(c, &recs);
            assert_eq!(b.compression(), Ok(c));
            let decoded = b.records().expect("decode");
            let back: Vec<Record> = decoded.iter().map(|r| r.record.clone()).collect();
            assert_eq!(back, recs, "{c:?}");
            assert_eq!(
                decoded.iter().map(|r| r.offset).collect::<Vec<_>>(),
                vec![0, 1, 2]
            );
            // Re-encoding the decoded records gives the same bytes.
            assert_eq!(build(c, &back).as_bytes(), b.as_bytes(), "{c:?}");
        }
    }

    #[test]
    fn filtered_keeps_offsets_and_is_none_when_nothing_stays() {
        let b = build(Compression::Zstd, &sample());
        assert_eq!(b.filtered(|_| false), Ok(None));
        let kept = b
            .filtered(|r| r.offset != 1)
            .expect("filter")
            .expect("kept");
        let offsets: Vec<Offset> = kept
            .records()
            .expect("decode")
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, vec![0, 2]);
        assert_eq!((kept.last_offset_delta(), kept.record_count()), (2, 2));
        assert_eq!(kept.compression(), Ok(Compression::Zstd));
        // A small compressed batch of many tiny records (about 20 bytes each when decoded
        // together, far more as `LogRecord`s): filtered one record at a time.
        let mut many = BatchBuilder::new(Compression::Zstd);
        for _ in 0..200_000 {
            many.push(Record {
                timestamp_ms: 1,
                key: Some(Bytes::from_static(b"k")),
                value: None,
                headers: Vec::new(),
            });
        }
        let many = many.build(0).expect("build");
        assert!(many.len() < 256 * 1024, "{} bytes", many.len());
        let last = many
            .filtered(|r| r.offset == 199_999)
            .expect("filter")
            .expect("kept");
        assert_eq!(last.record_count(), 1);
        assert_eq!(last.last_offset_delta(), 199_999);
    }

    /// Kafka's delete horizon (KIP-534): the base timestamp holds it, attribute bit 6 says so,
    /// records keep their timestamps (deltas from the horizon, negative here); later rewrites
    /// keep the first horizon; a batch under LogAppendTime keeps its append time.
    #[test]
    fn a_delete_horizon_keeps_every_record_timestamp() {
        const HORIZON: i64 = 1_800_000_000_000;
        for c in Compression::ALL {
            let b = build(c, &sample());
            assert_eq!(b.delete_horizon_ms(), None);
            let h = b
                .filtered_with_delete_horizon(|_| true, HORIZON)
                .expect("filter")
                .expect("kept");
            let again = Batch::new(h.as_bytes().clone()).expect("a valid batch (CRC)");
            assert_eq!(again.delete_horizon_ms(), Some(HORIZON));
            assert_eq!(again.first_timestamp(), HORIZON);
            assert_eq!(again.attributes() & 0x40, 0x40);
            assert_eq!(again.compression(), Ok(c));
            assert_eq!(again.max_timestamp(), b.max_timestamp());
            assert_eq!(again.records(), b.records());
            // Filtering or recompressing keeps the horizon; a second stamp does not move it.
            let fewer = h
                .filtered(|r| r.offset != 1)
                .expect("filter")
                .expect("kept");
            assert_eq!(fewer.delete_horizon_ms(), Some(HORIZON));
            assert_eq!(
                fewer.records().expect("decode")[1].record.timestamp_ms,
                1_699_999_999_000
            );
            let other = Compression::ALL[(c as usize + 1) % Compression::ALL.len()];
            let moved = h.recompressed(other).expect("recompress");
            assert_eq!(moved.delete_horizon_ms(), Some(HORIZON));
            assert_eq!(moved.records(), b.records());
            let twice = h
                .filtered_with_delete_horizon(|_| true, HORIZON + 5)
                .expect("filter")
                .expect("kept");
            assert_eq!(twice.delete_horizon_ms(), Some(HORIZON));
        }
        let mut appended = build(Compression::Lz4, &sample());
        appended.set_log_append_time(1_750_000_000_000);
        let h = appended
            .filtered_with_delete_horizon(|r| r.offset > 0, HORIZON)
            .expect("filter")
            .expect("kept");
        assert_eq!(h.delete_horizon_ms(), Some(HORIZON));
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(h
            .records()
            .expect("decode")
            .iter()
            .all(|r| r.record.timestamp_ms == 1_750_000_000_000));
    }

    #[test]
    fn recompressed_batches_keep_records_offsets_and_producer() {
        let mut b = BatchBuilder::new(Compression::None).producer(4, 1, 17);
        for r in sample() {
            b.push(r);
        }
        let mut original = b.build(0).expect("build");
        original.set_base_offset(300);
        for c in Compression::ALL {
            let r = original.recompressed(c).expect("recompress");
            assert_eq!(r.compression(), Ok(c));
            Batch::new(r.as_bytes().clone()).expect("valid");
            assert_eq!(
                (r.base_offset(), r.last_offset_delta(), r.record_count()),
                (300, 2, 3)
            );
            assert_eq!(
                (r.producer_id(), r.producer_epoch(), r.base_sequence()),
                (4, 1, 17)
            );
            assert_eq!(r.first_timestamp(), original.first_timestamp());
            assert_eq!(r.max_timestamp(), original.max_timestamp());
            assert_eq!(
                r.records().expect("decode"),
                original.records().expect("decode")
            );
            // And back: the original bytes, except the CRC-covered codec bits.
            assert_eq!(
                r.recompressed(Compression::None).expect("back").as_bytes(),
                original.as_bytes()
            );
        }
    }

    #[test]
    fn set_base_offset_keeps_crc_valid() {
        let mut b = build(Compression::Lz4, &sample());
        let shared = b.as_bytes().clone();
        b.set_base_offset(1234);
        assert_eq!(b.base_offset(), 1234);
        assert_eq!(b.next_offset(), 1237);
        Batch::new(b.as_bytes().clone()).expect("still valid");
        assert_eq!(b.records().expect("decode")[2].offset, 1236);
        // The shared original is untouched.
        assert_eq!(Batch::new(shared).expect("valid").base_offset(), 0);
    }

    #[test]
    fn log_append_time_restamps_the_batch_and_keeps_it_valid() {
        for c in [Compression::None, Compression::Lz4] {
            let mut b = build(c, &sample());
            let shared = b.as_bytes().clone();
            b.set_log_append_time(1_700_000_000_000);
            let b = Batch::new(b.as_bytes().clone()).expect("valid, CRC recomputed");
            assert_eq!(b.timestamp_type(), TimestampType::LogAppendTime);
            assert_eq!(b.max_timestamp(), 1_700_000_000_000);
            assert_eq!(b.compression().expect("codec"), c);
            let records = b.records().expect("decode");
            assert_eq!(records.len(), sample().len());
            assert!(records
                .iter()
                .all(|r| r.record.timestamp_ms == 1_700_000_000_000));
            // The shared original is untouched.
            let original = Batch::new(shared).expect("valid");
            assert_eq!(original.timestamp_type(), TimestampType::CreateTime);
        }
    }

    #[test]
    fn stored_prefix_gives_the_bytes_set_base_offset_would() {
        let b = build(Compression::Zstd, &sample());
        let mut patched = b.clone();
        patched.set_partition_leader_epoch(-1);
        patched.set_base_offset(987_654);
        let mut written = b.stored_prefix(987_654, -1).to_vec();
        written.extend_from_slice(&b.as_bytes()[STORED_PREFIX_LEN..]);
        assert_eq!(&written[..], &patched.as_bytes()[..]);
        // The prefix covers exactly the bytes outside the CRC (see `corruption_is_detected`).
        Batch::new(Bytes::from(written)).expect("valid");
        assert_eq!(b.base_offset(), 0, "the batch itself is unchanged");
    }

    #[test]
    fn corruption_is_detected() {
        let b = build(Compression::None, &sample());
        for i in 0..b.len() {
            let mut bytes = b.as_bytes().to_vec();
            bytes[i] ^= 0x40;
            let r = Batch::new(Bytes::from(bytes));
            if (0..8).contains(&i) || (12..16).contains(&i) {
                assert!(r.is_ok(), "byte {i} lies outside the CRC");
            } else {
                assert!(r.is_err(), "flip at byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn varint_sizes() {
        for v in [0i64, 1, -1, 63, -64, 64, 1 << 20, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "{v}");
            let mut r = Reader { data: &out, pos: 0 };
            assert_eq!(r.varlong(), Ok(v));
        }
    }

    #[test]
    fn split_batches_splits_and_rejects_partial() {
        let a = build(Compression::None, &sample());
        let b = build(Compression::Gzip, &sample());
        let mut buf = a.as_bytes().to_vec();
        buf.extend_from_slice(b.as_bytes());
        let parts = split_batches(Bytes::from(buf.clone())).expect("split");
        assert_eq!(parts, vec![a, b]);
        buf.pop();
        assert!(split_batches(Bytes::from(buf)).is_err());
    }

    /// Found by the `batch_decode` fuzz target: a base offset near `i64::MAX` (the base offset
    /// lies outside the CRC) made `next_offset` and the record offsets overflow.
    #[test]
    fn offsets_that_overflow_are_refused_not_wrapped() {
        let b = build(Compression::None, &sample());
        let with_base = |base: i64| {
            let mut bytes = b.as_bytes().to_vec();
            bytes[0..8].copy_from_slice(&base.to_be_bytes());
            bytes
        };
        // Last offset delta 2: the last record may sit at i64::MAX - 1, so that next is MAX.
        let edge = Batch::new(Bytes::from(with_base(i64::MAX - 3))).expect("fits");
        assert_eq!(edge.next_offset(), i64::MAX);
        assert_eq!(edge.records().expect("records")[2].offset, i64::MAX - 1);
        assert!(matches!(
            Batch::new(Bytes::from(with_base(i64::MAX - 2))),
            Err(BatchError::InconsistentHeader(_))
        ));
        // A record whose own offset delta (inside the CRC) overflows: the first record's delta
        // (byte 64: length, attributes, timestamp delta, then the delta) set to 63.
        let mut bytes = with_base(i64::MAX - 3);
        assert_eq!(bytes[64], 0, "the first record's offset delta");
        bytes[64] = 126; // zig-zag 63
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let b = Batch::new(Bytes::from(bytes)).expect("header valid");
        assert!(b.records().is_err());
    }

    #[test]
    fn huge_record_count_is_rejected_before_allocating() {
        let b = build(Compression::None, &sample());
        let mut bytes = b.as_bytes().to_vec();
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        bytes[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let b = Batch::new(Bytes::from(bytes)).expect("header valid");
        assert!(matches!(
            b.records(),
            Err(BatchError::InconsistentHeader(_))
        ));
    }

    #[test]
    fn transaction_markers_round_trip_in_kafka_layout() {
        for commit in [false, true] {
            let marker = TxnMarker {
                commit,
                coordinator_epoch: 7,
            };
            let b = marker.batch(42, 3, 1_700_000_000_000).expect("builds");
            assert!(b.is_control() && b.is_transactional());
            assert_eq!((b.producer_id(), b.producer_epoch()), (42, 3));
            assert_eq!((b.base_sequence(), b.record_count()), (-1, 1));
            b.validate_for_append().expect("valid");
            let r = &b.records().expect("decodes")[0].record;
            assert_eq!(r.key.as_deref(), Some(&[0, 0, 0, u8::from(commit)][..]));
            assert_eq!(r.value.as_deref(), Some(&[0, 0, 0, 0, 0, 7][..]));
            assert_eq!(TxnMarker::of(&b), Some(marker));
        }
        // Not a control batch, or a control type Kafka does not define: no marker.
        let plain = build(Compression::None, &sample());
        assert_eq!(TxnMarker::of(&plain), None);
        let unknown = Record::new(0, vec![0, 0, 0, 0, 0, 0]).with_key(vec![0, 0, 0, 9]);
        assert_eq!(TxnMarker::decode(&unknown), None);
    }
}
