//! The sparse offset and time indexes of one segment.
//!
//! In memory an index is a [`ChunkedIndex`]: fixed-size chunks that are allocated once and never
//! copied, so appending an entry never stalls on a reallocation of the whole index (a peer broker
//! stalls 40–170 ms each time its single growing buffer doubles and is copied).
//!
//! - Offset index: `(offset, position)` of a batch start, at most one entry per
//!   `index_interval_bytes` of log. A lookup gives the last entry at or before an offset, from
//!   which a scan finds the batch.
//! - Time index: `(max_timestamp_so_far, next_offset)`: every batch before `next_offset` has a max
//!   timestamp at or below the first field. A lookup for time `t` gives the last entry with a
//!   timestamp below `t`; the first qualifying batch is at or after its `next_offset`.
//!
//! On disk, a sealed segment's indexes go to `<base>.index` in one file: a header (magic, the
//! segment's byte length, next offset and max timestamp), both entry lists and a CRC-32C over
//! everything. The active segment's index is rebuilt by the recovery scan instead. An index
//! file that does not match its segment (length, CRC) is ignored and rebuilt.

use weir_storage::Offset;

/// Entries per chunk: 4096 entries of 16 bytes = 64 KiB, allocated once.
const CHUNK: usize = 4096;

/// An append-only sorted list stored in fixed-size chunks.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChunkedIndex<T> {
    chunks: Vec<Vec<T>>,
}

impl<T: Copy> ChunkedIndex<T> {
    pub(crate) fn push(&mut self, entry: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
    }

    /// The last entry whose key is `<= key`, for entries sorted by `key_of`.
    pub(crate) fn last_at_or_before<K: Ord>(&self, key: K, key_of: impl Fn(&T) -> K) -> Option<T> {
        let ci = self
            .chunks
            .partition_point(|c| c.first().is_some_and(|e| key_of(e) <= key));
        let chunk = self.chunks.get(ci.checked_sub(1)?)?;
        let i = chunk.partition_point(|e| key_of(e) <= key);
        chunk.get(i.checked_sub(1)?).copied()
    }

    /// The last entry whose key is `< key`.
    pub(crate) fn last_before<K: Ord>(&self, key: K, key_of: impl Fn(&T) -> K) -> Option<T> {
        let ci = self
            .chunks
            .partition_point(|c| c.first().is_some_and(|e| key_of(e) < key));
        let chunk = self.chunks.get(ci.checked_sub(1)?)?;
        let i = chunk.partition_point(|e| key_of(e) < key);
        chunk.get(i.checked_sub(1)?).copied()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }
}

/// Offset index entry: a batch's base offset and its byte position in the segment.
pub(crate) type OffsetEntry = (Offset, u64);
/// Time index entry: the max timestamp of all batches before `.1`, and that offset.
pub(crate) type TimeEntry = (i64, Offset);

/// Everything a sealed segment's index file holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentIndex {
    pub offsets: ChunkedIndex<OffsetEntry>,
    pub times: ChunkedIndex<TimeEntry>,
}

const MAGIC: &[u8; 8] = b"WEIRIDX1";

/// The summary of a segment stored with its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub len: u64,
    pub next: Offset,
    pub max_ts: i64,
}

/// Encodes a sealed segment's index file.
pub(crate) fn encode(summary: SegmentSummary, index: &SegmentIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + 16 * (index.offsets.len() + index.times.len()));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&summary.len.to_be_bytes());
    out.extend_from_slice(&summary.next.to_be_bytes());
    out.extend_from_slice(&summary.max_ts.to_be_bytes());
    out.extend_from_slice(&(index.offsets.len() as u64).to_be_bytes());
    out.extend_from_slice(&(index.times.len() as u64).to_be_bytes());
    for (o, p) in index.offsets.iter() {
        out.extend_from_slice(&o.to_be_bytes());
        out.extend_from_slice(&p.to_be_bytes());
    }
    for (t, o) in index.times.iter() {
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&o.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn be8(buf: &[u8], at: usize) -> Option<[u8; 8]> {
    buf.get(at..at + 8)?.try_into().ok()
}

/// Decodes an index file; `None` when it is damaged or does not describe a segment of
/// `segment_len` bytes (it is then rebuilt from the segment).
pub(crate) fn decode(buf: &[u8], segment_len: u64) -> Option<(SegmentSummary, SegmentIndex)> {
    let body_len = buf.len().checked_sub(4)?;
    let (body, crc) = (buf.get(..body_len)?, buf.get(body_len..)?);
    if crc32c::crc32c(body).to_be_bytes() != crc || body.get(..8)? != MAGIC {
        return None;
    }
    let summary = SegmentSummary {
        len: u64::from_be_bytes(be8(body, 8)?),
        next: i64::from_be_bytes(be8(body, 16)?),
        max_ts: i64::from_be_bytes(be8(body, 24)?),
    };
    if summary.len != segment_len {
        return None;
    }
    let n_off = usize::try_from(u64::from_be_bytes(be8(body, 32)?)).ok()?;
    let n_time = usize::try_from(u64::from_be_bytes(be8(body, 40)?)).ok()?;
    // Bounded by the bytes present before anything is read.
    if n_off
        .checked_add(n_time)?
        .checked_mul(16)?
        .checked_add(48)?
        != body.len()
    {
        return None;
    }
    let mut index = SegmentIndex::default();
    let mut at = 48;
    for _ in 0..n_off {
        index.offsets.push((
            i64::from_be_bytes(be8(body, at)?),
            u64::from_be_bytes(be8(body, at + 8)?),
        ));
        at += 16;
    }
    for _ in 0..n_time {
        index.times.push((
            i64::from_be_bytes(be8(body, at)?),
            i64::from_be_bytes(be8(body, at + 8)?),
        ));
        at += 16;
    }
    Some((summary, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_span_chunks() {
        let mut ix: ChunkedIndex<OffsetEntry> = ChunkedIndex::default();
        for i in 0..(3 * CHUNK as i64 + 10) {
            ix.push((i * 10, i as u64 * 100));
        }
        assert_eq!(ix.chunks.len(), 4);
        assert!(ix.chunks.iter().all(|c| c.capacity() == CHUNK));
        assert_eq!(ix.last_at_or_before(-1, |e| e.0), None);
        assert_eq!(ix.last_at_or_before(0, |e| e.0), Some((0, 0)));
        assert_eq!(
            ix.last_at_or_before(40_965, |e| e.0),
            Some((40_960, 409_600))
        );
        assert_eq!(ix.last_before(40_960, |e| e.0), Some((40_950, 409_500)));
        assert_eq!(
            ix.last_at_or_before(i64::MAX, |e| e.0).map(|e| e.0),
            Some((3 * CHUNK as i64 + 9) * 10)
        );
    }

    #[test]
    fn file_round_trip_and_damage() {
        let mut index = SegmentIndex::default();
        index.offsets.push((5, 0));
        index.offsets.push((9, 4096));
        index.times.push((100, 9));
        let s = SegmentSummary {
            len: 8000,
            next: 20,
            max_ts: 300,
        };
        let buf = encode(s, &index);
        let (s2, i2) = decode(&buf, 8000).expect("decode");
        assert_eq!(s2, s);
        assert_eq!(
            i2.offsets.iter().copied().collect::<Vec<_>>(),
            vec![(5, 0), (9, 4096)]
        );
        assert_eq!(i2.times.iter().copied().collect::<Vec<_>>(), vec![(100, 9)]);
        assert!(decode(&buf, 8001).is_none(), "length mismatch");
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 1;
            assert!(decode(&b, 8000).is_none(), "flip at {i}");
        }
        assert!(decode(&buf[..buf.len() - 1], 8000).is_none());
    }
}
