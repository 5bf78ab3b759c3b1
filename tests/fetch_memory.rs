//! What fetches may make the broker hold in memory: a `weir serve` child with
//! `fetch_max_bytes` at 8 MiB and a 48 MiB partition, read by clients that ask for everything
//! and by clients that ask again and again without reading the answers. Its peak resident
//! memory (`VmHWM`, reset after the data is written) must stay near one fetch's worth; before
//! the limit, each of these fetches read up to the whole segment, and a repeated partition was
//! read once per mention. A topic whose batches are larger than `fetch_max_bytes` is read one
//! fetch at a time (before, each fetch was charged the default `max.message.bytes` and read a
//! whole batch beyond it).

mod common;

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir::client::{RemoteTransport, Transport};
use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
use weir::protocol::kafka::{decode_response, encode_request, ApiKey, Request, RequestHeader};
use weir::protocol::native::{Request as NativeRequest, RequestBody};

const FETCH_MAX: u64 = 8 << 20;
const BATCH: usize = 512 * 1024;
const BATCHES: usize = 96;

/// 48 MiB in batches of 512 KiB (one record each) to `topic` partition 0.
async fn fill(remote: &RemoteTransport, topic: &str) {
    remote
        .create_topic(topic, Some(1), vec![])
        .await
        .expect("create");
    for i in 0..BATCHES {
        let mut b = weir::BatchBuilder::new(weir::Compression::None);
        b.push(weir::Record::new(i as i64, vec![i as u8; BATCH]));
        remote
            .publish(
                topic,
                Some(0),
                vec![b.build(0).expect("batch")],
                weir::Acks::All,
            )
            .await
            .expect("publish");
    }
}

fn kafka_fetch(id: i32, topic: &str, mentions: usize) -> Vec<u8> {
    let header = RequestHeader {
        api_key: ApiKey::Fetch,
        api_version: 12,
        correlation_id: id,
        client_id: Some("fetch-memory".into()),
    };
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        max_bytes: i32::MAX,
        topics: vec![FetchTopic {
            topic: topic.into(),
            partitions: (0..mentions)
                .map(|_| FetchPartition {
                    partition: 0,
                    fetch_offset: 0,
                    partition_max_bytes: i32::MAX,
                    ..FetchPartition::default()
                })
                .collect(),
            ..FetchTopic::default()
        }],
        ..FetchRequest::default()
    });
    let frame = encode_request(&header, &request).expect("encode");
    let mut bytes = frame.length_prefix().expect("len").to_vec();
    bytes.extend_from_slice(&frame.to_vec());
    bytes
}

/// Sends `count` native fetches of `topic` partition 0 from offset 0, without reading answers.
async fn native_fetches(s: &mut TcpStream, topic: &str, count: u64, max_bytes: usize) {
    for id in 1..=count {
        let frame = NativeRequest {
            id,
            body: RequestBody::Fetch {
                topic: topic.into(),
                partition: 0,
                from: 0,
                max_bytes,
                min_bytes: 1,
                max_wait: Duration::ZERO,
            },
        }
        .encode()
        .expect("encode");
        for chunk in frame.chunks() {
            s.write_all(chunk).await.expect("write");
        }
    }
}

async fn read_frame(s: &mut TcpStream) -> Bytes {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.expect("length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.expect("body");
    Bytes::from(body)
}

fn assert_peak_below(server: &common::Server, limit: u64, what: &str) {
    let peak = server.peak_memory();
    assert!(
        peak < limit,
        "{what}: the server peaked at {} MiB resident (limit {} MiB)",
        peak >> 20,
        limit >> 20
    );
}

/// The memory a broker process may peak at while fetches of 8 MiB each are outstanding: the
/// process itself (tens of MiB) and a few fetches' worth, nowhere near the 48 MiB partition
/// times the fetches sent.
const PEAK: u64 = 160 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_hold_at_most_fetch_max_bytes_per_connection() {
    const HUGE: usize = 24 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::Server::in_dir(
        dir.path(),
        &format!("[broker]\nfetch_max_bytes = {FETCH_MAX}\n"),
    );
    let remote = RemoteTransport::connect(server.native)
        .await
        .expect("connect");
    fill(&remote, "big").await;

    // One Kafka fetch naming the partition 100 times, asking for 2 GiB: answered once, within
    // fetch_max_bytes.
    server.reset_peak_memory();
    let mut s = TcpStream::connect(server.kafka).await.expect("connect");
    s.write_all(&kafka_fetch(1, "big", 100))
        .await
        .expect("write");
    let frame = read_frame(&mut s).await;
    let (id, response) = decode_response(ApiKey::Fetch, 12, frame).expect("decode");
    assert_eq!(id, 1);
    let weir::protocol::kafka::Response::Fetch(f) = response else {
        panic!("not a fetch response: {response:?}");
    };
    assert_eq!(f.responses.len(), 1, "one topic");
    let partitions = &f.responses[0].partitions;
    assert_eq!(
        partitions.len(),
        1,
        "the repeated partition is answered once"
    );
    let p = &partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, BATCHES as i64));
    let bytes = p.records.as_ref().map_or(0, |r| r.len());
    assert!(
        bytes as u64 <= FETCH_MAX && bytes >= BATCH,
        "{bytes} bytes of records, not within fetch_max_bytes"
    );
    assert_peak_below(&server, PEAK, "one fetch naming a partition 100 times");

    // Forty Kafka fetches of 2 GiB pipelined on one connection, none of the answers read.
    server.reset_peak_memory();
    let mut greedy = TcpStream::connect(server.kafka).await.expect("connect");
    for id in 0..40 {
        greedy
            .write_all(&kafka_fetch(id, "big", 1))
            .await
            .expect("write");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_peak_below(&server, PEAK, "40 pipelined Kafka fetches, unread");

    // The same through the native protocol: forty fetches of "everything".
    server.reset_peak_memory();
    let mut native = TcpStream::connect(server.native).await.expect("connect");
    native_fetches(&mut native, "big", 40, usize::MAX).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_peak_below(&server, PEAK, "40 pipelined native fetches, unread");

    // The unread answers arrive in full once read: the limit delays, it loses nothing.
    let mut got = 0;
    while got < 40 {
        let mut len = [0u8; 4];
        native.read_exact(&mut len).await.expect("length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        native.read_exact(&mut body).await.expect("body");
        got += 1;
    }
    for _ in 0..40 {
        let frame = read_frame(&mut greedy).await;
        decode_response(ApiKey::Fetch, 12, frame).expect("decode");
    }
    drop((s, greedy, native));

    // Batches of 24 MiB, three times `fetch_max_bytes`, in a topic that allows them: twelve
    // pipelined native fetches of 1 byte each, unread. Each returns a whole batch; they are
    // read one after the other, not eight at once (the budget over a 1 MiB charge each).
    let max_message_bytes = (HUGE + 1024).to_string();
    remote
        .create_topic(
            "huge",
            Some(1),
            vec![("max.message.bytes".into(), max_message_bytes)],
        )
        .await
        .expect("create");
    for i in 0..2 {
        let mut b = weir::BatchBuilder::new(weir::Compression::None);
        b.push(weir::Record::new(i, vec![i as u8; HUGE]));
        let batch = b.build(0).expect("batch");
        remote
            .publish("huge", Some(0), vec![batch], weir::Acks::All)
            .await
            .expect("publish");
    }
    server.reset_peak_memory();
    let mut native = TcpStream::connect(server.native).await.expect("connect");
    native_fetches(&mut native, "huge", 12, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_peak_below(
        &server,
        PEAK,
        "12 pipelined native fetches of 24 MiB batches",
    );
    for _ in 0..12 {
        let mut len = [0u8; 4];
        native.read_exact(&mut len).await.expect("length");
        let len = u32::from_be_bytes(len) as usize;
        assert!(len > HUGE, "a whole batch in each answer ({len} bytes)");
        let mut body = vec![0u8; len];
        native.read_exact(&mut body).await.expect("body");
    }
    server.terminate();
}
