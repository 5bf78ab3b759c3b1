//! The consumer protocol embedded in Kafka's classic group messages: the bytes a consumer puts
//! in its JoinGroup protocol metadata (`ConsumerProtocolSubscription`) and the leader hands out
//! in SyncGroup (`ConsumerProtocolAssignment`). The classic coordinator passes them on unread;
//! a group that holds classic members beside members of the consumer protocol (KIP-848's
//! migration path) reads its classic members' subscriptions and writes their assignments, as
//! Kafka's coordinator does.
//!
//! ```text
//! subscription: version i16, topics [string], user_data bytes?,
//!               v1+ owned_partitions [topic string, partitions [i32]],
//!               v2+ generation_id i32, v3+ rack_id string?
//! assignment:   version i16, assigned [topic string, partitions [i32]], user_data bytes?
//! ```
//!
//! Neither is a flexible version: `int16` string lengths, `int32` counts. Versions above the
//! highest known are read as it (later versions only add fields at the end, which are left
//! unread). Decoding is bounded like the rest of the codec ([`super::wire`]): no count is
//! believed beyond what the remaining bytes can hold.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{KafkaCodecError, Result};
use super::wire::{Ctx, Reader};

/// The protocol type of groups whose members speak this embedded protocol.
pub const PROTOCOL_TYPE: &str = "consumer";

/// The highest subscription version read field by field.
pub const SUBSCRIPTION_VERSION: i16 = 3;

/// Partitions by topic name, as both messages list them.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

/// A consumer's subscription, from its JoinGroup metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The version it was written in.
    pub version: i16,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its assignor's data.
    pub user_data: Option<Bytes>,
    /// What it owns now (v1+; a cooperative consumer lists them, an eager one has given all
    /// up before it joins).
    pub owned_partitions: TopicPartitions,
    /// The generation of its last assignment (v2+; -1 otherwise).
    pub generation: i32,
    /// Its rack (v3+).
    pub rack_id: Option<String>,
}

/// The smallest encoding of a (topic, partitions) entry: an empty name and no partitions.
const MIN_TOPIC_PARTITIONS: usize = 2 + 4;

fn topic_partitions(r: &mut Reader) -> Result<TopicPartitions> {
    let ctx = Ctx::new(0, i16::MAX);
    let n = r.array_len(false, MIN_TOPIC_PARTITIONS)?.unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.string(ctx)?;
        let k = r.array_len(false, 4)?.unwrap_or(0);
        let mut partitions = Vec::with_capacity(k);
        for _ in 0..k {
            partitions.push(r.i32()?);
        }
        out.push((topic, partitions));
    }
    Ok(out)
}

fn version(r: &mut Reader) -> Result<i16> {
    let v = r.i16()?;
    if v < 0 {
        return Err(KafkaCodecError::InvalidLength(i64::from(v)));
    }
    Ok(v)
}

/// Reads a subscription.
///
/// # Errors
/// Truncation, a count beyond the input, invalid UTF-8, a negative version.
pub fn decode_subscription(bytes: Bytes) -> Result<Subscription> {
    let mut r = Reader::new(bytes);
    let version = version(&mut r)?;
    let ctx = Ctx::new(0, i16::MAX);
    let n = r.array_len(false, 2)?.unwrap_or(0);
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string(ctx)?);
    }
    let user_data = r.nullable_bytes(false)?;
    let mut s = Subscription {
        version,
        topics,
        user_data,
        owned_partitions: Vec::new(),
        generation: -1,
        rack_id: None,
    };
    if version >= 1 {
        s.owned_partitions = topic_partitions(&mut r)?;
    }
    if version >= 2 {
        s.generation = r.i32()?;
    }
    if version >= 3 {
        s.rack_id = r.nullable_string(false)?;
    }
    Ok(s)
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Topic names are at most 249 bytes; anything longer is cut to what an i16 can say.
    let s = s.as_bytes();
    let s = s.get(..s.len().min(i16::MAX as usize)).unwrap_or_default();
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_topic_partitions(b: &mut BytesMut, tps: &[(String, Vec<i32>)]) {
    b.put_i32(tps.len() as i32);
    for (topic, partitions) in tps {
        put_string(b, topic);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(*p);
        }
    }
}

/// Writes a subscription in its `version` (capped at [`SUBSCRIPTION_VERSION`]).
pub fn encode_subscription(s: &Subscription) -> Bytes {
    let version = s.version.clamp(0, SUBSCRIPTION_VERSION);
    let mut b = BytesMut::new();
    b.put_i16(version);
    b.put_i32(s.topics.len() as i32);
    for t in &s.topics {
        put_string(&mut b, t);
    }
    match &s.user_data {
        Some(d) => {
            b.put_i32(d.len() as i32);
            b.put_slice(d);
        }
        None => b.put_i32(-1),
    }
    if version >= 1 {
        put_topic_partitions(&mut b, &s.owned_partitions);
    }
    if version >= 2 {
        b.put_i32(s.generation);
    }
    if version >= 3 {
        match &s.rack_id {
            Some(r) => put_string(&mut b, r),
            None => b.put_i16(-1),
        }
    }
    b.freeze()
}

/// Reads an assignment: its partitions by topic (the assignor's user data is left out).
///
/// # Errors
/// Truncation, a count beyond the input, invalid UTF-8, a negative version. An empty input
/// is an empty assignment (what a member without one holds).
pub fn decode_assignment(bytes: Bytes) -> Result<TopicPartitions> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(bytes);
    version(&mut r)?;
    topic_partitions(&mut r)
}

/// Writes an assignment in `version` (every version has the same fields), without user data.
pub fn encode_assignment(version: i16, tps: &[(String, Vec<i32>)]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(version.clamp(0, SUBSCRIPTION_VERSION));
    put_topic_partitions(&mut b, tps);
    b.put_i32(-1);
    b.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subscriptions_round_trip_in_every_version() {
        for version in 0..=SUBSCRIPTION_VERSION {
            let s = Subscription {
                version,
                topics: vec!["a".into(), "orders".into()],
                user_data: Some(Bytes::from_static(b"\x00\x01")),
                owned_partitions: if version >= 1 {
                    vec![("orders".into(), vec![0, 2])]
                } else {
                    Vec::new()
                },
                generation: if version >= 2 { 7 } else { -1 },
                rack_id: (version >= 3).then(|| "r1".to_string()),
            };
            assert_eq!(decode_subscription(encode_subscription(&s)).unwrap(), s);
        }
    }

    /// librdkafka 2.x's subscription of a cooperative-sticky consumer (v3: two topics, no
    /// user data, one owned partition, generation 5, no rack), written out by hand from the
    /// layout above.
    #[test]
    fn a_v3_subscription_with_owned_partitions_reads() {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i32(2);
        for t in ["t1", "t2"] {
            b.put_i16(2);
            b.put_slice(t.as_bytes());
        }
        b.put_i32(-1);
        b.put_i32(1);
        b.put_i16(2);
        b.put_slice(b"t1");
        b.put_i32(1);
        b.put_i32(4);
        b.put_i32(5);
        b.put_i16(-1);
        let s = decode_subscription(b.freeze()).unwrap();
        assert_eq!(s.topics, ["t1", "t2"]);
        assert_eq!(s.owned_partitions, [("t1".to_string(), vec![4])]);
        assert_eq!((s.generation, s.rack_id, s.user_data), (5, None, None));
    }

    #[test]
    fn a_later_version_is_read_as_the_highest_known_and_its_extra_fields_left() {
        let mut s = Subscription {
            version: 3,
            topics: vec!["x".into()],
            generation: 2,
            ..Subscription::default()
        };
        let mut b = BytesMut::from(&encode_subscription(&s)[..]);
        b[1] = 9;
        b.put_slice(b"later fields");
        s.version = 9;
        assert_eq!(decode_subscription(b.freeze()).unwrap(), s);
    }

    #[test]
    fn assignments_round_trip_and_an_empty_one_is_nothing() {
        let tps = vec![("a".to_string(), vec![0, 1]), ("b".to_string(), vec![])];
        assert_eq!(decode_assignment(encode_assignment(1, &tps)).unwrap(), tps);
        assert_eq!(decode_assignment(Bytes::new()).unwrap(), Vec::new());
    }

    #[test]
    fn counts_beyond_the_input_are_refused_before_anything_is_allocated() {
        // 2^31 - 1 topics in six bytes.
        let b = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_subscription(b.clone()),
            Err(KafkaCodecError::LengthTooLarge { .. })
        ));
        assert!(decode_assignment(b).is_err());
        assert!(decode_subscription(Bytes::from_static(&[0xff, 0xff])).is_err());
    }

    proptest! {
        /// Any bytes: an answer, never a panic (and never an allocation the input cannot back,
        /// which the bounded reader guarantees).
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_subscription(Bytes::from(bytes.clone()));
            let _ = decode_assignment(Bytes::from(bytes));
        }
    }
}
