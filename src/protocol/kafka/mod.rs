//! Weir's Kafka wire-protocol codec, sans-IO: Kafka frames in, typed requests out, and back.
//!
//! ```text
//! socket bytes ─► FrameDecoder (4-byte length, checked against a maximum) ─► frame: Bytes
//! frame ─► peek_header ─► RequestHeader          (answer unknown APIs / versions from here)
//! frame ─► decode_request ─► (RequestHeader, Request)   ─► the server's handlers
//! Response ─► encode_response(correlation id, version) ─► Encoded chunks ─► vectored write
//! ```
//!
//! The client side is here too ([`encode_request`], [`decode_response`]) for tests and Rust test
//! clients. Every API this codec knows is listed once in the `apis!` table below: its key, its
//! message structs (declared field by field in [`messages`] with `kafka_struct!`), the versions
//! it decodes, the versions [`SUPPORTED`] advertises, and where flexible versions start.
//!
//! Invariants:
//! - Decoding never panics and never allocates from an unchecked length (see [`wire`]); the
//!   Kafka crates that trust wire counts abort on an 8-byte input, this one returns
//!   [`KafkaCodecError::LengthTooLarge`] or [`KafkaCodecError::Truncated`].
//! - Records are opaque `Option<Bytes>`, sliced from the frame on decode and appended as their
//!   own chunks on encode: never parsed, copied or re-encoded here.
//! - Request header v2 (tagged fields) for flexible versions, else v1. Response header v1 for
//!   flexible versions, else v0, **except ApiVersions, always v0** (clients parse that header
//!   before they know the broker's versions).
//! - Tagged fields are written only when they differ from their defaults: librdkafka before
//!   2.2 skips tagged fields one byte short, and kcat never connects if, say, ApiVersions v3
//!   carries `finalized_features_epoch`.
//! - Bytes after a request body are accepted and ignored, as Kafka does: librdkafka's "all
//!   topics" Metadata v9+ request carries 3 of them.
//! - The codec decodes some versions above what [`SUPPORTED`] advertises (they cost nothing and
//!   round-trip more real traffic); the server checks [`ApiKey::is_supported`] itself.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod embedded;
pub mod error;
pub(crate) mod macros;
pub mod messages;
pub mod wire;

use std::fmt::Debug;

use bytes::{Buf, Bytes, BytesMut};

pub use error::{KafkaCodecError, Result};
pub use messages::api_versions::{ApiVersion, ApiVersionsResponse};
pub use wire::{Ctx, Encoded, Reader, RecordSet, Uuid, Wire, Writer, ZERO_COPY_MIN_BYTES};

/// Kafka's default largest request (`socket.request.max.bytes`, 100 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Kafka error code UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// A request or response body of one API.
pub trait Message: Wire + Default + Clone + Debug + PartialEq {
    /// The API it belongs to.
    const API_KEY: ApiKey;
    /// The first flexible version (compact forms and tagged fields).
    const FLEXIBLE_FROM: i16;

    /// The encoding context of the body in `version`.
    fn ctx(version: i16) -> Ctx {
        Ctx::new(version, Self::FLEXIBLE_FROM)
    }

    /// Decodes a body of `version` from `r`, leaving any bytes after it unread.
    ///
    /// # Errors
    /// [`KafkaCodecError::UnsupportedVersion`] outside [`ApiKey::decodable`], or any decoding
    /// error of the fields.
    fn decode(r: &mut Reader, version: i16) -> Result<Self> {
        Self::API_KEY.check_decodable(version, 0)?;
        Self::read(r, Self::ctx(version))
    }

    /// Encodes the body in `version`: fields absent from that version are skipped.
    ///
    /// # Errors
    /// [`KafkaCodecError::UnsupportedVersion`] outside [`ApiKey::decodable`], a null where the
    /// version allows none, or a value too long for its length prefix.
    fn encode(&self, w: &mut Writer, version: i16) -> Result<()> {
        Self::API_KEY.check_decodable(version, 0)?;
        self.write(w, Self::ctx(version))
    }
}

/// Declares every API the codec knows; see the module docs.
macro_rules! apis {
    ($(
        $(#[$meta:meta])*
        $variant:ident = $key:literal, $module:ident :: { $req:ident, $resp:ident },
        decode $dmin:literal ..= $dmax:literal, supported $smin:literal ..= $smax:literal,
        flexible $flex:literal;
    )*) => {
        /// The Kafka APIs this codec knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i16)]
        pub enum ApiKey {
            $(
                $(#[$meta])*
                $variant = $key,
            )*
        }

        impl ApiKey {
            /// Every known API, by key.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$variant),*];

            /// The API of a wire key, if known.
            pub fn from_i16(key: i16) -> Option<ApiKey> {
                match key {
                    $($key => Some(ApiKey::$variant),)*
                    _ => None,
                }
            }

            /// The API's name, as Kafka spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $(ApiKey::$variant => stringify!($variant),)*
                }
            }

            /// The versions this codec decodes and encodes (inclusive).
            pub fn decodable(self) -> (i16, i16) {
                match self {
                    $(ApiKey::$variant => ($dmin, $dmax),)*
                }
            }

            /// The versions the broker advertises (inclusive): the [`SUPPORTED`] row.
            pub fn supported(self) -> (i16, i16) {
                match self {
                    $(ApiKey::$variant => ($smin, $smax),)*
                }
            }

            /// The first flexible version.
            pub fn flexible_from(self) -> i16 {
                match self {
                    $(ApiKey::$variant => $flex,)*
                }
            }
        }

        /// What the broker advertises in ApiVersions: (API, min version, max version).
        pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[$((ApiKey::$variant, $smin, $smax)),*];

        /// A decoded request body, one variant per API.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Request {
            $(
                #[doc = concat!("A ", stringify!($variant), " request.")]
                $variant(messages::$module::$req),
            )*
        }

        /// A response body, one variant per API.
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub enum Response {
            $(
                #[doc = concat!("A ", stringify!($variant), " response.")]
                $variant(messages::$module::$resp),
            )*
        }

        $(
            impl Message for messages::$module::$req {
                const API_KEY: ApiKey = ApiKey::$variant;
                const FLEXIBLE_FROM: i16 = $flex;
            }

            impl Message for messages::$module::$resp {
                const API_KEY: ApiKey = ApiKey::$variant;
                const FLEXIBLE_FROM: i16 = $flex;
            }

            impl From<messages::$module::$req> for Request {
                fn from(r: messages::$module::$req) -> Request {
                    Request::$variant(r)
                }
            }

            impl From<messages::$module::$resp> for Response {
                fn from(r: messages::$module::$resp) -> Response {
                    Response::$variant(r)
                }
            }
        )*

        impl Request {
            /// The request's API.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Request::$variant(_) => ApiKey::$variant,)*
                }
            }

            /// Decodes the body of an `api` request of `version`.
            ///
            /// # Errors
            /// As [`Message::decode`].
            pub fn decode(api: ApiKey, r: &mut Reader, version: i16) -> Result<Request> {
                Ok(match api {
                    $(ApiKey::$variant => Request::$variant(Message::decode(r, version)?),)*
                })
            }

            /// Encodes the body in `version`.
            ///
            /// # Errors
            /// As [`Message::encode`].
            pub fn encode(&self, w: &mut Writer, version: i16) -> Result<()> {
                match self {
                    $(Request::$variant(m) => m.encode(w, version),)*
                }
            }

            /// A sample request with every field of `version` set (see [`Wire::example`]).
            pub fn example(api: ApiKey, seed: u32, version: i16) -> Request {
                match api {
                    $(ApiKey::$variant => Request::$variant(Wire::example(
                        seed,
                        Ctx::new(version, $flex),
                    )),)*
                }
            }
        }

        impl Response {
            /// The response's API.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Response::$variant(_) => ApiKey::$variant,)*
                }
            }

            /// Decodes the body of an `api` response of `version`.
            ///
            /// # Errors
            /// As [`Message::decode`].
            pub fn decode(api: ApiKey, r: &mut Reader, version: i16) -> Result<Response> {
                Ok(match api {
                    $(ApiKey::$variant => Response::$variant(Message::decode(r, version)?),)*
                })
            }

            /// Encodes the body in `version`.
            ///
            /// # Errors
            /// As [`Message::encode`].
            pub fn encode(&self, w: &mut Writer, version: i16) -> Result<()> {
                match self {
                    $(Response::$variant(m) => m.encode(w, version),)*
                }
            }

            /// A sample response with every field of `version` set (see [`Wire::example`]).
            pub fn example(api: ApiKey, seed: u32, version: i16) -> Response {
                match api {
                    $(ApiKey::$variant => Response::$variant(Wire::example(
                        seed,
                        Ctx::new(version, $flex),
                    )),)*
                }
            }
        }
    };
}

apis! {
    /// Append record batches.
    Produce = 0, produce::{ProduceRequest, ProduceResponse},
        decode 0..=13, supported 0..=11, flexible 9;
    /// Read record batches.
    Fetch = 1, fetch::{FetchRequest, FetchResponse},
        decode 4..=18, supported 4..=12, flexible 12;
    /// Offsets by time, earliest, latest.
    ListOffsets = 2, list_offsets::{ListOffsetsRequest, ListOffsetsResponse},
        decode 1..=10, supported 1..=7, flexible 6;
    /// Brokers, topics, partitions.
    Metadata = 3, metadata::{MetadataRequest, MetadataResponse},
        decode 0..=13, supported 0..=12, flexible 9;
    /// Commit consumer group offsets.
    OffsetCommit = 8, offset_commit::{OffsetCommitRequest, OffsetCommitResponse},
        decode 2..=9, supported 2..=9, flexible 8;
    /// Read committed offsets (v8+: several groups at once).
    OffsetFetch = 9, offset_fetch::{OffsetFetchRequest, OffsetFetchResponse},
        decode 1..=9, supported 1..=9, flexible 6;
    /// Find a group's (or transaction's) coordinator (v4+: batched keys).
    FindCoordinator = 10, find_coordinator::{FindCoordinatorRequest, FindCoordinatorResponse},
        decode 0..=6, supported 0..=6, flexible 3;
    /// Join a consumer group.
    JoinGroup = 11, join_group::{JoinGroupRequest, JoinGroupResponse},
        decode 0..=9, supported 0..=9, flexible 6;
    /// Stay in a group.
    Heartbeat = 12, heartbeat::{HeartbeatRequest, HeartbeatResponse},
        decode 0..=4, supported 0..=4, flexible 4;
    /// Leave a group.
    LeaveGroup = 13, leave_group::{LeaveGroupRequest, LeaveGroupResponse},
        decode 0..=5, supported 0..=5, flexible 4;
    /// Hand out (and receive) assignments.
    SyncGroup = 14, sync_group::{SyncGroupRequest, SyncGroupResponse},
        decode 0..=5, supported 0..=5, flexible 4;
    /// Describe groups and members.
    DescribeGroups = 15, describe_groups::{DescribeGroupsRequest, DescribeGroupsResponse},
        decode 0..=6, supported 0..=5, flexible 5;
    /// List groups.
    ListGroups = 16, list_groups::{ListGroupsRequest, ListGroupsResponse},
        decode 0..=5, supported 0..=5, flexible 3;
    /// The versions the broker supports: every client's first request.
    ApiVersions = 18, api_versions::{ApiVersionsRequest, ApiVersionsResponse},
        decode 0..=4, supported 0..=4, flexible 3;
    /// Create topics.
    CreateTopics = 19, create_topics::{CreateTopicsRequest, CreateTopicsResponse},
        decode 2..=7, supported 2..=7, flexible 5;
    /// Delete topics.
    DeleteTopics = 20, delete_topics::{DeleteTopicsRequest, DeleteTopicsResponse},
        decode 1..=6, supported 1..=6, flexible 4;
    /// Move partitions' log start offsets forward.
    DeleteRecords = 21, delete_records::{DeleteRecordsRequest, DeleteRecordsResponse},
        decode 0..=2, supported 0..=2, flexible 2;
    /// A producer id (and epoch) for idempotence or transactions.
    InitProducerId = 22, init_producer_id::{InitProducerIdRequest, InitProducerIdResponse},
        decode 0..=5, supported 0..=4, flexible 2;
    /// Add partitions to a transaction (the producer's, before it writes to them).
    AddPartitionsToTxn = 24,
        add_partitions_to_txn::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse},
        decode 0..=3, supported 0..=3, flexible 3;
    /// Add a consumer group's offsets to a transaction (before TxnOffsetCommit).
    AddOffsetsToTxn = 25, add_offsets_to_txn::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse},
        decode 0..=3, supported 0..=3, flexible 3;
    /// Commit or abort a transaction.
    EndTxn = 26, end_txn::{EndTxnRequest, EndTxnResponse},
        decode 0..=3, supported 0..=3, flexible 3;
    /// Commit a group's offsets as part of a transaction.
    TxnOffsetCommit = 28, txn_offset_commit::{TxnOffsetCommitRequest, TxnOffsetCommitResponse},
        decode 0..=3, supported 0..=3, flexible 3;
    /// Describe broker and topic configs.
    DescribeConfigs = 32, describe_configs::{DescribeConfigsRequest, DescribeConfigsResponse},
        decode 1..=4, supported 1..=4, flexible 4;
    /// Replace topic configs (the legacy form of IncrementalAlterConfigs).
    AlterConfigs = 33, alter_configs::{AlterConfigsRequest, AlterConfigsResponse},
        decode 0..=2, supported 0..=2, flexible 2;
    /// Sizes of partitions on disk (the one log directory), for admin tools and UIs.
    DescribeLogDirs = 35, describe_log_dirs::{DescribeLogDirsRequest, DescribeLogDirsResponse},
        decode 1..=4, supported 1..=4, flexible 2;
    /// Add partitions to topics.
    CreatePartitions = 37, create_partitions::{CreatePartitionsRequest, CreatePartitionsResponse},
        decode 0..=3, supported 0..=3, flexible 2;
    /// Delete consumer groups (without members) and their committed offsets.
    DeleteGroups = 42, delete_groups::{DeleteGroupsRequest, DeleteGroupsResponse},
        decode 0..=2, supported 0..=2, flexible 2;
    /// Change topic configs key by key (SET and DELETE).
    IncrementalAlterConfigs = 44,
        incremental_alter_configs::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse},
        decode 0..=1, supported 0..=1, flexible 1;
    /// Delete a group's committed offsets of some partitions.
    OffsetDelete = 47, offset_delete::{OffsetDeleteRequest, OffsetDeleteResponse},
        decode 0..=0, supported 0..=0, flexible 1;
    /// Brokers and controller, for admin clients.
    DescribeCluster = 60, describe_cluster::{DescribeClusterRequest, DescribeClusterResponse},
        decode 0..=2, supported 0..=1, flexible 0;
    /// The producers partitions remember, with their open transactions (admin tools).
    DescribeProducers = 61,
        describe_producers::{DescribeProducersRequest, DescribeProducersResponse},
        decode 0..=0, supported 0..=0, flexible 0;
    /// Transactional ids' state, producer and partitions (admin tools).
    DescribeTransactions = 65,
        describe_transactions::{DescribeTransactionsRequest, DescribeTransactionsResponse},
        decode 0..=0, supported 0..=0, flexible 0;
    /// Transactional ids, by state, producer and age (admin tools).
    ListTransactions = 66,
        list_transactions::{ListTransactionsRequest, ListTransactionsResponse},
        decode 0..=1, supported 0..=1, flexible 0;
    /// Join, stay in and leave a group of Kafka's consumer group protocol (KIP-848).
    ConsumerGroupHeartbeat = 68,
        consumer_group_heartbeat::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse},
        decode 0..=1, supported 0..=1, flexible 0;
    /// Describe groups of Kafka's consumer group protocol (KIP-848).
    ConsumerGroupDescribe = 69,
        consumer_group_describe::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse},
        decode 0..=1, supported 0..=1, flexible 0;
}

impl ApiKey {
    /// Whether the broker advertises `version` of this API.
    pub fn is_supported(self, version: i16) -> bool {
        let (min, max) = self.supported();
        (min..=max).contains(&version)
    }

    /// Whether `version` is flexible.
    pub fn is_flexible(self, version: i16) -> bool {
        version >= self.flexible_from()
    }

    /// The request header version for `version`: 2 if flexible, else 1.
    pub fn request_header_version(self, version: i16) -> i16 {
        if self.is_flexible(version) {
            2
        } else {
            1
        }
    }

    /// The response header version for `version`: 1 if flexible, else 0; always 0 for
    /// ApiVersions.
    pub fn response_header_version(self, version: i16) -> i16 {
        if self != ApiKey::ApiVersions && self.is_flexible(version) {
            1
        } else {
            0
        }
    }

    fn check_decodable(self, version: i16, correlation_id: i32) -> Result<()> {
        let (min, max) = self.decodable();
        if (min..=max).contains(&version) {
            Ok(())
        } else {
            Err(KafkaCodecError::UnsupportedVersion {
                api_key: self as i16,
                version,
                correlation_id,
            })
        }
    }
}

/// A request header (v1, or v2 with an empty tagged-field section for flexible versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The API.
    pub api_key: ApiKey,
    /// The API version of the body.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's self-chosen id (always a classic nullable string, even in header v2).
    pub client_id: Option<String>,
}

fn read_request_header(r: &mut Reader) -> Result<RequestHeader> {
    let api_key = r.i16()?;
    let api_version = r.i16()?;
    let correlation_id = r.i32()?;
    let api = ApiKey::from_i16(api_key).ok_or(KafkaCodecError::UnknownApi {
        api_key,
        correlation_id,
    })?;
    api.check_decodable(api_version, correlation_id)?;
    let client_id = r.nullable_string(false)?;
    if api.is_flexible(api_version) {
        // Request header v2 defines no tagged fields: skip whatever is there.
        r.tagged_fields(|_, _| Ok(()))?;
    }
    Ok(RequestHeader {
        api_key: api,
        api_version,
        correlation_id,
        client_id,
    })
}

/// Reads only the request header of a frame (the bytes after the length prefix), so that the
/// server can answer an unknown API or an unsupported version without decoding the body.
///
/// # Errors
/// [`KafkaCodecError::UnknownApi`] and [`KafkaCodecError::UnsupportedVersion`] (both carrying
/// the correlation id, to answer with), or a truncated header.
pub fn peek_header(frame: &Bytes) -> Result<RequestHeader> {
    read_request_header(&mut Reader::new(frame.clone()))
}

/// Splits a request frame into its header and its body bytes (a slice of `frame`), for callers
/// that route or log a body before (or without) decoding it.
///
/// # Errors
/// As [`peek_header`].
pub fn split_header(frame: Bytes) -> Result<(RequestHeader, Bytes)> {
    let mut r = Reader::new(frame);
    let header = read_request_header(&mut r)?;
    Ok((header, r.into_rest()))
}

/// Decodes a request frame (the bytes after the length prefix): header, then body. Bytes after
/// the body are ignored. Byte fields of the result share `frame`'s memory.
///
/// # Errors
/// As [`peek_header`], then any decoding error of the body.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, Request)> {
    let mut r = Reader::new(frame);
    let header = read_request_header(&mut r)?;
    let request = Request::decode(header.api_key, &mut r, header.api_version)?;
    Ok((header, request))
}

/// Encodes a request frame body (header and request, without the length prefix): the client
/// side, for tests and Rust test clients.
///
/// # Errors
/// [`KafkaCodecError::ApiMismatch`] if `header.api_key` is not the request's API, or any
/// encoding error.
pub fn encode_request(header: &RequestHeader, request: &Request) -> Result<Encoded> {
    if header.api_key != request.api_key() {
        return Err(KafkaCodecError::ApiMismatch {
            expected: header.api_key as i16,
            found: request.api_key() as i16,
        });
    }
    header
        .api_key
        .check_decodable(header.api_version, header.correlation_id)?;
    let mut w = Writer::new();
    w.i16(header.api_key as i16);
    w.i16(header.api_version);
    w.i32(header.correlation_id);
    w.nullable_string(false, header.client_id.as_deref())?;
    if header.api_key.is_flexible(header.api_version) {
        w.uvarint(0);
    }
    request.encode(&mut w, header.api_version)?;
    Ok(w.finish())
}

/// Encodes a response frame body (header and response, without the length prefix) for a
/// request of `version`. The response header follows [`ApiKey::response_header_version`].
///
/// # Errors
/// [`KafkaCodecError::UnsupportedVersion`], a null where the version allows none, or a value
/// too long for its length prefix.
pub fn encode_response(correlation_id: i32, version: i16, response: &Response) -> Result<Encoded> {
    let api = response.api_key();
    api.check_decodable(version, correlation_id)?;
    let mut w = Writer::new();
    w.i32(correlation_id);
    if api.response_header_version(version) >= 1 {
        w.uvarint(0);
    }
    response.encode(&mut w, version)?;
    Ok(w.finish())
}

/// Decodes a response frame body of an `api` request of `version` (the client side): the
/// correlation id and the response. Bytes after the body are ignored.
///
/// # Errors
/// [`KafkaCodecError::UnsupportedVersion`] or any decoding error.
pub fn decode_response(api: ApiKey, version: i16, frame: Bytes) -> Result<(i32, Response)> {
    api.check_decodable(version, 0)?;
    let mut r = Reader::new(frame);
    let correlation_id = r.i32()?;
    if api.response_header_version(version) >= 1 {
        r.tagged_fields(|_, _| Ok(()))?;
    }
    let response = Response::decode(api, &mut r, version)?;
    Ok((correlation_id, response))
}

/// The [`SUPPORTED`] table as ApiVersions entries.
pub fn supported_api_versions() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(api, min, max)| ApiVersion {
            api_key: api as i16,
            min_version: min,
            max_version: max,
        })
        .collect()
}

/// The answer to an ApiVersions request of a version the broker does not support: error
/// UNSUPPORTED_VERSION (35) and the broker's ApiVersions range, in the **v0** body format with
/// response header v0, whatever version was asked. kafka-python decodes any errored
/// ApiVersions response as v0; librdkafka and kafkajs then retry with a version in the range.
///
/// # Errors
/// None in practice (the body is small and valid); the `Result` mirrors [`encode_response`].
pub fn encode_api_versions_unsupported(correlation_id: i32) -> Result<Encoded> {
    let (min, max) = ApiKey::ApiVersions.supported();
    let body = ApiVersionsResponse {
        error_code: UNSUPPORTED_VERSION,
        api_keys: vec![ApiVersion {
            api_key: ApiKey::ApiVersions as i16,
            min_version: min,
            max_version: max,
        }],
        ..ApiVersionsResponse::default()
    };
    encode_response(correlation_id, 0, &Response::ApiVersions(body))
}

/// Splits a byte stream into Kafka frames: a 4-byte big-endian length, then that many bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// Takes one frame (without its length prefix) off the front of `buf`; `Ok(None)` until a
    /// whole frame is there. Reserves room for the rest of a frame only once its length passed
    /// the check.
    ///
    /// # Errors
    /// [`KafkaCodecError::FrameTooLarge`] for a length above the maximum (or negative as an
    /// `int32`); the connection cannot be resynchronised after it.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        let Some(&[a, b, c, d]) = buf.get(..4) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([a, b, c, d]) as usize;
        if size > self.max_frame_bytes {
            return Err(KafkaCodecError::FrameTooLarge {
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

#[cfg(test)]
mod tests {
    use super::*;
    use messages::metadata::{MetadataRequest, MetadataRequestTopic};

    /// The issue's table, plus DeleteRecords (21) 0–2, AlterConfigs (33) 0–2, DescribeLogDirs
    /// (35) 1–4, DeleteGroups (42) 0–2, IncrementalAlterConfigs (44) 0–1, OffsetDelete (47) 0
    /// and the transaction APIs AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26) and
    /// TxnOffsetCommit (28) 0–3, DescribeProducers (61) 0, DescribeTransactions (65) 0,
    /// ListTransactions (66) 0–1.
    #[test]
    fn supported_table_is_the_advertised_one() {
        let expected: &[(i16, i16, i16)] = &[
            (0, 0, 11),
            (1, 4, 12),
            (2, 1, 7),
            (3, 0, 12),
            (8, 2, 9),
            (9, 1, 9),
            (10, 0, 6),
            (11, 0, 9),
            (12, 0, 4),
            (13, 0, 5),
            (14, 0, 5),
            (15, 0, 5),
            (16, 0, 5),
            (18, 0, 4),
            (19, 2, 7),
            (20, 1, 6),
            (21, 0, 2),
            (22, 0, 4),
            (24, 0, 3),
            (25, 0, 3),
            (26, 0, 3),
            (28, 0, 3),
            (32, 1, 4),
            (33, 0, 2),
            (35, 1, 4),
            (37, 0, 3),
            (42, 0, 2),
            (44, 0, 1),
            (47, 0, 0),
            (60, 0, 1),
            (61, 0, 0),
            (65, 0, 0),
            (66, 0, 1),
            (68, 0, 1),
            (69, 0, 1),
        ];
        let got: Vec<_> = SUPPORTED
            .iter()
            .map(|&(api, min, max)| (api as i16, min, max))
            .collect();
        assert_eq!(got, expected);
        for &(api, min, max) in SUPPORTED {
            let (dmin, dmax) = api.decodable();
            assert!(
                dmin <= min && max <= dmax,
                "{api:?} decodes what it advertises"
            );
        }
    }

    #[test]
    fn frame_decoder_waits_then_splits_and_checks_the_maximum() {
        let d = FrameDecoder::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 1, 2]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[3, 0, 0]);
        assert_eq!(d.decode(&mut buf), Ok(Some(Bytes::from_static(&[1, 2, 3]))));
        assert_eq!(&buf[..], &[0, 0]);
        let mut big = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            d.decode(&mut big),
            Err(KafkaCodecError::FrameTooLarge {
                size: u32::MAX as usize,
                max: 10
            })
        );
        assert!(
            big.capacity() < 1024,
            "nothing reserved for a refused frame"
        );
    }

    #[test]
    fn header_peek_refuses_unknown_apis_and_versions_with_the_correlation_id() {
        let frame = Bytes::from_static(&[0, 34, 0, 0, 0, 0, 0, 42, 0xff, 0xff]);
        assert_eq!(
            peek_header(&frame),
            Err(KafkaCodecError::UnknownApi {
                api_key: 34,
                correlation_id: 42
            })
        );
        let frame = Bytes::from_static(&[0, 18, 0, 5, 0, 0, 0, 7, 0xff, 0xff]);
        assert_eq!(
            peek_header(&frame),
            Err(KafkaCodecError::UnsupportedVersion {
                api_key: 18,
                version: 5,
                correlation_id: 7
            })
        );
    }

    #[test]
    fn request_round_trip_through_header_and_body() {
        let header = RequestHeader {
            api_key: ApiKey::Metadata,
            api_version: 12,
            correlation_id: 9,
            client_id: Some("c".into()),
        };
        let req = Request::Metadata(MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                topic_id: [0; 16],
                name: Some("t".into()),
            }]),
            allow_auto_topic_creation: false,
            include_cluster_authorized_operations: false,
            include_topic_authorized_operations: true,
        });
        let bytes = encode_request(&header, &req).expect("encodes").freeze();
        let (h, r) = decode_request(bytes.clone()).expect("decodes");
        assert_eq!((h, r), (header, req));
        // Trailing bytes are ignored.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0, 0, 0]);
        assert!(decode_request(Bytes::from(longer)).is_ok());
    }

    #[test]
    fn api_versions_responses_always_use_header_v0_and_defaults_stay_off_the_wire() {
        let body = ApiVersionsResponse {
            api_keys: supported_api_versions(),
            ..ApiVersionsResponse::default()
        };
        let bytes = encode_response(5, 3, &Response::ApiVersions(body.clone()))
            .expect("encodes")
            .to_vec();
        // Header v0: the correlation id, then the body's error code (no tag section between).
        assert_eq!(bytes.get(..6), Some(&[0, 0, 0, 5, 0, 0][..]));
        // Body ends with throttle_time_ms and an empty tag section: no default tagged field.
        assert_eq!(bytes.get(bytes.len() - 5..), Some(&[0, 0, 0, 0, 0][..]));
        let (corr, back) =
            decode_response(ApiKey::ApiVersions, 3, Bytes::from(bytes)).expect("decodes");
        assert_eq!((corr, back), (5, Response::ApiVersions(body)));
        // A non-default tagged field is written.
        let with_epoch = ApiVersionsResponse {
            finalized_features_epoch: 7,
            ..ApiVersionsResponse::default()
        };
        let bytes = encode_response(5, 3, &Response::ApiVersions(with_epoch))
            .expect("encodes")
            .to_vec();
        assert_eq!(
            bytes.get(bytes.len() - 11..),
            Some(&[1, 1, 8, 0, 0, 0, 0, 0, 0, 0, 7][..])
        );
    }

    #[test]
    fn unsupported_api_versions_answer_is_v0() {
        let bytes = encode_api_versions_unsupported(3)
            .expect("encodes")
            .to_vec();
        assert_eq!(
            bytes,
            vec![0, 0, 0, 3, 0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 4]
        );
    }

    #[test]
    fn flexible_response_headers_carry_a_tag_section() {
        let resp = Response::Heartbeat(messages::heartbeat::HeartbeatResponse::default());
        let v4 = encode_response(1, 4, &resp).expect("encodes").to_vec();
        assert_eq!(v4, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let v3 = encode_response(1, 3, &resp).expect("encodes").to_vec();
        assert_eq!(v3, vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn examples_round_trip_in_every_decodable_version() {
        for &api in ApiKey::ALL {
            let (min, max) = api.decodable();
            for version in min..=max {
                for seed in 0..3 {
                    let req = Request::example(api, seed, version);
                    let mut w = Writer::new();
                    req.encode(&mut w, version).expect("example encodes");
                    let back = Request::decode(api, &mut Reader::new(w.finish().freeze()), version)
                        .expect("example decodes");
                    assert_eq!(back, req, "{api:?} v{version} request");
                    let resp = Response::example(api, seed, version);
                    let mut w = Writer::new();
                    resp.encode(&mut w, version).expect("example encodes");
                    let back =
                        Response::decode(api, &mut Reader::new(w.finish().freeze()), version)
                            .expect("example decodes");
                    assert_eq!(back, resp, "{api:?} v{version} response");
                }
            }
        }
    }
}
