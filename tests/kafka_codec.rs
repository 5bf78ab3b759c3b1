//! The Kafka codec against real traffic, an independent implementation, and hostile input.
//!
//! - **Corpus**: the 117 request frames of five real client libraries
//!   (`tests/fixtures/kafka-corpus/`, see its README) decode and re-encode to the same bytes;
//!   frames of APIs the codec does not know are refused cleanly by the header peek.
//! - **Oracle**: the `kafka-protocol` crate (0.18, Kafka 4.1's definitions, a dev-dependency
//!   only) decodes what we encode and encodes the same bytes back, for every API and every
//!   version we decode, requests and responses, with every field non-default (nullable fields
//!   null in some samples), and with its own default values; and for the corpus frames it
//!   decodes, its re-encoding decodes and re-encodes identically with ours.
//! - **Hostile input**: inputs that make `kafka-protocol` allocate tens of gigabytes fail here
//!   with a clean error; arbitrary bytes, headers over arbitrary bodies and mutated corpus frames
//!   never panic, and a peak-tracking global allocator checks that decoding never holds more than
//!   [`bound`] extra heap bytes.
//!
//! Tests take one lock ([`serial`]) so that no other test thread allocates while a decode is
//! measured. Proptest's seed is printed; set `PROPTEST_RNG_SEED` to replay a run and
//! `PROPTEST_CASES` to change the number of cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages as kp;
use peak_alloc::PeakAlloc;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use weir::protocol::kafka::{
    decode_request, encode_request, peek_header, split_header, ApiKey, KafkaCodecError, Reader,
    Request, RequestHeader, Response, Writer, SUPPORTED,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time: allocation peaks are only meaningful with no other test running.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const KIB: usize = 1024;

/// The most extra heap a decode of `n` input bytes may hold at once.
///
/// Decoding slices byte fields out of the input (no copy) and sizes every vector by a count
/// already checked against the remaining bytes divided by the element's smallest encoding. What
/// is left is the in-memory size of the decoded values per input byte: a compact string of
/// 1 byte becomes a 24-byte `String`, a struct element of 18 bytes a 40-byte struct, and a
/// byte can be counted once per nesting level (an array inside an array element). 32 bytes per
/// input byte covers that (the worst case found, a compact array of empty strings, is 24), and
/// 64 KiB covers fixed-size values and error values.
fn bound(n: usize) -> usize {
    64 * KIB + 32 * n
}

/// Extra heap bytes held at the peak of `f`, and its result.
fn measured<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let out = f();
    (ALLOC.peak_usage().saturating_sub(before), out)
}

/// Decodes a request frame under measurement and checks the bound.
fn decode_bounded(
    frame: &[u8],
) -> Result<Result<(RequestHeader, Request), KafkaCodecError>, String> {
    let input = Bytes::copy_from_slice(frame);
    let (peak, result) = measured(|| decode_request(input));
    if peak > bound(frame.len()) {
        return Err(format!(
            "decoding {} bytes peaked at {peak} extra heap bytes (bound {}): {:?}",
            frame.len(),
            bound(frame.len()),
            result.as_ref().map(|(h, _)| h)
        ));
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Corpus
// ---------------------------------------------------------------------------------------------

struct Frame {
    file: String,
    api_key: i16,
    version: i16,
    trailing: usize,
    bytes: Vec<u8>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kafka-corpus")
}

fn corpus() -> Vec<Frame> {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(corpus_dir().join("index.json")).expect("index.json"),
    )
    .expect("index is JSON");
    let frames = index["frames"].as_array().expect("frames");
    frames
        .iter()
        .map(|f| {
            let file = f["file"].as_str().expect("file").to_string();
            let bytes = std::fs::read(corpus_dir().join(&file)).expect("frame file");
            assert_eq!(
                bytes.len() as u64,
                f["size"].as_u64().expect("size"),
                "{file}"
            );
            Frame {
                api_key: f["api_key"].as_i64().expect("api_key") as i16,
                version: f["version"].as_i64().expect("version") as i16,
                trailing: f["trailing_bytes"].as_u64().expect("trailing") as usize,
                file,
                bytes,
            }
        })
        .collect()
}

#[test]
fn corpus_frames_round_trip_byte_for_byte() {
    let _serial = serial();
    let frames = corpus();
    assert_eq!(frames.len(), 117);
    let mut round_tripped = 0;
    let mut refused = Vec::new();
    for f in &frames {
        let frame = Bytes::from(f.bytes.clone());
        let header = match peek_header(&frame) {
            Ok(h) => h,
            Err(KafkaCodecError::UnknownApi { api_key, .. }) => {
                assert_eq!(api_key, f.api_key, "{}", f.file);
                assert!(ApiKey::from_i16(api_key).is_none(), "{}", f.file);
                refused.push(f.file.clone());
                continue;
            }
            Err(e) => panic!("{}: header: {e}", f.file),
        };
        assert_eq!(header.api_key as i16, f.api_key, "{}", f.file);
        assert_eq!(header.api_version, f.version, "{}", f.file);
        let (h, request) =
            decode_request(frame.clone()).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        assert_eq!(h, header, "{}", f.file);
        let encoded = encode_request(&h, &request)
            .unwrap_or_else(|e| panic!("{}: re-encode: {e}", f.file))
            .to_vec();
        let expected = &f.bytes[..f.bytes.len() - f.trailing];
        assert!(
            encoded == expected,
            "{}: re-encoding differs (len {} vs {})",
            f.file,
            encoded.len(),
            expected.len()
        );
        // Record batches are slices of the frame, not copies.
        if let Request::Produce(p) = &request {
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            for t in &p.topic_data {
                for part in &t.partition_data {
                    let records = part.records.as_ref().expect("records");
                    assert!(range.contains(&(records.as_ptr() as usize)), "{}", f.file);
                }
            }
        }
        round_tripped += 1;
    }
    refused.sort();
    assert_eq!(
        refused,
        // (librdkafka's ConsumerGroupDescribe frame decodes since the API is implemented.)
        vec!["librdkafka-2.16/GetTelemetrySubscriptions-v0-1.bin".to_string()]
    );
    assert_eq!(round_tripped, 116, "every frame of a known API round-trips");
}

#[test]
fn metadata_all_topics_quirk_decodes_and_reencodes_without_its_trailing_bytes() {
    let _serial = serial();
    let bytes =
        std::fs::read(corpus_dir().join("librdkafka-2.16/Metadata-v12-2.bin")).expect("fixture");
    let (header, request) = decode_request(Bytes::from(bytes.clone())).expect("decodes");
    let Request::Metadata(m) = &request else {
        panic!("not a Metadata request: {request:?}")
    };
    assert_eq!(m.topics, None, "all topics");
    let encoded = encode_request(&header, &request).expect("encodes").to_vec();
    assert_eq!(encoded.len() + 3, bytes.len());
    assert_eq!(&bytes[..encoded.len()], &encoded[..]);
    // What follows is librdkafka's real `allow_auto_topic_creation` (true) and the rest: Kafka,
    // like this decoder, reads the placeholder's zeros as the fields instead.
    assert_eq!(&bytes[encoded.len()..], &[1, 0, 0]);
    assert!(!m.allow_auto_topic_creation);
}

// ---------------------------------------------------------------------------------------------
// Oracle: kafka-protocol 0.18
// ---------------------------------------------------------------------------------------------

fn kp_api(api: ApiKey) -> kp::ApiKey {
    kp::ApiKey::try_from(api as i16).expect("kafka-protocol knows every API we do")
}

/// Whether kafka-protocol 0.18 (Kafka 4.1) has this version: Kafka 4 dropped Produce v0–v2.
fn kp_has(api: ApiKey, version: i16) -> bool {
    let range = kp_api(api).valid_versions();
    range.min <= version && version <= range.max
}

fn our_request_bytes(req: &Request, version: i16) -> Bytes {
    let mut w = Writer::new();
    req.encode(&mut w, version)
        .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", req.api_key()));
    w.finish().freeze()
}

fn our_response_bytes(resp: &Response, version: i16) -> Bytes {
    let mut w = Writer::new();
    resp.encode(&mut w, version)
        .unwrap_or_else(|e| panic!("{:?} v{version}: {e}", resp.api_key()));
    w.finish().freeze()
}

/// kafka-protocol decodes `ours` completely and encodes exactly the same bytes.
fn kp_agrees(api: ApiKey, version: i16, ours: &Bytes, request: bool, what: &str) {
    let mut input = ours.clone();
    let mut again = BytesMut::new();
    if request {
        let v = kp::RequestKind::decode(kp_api(api), &mut input, version)
            .unwrap_or_else(|e| panic!("{what}: kafka-protocol cannot decode ours: {e}"));
        v.encode(&mut again, version)
            .unwrap_or_else(|e| panic!("{what}: kafka-protocol cannot re-encode: {e}"));
    } else {
        let v = kp::ResponseKind::decode(kp_api(api), &mut input, version)
            .unwrap_or_else(|e| panic!("{what}: kafka-protocol cannot decode ours: {e}"));
        v.encode(&mut again, version)
            .unwrap_or_else(|e| panic!("{what}: kafka-protocol cannot re-encode: {e}"));
    }
    assert!(
        input.is_empty(),
        "{what}: kafka-protocol left {} bytes",
        input.len()
    );
    assert!(
        again[..] == ours[..],
        "{what}: kafka-protocol re-encodes differently\n ours: {:?}\n kp:   {:?}",
        &ours[..],
        &again[..]
    );
}

#[test]
fn oracle_decodes_what_we_encode_and_encodes_it_back_identically() {
    let _serial = serial();
    let mut checked = BTreeMap::new();
    let mut unverified = Vec::new();
    for &api in ApiKey::ALL {
        let (min, max) = api.decodable();
        for version in min..=max {
            if !kp_has(api, version) {
                unverified.push(format!("{api:?} v{version}"));
                continue;
            }
            for seed in 0..6 {
                let req = Request::example(api, seed, version);
                let ours = our_request_bytes(&req, version);
                let what = format!("{api:?} v{version} request (seed {seed})");
                kp_agrees(api, version, &ours, true, &what);
                let back = Request::decode(api, &mut Reader::new(ours.clone()), version)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back, req, "{what}");

                let resp = Response::example(api, seed, version);
                let ours = our_response_bytes(&resp, version);
                let what = format!("{api:?} v{version} response (seed {seed})");
                kp_agrees(api, version, &ours, false, &what);
                let back = Response::decode(api, &mut Reader::new(ours.clone()), version)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back, resp, "{what}");
            }
            *checked.entry(api).or_insert(0) += 1;
        }
    }
    // Every advertised version except Produce v0-v2 went through the oracle.
    for &(api, min, max) in SUPPORTED {
        for version in min..=max {
            let skipped = unverified.contains(&format!("{api:?} v{version}"));
            assert_eq!(
                skipped,
                api == ApiKey::Produce && version < 3,
                "{api:?} v{version}"
            );
        }
    }
    assert_eq!(unverified, vec!["Produce v0", "Produce v1", "Produce v2"]);
    assert_eq!(checked.values().sum::<usize>(), 191 - 3);
}

/// Builds kafka-protocol's default value of every request and response type.
macro_rules! kp_defaults {
    ($($variant:ident: $req:ident, $resp:ident;)*) => {
        fn kp_default(api: ApiKey) -> (kp::RequestKind, kp::ResponseKind) {
            match api {
                $(ApiKey::$variant => (
                    kp::RequestKind::$variant(kp::$req::default()),
                    kp::ResponseKind::$variant(kp::$resp::default()),
                ),)*
            }
        }
    };
}

kp_defaults! {
    Produce: ProduceRequest, ProduceResponse;
    Fetch: FetchRequest, FetchResponse;
    ListOffsets: ListOffsetsRequest, ListOffsetsResponse;
    Metadata: MetadataRequest, MetadataResponse;
    OffsetCommit: OffsetCommitRequest, OffsetCommitResponse;
    OffsetFetch: OffsetFetchRequest, OffsetFetchResponse;
    FindCoordinator: FindCoordinatorRequest, FindCoordinatorResponse;
    JoinGroup: JoinGroupRequest, JoinGroupResponse;
    Heartbeat: HeartbeatRequest, HeartbeatResponse;
    LeaveGroup: LeaveGroupRequest, LeaveGroupResponse;
    SyncGroup: SyncGroupRequest, SyncGroupResponse;
    DescribeGroups: DescribeGroupsRequest, DescribeGroupsResponse;
    ListGroups: ListGroupsRequest, ListGroupsResponse;
    ApiVersions: ApiVersionsRequest, ApiVersionsResponse;
    CreateTopics: CreateTopicsRequest, CreateTopicsResponse;
    DeleteTopics: DeleteTopicsRequest, DeleteTopicsResponse;
    DeleteRecords: DeleteRecordsRequest, DeleteRecordsResponse;
    DeleteGroups: DeleteGroupsRequest, DeleteGroupsResponse;
    InitProducerId: InitProducerIdRequest, InitProducerIdResponse;
    AddPartitionsToTxn: AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
    AddOffsetsToTxn: AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
    EndTxn: EndTxnRequest, EndTxnResponse;
    TxnOffsetCommit: TxnOffsetCommitRequest, TxnOffsetCommitResponse;
    DescribeConfigs: DescribeConfigsRequest, DescribeConfigsResponse;
    AlterConfigs: AlterConfigsRequest, AlterConfigsResponse;
    DescribeLogDirs: DescribeLogDirsRequest, DescribeLogDirsResponse;
    CreatePartitions: CreatePartitionsRequest, CreatePartitionsResponse;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    OffsetDelete: OffsetDeleteRequest, OffsetDeleteResponse;
    DescribeCluster: DescribeClusterRequest, DescribeClusterResponse;
    DescribeProducers: DescribeProducersRequest, DescribeProducersResponse;
    DescribeTransactions: DescribeTransactionsRequest, DescribeTransactionsResponse;
    ListTransactions: ListTransactionsRequest, ListTransactionsResponse;
    ConsumerGroupHeartbeat: ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse;
    ConsumerGroupDescribe: ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
}

#[test]
fn we_decode_what_the_oracle_encodes_from_its_own_defaults_and_reencode_it_identically() {
    let _serial = serial();
    let mut checked = 0;
    for &api in ApiKey::ALL {
        let (min, max) = api.decodable();
        for version in (min..=max).filter(|&v| kp_has(api, v)) {
            let (req, resp) = kp_default(api);
            let mut theirs = BytesMut::new();
            req.encode(&mut theirs, version)
                .expect("kp encodes its default");
            let theirs = theirs.freeze();
            let ours = Request::decode(api, &mut Reader::new(theirs.clone()), version)
                .unwrap_or_else(|e| panic!("{api:?} v{version} request: {e}"));
            assert_eq!(
                our_request_bytes(&ours, version),
                theirs,
                "{api:?} v{version} default request"
            );
            assert_eq!(
                ours,
                Request::decode(api, &mut Reader::new(theirs.clone()), version)
                    .expect("decodes twice")
            );
            let mut theirs = BytesMut::new();
            resp.encode(&mut theirs, version)
                .expect("kp encodes its default");
            let theirs = theirs.freeze();
            let ours = Response::decode(api, &mut Reader::new(theirs.clone()), version)
                .unwrap_or_else(|e| panic!("{api:?} v{version} response: {e}"));
            assert_eq!(
                our_response_bytes(&ours, version),
                theirs,
                "{api:?} v{version} default response"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 191 - 3);
}

#[test]
fn oracle_reencodings_of_the_corpus_decode_and_reencode_identically_with_ours() {
    let _serial = serial();
    let mut checked = 0;
    for f in corpus() {
        let frame = Bytes::from(f.bytes.clone());
        let Ok((header, body)) = split_header(frame) else {
            continue;
        };
        let mut body = body.slice(..body.len() - f.trailing);
        let theirs = kp::RequestKind::decode(kp_api(header.api_key), &mut body, header.api_version)
            .unwrap_or_else(|e| panic!("{}: kafka-protocol: {e}", f.file));
        let mut again = BytesMut::new();
        theirs
            .encode(&mut again, header.api_version)
            .expect("kafka-protocol re-encodes");
        let again = again.freeze();
        let ours = Request::decode(
            header.api_key,
            &mut Reader::new(again.clone()),
            header.api_version,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", f.file));
        assert_eq!(
            our_request_bytes(&ours, header.api_version),
            again,
            "{}",
            f.file
        );
        checked += 1;
    }
    assert_eq!(checked, 116);
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// A request header (v1, or v2 when flexible) with client id "x", then `body`.
fn frame_with_body(api: ApiKey, version: i16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(api as i16).to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&7i32.to_be_bytes());
    out.extend_from_slice(&[0, 1, b'x']);
    if api.is_flexible(version) {
        out.push(0);
    }
    out.extend_from_slice(body);
    out
}

fn assert_clean_refusal(what: &str, frame: &[u8]) -> KafkaCodecError {
    let (peak, result) = measured(|| decode_request(Bytes::copy_from_slice(frame)));
    let err = match result {
        Ok((h, _)) => panic!("{what}: decoded as {h:?}"),
        Err(e) => e,
    };
    assert!(
        peak <= bound(frame.len()),
        "{what}: peak {peak} bytes of heap above the bound {}",
        bound(frame.len())
    );
    println!("{what}: {err} (peak {peak} bytes)");
    err
}

#[test]
fn inputs_that_kill_kafka_protocol_are_refused_cleanly_without_allocating() {
    let _serial = serial();
    // AlterConfigs v0 claiming 721 million resources (kafka-protocol allocates ~63 GB). As a
    // whole frame its last four bytes are the correlation id and the client id is missing;
    // the same count as a body is among the cases below.
    let alter_configs = [0x00, 0x21, 0x00, 0x00, 0x2a, 0xff, 0x00, 0x00];
    assert!(matches!(
        assert_clean_refusal("AlterConfigs frame", &alter_configs),
        KafkaCodecError::Truncated { .. }
    ));
    let header = peek_header(&Bytes::copy_from_slice(&alter_configs[..]));
    assert!(header.is_err(), "{header:?}");

    let huge_i32 = [0x7f, 0xff, 0xff, 0xff];
    let huge_compact = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // AlterConfigs v0 claiming 721 million resources.
        (
            "AlterConfigs v0 resources",
            frame_with_body(ApiKey::AlterConfigs, 0, &[0x2a, 0xff, 0x00, 0x00]),
        ),
        // Metadata v0 claiming 2^31-1 topics.
        (
            "Metadata v0 topics",
            frame_with_body(ApiKey::Metadata, 0, &huge_i32),
        ),
        // Metadata v12: a compact count of 2^32-2 topics.
        (
            "Metadata v12 topics",
            frame_with_body(ApiKey::Metadata, 12, &huge_compact),
        ),
        // CreateTopics v2 claiming 2^31-1 topics.
        (
            "CreateTopics v2 topics",
            frame_with_body(ApiKey::CreateTopics, 2, &huge_i32),
        ),
        // Produce v3: null transactional id, acks, timeout, then 2^31-1 topics.
        (
            "Produce v3 topics",
            frame_with_body(
                ApiKey::Produce,
                3,
                &[&[0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30][..], &huge_i32].concat(),
            ),
        ),
        // Produce v3: one topic "t", one partition, records claiming 2 GiB.
        (
            "Produce v3 records",
            frame_with_body(
                ApiKey::Produce,
                3,
                &[
                    &[0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 1, b't'][..],
                    &[0, 0, 0, 1, 0, 0, 0, 0],
                    &huge_i32,
                ]
                .concat(),
            ),
        ),
        // Produce v9 (flexible): a compact string claiming 2^32 bytes as transactional id.
        (
            "Produce v9 transactional id",
            frame_with_body(ApiKey::Produce, 9, &huge_compact),
        ),
        // JoinGroup v0: a group id of 32767 bytes in 3.
        (
            "JoinGroup v0 group id",
            frame_with_body(ApiKey::JoinGroup, 0, &[0x7f, 0xff, b'a', b'b', b'c']),
        ),
        // Fetch v12: a tagged-field section claiming 2^32-1 fields.
        ("Fetch v12 header tags", {
            let mut f = frame_with_body(ApiKey::Fetch, 12, &[]);
            f.pop();
            f.extend_from_slice(&huge_compact);
            f
        }),
    ];
    for (what, frame) in cases {
        let err = assert_clean_refusal(what, &frame);
        assert!(
            matches!(
                err,
                KafkaCodecError::LengthTooLarge { .. } | KafkaCodecError::Truncated { .. }
            ),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn the_allocation_bound_holds_for_the_densest_valid_request() {
    let _serial = serial();
    // ListGroups v5: a compact array of 100,000 empty compact strings, one byte each: the
    // largest in-memory size per input byte among the APIs we decode.
    let n = 100_000u32;
    let mut body = Vec::new();
    let mut w = Writer::new();
    w.uvarint(1); // states_filter: empty (0 would be null)
    w.uvarint(n + 1);
    body.extend_from_slice(&w.finish().to_vec());
    body.extend(std::iter::repeat_n(1u8, n as usize));
    body.push(0); // tags
    let frame = frame_with_body(ApiKey::ListGroups, 5, &body);
    let input = Bytes::from(frame.clone());
    let (peak, result) = measured(|| decode_request(input));
    let (_, request) = result.expect("a valid request");
    println!(
        "{} input bytes decoded with a peak of {peak} heap bytes ({:.1} per byte)",
        frame.len(),
        peak as f64 / frame.len() as f64
    );
    assert!(peak <= bound(frame.len()), "peak {peak} above the bound");
    // The measurement sees the decoded strings (24 bytes each): the bound is not vacuous.
    assert!(
        peak >= 20 * n as usize,
        "peak {peak} too small to be measured"
    );
    let Request::ListGroups(req) = request else {
        panic!("not ListGroups")
    };
    assert_eq!(req.types_filter.len(), n as usize);
}

fn runner(default_cases: u32, seed: u64) -> TestRunner {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config.rng_seed = RngSeed::Fixed(seed);
    config.failure_persistence = None;
    TestRunner::new(config)
}

fn proptest_seed() -> u64 {
    match Config::default().rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// A known (API, version) header over arbitrary body bytes.
fn header_over_garbage() -> impl Strategy<Value = Vec<u8>> {
    let apis: Vec<(ApiKey, i16)> = ApiKey::ALL
        .iter()
        .flat_map(|&api| {
            let (min, max) = api.decodable();
            (min..=max).map(move |v| (api, v))
        })
        .collect();
    (
        proptest::sample::select(apis),
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|((api, version), body)| frame_with_body(api, version, &body))
}

#[derive(Debug, Clone)]
struct Mutation {
    frame: Index,
    flips: Vec<(Index, u8)>,
    insert: Option<(Index, Vec<u8>)>,
    cut: Option<Index>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), 1u8..=255), 0..6),
        prop::option::weighted(
            0.3,
            (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)),
        ),
        prop::option::weighted(0.3, any::<Index>()),
    )
        .prop_map(|(frame, flips, insert, cut)| Mutation {
            frame,
            flips,
            insert,
            cut,
        })
}

fn apply(frames: &[Vec<u8>], m: &Mutation) -> Vec<u8> {
    let mut bytes = m.frame.get(frames).clone();
    for (at, xor) in &m.flips {
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
    }
    if let Some((at, junk)) = &m.insert {
        let i = at.index(bytes.len() + 1);
        bytes.splice(i..i, junk.iter().copied());
    }
    if let Some(cut) = m.cut {
        bytes.truncate(cut.index(bytes.len() + 1));
    }
    bytes
}

#[test]
fn arbitrary_and_mutated_frames_never_panic_nor_over_allocate() {
    let _serial = serial();
    let seed = proptest_seed();
    println!("kafka_codec: seed {seed} (replay with PROPTEST_RNG_SEED={seed})");
    // Decodes within the bound; what decodes re-encodes to bytes that decode to the same value.
    let check = |bytes: &[u8]| -> Result<bool, TestCaseError> {
        let Ok((header, request)) = decode_bounded(bytes).map_err(TestCaseError::fail)? else {
            return Ok(false);
        };
        let encoded = encode_request(&header, &request)
            .map_err(|e| TestCaseError::fail(format!("{header:?}: re-encode: {e}")))?;
        let again = decode_request(encoded.freeze())
            .map_err(|e| TestCaseError::fail(format!("{header:?}: decode again: {e}")))?;
        prop_assert_eq!(again, (header, request));
        Ok(true)
    };

    runner(1024, seed)
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            check(&bytes).map(|_| ())
        })
        .unwrap_or_else(|e| panic!("arbitrary bytes (seed {seed}): {e}"));

    runner(2048, seed)
        .run(&header_over_garbage(), |bytes| check(&bytes).map(|_| ()))
        .unwrap_or_else(|e| panic!("header over arbitrary body (seed {seed}): {e}"));

    let frames: Vec<Vec<u8>> = corpus().into_iter().map(|f| f.bytes).collect();
    let decoded = std::cell::Cell::new(0u32);
    runner(2048, seed)
        .run(&mutation(), |m| {
            if check(&apply(&frames, &m))? {
                decoded.set(decoded.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("mutated corpus frames (seed {seed}): {e}"));
    // Many mutations (in record bytes, names, counts within bounds) still decode: the decoder
    // is exercised beyond the header.
    println!(
        "mutated corpus frames that still decoded: {}",
        decoded.get()
    );
    assert!(decoded.get() > 0);
}
