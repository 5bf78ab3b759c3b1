//! The byte encodings of everything this backend stores in sled.
//!
//! Keys are built so that sled's byte order is the order the contract asks for:
//! - a batch key is its base offset as 8 big-endian bytes (offsets are never negative), so the
//!   batches of a log iterate in offset order and `range(..=from).next_back()` finds the batch
//!   holding `from`;
//! - strings inside keys (topics, group names) are escaped with the classic order-preserving
//!   scheme (`0x00` becomes `0x00 0xFF`, the string ends with `0x00 0x01`), so a key sorts by the
//!   string first and a string is never a prefix of a different one;
//! - a partition number is an `i32` with its sign bit flipped, big-endian, so it sorts
//!   numerically.
//!
//! Values are small fixed layouts with a leading version byte, so a future format can be told
//! apart instead of misread. Every decoder returns `None` for bytes it does not understand; the
//! callers turn that into [`weir_storage::StorageError::Corrupt`].

use weir_storage::{CommittedOffset, Offset, TopicPartition};

/// Version byte of the values written by this module.
const VALUE_VERSION: u8 = 1;

/// The prefix of every partition log's tree name.
pub(crate) const LOG_TREE_PREFIX: &str = "log:";

/// The key of the batch whose base offset is `offset`.
pub(crate) fn offset_key(offset: Offset) -> [u8; 8] {
    // Offsets are >= 0, so two's complement big-endian sorts like the numbers.
    offset.to_be_bytes()
}

/// The base offset a batch key names, or `None` if the key is not 8 bytes.
pub(crate) fn decode_offset_key(key: &[u8]) -> Option<Offset> {
    <[u8; 8]>::try_from(key).ok().map(Offset::from_be_bytes)
}

/// Appends `s` escaped and terminated, preserving byte order (see the module docs).
fn push_str(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Reads a string written by [`push_str`], returning it and the bytes after it.
fn take_str(buf: &[u8]) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    loop {
        match rest {
            [0x00, 0x01, tail @ ..] => return String::from_utf8(out).ok().map(|s| (s, tail)),
            [0x00, 0xFF, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [0x00, ..] | [] => return None,
            [b, tail @ ..] => {
                out.push(*b);
                rest = tail;
            }
        }
    }
}

fn push_partition(out: &mut Vec<u8>, partition: i32) {
    out.extend_from_slice(&((partition as u32) ^ 0x8000_0000).to_be_bytes());
}

fn take_partition(buf: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = buf.split_at_checked(4)?;
    let raw = u32::from_be_bytes(<[u8; 4]>::try_from(head).ok()?);
    Some(((raw ^ 0x8000_0000) as i32, rest))
}

/// The key of a partition in the `logs` tree (and the tail of an `offsets` key).
pub(crate) fn tp_key(tp: &TopicPartition) -> Vec<u8> {
    let mut out = Vec::with_capacity(tp.topic.len() + 6);
    push_str(&mut out, &tp.topic);
    push_partition(&mut out, tp.partition);
    out
}

/// The partition a [`tp_key`] names; `None` for anything else, trailing bytes included.
pub(crate) fn decode_tp_key(key: &[u8]) -> Option<TopicPartition> {
    let (topic, rest) = take_str(key)?;
    let (partition, rest) = take_partition(rest)?;
    rest.is_empty()
        .then(|| TopicPartition::new(topic, partition))
}

/// The prefix shared by every `offsets` key of `group`.
pub(crate) fn group_prefix(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(group.len() + 2);
    push_str(&mut out, group);
    out
}

/// The smallest key greater than every key starting with `group_prefix(group)`: the prefix
/// ends with `0x00 0x01`, so bumping its last byte skips exactly that group.
pub(crate) fn after_group(group: &str) -> Vec<u8> {
    let mut out = group_prefix(group);
    out.pop();
    out.push(0x02);
    out
}

/// The `offsets` key of `group`'s committed offset for `tp`.
pub(crate) fn group_offset_key(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut out = group_prefix(group);
    out.extend_from_slice(&tp_key(tp));
    out
}

/// The group and partition an `offsets` key names.
pub(crate) fn decode_group_offset_key(key: &[u8]) -> Option<(String, TopicPartition)> {
    let (group, rest) = take_str(key)?;
    Some((group, decode_tp_key(rest)?))
}

/// Just the group of an `offsets` key.
pub(crate) fn decode_group(key: &[u8]) -> Option<String> {
    take_str(key).map(|(g, _)| g)
}

/// The tree holding the batches of `tp`: `log:<topic>:<partition>`, with every topic byte
/// outside `[A-Za-z0-9._-]` written as `%XX`, so no topic can forge the separator or collide
/// with the fixed trees (`logs`, `metadata`, `offsets`).
pub(crate) fn log_tree_name(tp: &TopicPartition) -> String {
    let mut out = String::with_capacity(LOG_TREE_PREFIX.len() + tp.topic.len() + 12);
    out.push_str(LOG_TREE_PREFIX);
    for &b in tp.topic.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push(':');
    out.push_str(&tp.partition.to_string());
    out
}

/// The partition a [`log_tree_name`] names, or `None` for any other tree.
pub(crate) fn decode_log_tree_name(name: &[u8]) -> Option<TopicPartition> {
    let name = std::str::from_utf8(name)
        .ok()?
        .strip_prefix(LOG_TREE_PREFIX)?;
    let (topic, partition) = name.rsplit_once(':')?;
    let partition: i32 = partition.parse().ok()?;
    let mut bytes = Vec::with_capacity(topic.len());
    let mut rest = topic.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let (hex, tail) = tail.split_at_checked(2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = tail;
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let tp = TopicPartition::new(String::from_utf8(bytes).ok()?, partition);
    // Only the canonical spelling counts, so two names never map to one partition.
    (log_tree_name(&tp).as_bytes() == [LOG_TREE_PREFIX.as_bytes(), name.as_bytes()].concat())
        .then_some(tp)
}

/// The persisted state of a log in the `logs` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogState {
    /// The log start offset.
    pub(crate) start: Offset,
    /// A lower bound of the log end offset (exact when the log holds no batch).
    pub(crate) end: Offset,
    /// Below this offset compaction may have left gaps between batches (0: never compacted).
    pub(crate) compacted_upto: Offset,
}

/// `version, start (i64 BE), end (i64 BE)`, then `compacted_upto (i64 BE)` once the log was
/// compacted (a state written before compaction existed has no such field and means 0).
pub(crate) fn encode_log_state(state: LogState) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    out.push(VALUE_VERSION);
    out.extend_from_slice(&state.start.to_be_bytes());
    out.extend_from_slice(&state.end.to_be_bytes());
    if state.compacted_upto != 0 {
        out.extend_from_slice(&state.compacted_upto.to_be_bytes());
    }
    out
}

/// The state [`encode_log_state`] wrote; `None` for damaged bytes or impossible offsets.
pub(crate) fn decode_log_state(buf: &[u8]) -> Option<LogState> {
    let mut r = Reader(buf);
    if r.u8()? != VALUE_VERSION {
        return None;
    }
    let start = r.i64()?;
    let end = r.i64()?;
    let compacted_upto = if r.0.is_empty() { 0 } else { r.i64()? };
    let state = LogState {
        start,
        end,
        compacted_upto,
    };
    let sane =
        r.0.is_empty() && 0 <= state.start && state.start <= state.end && compacted_upto >= 0;
    sane.then_some(state)
}

/// `version, offset (i64), leader_epoch (i32), commit_timestamp_ms (i64), metadata length (u32),
/// metadata (UTF-8)`, all big-endian.
pub(crate) fn encode_committed(c: &CommittedOffset) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + c.metadata.len());
    out.push(VALUE_VERSION);
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    out.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    // A length over u32::MAX cannot come from a Kafka client (strings are i16-sized); saturate
    // rather than panic, and the decoder will reject the entry as damaged.
    let len = u32::try_from(c.metadata.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(c.metadata.as_bytes());
    out
}

/// The committed offset [`encode_committed`] wrote; `None` for damaged bytes.
pub(crate) fn decode_committed(buf: &[u8]) -> Option<CommittedOffset> {
    let mut r = Reader(buf);
    if r.u8()? != VALUE_VERSION {
        return None;
    }
    let offset = r.i64()?;
    let leader_epoch = r.i32()?;
    let commit_timestamp_ms = r.i64()?;
    let len = usize::try_from(r.u32()?).ok()?;
    let metadata = String::from_utf8(r.take(len)?.to_vec()).ok()?;
    r.0.is_empty().then_some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// A bounds-checked big-endian reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        <[u8; N]>::try_from(self.take(N)?).ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_tp() -> impl Strategy<Value = TopicPartition> {
        // Bias towards the bytes the escaping cares about.
        let topic = prop::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{1}'),
                Just(':'),
                Just('%'),
                Just('a'),
                any::<char>()
            ],
            0..8,
        )
        .prop_map(|cs| cs.into_iter().collect::<String>());
        (topic, any::<i32>()).prop_map(|(t, p)| TopicPartition::new(t, p))
    }

    proptest! {
        #[test]
        fn tp_keys_round_trip_and_sort_like_the_partitions(a in any_tp(), b in any_tp()) {
            prop_assert_eq!(decode_tp_key(&tp_key(&a)), Some(a.clone()));
            prop_assert_eq!(tp_key(&a).cmp(&tp_key(&b)), a.cmp(&b));
        }

        #[test]
        fn group_keys_sort_by_group_then_partition(
            g1 in ".{0,6}", g2 in ".{0,6}", a in any_tp(), b in any_tp()
        ) {
            let ka = group_offset_key(&g1, &a);
            let kb = group_offset_key(&g2, &b);
            prop_assert_eq!(ka.cmp(&kb), (&g1, &a).cmp(&(&g2, &b)));
            prop_assert_eq!(decode_group_offset_key(&ka), Some((g1.clone(), a.clone())));
            prop_assert!(ka.starts_with(&group_prefix(&g1)));
            prop_assert!(ka.as_slice() < after_group(&g1).as_slice());
            if g1 < g2 {
                prop_assert!(after_group(&g1).as_slice() <= kb.as_slice());
            }
        }

        #[test]
        fn tree_names_round_trip(a in any_tp()) {
            let name = log_tree_name(&a);
            prop_assert!(name.starts_with(LOG_TREE_PREFIX));
            prop_assert_eq!(decode_log_tree_name(name.as_bytes()), Some(a));
        }

        #[test]
        fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_tp_key(&bytes);
            let _ = decode_group_offset_key(&bytes);
            let _ = decode_log_tree_name(&bytes);
            let _ = decode_log_state(&bytes);
            let _ = decode_committed(&bytes);
            let _ = decode_offset_key(&bytes);
        }

        #[test]
        fn committed_offsets_round_trip(
            offset in any::<i64>(), epoch in any::<i32>(), ts in any::<i64>(), meta in ".{0,20}"
        ) {
            let c = CommittedOffset { offset, leader_epoch: epoch, metadata: meta, commit_timestamp_ms: ts };
            prop_assert_eq!(decode_committed(&encode_committed(&c)), Some(c));
        }
    }

    #[test]
    fn offset_keys_sort_numerically() {
        let offsets = [0i64, 1, 255, 256, 1 << 40, i64::MAX];
        for w in offsets.windows(2) {
            assert!(offset_key(w[0]) < offset_key(w[1]));
        }
        assert_eq!(decode_offset_key(&offset_key(12345)), Some(12345));
        assert_eq!(decode_offset_key(b"short"), None);
    }

    #[test]
    fn tree_names_are_readable_and_escaped() {
        assert_eq!(
            log_tree_name(&TopicPartition::new("orders.v2", 3)),
            "log:orders.v2:3"
        );
        assert_eq!(
            log_tree_name(&TopicPartition::new("a:b%", 0)),
            "log:a%3Ab%25:0"
        );
        assert_eq!(
            decode_log_tree_name(b"log:a%3ab%25:0"),
            None,
            "non-canonical hex"
        );
        assert_eq!(decode_log_tree_name(b"logs"), None);
    }

    #[test]
    fn log_state_round_trips_and_rejects_nonsense() {
        let s = LogState {
            start: 7,
            end: 90,
            compacted_upto: 0,
        };
        assert_eq!(decode_log_state(&encode_log_state(s)), Some(s));
        assert_eq!(
            encode_log_state(s).len(),
            17,
            "the format before compaction"
        );
        let c = LogState {
            compacted_upto: 60,
            ..s
        };
        assert_eq!(decode_log_state(&encode_log_state(c)), Some(c));
        assert_eq!(decode_log_state(&encode_log_state(c)[..24]), None);
        assert_eq!(
            decode_log_state(&encode_log_state(LogState {
                start: 9,
                end: 8,
                compacted_upto: 0
            })),
            None
        );
        assert_eq!(decode_log_state(&[2; 17]), None);
    }
}
