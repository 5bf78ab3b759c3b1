//! The Kafka listener in process, driven frame by frame with Weir's own codec (client side):
//! the wire rules real clients depend on, and hostile input that must not hurt the server.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir::config::Config;
use weir::protocol::kafka::messages::api_versions::ApiVersionsRequest;
use weir::protocol::kafka::messages::metadata::{MetadataRequest, MetadataRequestTopic};
use weir::protocol::kafka::messages::produce::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use weir::protocol::kafka::{
    decode_response, encode_request, ApiKey, Request, RequestHeader, Response, SUPPORTED,
};
use weir::server::kafka::{KafkaServer, KafkaServerConfig};
use weir::{Backend, Broker, BrokerHandle};

async fn start() -> (BrokerHandle, KafkaServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::default();
    c.storage.backend = Backend::Segment;
    c.data_dir = dir.path().to_path_buf();
    let broker = Broker::start(c).await.expect("broker");
    let server = KafkaServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        broker.clone(),
        KafkaServerConfig {
            max_frame_bytes: 1 << 20,
            ..KafkaServerConfig::default()
        },
    )
    .await
    .expect("bind");
    (broker, server, dir)
}

async fn send(s: &mut TcpStream, api: ApiKey, version: i16, id: i32, request: Request) {
    let header = RequestHeader {
        api_key: api,
        api_version: version,
        correlation_id: id,
        client_id: Some("test".into()),
    };
    let frame = encode_request(&header, &request).expect("encode");
    let mut bytes = frame.length_prefix().expect("len").to_vec();
    bytes.extend_from_slice(&frame.to_vec());
    s.write_all(&bytes).await.expect("write");
}

/// One response frame, or `None` when the server closed the connection.
async fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len))
        .await
        .expect("an answer or a close in time")
        .ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

async fn serves(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    send(
        &mut s,
        ApiKey::Metadata,
        12,
        77,
        Request::Metadata(MetadataRequest::default()),
    )
    .await;
    let frame = read_frame(&mut s).await.expect("metadata answered");
    let (id, _) = decode_response(ApiKey::Metadata, 12, frame).expect("decode");
    assert_eq!(id, 77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_exactly_the_table_and_answers_unknown_versions_in_v0() {
    let (broker, server, _dir) = start().await;
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    send(
        &mut s,
        ApiKey::ApiVersions,
        3,
        1,
        Request::ApiVersions(ApiVersionsRequest {
            client_software_name: "t".into(),
            client_software_version: "1".into(),
        }),
    )
    .await;
    let frame = read_frame(&mut s).await.expect("answer");
    let (id, Response::ApiVersions(r)) =
        decode_response(ApiKey::ApiVersions, 3, frame.clone()).expect("decode")
    else {
        panic!("not ApiVersions")
    };
    assert_eq!((id, r.error_code), (1, 0));
    let listed: Vec<(i16, i16, i16)> = r
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let table: Vec<(i16, i16, i16)> = SUPPORTED
        .iter()
        .map(|&(a, lo, hi)| (a as i16, lo, hi))
        .collect();
    assert_eq!(listed, table);
    // No top-level tagged fields: the body ends with an empty tag section (librdkafka 2.0.2).
    assert_eq!(frame.last(), Some(&0));
    // ApiVersions v9 (not supported): error 35 in the v0 body, header v0.
    let mut raw = vec![0, 18, 0, 9, 0, 0, 0, 5, 0, 1, b'x'];
    let mut framed = (raw.len() as u32).to_be_bytes().to_vec();
    framed.append(&mut raw);
    s.write_all(&framed).await.expect("write");
    let frame = read_frame(&mut s).await.expect("answer");
    let (id, Response::ApiVersions(r)) =
        decode_response(ApiKey::ApiVersions, 0, frame).expect("v0 body")
    else {
        panic!("not ApiVersions")
    };
    assert_eq!((id, r.error_code), (5, 35));
    assert!(r
        .api_keys
        .iter()
        .any(|k| k.api_key == 18 && k.max_version == 4));
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_gets_no_response_and_responses_keep_request_order() {
    let (broker, server, _dir) = start().await;
    broker
        .create_topic("t", Some(1), vec![])
        .await
        .expect("create");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
    b.push(weir_storage::Record::new(1, "x"));
    let records = b.build(0).expect("batch").into_bytes();
    let produce = |acks: i16| {
        Request::Produce(ProduceRequest {
            acks,
            timeout_ms: 1000,
            topic_data: vec![TopicProduceData {
                name: "t".into(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(records.clone()),
                }],
                ..TopicProduceData::default()
            }],
            ..ProduceRequest::default()
        })
    };
    send(&mut s, ApiKey::Produce, 9, 1, produce(0)).await;
    send(&mut s, ApiKey::Produce, 9, 2, produce(-1)).await;
    send(
        &mut s,
        ApiKey::Metadata,
        4,
        3,
        Request::Metadata(MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                name: Some("t".into()),
                ..MetadataRequestTopic::default()
            }]),
            ..MetadataRequest::default()
        }),
    )
    .await;
    let (id, Response::Produce(p)) = decode_response(
        ApiKey::Produce,
        9,
        read_frame(&mut s).await.expect("produce"),
    )
    .expect("decode") else {
        panic!("not Produce")
    };
    assert_eq!(id, 2, "the acks=0 produce got no response");
    let part = &p.responses[0].partition_responses[0];
    assert_eq!(
        (part.error_code, part.base_offset),
        (0, 1),
        "both were written"
    );
    let (id, _) = decode_response(ApiKey::Metadata, 4, read_frame(&mut s).await.expect("meta"))
        .expect("decode");
    assert_eq!(id, 3);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// The inputs that make the `kafka-protocol` crate allocate tens of GB and abort, sent to the
/// server: the connection closes, the process lives, other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_the_connection_and_hurt_nobody() {
    let (broker, server, _dir) = start().await;
    let addr = server.local_addr();
    let hostile: Vec<Vec<u8>> = vec![
        // AlterConfigs v0 claiming 721 million resources (an API Weir does not serve).
        vec![0x00, 0x21, 0x00, 0x00, 0x2a, 0xff, 0x00, 0x00],
        // Metadata v0, correlation 1, no client id, 2^31-1 topics in 4 bytes.
        vec![0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        // Produce v9 whose topic array claims 2^30 entries.
        vec![
            0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0xff, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80,
            0x04,
        ],
        // Garbage.
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for body in hostile {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let _ = s.write_all(&framed).await;
        assert!(read_frame(&mut s).await.is_none(), "closed: {body:02x?}");
        serves(addr).await;
    }
    // A frame announcing 2 GiB (over the limit) closes before anything is allocated.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0x7f, 0xff, 0xff, 0xff, 0, 3])
        .await
        .expect("write");
    assert!(read_frame(&mut s).await.is_none());
    serves(addr).await;
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// librdkafka's "all topics" Metadata v12 frame (3 trailing bytes) from the recorded corpus
/// is answered like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_librdkafka_all_topics_metadata_frame_is_answered() {
    let (broker, server, _dir) = start().await;
    broker
        .create_topic("listed", Some(2), vec![])
        .await
        .expect("create");
    let frame = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kafka-corpus/librdkafka-2.16/Metadata-v12-2.bin"
    ))
    .expect("fixture");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut framed = (frame.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    s.write_all(&framed).await.expect("write");
    let (_, Response::Metadata(m)) = decode_response(
        ApiKey::Metadata,
        12,
        read_frame(&mut s).await.expect("answer"),
    )
    .expect("decode") else {
        panic!("not Metadata")
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].partitions.len(), 2);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.controller_id, m.brokers[0].node_id);
    assert!(m.cluster_id.is_some());
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// Metadata and FindCoordinator advertise the configured address (Kafka's
/// `advertised.listeners`), or else the address the client connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_the_configured_or_the_connected_address() {
    let (broker, server, _dir) = start().await;
    let advertised = KafkaServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        broker.clone(),
        KafkaServerConfig {
            advertised: Some(("broker.example.com".into(), 19092)),
            ..KafkaServerConfig::default()
        },
    )
    .await
    .expect("bind");
    for (s, host, port) in [
        (&server, "127.0.0.1".to_string(), server.local_addr().port()),
        (&advertised, "broker.example.com".to_string(), 19092),
    ] {
        let mut c = TcpStream::connect(s.local_addr()).await.expect("connect");
        send(
            &mut c,
            ApiKey::Metadata,
            9,
            1,
            Request::Metadata(MetadataRequest::default()),
        )
        .await;
        let (_, Response::Metadata(m)) = decode_response(
            ApiKey::Metadata,
            9,
            read_frame(&mut c).await.expect("answer"),
        )
        .expect("decode") else {
            panic!("not Metadata")
        };
        assert_eq!(m.brokers[0].host, host);
        assert_eq!(m.brokers[0].port, i32::from(port));
    }
    advertised.shutdown().await;
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// An idle timeout shorter than a long poll does not close the connection under it: the
/// fetch is answered when its wait ends and the connection takes the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_spares_a_connection_waiting_on_a_long_poll() {
    use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let broker = Broker::start(c).await.expect("broker");
    broker
        .create_topic("quiet", Some(1), vec![])
        .await
        .expect("create");
    let server = KafkaServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        broker.clone(),
        KafkaServerConfig {
            idle_timeout: Duration::from_millis(200),
            ..KafkaServerConfig::default()
        },
    )
    .await
    .expect("bind");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let fetch = FetchRequest {
        max_wait_ms: 1500,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            topic: "quiet".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                ..FetchPartition::default()
            }],
            ..FetchTopic::default()
        }],
        ..FetchRequest::default()
    };
    let started = std::time::Instant::now();
    send(&mut s, ApiKey::Fetch, 12, 4, Request::Fetch(fetch)).await;
    let frame = read_frame(&mut s)
        .await
        .expect("answered, not closed by the idle timeout");
    let (id, Response::Fetch(f)) = decode_response(ApiKey::Fetch, 12, frame).expect("decode")
    else {
        panic!("not Fetch")
    };
    assert_eq!(id, 4);
    assert_eq!(f.responses[0].partitions[0].error_code, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it long-polled"
    );
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// A failed `acks=0` produce closes the connection, as Kafka does (the client expects no
/// answer, so the close is how it learns to refresh its metadata); the responses due before
/// it still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_acks_zero_produce_closes_the_connection() {
    let (broker, server, _dir) = start().await;
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
    b.push(weir_storage::Record::new(1, "x"));
    send(
        &mut s,
        ApiKey::Metadata,
        9,
        1,
        Request::Metadata(MetadataRequest::default()),
    )
    .await;
    send(
        &mut s,
        ApiKey::Produce,
        9,
        2,
        Request::Produce(ProduceRequest {
            acks: 0,
            timeout_ms: 1000,
            topic_data: vec![TopicProduceData {
                name: "no-such-topic".into(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(b.build(0).expect("batch").into_bytes()),
                }],
                ..TopicProduceData::default()
            }],
            ..ProduceRequest::default()
        }),
    )
    .await;
    let first = read_frame(&mut s).await.expect("the metadata answer");
    assert_eq!(
        decode_response(ApiKey::Metadata, 9, first)
            .expect("decode")
            .0,
        1
    );
    assert!(
        read_frame(&mut s).await.is_none(),
        "closed after the failed produce"
    );
    serves(server.local_addr()).await;
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// AlterConfigs replaces a topic's overrides: the configs named are set, the others go back to
/// the broker's defaults (kafka-python fills the others in itself, so this is driven raw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_configs_replaces_every_override() {
    use weir::protocol::kafka::messages::alter_configs::{
        AlterConfigsRequest, AlterConfigsResource, AlterableConfig,
    };
    let (broker, server, _dir) = start().await;
    broker
        .create_topic(
            "t",
            Some(1),
            vec![
                ("retention.ms".into(), "1000".into()),
                ("segment.bytes".into(), "1048576".into()),
            ],
        )
        .await
        .expect("create");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let alter = |configs: Vec<(&str, Option<&str>)>, validate_only| {
        Request::AlterConfigs(AlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: 2,
                resource_name: "t".into(),
                configs: configs
                    .into_iter()
                    .map(|(name, value)| AlterableConfig {
                        name: name.into(),
                        value: value.map(String::from),
                    })
                    .collect(),
            }],
            validate_only,
        })
    };
    let codes = |frame: Bytes, version| match decode_response(ApiKey::AlterConfigs, version, frame)
        .expect("decode")
        .1
    {
        Response::AlterConfigs(r) => r.responses.iter().map(|r| r.error_code).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let defaults = Config::default().topic_defaults;
    for version in [0, 2] {
        // validate_only changes nothing; a bad value refuses the whole resource.
        send(
            &mut s,
            ApiKey::AlterConfigs,
            version,
            1,
            alter(vec![("retention.ms", Some("5"))], true),
        )
        .await;
        assert_eq!(
            codes(read_frame(&mut s).await.expect("answer"), version),
            [0]
        );
        send(
            &mut s,
            ApiKey::AlterConfigs,
            version,
            2,
            alter(
                vec![("retention.ms", Some("5")), ("segment.bytes", Some("x"))],
                false,
            ),
        )
        .await;
        assert_eq!(
            codes(read_frame(&mut s).await.expect("answer"), version),
            [40]
        );
        let c = broker.describe_topic("t").await.expect("describe").config;
        assert_eq!(
            (c.retention_ms, c.segment_bytes),
            (1000, 1_048_576),
            "v{version}"
        );
    }
    send(
        &mut s,
        ApiKey::AlterConfigs,
        1,
        3,
        alter(vec![("retention.ms", Some("5000"))], false),
    )
    .await;
    assert_eq!(codes(read_frame(&mut s).await.expect("answer"), 1), [0]);
    let c = broker.describe_topic("t").await.expect("describe").config;
    assert_eq!(c.retention_ms, 5000);
    assert_eq!(
        c.segment_bytes, defaults.segment_bytes,
        "an override not named is reset"
    );
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// Sends one request and returns its decoded response; panics if the server closed the
/// connection instead of answering (a handler that panicked drops its connection).
async fn call(s: &mut TcpStream, version: i16, id: i32, request: Request) -> Response {
    let api = request.api_key();
    send(s, api, version, id, request).await;
    let frame = read_frame(s)
        .await
        .unwrap_or_else(|| panic!("request {id} ({api:?}): connection closed, no answer"));
    let (got, response) = decode_response(api, version, frame).expect("decode");
    assert_eq!(got, id, "correlation id");
    response
}

/// Well-formed requests carrying the extremes of their integer fields (offsets, timestamps,
/// sizes, timeouts, counts, partition indexes) get answers with error codes, never a panic,
/// an overflow or a long wait, and the connection keeps serving. The test profile checks
/// integer overflow, so an unchecked sum on such a field fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_in_well_formed_requests_get_errors_not_panics() {
    use weir::protocol::kafka::messages::create_partitions::{
        CreatePartitionsRequest, CreatePartitionsTopic,
    };
    use weir::protocol::kafka::messages::delete_records::{
        DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
    };
    use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use weir::protocol::kafka::messages::join_group::{JoinGroupRequest, JoinGroupRequestProtocol};
    use weir::protocol::kafka::messages::list_offsets::{
        ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
    };
    use weir::protocol::kafka::messages::offset_commit::{
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use weir::protocol::kafka::messages::offset_fetch::{
        OffsetFetchRequest, OffsetFetchRequestTopic,
    };
    use weir::storage::{BatchBuilder, Compression, Record};

    const OFFSET_OUT_OF_RANGE: i16 = 1;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const INVALID_REQUIRED_ACKS: i16 = 21;
    const INVALID_SESSION_TIMEOUT: i16 = 26;

    let (broker, server, _dir) = start().await;
    broker
        .create_topic("edge", Some(1), vec![])
        .await
        .expect("create");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };

    let produce = |partition: i32, acks: i16, timeout_ms: i32| {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(Record::new(1_700_000_000_000, "v"));
        Request::Produce(ProduceRequest {
            acks,
            timeout_ms,
            topic_data: vec![TopicProduceData {
                name: "edge".into(),
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(b.build(0).expect("batch").into_bytes()),
                }],
                ..TopicProduceData::default()
            }],
            ..ProduceRequest::default()
        })
    };
    let produce_error = |r: Response| match r {
        Response::Produce(p) => p.responses[0].partition_responses[0].error_code,
        other => panic!("not Produce: {other:?}"),
    };
    // Two records at offsets 0 and 1; a negative timeout is no timeout.
    for timeout in [i32::MIN, -1] {
        let r = call(&mut s, 9, next(), produce(0, -1, timeout)).await;
        assert_eq!(produce_error(r), 0);
    }
    for partition in [i32::MAX, i32::MIN, -1] {
        let r = call(&mut s, 9, next(), produce(partition, -1, 1000)).await;
        assert_eq!(produce_error(r), UNKNOWN_TOPIC_OR_PARTITION, "{partition}");
    }
    // A client's base offset is replaced by the broker's, but one whose last offset would
    // overflow i64 marks a corrupt batch (the base offset lies outside the CRC).
    let mut b = BatchBuilder::new(Compression::None);
    b.push(Record::new(1_700_000_000_000, "a"));
    b.push(Record::new(1_700_000_000_000, "b"));
    let mut hostile = b.build(0).expect("batch").into_bytes().to_vec();
    hostile[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
    let mut request = produce(0, -1, 1000);
    if let Request::Produce(p) = &mut request {
        p.topic_data[0].partition_data[0].records = Some(Bytes::from(hostile));
    }
    let r = call(&mut s, 9, next(), request).await;
    assert_ne!(produce_error(r), 0, "a batch whose offsets overflow");
    for acks in [2, i16::MAX, i16::MIN] {
        let r = call(&mut s, 9, next(), produce(0, acks, 1000)).await;
        assert_eq!(produce_error(r), INVALID_REQUIRED_ACKS, "acks {acks}");
    }

    let fetch = |offset: i64, partition_max: i32, max: i32, wait: i32, min: i32| {
        Request::Fetch(FetchRequest {
            max_wait_ms: wait,
            min_bytes: min,
            max_bytes: max,
            topics: vec![FetchTopic {
                topic: "edge".into(),
                partitions: vec![FetchPartition {
                    partition: 0,
                    fetch_offset: offset,
                    partition_max_bytes: partition_max,
                    ..FetchPartition::default()
                }],
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        })
    };
    let fetched = |r: Response| match r {
        Response::Fetch(f) => {
            let p = &f.responses[0].partitions[0];
            (
                p.error_code,
                p.high_watermark,
                p.records.as_ref().map_or(0, |r| r.len()),
            )
        }
        other => panic!("not Fetch: {other:?}"),
    };
    for offset in [i64::MAX, i64::MIN, -1, 3] {
        let r = call(&mut s, 12, next(), fetch(offset, 1 << 20, 1 << 20, 0, 1)).await;
        assert_eq!(fetched(r).0, OFFSET_OUT_OF_RANGE, "offset {offset}");
    }
    // Sizes at their extremes still give at least one batch; waits at theirs do not wait
    // (there are records, or the wait is negative).
    for (pmax, max, wait, min) in [
        (i32::MIN, i32::MIN, i32::MIN, i32::MIN),
        (i32::MAX, i32::MAX, -1, i32::MAX),
        (0, 0, i32::MAX, 1),
    ] {
        let started = std::time::Instant::now();
        let r = call(&mut s, 12, next(), fetch(0, pmax, max, wait, min)).await;
        let (error, hwm, bytes) = fetched(r);
        assert_eq!((error, hwm), (0, 2), "{pmax} {max} {wait} {min}");
        assert!(bytes > 0, "at least one batch for {pmax} {max}");
        if wait <= 0 || min <= 1 {
            assert!(started.elapsed() < Duration::from_secs(5), "it waited");
        }
    }

    let list = |partition: i32, timestamp: i64| {
        Request::ListOffsets(ListOffsetsRequest {
            replica_id: -1,
            topics: vec![ListOffsetsTopic {
                name: "edge".into(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    timestamp,
                    ..ListOffsetsPartition::default()
                }],
            }],
            ..ListOffsetsRequest::default()
        })
    };
    let listed = |r: Response| match r {
        Response::ListOffsets(l) => {
            let p = &l.topics[0].partitions[0];
            (p.error_code, p.offset)
        }
        other => panic!("not ListOffsets: {other:?}"),
    };
    let r = call(&mut s, 7, next(), list(0, i64::MAX)).await;
    assert_eq!(listed(r), (0, -1), "no record at or after the end of time");
    for ts in [i64::MIN, -4] {
        let r = call(&mut s, 7, next(), list(0, ts)).await;
        assert_ne!(listed(r).0, 0, "timestamp {ts}");
    }
    for partition in [i32::MAX, i32::MIN] {
        let r = call(&mut s, 7, next(), list(partition, -1)).await;
        assert_eq!(listed(r).0, UNKNOWN_TOPIC_OR_PARTITION);
    }

    // Offsets a group commits are the client's business (Kafka stores any); they are stored
    // and read back as given.
    for committed in [i64::MAX, i64::MIN] {
        let r = call(
            &mut s,
            8,
            next(),
            Request::OffsetCommit(OffsetCommitRequest {
                group_id: "edge-group".into(),
                topics: vec![OffsetCommitRequestTopic {
                    name: "edge".into(),
                    partitions: vec![OffsetCommitRequestPartition {
                        partition_index: 0,
                        committed_offset: committed,
                        ..OffsetCommitRequestPartition::default()
                    }],
                }],
                ..OffsetCommitRequest::default()
            }),
        )
        .await;
        let Response::OffsetCommit(c) = r else {
            panic!("not OffsetCommit")
        };
        assert_eq!(c.topics[0].partitions[0].error_code, 0);
        let r = call(
            &mut s,
            7,
            next(),
            Request::OffsetFetch(OffsetFetchRequest {
                group_id: "edge-group".into(),
                topics: Some(vec![OffsetFetchRequestTopic {
                    name: "edge".into(),
                    partition_indexes: vec![0],
                }]),
                ..OffsetFetchRequest::default()
            }),
        )
        .await;
        let Response::OffsetFetch(f) = r else {
            panic!("not OffsetFetch")
        };
        assert_eq!(f.topics[0].partitions[0].committed_offset, committed);
    }

    for offset in [i64::MAX, i64::MIN, 3] {
        let r = call(
            &mut s,
            2,
            next(),
            Request::DeleteRecords(DeleteRecordsRequest {
                topics: vec![DeleteRecordsTopic {
                    name: "edge".into(),
                    partitions: vec![DeleteRecordsPartition {
                        partition_index: 0,
                        offset,
                    }],
                }],
                timeout_ms: i32::MIN,
            }),
        )
        .await;
        let Response::DeleteRecords(d) = r else {
            panic!("not DeleteRecords")
        };
        assert_eq!(
            d.topics[0].partitions[0].error_code, OFFSET_OUT_OF_RANGE,
            "delete before {offset}"
        );
    }

    for count in [i32::MAX, i32::MIN, 0] {
        let r = call(
            &mut s,
            3,
            next(),
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: vec![CreatePartitionsTopic {
                    name: "edge".into(),
                    count,
                    assignments: None,
                }],
                timeout_ms: i32::MIN,
                validate_only: false,
            }),
        )
        .await;
        let Response::CreatePartitions(c) = r else {
            panic!("not CreatePartitions")
        };
        assert_ne!(c.results[0].error_code, 0, "{count} partitions");
    }

    for (session, rebalance) in [(i32::MAX, 10_000), (i32::MIN, 10_000), (-1, i32::MIN)] {
        let r = call(
            &mut s,
            3,
            next(),
            Request::JoinGroup(JoinGroupRequest {
                group_id: "edge-join".into(),
                session_timeout_ms: session,
                rebalance_timeout_ms: rebalance,
                protocol_type: "consumer".into(),
                protocols: vec![JoinGroupRequestProtocol {
                    name: "range".into(),
                    metadata: Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
                }],
                ..JoinGroupRequest::default()
            }),
        )
        .await;
        let Response::JoinGroup(j) = r else {
            panic!("not JoinGroup")
        };
        assert_eq!(j.error_code, INVALID_SESSION_TIMEOUT, "session {session}");
    }

    // Still serving: the two records read back.
    let r = call(&mut s, 12, next(), fetch(0, 1 << 20, 1 << 20, 0, 1)).await;
    assert_eq!(fetched(r).1, 2);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// Topic `t` (one partition) and transactional producer `tx` with `t-0` in its open
/// transaction: its id and epoch.
async fn transaction_on_t(broker: &BrokerHandle) -> (i64, i16) {
    broker
        .create_topic("t", Some(1), vec![])
        .await
        .expect("create");
    let (pid, epoch) = broker
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    broker
        .transactions()
        .add_partitions(broker, "tx", pid, epoch, vec![("t".into(), 0)])
        .await
        .expect("add");
    (pid, epoch)
}

/// One transactional batch of `values` (timestamp 1) from the producer to `t-0`, sequence 0.
async fn publish_in_transaction(
    broker: &BrokerHandle,
    pid: i64,
    epoch: i16,
    values: &[&'static str],
) -> weir::broker::PublishAck {
    let mut b = weir::storage::BatchBuilder::new(weir::storage::Compression::None)
        .producer(pid, epoch, 0)
        .transactional(true);
    for v in values {
        b.push(weir::storage::Record::new(1, *v));
    }
    let (_, ack) = broker
        .publish(
            "t",
            Some(0),
            vec![b.build(0).expect("build")],
            weir::Acks::All,
        )
        .await
        .expect("publish");
    ack
}

/// Transactions on the wire: a read_committed Fetch stops at the last stable offset and lists
/// aborted transactions, a read_uncommitted one does not; an OffsetFetch that requires stable
/// offsets gets UNSTABLE_OFFSET_COMMIT while a transaction holds offsets of the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_levels_and_unstable_offsets() {
    use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use weir::protocol::kafka::messages::offset_fetch::{
        OffsetFetchRequest, OffsetFetchRequestTopic,
    };
    use weir::storage::{CommittedOffset, TopicPartition};

    let (broker, server, _dir) = start().await;
    let (pid, epoch) = transaction_on_t(&broker).await;
    let txns = broker.transactions();
    txns.add_offsets(&broker, "tx", pid, epoch, "g")
        .await
        .expect("add offsets");
    let staged = CommittedOffset {
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    };
    txns.commit_offsets(
        &broker,
        "tx",
        pid,
        epoch,
        "g",
        ("", -1),
        vec![(TopicPartition::new("t", 0), staged)],
    )
    .await
    .expect("stage");
    publish_in_transaction(&broker, pid, epoch, &["open"]).await;

    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let fetch = |isolation_level: i8| {
        Request::Fetch(FetchRequest {
            max_bytes: 1 << 20,
            isolation_level,
            topics: vec![FetchTopic {
                topic: "t".into(),
                partitions: vec![FetchPartition {
                    partition_max_bytes: 1 << 20,
                    ..FetchPartition::default()
                }],
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        })
    };
    let offsets = |require_stable: bool| {
        Request::OffsetFetch(OffsetFetchRequest {
            group_id: "g".into(),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: "t".into(),
                partition_indexes: vec![0],
            }]),
            require_stable,
            ..OffsetFetchRequest::default()
        })
    };
    let partition = |r: Response| match r {
        Response::Fetch(f) => f.responses[0].partitions[0].clone(),
        other => panic!("{other:?}"),
    };
    let offset = |r: Response| match r {
        Response::OffsetFetch(f) => {
            let p = &f.topics[0].partitions[0];
            (p.error_code, p.committed_offset)
        }
        other => panic!("{other:?}"),
    };

    let committed = partition(call(&mut s, 12, 1, fetch(1)).await);
    assert_eq!(
        (committed.last_stable_offset, committed.high_watermark),
        (0, 1)
    );
    assert!(
        committed.records.is_none_or(|r| r.is_empty()),
        "nothing stable yet"
    );
    let all = partition(call(&mut s, 12, 2, fetch(0)).await);
    assert!(all.records.is_some_and(|r| !r.is_empty()));
    assert_eq!(all.aborted_transactions, None);
    assert_eq!(offset(call(&mut s, 7, 3, offsets(true)).await), (88, -1));
    assert_eq!(offset(call(&mut s, 7, 4, offsets(false)).await), (0, -1));

    txns.end(&broker, "tx", pid, epoch, false)
        .await
        .expect("abort");
    let committed = partition(call(&mut s, 12, 5, fetch(1)).await);
    assert_eq!(
        (committed.last_stable_offset, committed.high_watermark),
        (2, 2)
    );
    let aborted = committed
        .aborted_transactions
        .expect("a read_committed answer lists them");
    assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (pid, 0));
    assert_eq!(
        offset(call(&mut s, 7, 6, offsets(true)).await),
        (0, -1),
        "aborted: never"
    );
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// DescribeTransactions and ListTransactions (what `kafka-transactions.sh` and admin UIs
/// show): state, producer, timeout and partitions; filters by state, producer and age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_list_transactions() {
    use weir::protocol::kafka::messages::describe_transactions::DescribeTransactionsRequest;
    use weir::protocol::kafka::messages::list_transactions::ListTransactionsRequest;

    let (broker, server, _dir) = start().await;
    broker
        .create_topic("t", Some(2), vec![])
        .await
        .expect("create");
    let (pid, epoch) = broker
        .init_transactional_producer("busy", 45_000, -1, -1)
        .await
        .expect("init");
    broker
        .transactions()
        .add_partitions(
            &broker,
            "busy",
            pid,
            epoch,
            vec![("t".into(), 1), ("t".into(), 0)],
        )
        .await
        .expect("add");
    let (idle, _) = broker
        .init_transactional_producer("idle", 60_000, -1, -1)
        .await
        .expect("init");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");

    // An unknown partition: nothing is added, the others are OPERATION_NOT_ATTEMPTED.
    {
        use weir::protocol::kafka::messages::add_partitions_to_txn::{
            AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
        };
        let request = Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactional_id: "idle".into(),
            producer_id: idle,
            producer_epoch: 0,
            topics: vec![AddPartitionsToTxnTopic {
                name: "t".into(),
                partitions: vec![0, 9],
            }],
        });
        let Response::AddPartitionsToTxn(a) = call(&mut s, 3, 7, request).await else {
            panic!("not an AddPartitionsToTxn response");
        };
        let codes: Vec<i16> = a.results_by_topic_v3_and_below[0]
            .results_by_partition
            .iter()
            .map(|p| p.partition_error_code)
            .collect();
        assert_eq!(codes, [55, 3]);
    }
    let Response::DescribeTransactions(d) = call(
        &mut s,
        0,
        1,
        Request::DescribeTransactions(DescribeTransactionsRequest {
            transactional_ids: vec!["busy".into(), "nope".into()],
        }),
    )
    .await
    else {
        panic!("not a DescribeTransactions response");
    };
    let busy = &d.transaction_states[0];
    assert_eq!(busy.error_code, 0);
    assert_eq!(busy.transaction_state, "Ongoing");
    assert_eq!((busy.producer_id, busy.producer_epoch), (pid, epoch));
    assert_eq!(busy.transaction_timeout_ms, 45_000);
    assert!(busy.transaction_start_time_ms > 0);
    assert_eq!(busy.topics.len(), 1);
    assert_eq!(
        (
            busy.topics[0].topic.as_str(),
            &busy.topics[0].partitions[..]
        ),
        ("t", &[0, 1][..])
    );
    assert_eq!(
        d.transaction_states[1].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );

    async fn list(
        s: &mut TcpStream,
        id: i32,
        states: &[&str],
        producers: Vec<i64>,
        duration: i64,
    ) -> weir::protocol::kafka::messages::list_transactions::ListTransactionsResponse {
        let request = Request::ListTransactions(ListTransactionsRequest {
            state_filters: states.iter().map(|s| s.to_string()).collect(),
            producer_id_filters: producers,
            duration_filter: duration,
        });
        match call(s, 1, id, request).await {
            Response::ListTransactions(l) => l,
            other => panic!("{other:?}"),
        }
    }
    let all = list(&mut s, 2, &[], vec![], -1).await;
    let ids: Vec<&str> = all
        .transaction_states
        .iter()
        .map(|t| t.transactional_id.as_str())
        .collect();
    assert_eq!(ids, ["busy", "idle"]);
    let ongoing = list(&mut s, 3, &["Ongoing", "Bogus"], vec![], -1).await;
    assert_eq!(ongoing.transaction_states.len(), 1);
    assert_eq!(ongoing.unknown_state_filters, ["Bogus"]);
    let by_producer = list(&mut s, 4, &[], vec![idle], -1).await;
    assert_eq!(by_producer.transaction_states[0].transaction_state, "Empty");
    assert!(list(&mut s, 5, &[], vec![], 3_600_000)
        .await
        .transaction_states
        .is_empty());
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// DescribeProducers on the wire: an idempotent producer's id, epoch, last sequence and write
/// time, a transaction's start offset while it is open, no coordinator epoch but 0; an unknown
/// topic is UNKNOWN_TOPIC_OR_PARTITION with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_producers() {
    use weir::protocol::kafka::messages::describe_producers::{
        DescribeProducersRequest, DescribeProducersTopicRequest,
    };

    let (broker, server, _dir) = start().await;
    let (pid, epoch) = transaction_on_t(&broker).await;
    let ack = publish_in_transaction(&broker, pid, epoch, &["x", "y"]).await;
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let request = Request::DescribeProducers(DescribeProducersRequest {
        topics: vec![
            DescribeProducersTopicRequest {
                name: "t".into(),
                partition_indexes: vec![0, 5],
            },
            DescribeProducersTopicRequest {
                name: "nope".into(),
                partition_indexes: vec![0],
            },
        ],
    });
    let Response::DescribeProducers(d) = call(&mut s, 0, 1, request).await else {
        panic!("not a DescribeProducers response");
    };
    let t = &d.topics[0];
    assert_eq!(t.name, "t");
    let p0 = &t.partitions[0];
    assert_eq!((p0.partition_index, p0.error_code), (0, 0));
    assert_eq!(p0.active_producers.len(), 1);
    let p = &p0.active_producers[0];
    assert_eq!(
        (p.producer_id, p.producer_epoch, p.last_sequence),
        (pid, i32::from(epoch), 1)
    );
    assert_eq!(p.coordinator_epoch, 0);
    assert_eq!(p.current_txn_start_offset, ack.base_offset);
    assert!(p.last_timestamp > 1_700_000_000_000);
    assert_eq!(
        (t.partitions[1].partition_index, t.partitions[1].error_code),
        (5, 3)
    );
    let unknown = &d.topics[1].partitions[0];
    assert_eq!(unknown.error_code, 3);
    assert!(unknown
        .error_message
        .as_deref()
        .is_some_and(|m| m.contains("nope")));
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// A fetch's byte budget spans its partitions in request order, as Kafka's does: the first
/// partition with data returns at least one whole batch even above every limit, a later one
/// returns records only if they fit in what is left, and every partition, read or not, gets its
/// offsets. A partition named twice is read and answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_budget_spans_its_partitions_in_request_order() {
    use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use weir::storage::{BatchBuilder, Compression, Record};

    const VALUE: usize = 100_000;
    let (broker, server, dir) = start().await;
    broker
        .create_topic("budget", Some(3), vec![])
        .await
        .expect("create");
    for p in 0..3 {
        for i in 0..4 {
            let mut b = BatchBuilder::new(Compression::None);
            b.push(Record::new(i, vec![p as u8; VALUE]));
            broker
                .publish(
                    "budget",
                    Some(p),
                    vec![b.build(0).expect("batch")],
                    weir::Acks::All,
                )
                .await
                .expect("publish");
        }
    }
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let fetch = |max_bytes: i32, partition_max_bytes: i32, order: &[i32]| {
        Request::Fetch(FetchRequest {
            max_bytes,
            topics: vec![FetchTopic {
                topic: "budget".into(),
                partitions: order
                    .iter()
                    .map(|&partition| FetchPartition {
                        partition,
                        partition_max_bytes,
                        ..FetchPartition::default()
                    })
                    .collect(),
                ..FetchTopic::default()
            }],
            ..FetchRequest::default()
        })
    };
    // (partition, whole batches returned, high watermark) per answered partition.
    let answered = |r: Response| -> Vec<(i32, usize, i64)> {
        let Response::Fetch(f) = r else {
            panic!("not a fetch answer: {r:?}")
        };
        assert_eq!(f.responses.len(), 1, "one topic");
        f.responses[0]
            .partitions
            .iter()
            .map(|p| {
                assert_eq!(p.error_code, 0);
                let bytes = p.records.as_ref().map_or(0, |r| r.len());
                (p.partition_index, bytes / VALUE, p.high_watermark)
            })
            .collect()
    };

    // 250 kB: two batches of the first partition, nothing fits after them.
    let r = call(&mut s, 12, 1, fetch(250_000, 1 << 20, &[2, 0, 1, 0])).await;
    assert_eq!(answered(r), vec![(2, 2, 4), (0, 0, 4), (1, 0, 4)]);
    // 10 bytes: the first partition's first batch all the same.
    let r = call(&mut s, 12, 2, fetch(10, 1 << 20, &[1, 2])).await;
    assert_eq!(answered(r), vec![(1, 1, 4), (2, 0, 4)]);
    // 150 kB per partition within 1 MB: one batch each.
    let r = call(&mut s, 12, 3, fetch(1 << 20, 150_000, &[0, 1, 2])).await;
    assert_eq!(answered(r), vec![(0, 1, 4), (1, 1, 4), (2, 1, 4)]);
    // 1 MiB over partitions of 400 kB each: two and a half partitions' worth, in order.
    let r = call(&mut s, 12, 4, fetch(1 << 20, 1 << 20, &[0, 1, 2])).await;
    assert_eq!(answered(r), vec![(0, 4, 4), (1, 4, 4), (2, 2, 4)]);
    // All of it when it fits.
    let r = call(&mut s, 12, 5, fetch(2 << 20, 1 << 20, &[0, 1, 2])).await;
    assert_eq!(answered(r), vec![(0, 4, 4), (1, 4, 4), (2, 4, 4)]);

    // A batch that does not fit in what is left is not read at all (Kafka reads its header
    // only): damage in partition 1's first record goes unnoticed by a fetch it does not fit,
    // and fails the fetch that reads it.
    let segment = std::fs::read_dir(dir.path().join("logs").join("budget-1"))
        .expect("partition directory")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("segment file");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open segment");
    std::os::unix::fs::FileExt::write_at(&file, b"\xff\xfe", VALUE as u64 / 2).expect("damage");
    let r = call(&mut s, 12, 6, fetch(250_000, 1 << 20, &[0, 1])).await;
    assert_eq!(answered(r), vec![(0, 2, 4), (1, 0, 4)]);
    let Response::Fetch(f) = call(&mut s, 12, 7, fetch(250_000, 1 << 20, &[1])).await else {
        panic!("not a fetch answer")
    };
    assert_ne!(
        f.responses[0].partitions[0].error_code, 0,
        "the damage is real"
    );
}

/// A ListOffsets naming a partition twice gets INVALID_REQUEST for each mention, as from Kafka
/// (each lookup may read the log: one request must not repeat it at will), and so does a
/// CreateTopics naming a topic twice; the other entries are answered. Metadata,
/// DescribeConfigs and DescribeGroups requests naming a topic or group many times answer it
/// once (one request must not multiply its answer at will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_named_twice_are_invalid_requests() {
    use weir::protocol::kafka::messages::create_topics::{CreatableTopic, CreateTopicsRequest};
    use weir::protocol::kafka::messages::describe_configs::{
        DescribeConfigsRequest, DescribeConfigsResource,
    };
    use weir::protocol::kafka::messages::describe_groups::DescribeGroupsRequest;
    use weir::protocol::kafka::messages::list_offsets::{
        ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
    };
    use weir::storage::{BatchBuilder, Compression, Record};

    let (broker, server, _dir) = start().await;
    broker
        .create_topic("lo", Some(2), vec![])
        .await
        .expect("create");
    let mut b = BatchBuilder::new(Compression::None);
    b.push(Record::new(1, "v"));
    broker
        .publish(
            "lo",
            Some(1),
            vec![b.build(0).expect("batch")],
            weir::Acks::All,
        )
        .await
        .expect("publish");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let request = Request::ListOffsets(ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            name: "lo".into(),
            partitions: [0, 1, 0]
                .into_iter()
                .map(|partition_index| ListOffsetsPartition {
                    partition_index,
                    timestamp: -1,
                    ..ListOffsetsPartition::default()
                })
                .collect(),
        }],
        ..ListOffsetsRequest::default()
    });
    let Response::ListOffsets(r) = call(&mut s, 7, 1, request).await else {
        panic!("not a ListOffsets answer")
    };
    let got: Vec<(i32, i16, i64)> = r.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code, p.offset))
        .collect();
    assert_eq!(got, vec![(0, 42, -1), (1, 0, 1), (0, 42, -1)]);

    // CreateTopics naming a topic twice creates neither entry, as Kafka does.
    let request = Request::CreateTopics(CreateTopicsRequest {
        topics: ["twice", "once", "twice"]
            .into_iter()
            .map(|name| CreatableTopic {
                name: name.into(),
                num_partitions: 1,
                replication_factor: 1,
                ..CreatableTopic::default()
            })
            .collect(),
        timeout_ms: 10_000,
        ..CreateTopicsRequest::default()
    });
    let Response::CreateTopics(r) = call(&mut s, 7, 2, request).await else {
        panic!("not a CreateTopics answer")
    };
    let got: Vec<(&str, i16)> = r
        .topics
        .iter()
        .map(|t| (t.name.as_str(), t.error_code))
        .collect();
    assert_eq!(got, vec![("twice", 42), ("once", 0), ("twice", 42)]);
    assert!(broker.describe_topic("twice").await.is_err(), "not created");

    // Metadata answers each topic once however often it is named (Kafka keeps a set).
    let request = Request::Metadata(MetadataRequest {
        topics: Some(
            ["lo", "lo", "lo"]
                .into_iter()
                .map(|name| MetadataRequestTopic {
                    name: Some(name.into()),
                    ..MetadataRequestTopic::default()
                })
                .collect(),
        ),
        ..MetadataRequest::default()
    });
    let Response::Metadata(r) = call(&mut s, 12, 3, request).await else {
        panic!("not a Metadata answer")
    };
    let named: Vec<Option<&str>> = r.topics.iter().map(|t| t.name.as_deref()).collect();
    assert_eq!(named, vec![Some("lo")]);
    assert_eq!(r.topics[0].partitions.len(), 2);

    // So do DescribeConfigs and DescribeGroups.
    let resource = DescribeConfigsResource {
        resource_type: 2,
        resource_name: "lo".into(),
        configuration_keys: None,
    };
    let request = Request::DescribeConfigs(DescribeConfigsRequest {
        resources: vec![resource.clone(), resource.clone(), resource],
        ..DescribeConfigsRequest::default()
    });
    let Response::DescribeConfigs(r) = call(&mut s, 4, 4, request).await else {
        panic!("not a DescribeConfigs answer")
    };
    assert_eq!(r.results.len(), 1);
    assert_eq!(
        (r.results[0].error_code, r.results[0].resource_name.as_str()),
        (0, "lo")
    );
    let request = Request::DescribeGroups(DescribeGroupsRequest {
        groups: vec!["g".into(), "g".into()],
        ..DescribeGroupsRequest::default()
    });
    let Response::DescribeGroups(r) = call(&mut s, 5, 5, request).await else {
        panic!("not a DescribeGroups answer")
    };
    assert_eq!(r.groups.len(), 1);
}

/// LeaveGroup v3+ answers each member on its own (the request's error stays 0, as from
/// Kafka): a member that left, an unknown one, a static member left by its instance id alone.
/// Before v3 the one member's outcome is the request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_group_answers_each_member() {
    use weir::protocol::kafka::messages::leave_group::{LeaveGroupRequest, MemberIdentity};

    let (broker, server, _dir) = start().await;
    let join = |instance: Option<&str>| weir::broker::JoinGroup {
        member_id: String::new(),
        instance_id: instance.map(str::to_string),
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_millis(100),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), bytes::Bytes::new())],
        require_known_member_id: false,
    };
    // Both join the new group within its initial rebalance delay: one generation with both.
    let h = broker.clone();
    let other = tokio::spawn(async move { h.join_group("lg", join(Some("static-1"))).await });
    let dynamic = broker.join_group("lg", join(None)).await.expect("join");
    other.await.expect("task").expect("join");
    assert_eq!(
        broker
            .describe_group("lg")
            .await
            .expect("describe")
            .members
            .len(),
        2
    );

    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let member = |id: &str, instance: Option<&str>| MemberIdentity {
        member_id: id.into(),
        group_instance_id: instance.map(str::to_string),
        ..MemberIdentity::default()
    };
    let leave = Request::LeaveGroup(LeaveGroupRequest {
        group_id: "lg".into(),
        members: vec![
            member(&dynamic.member_id, None),
            member("ghost", None),
            member("", Some("static-1")),
        ],
        ..LeaveGroupRequest::default()
    });
    let Response::LeaveGroup(r) = call(&mut s, 5, 1, leave).await else {
        panic!("not a LeaveGroup answer")
    };
    assert_eq!(r.error_code, 0);
    let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, vec![0, 25, 0], "{r:?}");
    assert!(broker
        .describe_group("lg")
        .await
        .expect("describe")
        .members
        .is_empty());
    let old = Request::LeaveGroup(LeaveGroupRequest {
        group_id: "lg".into(),
        member_id: "ghost".into(),
        ..LeaveGroupRequest::default()
    });
    let Response::LeaveGroup(r) = call(&mut s, 1, 2, old).await else {
        panic!("not a LeaveGroup answer")
    };
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID for the one member");
}

/// A JoinGroup held for members that have not rejoined does not hold a shutdown back (it found
/// `weir serve` waiting out a member's session, ~45 s, on SIGTERM): `begin_shutdown`, which
/// `weir serve` calls first, answers it at once with NOT_COORDINATOR (16), so that clients
/// look for the coordinator again, and the server drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_join_is_answered_when_the_broker_begins_to_shut_down() {
    use weir::protocol::kafka::messages::join_group::{JoinGroupRequest, JoinGroupRequestProtocol};

    let (broker, server, _dir) = start().await;
    let join = |member_id: &str| weir::broker::JoinGroup {
        member_id: member_id.into(),
        instance_id: None,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(60),
        rebalance_timeout: Duration::from_secs(120),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: false,
    };
    let a = broker.join_group("held", join("")).await.expect("join");
    broker
        .sync_group("held", &a.member_id, a.generation, vec![])
        .await
        .expect("sync");
    // A second member joins over the wire: held until the first rejoins, which it never does.
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let wire_join = Request::JoinGroup(JoinGroupRequest {
        group_id: "held".into(),
        session_timeout_ms: 60_000,
        rebalance_timeout_ms: 120_000,
        protocol_type: "consumer".into(),
        protocols: vec![JoinGroupRequestProtocol {
            name: "range".into(),
            metadata: Bytes::new(),
        }],
        ..JoinGroupRequest::default()
    });
    send(&mut s, ApiKey::JoinGroup, 2, 7, wire_join).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while broker.describe_group("held").await.expect("describe").state
        != weir::broker::GroupState::PreparingRebalance
    {
        assert!(std::time::Instant::now() < deadline, "the join arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    broker.begin_shutdown().await;
    let frame = read_frame(&mut s).await.expect("the held join answered");
    let (id, r) = decode_response(ApiKey::JoinGroup, 2, frame).expect("decode");
    let Response::JoinGroup(j) = r else {
        panic!("not a JoinGroup answer")
    };
    assert_eq!((id, j.error_code), (7, 16), "NOT_COORDINATOR");
    // New joins are refused at once too, and the server drains.
    let again = broker.join_group("held", join(&a.member_id)).await;
    assert!(
        matches!(again, Err(weir::broker::BrokerError::ShuttingDown)),
        "{again:?}"
    );
    drop(s);
    tokio::time::timeout(Duration::from_secs(30), server.shutdown())
        .await
        .expect("the server drains without waiting for the rebalance (120 s)");
    broker.shutdown().await.expect("shutdown");
}

/// Metadata names topics by id (v10+; how consumers of Kafka's consumer group protocol learn
/// the topics of their assignments), UNKNOWN_TOPIC_ID for an id no topic has; the consumer
/// group protocol's requests are checked before they reach the group, and ConsumerGroupDescribe
/// tells consumer-protocol groups from classic and unknown ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_by_id_and_the_consumer_group_protocol_requests() {
    use weir::protocol::kafka::messages::consumer_group_describe::ConsumerGroupDescribeRequest;
    use weir::protocol::kafka::messages::consumer_group_heartbeat::ConsumerGroupHeartbeatRequest;

    const INVALID_REQUEST: i16 = 42;
    const GROUP_ID_NOT_FOUND: i16 = 69;
    const UNKNOWN_TOPIC_ID: i16 = 100;
    const UNSUPPORTED_ASSIGNOR: i16 = 112;
    const INVALID_REGULAR_EXPRESSION: i16 = 128;

    let (broker, server, _dir) = start().await;
    let id = broker
        .create_topic("byid", Some(3), vec![])
        .await
        .expect("create")
        .id;
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let nobody = [7u8; 16];
    let request = Request::Metadata(MetadataRequest {
        topics: Some(vec![
            MetadataRequestTopic {
                topic_id: id.to_be_bytes(),
                name: None,
            },
            MetadataRequestTopic {
                topic_id: nobody,
                name: None,
            },
        ]),
        allow_auto_topic_creation: false,
        ..MetadataRequest::default()
    });
    let Response::Metadata(m) = call(&mut s, 12, 1, request).await else {
        panic!("not Metadata")
    };
    let topics: Vec<(i16, Option<&str>, [u8; 16], usize)> = m
        .topics
        .iter()
        .map(|t| {
            (
                t.error_code,
                t.name.as_deref(),
                t.topic_id,
                t.partitions.len(),
            )
        })
        .collect();
    assert_eq!(
        topics,
        vec![
            (0, Some("byid"), id.to_be_bytes(), 3),
            (UNKNOWN_TOPIC_ID, None, nobody, 0)
        ]
    );

    let heartbeat =
        |group: &str, member: &str, version_1_regex: Option<&str>| ConsumerGroupHeartbeatRequest {
            group_id: group.into(),
            member_id: member.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["byid".into()]),
            subscribed_topic_regex: version_1_regex.map(str::to_string),
            topic_partitions: Some(vec![]),
            ..ConsumerGroupHeartbeatRequest::default()
        };
    let answer = |r: Response| match r {
        Response::ConsumerGroupHeartbeat(h) => h,
        other => panic!("not a heartbeat answer: {other:?}"),
    };
    // Version 1: the member names itself; version 0: the group names a joining member.
    let r = answer(
        call(
            &mut s,
            1,
            2,
            Request::ConsumerGroupHeartbeat(heartbeat("g", "", None)),
        )
        .await,
    );
    assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    let r = answer(
        call(
            &mut s,
            1,
            3,
            Request::ConsumerGroupHeartbeat(heartbeat("", "m", None)),
        )
        .await,
    );
    assert_eq!(r.error_code, INVALID_REQUEST, "{r:?}");
    let r = answer(
        call(
            &mut s,
            0,
            4,
            Request::ConsumerGroupHeartbeat(heartbeat("g", "", None)),
        )
        .await,
    );
    assert_eq!((r.error_code, r.member_epoch), (0, 1), "{r:?}");
    let named = r.member_id.expect("the group named the member");
    assert!(!named.is_empty());
    let given = r.assignment.expect("an assignment").topic_partitions;
    assert_eq!(given.len(), 1);
    assert_eq!(
        (given[0].topic_id, given[0].partitions.clone()),
        (id.to_be_bytes(), vec![0, 1, 2])
    );
    // Its offset commits carry its epoch: OffsetCommit v9 or later (Kafka answers an older
    // version, whose field is a classic generation, UNSUPPORTED_VERSION).
    for (version, code) in [(8, 35), (9, 0)] {
        use weir::protocol::kafka::messages::offset_commit::{
            OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let commit = Request::OffsetCommit(OffsetCommitRequest {
            group_id: "g".into(),
            generation_id_or_member_epoch: 1,
            member_id: named.clone(),
            topics: vec![OffsetCommitRequestTopic {
                name: "byid".into(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 1,
                    committed_offset: 0,
                    ..OffsetCommitRequestPartition::default()
                }],
            }],
            ..OffsetCommitRequest::default()
        });
        let Response::OffsetCommit(c) =
            call(&mut s, version, 20 + i32::from(version), commit).await
        else {
            panic!("not OffsetCommit")
        };
        assert_eq!(c.topics[0].partitions[0].error_code, code, "v{version}");
    }
    let mut bad = heartbeat("g", "x", None);
    bad.server_assignor = Some("sticky".into());
    let r = answer(call(&mut s, 1, 5, Request::ConsumerGroupHeartbeat(bad)).await);
    assert_eq!(r.error_code, UNSUPPORTED_ASSIGNOR, "{r:?}");
    let r = answer(
        call(
            &mut s,
            1,
            6,
            Request::ConsumerGroupHeartbeat(heartbeat("g", "y", Some("("))),
        )
        .await,
    );
    assert_eq!(r.error_code, INVALID_REGULAR_EXPRESSION, "{r:?}");
    assert!(r
        .error_message
        .is_some_and(|m| m.contains("regular expression")));

    // A classic group of Kafka Connect workers (a group of classic consumers would change
    // protocol: tests/groups.rs).
    broker
        .join_group(
            "classic",
            weir::broker::JoinGroup {
                member_id: String::new(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "h".into(),
                session_timeout: Duration::from_secs(30),
                rebalance_timeout: Duration::from_secs(30),
                protocol_type: "connect".into(),
                protocols: vec![("sessioned".into(), Bytes::new())],
                require_known_member_id: false,
            },
        )
        .await
        .expect("classic join");
    let r = answer(
        call(
            &mut s,
            1,
            7,
            Request::ConsumerGroupHeartbeat(heartbeat("classic", "z", None)),
        )
        .await,
    );
    assert_eq!(r.error_code, GROUP_ID_NOT_FOUND, "{r:?}");
    let request = Request::ConsumerGroupDescribe(ConsumerGroupDescribeRequest {
        group_ids: vec!["g".into(), "classic".into(), "never".into()],
        include_authorized_operations: false,
    });
    let Response::ConsumerGroupDescribe(d) = call(&mut s, 1, 8, request).await else {
        panic!("not ConsumerGroupDescribe")
    };
    let groups: Vec<(&str, i16, &str, usize)> = d
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.as_str(),
                g.error_code,
                g.group_state.as_str(),
                g.members.len(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("g", 0, "Stable", 1),
            ("classic", GROUP_ID_NOT_FOUND, "Dead", 0),
            ("never", GROUP_ID_NOT_FOUND, "Dead", 0)
        ]
    );
    let m = &d.groups[0].members[0];
    assert_eq!((m.member_id.as_str(), m.member_epoch), (named.as_str(), 1));
    assert_eq!(m.assignment.topic_partitions[0].topic_name, "byid");
    assert_eq!(m.target_assignment, m.assignment);
    assert_eq!(d.groups[0].assignor_name, "uniform");
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}
