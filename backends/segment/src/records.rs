//! The two small files of the storage besides the logs: `metadata` (every metadata entry) and
//! `groups/<group>.offsets` (one group's committed offsets). Each is rewritten whole and atomically
//! on change ([`crate::fsutil::write_atomic`]), and ends with a CRC-32C of everything before it.
//!
//! Encoding: a magic line, then length-prefixed fields (u32 BE lengths). The decoder bounds
//! every length by the bytes remaining before allocating.

use std::collections::BTreeMap;
use std::path::Path;

use weir_storage::{CommittedOffset, Result, StorageError, TopicPartition};

const META_MAGIC: &[u8; 8] = b"WEIRMET1";
const OFFSETS_MAGIC: &[u8; 8] = b"WEIROFF1";
const GROUP_STATE_MAGIC: &[u8; 8] = b"WEIRGST1";

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// Checks magic and CRC; returns a cursor over the body after the magic.
fn open<'a>(path: &Path, buf: &'a [u8], magic: &[u8; 8]) -> Result<Cursor<'a>> {
    let corrupt = |detail: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        detail: detail.to_string(),
    };
    let body_len = buf
        .len()
        .checked_sub(4)
        .ok_or_else(|| corrupt("file too short"))?;
    let (body, crc) = buf.split_at(body_len);
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err(corrupt("CRC mismatch"));
    }
    if body.get(..8) != Some(&magic[..]) {
        return Err(corrupt("wrong magic"));
    }
    Ok(Cursor { buf: body, pos: 8 })
}

fn malformed(path: &Path, pos: usize) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        position: pos as u64,
        detail: "malformed entry".into(),
    }
}

pub(crate) fn encode_metadata(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = META_MAGIC.to_vec();
    out.extend_from_slice(&(map.len() as u32).to_be_bytes());
    for (k, v) in map {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v);
    }
    seal(out)
}

pub(crate) fn decode_metadata(path: &Path, buf: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut c = open(path, buf, META_MAGIC)?;
    let n = c.u32().ok_or_else(|| malformed(path, c.pos))?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let k = c.string().ok_or_else(|| malformed(path, c.pos))?;
        let v = c.bytes().ok_or_else(|| malformed(path, c.pos))?.to_vec();
        map.insert(k, v);
    }
    if c.pos != c.buf.len() {
        return Err(malformed(path, c.pos));
    }
    Ok(map)
}

pub(crate) type GroupOffsets = BTreeMap<TopicPartition, CommittedOffset>;

pub(crate) fn encode_offsets(group: &str, offsets: &GroupOffsets) -> Vec<u8> {
    let mut out = OFFSETS_MAGIC.to_vec();
    put_bytes(&mut out, group.as_bytes());
    out.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
    for (tp, o) in offsets {
        put_bytes(&mut out, tp.topic.as_bytes());
        out.extend_from_slice(&tp.partition.to_be_bytes());
        out.extend_from_slice(&o.offset.to_be_bytes());
        out.extend_from_slice(&o.leader_epoch.to_be_bytes());
        put_bytes(&mut out, o.metadata.as_bytes());
        out.extend_from_slice(&o.commit_timestamp_ms.to_be_bytes());
    }
    seal(out)
}

pub(crate) fn decode_offsets(path: &Path, buf: &[u8]) -> Result<(String, GroupOffsets)> {
    let mut c = open(path, buf, OFFSETS_MAGIC)?;
    let bad = |c: &Cursor<'_>| malformed(path, c.pos);
    let group = c.string().ok_or_else(|| bad(&c))?;
    let n = c.u32().ok_or_else(|| bad(&c))?;
    let mut map = GroupOffsets::new();
    for _ in 0..n {
        let topic = c.string().ok_or_else(|| bad(&c))?;
        let partition = c.u32().ok_or_else(|| bad(&c))? as i32;
        let offset = c.u64().ok_or_else(|| bad(&c))? as i64;
        let leader_epoch = c.u32().ok_or_else(|| bad(&c))? as i32;
        let metadata = c.string().ok_or_else(|| bad(&c))?;
        let commit_timestamp_ms = c.u64().ok_or_else(|| bad(&c))? as i64;
        map.insert(
            TopicPartition { topic, partition },
            CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            },
        );
    }
    if c.pos != c.buf.len() {
        return Err(bad(&c));
    }
    Ok((group, map))
}

/// A group's stored state file: its name and the broker's opaque record.
pub(crate) fn encode_group_state(group: &str, state: &[u8]) -> Vec<u8> {
    let mut out = GROUP_STATE_MAGIC.to_vec();
    put_bytes(&mut out, group.as_bytes());
    put_bytes(&mut out, state);
    seal(out)
}

pub(crate) fn decode_group_state(path: &Path, buf: &[u8]) -> Result<(String, Vec<u8>)> {
    let mut c = open(path, buf, GROUP_STATE_MAGIC)?;
    let group = c.string().ok_or_else(|| malformed(path, c.pos))?;
    let state = c.bytes().ok_or_else(|| malformed(path, c.pos))?.to_vec();
    if c.pos != c.buf.len() {
        return Err(malformed(path, c.pos));
    }
    Ok((group, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let p = Path::new("x");
        let mut meta = BTreeMap::new();
        meta.insert("a".to_string(), vec![1, 2, 3]);
        meta.insert("b".to_string(), vec![]);
        let buf = encode_metadata(&meta);
        assert_eq!(decode_metadata(p, &buf).expect("decode"), meta);
        let mut offs = GroupOffsets::new();
        offs.insert(
            TopicPartition::new("t", 3),
            CommittedOffset {
                offset: 42,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 7,
            },
        );
        let buf2 = encode_offsets("g", &offs);
        assert_eq!(
            decode_offsets(p, &buf2).expect("decode"),
            ("g".to_string(), offs)
        );
        let buf3 = encode_group_state("g", b"state");
        assert_eq!(
            decode_group_state(p, &buf3).expect("decode"),
            ("g".to_string(), b"state".to_vec())
        );
        for buf in [buf, buf2, buf3] {
            for i in 0..buf.len() {
                let mut b = buf.clone();
                b[i] ^= 0x10;
                assert!(decode_metadata(p, &b).is_err() && decode_offsets(p, &b).is_err());
                assert!(decode_group_state(p, &b).is_err());
            }
            assert!(decode_metadata(p, &buf[..buf.len() - 1]).is_err());
            assert!(decode_group_state(p, &buf[..buf.len() - 1]).is_err());
        }
    }
}
