//! Weir's native protocol: frames of a big-endian `u32` length and a MessagePack body.
//!
//! ```text
//! client ── [len u32][ Request  { id, body: RequestBody } ] ──►  server
//! client ◄─ [len u32][ Response { id, body: Result<ResponseBody, WireError> } ] ── server
//! ```
//!
//! A connection carries many requests at once (pipelining); each response comes back when it
//! is ready, with the correlation id of its request (clients match by id, not by position), so a
//! long-poll fetch does not hold back later responses. Publishes to one partition are applied
//! in the order they were sent. Batches travel as MessagePack `bin`
//! (validated like [`weir_storage::Batch::new`] when decoded; a large batch is written to the
//! socket from its own buffer and decoded as a slice of the received frame, without copies). Errors
//! travel as stable numeric codes ([`BrokerError::code`]) with a message and, for Weir clients,
//! the structured error.
//!
//! [`FrameDecoder`] checks the announced length against its maximum **before** reserving any
//! memory for the body; a frame too large is an error, and the connection is closed after an
//! error frame (with correlation id 0) says why. "Need more bytes" is `Ok(None)`, not an error.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use weir_storage::{Batch, CommittedOffset, Offset, TopicPartition};

use crate::broker::{
    Acks, BrokerError, FetchResult, GroupDescription, GroupState, JoinGroup, JoinResult,
    OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
};

/// The default largest frame a peer may send (64 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Why bytes are not a frame or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces more than the maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid MessagePack message of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The native error code of this failure.
    pub fn code(&self) -> u16 {
        match self {
            FrameError::TooLarge { .. } => 100,
            FrameError::Malformed(_) => 101,
        }
    }
}

/// Splits a byte stream into frame bodies.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// Takes one frame body off the front of `buf`; `Ok(None)` until a whole frame is there.
    /// Reserves room for the rest of a frame only once its length passed the check.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a length above the maximum.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame_bytes,
            });
        }
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

/// Encodes a message as one frame.
///
/// # Errors
/// A message too large for a `u32` length.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_u32(0);
    let mut w = (&mut out).writer();
    rmp_serde::encode::write_named(&mut w, msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(out.len() - 4).map_err(|_| FrameError::TooLarge {
        size: out.len() - 4,
        max: u32::MAX as usize,
    })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out.freeze())
}

/// Decodes a frame body.
///
/// # Errors
/// [`FrameError::Malformed`] for anything that is not a message of type `T`.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Decodes a frame body whose batches stay slices of `frame` (no copy of the record bytes).
///
/// # Errors
/// [`FrameError::Malformed`] for anything that is not a message of type `T`.
pub fn decode_frame<T: for<'a> Deserialize<'a>>(frame: &Bytes) -> Result<T, FrameError> {
    weir_storage::batch::deserialize_from(frame, || decode_body(frame))
}

/// Batches below this size are copied into the frame; larger ones travel as chunks of their own.
const CHUNK_MIN_BYTES: usize = 1024;

/// An encoded frame as a list of chunks, for vectored writes: the length prefix and message
/// bytes, with each large batch as a chunk of its own (the batch's bytes, not a copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedFrame {
    chunks: Vec<Bytes>,
}

impl EncodedFrame {
    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The chunks, by value.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// Total bytes, length prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    /// True for a frame of no bytes (never produced by the encoder).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one buffer (copies).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.freeze()
    }
}

/// A `Write` that copies small writes and keeps the known payloads (in order) as chunks when
/// the serializer writes exactly their bytes: rmp writes a `bin` as its header, then the data
/// in one `write_all`, which is recognised by address and length.
struct ChunkWriter {
    chunks: Vec<Bytes>,
    current: BytesMut,
    payloads: std::collections::VecDeque<Bytes>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let next = self
            .payloads
            .front()
            .filter(|p| p.as_ptr() == buf.as_ptr() && p.len() == buf.len());
        match next {
            Some(_) => {
                let payload = self.payloads.pop_front().unwrap_or_default();
                if payload.len() >= CHUNK_MIN_BYTES {
                    if !self.current.is_empty() {
                        self.chunks.push(self.current.split().freeze());
                    }
                    self.chunks.push(payload);
                } else {
                    self.current.extend_from_slice(buf);
                }
            }
            None => self.current.extend_from_slice(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a message as one frame of chunks, `payloads` (the message's batches, in the order
/// it serializes them) kept as chunks of their own instead of copied.
///
/// # Errors
/// A message too large for a `u32` length.
pub fn encode_frame_vectored<T: Serialize>(
    msg: &T,
    payloads: impl IntoIterator<Item = Bytes>,
) -> Result<EncodedFrame, FrameError> {
    let mut w = ChunkWriter {
        chunks: Vec::new(),
        current: BytesMut::with_capacity(256),
        payloads: payloads.into_iter().collect(),
    };
    rmp_serde::encode::write_named(&mut w, msg)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !w.current.is_empty() {
        w.chunks.push(w.current.split().freeze());
    }
    let body: usize = w.chunks.iter().map(Bytes::len).sum();
    let len = u32::try_from(body).map_err(|_| FrameError::TooLarge {
        size: body,
        max: u32::MAX as usize,
    })?;
    let mut chunks = Vec::with_capacity(w.chunks.len() + 1);
    chunks.push(Bytes::copy_from_slice(&len.to_be_bytes()));
    chunks.extend(w.chunks);
    Ok(EncodedFrame { chunks })
}

/// A request with its correlation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What is asked.
    pub body: RequestBody,
}

impl Request {
    /// The batches the request carries, in the order they are serialized.
    pub fn payloads(&self) -> Vec<Bytes> {
        match &self.body {
            RequestBody::Publish { batches, .. } => {
                batches.iter().map(|b| b.as_bytes().clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Encodes the request as a frame, its batches not copied.
    ///
    /// # Errors
    /// A request too large for a `u32` length.
    pub fn encode(&self) -> Result<EncodedFrame, FrameError> {
        encode_frame_vectored(self, self.payloads())
    }
}

/// Every request, mirroring [`crate::BrokerHandle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RequestBody {
    /// Append batches.
    Publish {
        /// Topic.
        topic: String,
        /// Partition, or the sticky choice.
        partition: Option<i32>,
        /// The batches.
        batches: Vec<Batch>,
        /// When to answer.
        acks: Acks,
    },
    /// Read batches.
    Fetch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// First offset.
        from: Offset,
        /// Soft byte limit.
        max_bytes: usize,
        /// Wait for this many bytes...
        min_bytes: usize,
        /// ... this long at most.
        max_wait: Duration,
    },
    /// Look up an offset.
    ListOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Which.
        spec: OffsetSpec,
    },
    /// Partition count (optionally creating the topic).
    Partitions {
        /// Topic.
        topic: String,
        /// Create it when missing (and allowed).
        create: bool,
    },
    /// Create a topic.
    CreateTopic {
        /// Name.
        name: String,
        /// Partitions.
        partitions: Option<u32>,
        /// Config overrides.
        configs: Vec<(String, String)>,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// Grow a topic.
    CreatePartitions {
        /// Name.
        name: String,
        /// New total.
        total: u32,
    },
    /// Change topic config.
    AlterTopicConfig {
        /// Name.
        name: String,
        /// Settings.
        set: Vec<(String, String)>,
        /// Settings back to the broker's topic defaults (absent from older clients' frames).
        #[serde(default)]
        reset: Vec<String>,
    },
    /// Topic names.
    ListTopics,
    /// One topic.
    DescribeTopic {
        /// Name.
        name: String,
    },
    /// Join a group.
    JoinGroup {
        /// Group.
        group: String,
        /// The join.
        join: JoinGroup,
    },
    /// Sync a group.
    SyncGroup {
        /// Group.
        group: String,
        /// Member.
        member_id: String,
        /// Generation.
        generation: i32,
        /// Leader's assignments.
        assignments: Vec<(String, Bytes)>,
    },
    /// Heartbeat.
    Heartbeat {
        /// Group.
        group: String,
        /// Member.
        member_id: String,
        /// Generation.
        generation: i32,
    },
    /// Leave a group.
    LeaveGroup {
        /// Group.
        group: String,
        /// Member.
        member_id: String,
    },
    /// Commit offsets.
    CommitOffsets {
        /// Group.
        group: String,
        /// Member ("" for simple commits).
        member_id: String,
        /// Generation (-1 for simple commits).
        generation: i32,
        /// Offsets.
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    },
    /// Committed offsets.
    FetchOffsets {
        /// Group.
        group: String,
        /// Partitions, or all.
        partitions: Option<Vec<TopicPartition>>,
    },
    /// Groups and states.
    ListGroups,
    /// One group.
    DescribeGroup {
        /// Group.
        group: String,
    },
    /// Delete an empty group.
    DeleteGroup {
        /// Group.
        group: String,
    },
    /// A producer id for idempotent publishing (-1: a new one; else the next epoch).
    InitProducerId {
        /// The current id, or -1.
        producer_id: i64,
        /// The current epoch, or -1.
        producer_epoch: i16,
    },
    /// Move an empty group's offsets.
    ResetOffsets {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Where to.
        to: ResetTo,
    },
}

/// An error on the wire: a stable code, a message, and the structured error for Weir clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// [`BrokerError::code`], or a protocol error code (100+).
    pub code: u16,
    /// Human-readable.
    pub message: String,
    /// The broker error, when it is one.
    pub error: Option<BrokerError>,
}

impl From<BrokerError> for WireError {
    fn from(e: BrokerError) -> Self {
        WireError {
            code: e.code(),
            message: e.to_string(),
            error: Some(e),
        }
    }
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> Self {
        WireError {
            code: e.code(),
            message: e.to_string(),
            error: None,
        }
    }
}

impl WireError {
    /// The broker error this stands for (protocol errors become `InvalidRequest`).
    pub fn into_broker_error(self) -> BrokerError {
        self.error.unwrap_or(BrokerError::InvalidRequest(format!(
            "{} (code {})",
            self.message, self.code
        )))
    }
}

/// A response with the correlation id of its request (0 for a connection-level error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    /// The outcome.
    pub body: Result<ResponseBody, WireError>,
}

impl Response {
    /// The batches the response carries, in the order they are serialized.
    pub fn payloads(&self) -> Vec<Bytes> {
        match &self.body {
            Ok(ResponseBody::Fetched(r)) => {
                r.batches.iter().map(|b| b.as_bytes().clone()).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Encodes the response as a frame, its batches not copied.
    ///
    /// # Errors
    /// A response too large for a `u32` length.
    pub fn encode(&self) -> Result<EncodedFrame, FrameError> {
        encode_frame_vectored(self, self.payloads())
    }
}

/// Every successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ResponseBody {
    /// No payload.
    Done,
    /// A publish.
    Published {
        /// The partition.
        partition: i32,
        /// The ack.
        ack: PublishAck,
    },
    /// A fetch.
    Fetched(FetchResult),
    /// An offset lookup.
    Offset(Option<Offset>),
    /// A partition count.
    Partitions(u32),
    /// Topic names.
    Topics(Vec<String>),
    /// A topic.
    Topic(TopicDescription),
    /// A join.
    Joined(JoinResult),
    /// A sync.
    Synced(SyncResult),
    /// Committed offsets.
    Offsets(Vec<(TopicPartition, CommittedOffset)>),
    /// Groups.
    Groups(Vec<(String, GroupState)>),
    /// A group.
    Group(GroupDescription),
    /// Offsets after a reset.
    Reset(Vec<(TopicPartition, Offset)>),
    /// A producer id and epoch.
    ProducerId {
        /// The id.
        producer_id: i64,
        /// The epoch.
        producer_epoch: i16,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use weir_storage::{BatchBuilder, Compression, Record};

    fn batch() -> Batch {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(Record::new(1, "v").with_key("k"));
        b.build(0).expect("batch")
    }

    #[test]
    fn requests_round_trip_with_batches_as_bin() {
        let req = Request {
            id: 7,
            body: RequestBody::Publish {
                topic: "t".into(),
                partition: Some(1),
                batches: vec![batch()],
                acks: Acks::All,
            },
        };
        let frame = encode_frame(&req).expect("encode");
        let mut buf = BytesMut::from(&frame[..]);
        let body = FrameDecoder::new(1024)
            .decode(&mut buf)
            .expect("ok")
            .expect("frame");
        assert!(buf.is_empty());
        assert_eq!(decode_body::<Request>(&body).expect("decode"), req);
        // The batch bytes appear verbatim: MessagePack bin, not an array of numbers.
        let raw = batch();
        assert!(body.windows(raw.len()).any(|w| w == &raw.as_bytes()[..]));
    }

    fn big_batch(tag: u8) -> Batch {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..20 {
            b.push(Record::new(i, vec![tag; 100]));
        }
        b.build(0).expect("batch")
    }

    #[test]
    fn vectored_frames_keep_batches_as_chunks_and_decode_without_copies() {
        let (small, big1, big2) = (batch(), big_batch(1), big_batch(2));
        let resp = Response {
            id: 9,
            body: Ok(ResponseBody::Fetched(FetchResult {
                batches: vec![big1.clone(), small, big2.clone()],
                high_watermark: 60,
                log_start_offset: 0,
                ..FetchResult::default()
            })),
        };
        let frame = resp.encode().expect("encode");
        // The same bytes as the copying encoder.
        assert_eq!(frame.to_bytes(), encode_frame(&resp).expect("encode"));
        // Both large batches are chunks of their own, sharing the batches' memory.
        for big in [&big1, &big2] {
            assert!(frame
                .chunks()
                .iter()
                .any(|c| c.as_ptr() == big.as_bytes().as_ptr() && c.len() == big.len()));
        }
        assert_eq!(frame.len(), frame.to_bytes().len());
        // Decoding leaves the batches inside the frame buffer.
        let body = frame.to_bytes().slice(4..);
        let back: Response = decode_frame(&body).expect("decode");
        assert_eq!(back, resp);
        let Ok(ResponseBody::Fetched(r)) = back.body else {
            panic!("fetch expected")
        };
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        for b in &r.batches {
            assert!(range.contains(&(b.as_bytes().as_ptr() as usize)));
        }
        // A plain decode still works (and copies).
        assert_eq!(decode_body::<Response>(&body).expect("decode"), resp);
    }

    #[test]
    fn errors_round_trip() {
        let resp = Response {
            id: 3,
            body: Err(WireError::from(BrokerError::OffsetOutOfRange {
                requested: 9,
                start: 0,
                end: 4,
            })),
        };
        let frame = encode_frame(&resp).expect("encode");
        let back: Response = decode_body(&frame[4..]).expect("decode");
        assert_eq!(back, resp);
        let Err(e) = back.body else {
            panic!("error expected")
        };
        assert_eq!(e.code, 7);
        assert!(matches!(
            e.into_broker_error(),
            BrokerError::OffsetOutOfRange { end: 4, .. }
        ));
    }

    #[test]
    fn oversized_and_partial_frames() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                size: u32::MAX as usize,
                max: 1024
            })
        );
        assert!(
            buf.capacity() < 1 << 20,
            "no allocation by an unchecked length"
        );
        let mut buf = BytesMut::from(&[0, 0, 0, 5, 1, 2][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 4, 5, 6]);
        assert_eq!(
            d.decode(&mut buf).expect("ok").as_deref(),
            Some(&[1, 2, 3, 4, 5][..])
        );
        assert_eq!(&buf[..], &[6]);
        assert!(decode_body::<Request>(&[0xc1]).is_err());
        // A valid MessagePack map naming an unknown request.
        let unknown = rmp_serde::to_vec_named(&serde_json_like()).expect("encode");
        assert!(decode_body::<Request>(&unknown).is_err());
    }

    /// An AlterTopicConfig from a client that predates `reset` still decodes (and resets nothing).
    #[test]
    fn alter_topic_config_without_reset_decodes() {
        #[derive(Serialize)]
        enum OldBody {
            AlterTopicConfig {
                name: String,
                set: Vec<(String, String)>,
            },
        }
        #[derive(Serialize)]
        struct Old {
            id: u64,
            body: OldBody,
        }
        let old = Old {
            id: 3,
            body: OldBody::AlterTopicConfig {
                name: "t".into(),
                set: vec![("retention.ms".into(), "1".into())],
            },
        };
        let frame = encode_frame(&old).expect("encode");
        let req: Request = decode_body(&frame[4..]).expect("decodes");
        assert_eq!(req.id, 3);
        assert!(matches!(
            req.body,
            RequestBody::AlterTopicConfig { ref set, ref reset, .. } if set.len() == 1 && reset.is_empty()
        ));
    }

    fn serde_json_like() -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([
            ("id".into(), "1".into()),
            ("body".into(), "Nope".into()),
        ])
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = FrameDecoder::new(4096);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(body)) = d.decode(&mut buf) {
                let _ = decode_body::<Request>(&body);
            }
            let _ = decode_body::<Request>(&bytes);
            let _ = decode_body::<Response>(&bytes);
        }
    }
}
