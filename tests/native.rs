//! The native protocol end to end over loopback: the embedded API on a `RemoteTransport`,
//! pipelining, and bad input that must not hurt the server or the data.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir::client::{AutoOffsetReset, RemoteTransport, Transport};
use weir::config::Config;
use weir::protocol::native::{decode_body, encode_frame, Request, RequestBody, Response};
use weir::server::native::{NativeServer, NativeServerConfig};
use weir::{
    Acks, Admin, Backend, Broker, BrokerHandle, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use weir_storage::TopicPartition;

async fn start(cfg: NativeServerConfig) -> (BrokerHandle, NativeServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::default();
    c.storage.backend = Backend::Segment;
    c.data_dir = dir.path().to_path_buf();
    c.groups.initial_rebalance_delay_ms = 0;
    let broker = Broker::start(c).await.expect("broker");
    let server = NativeServer::bind("127.0.0.1:0".parse().expect("addr"), broker.clone(), cfg)
        .await
        .expect("bind");
    (broker, server, dir)
}

/// Reads one response frame (or `None` when the server closed the connection).
async fn read_response(s: &mut TcpStream) -> Option<Response> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    decode_body(&body).ok()
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn still_serves(addr: SocketAddr) {
    let t = RemoteTransport::connect(addr).await.expect("connect");
    let before = t.describe_topic("safe").await.expect("describe").partitions[0].end;
    let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
    b.push(weir_storage::Record::new(1, "after"));
    t.publish("safe", Some(0), vec![b.build(0).expect("b")], Acks::All)
        .await
        .expect("publish after bad input");
    let after = t.describe_topic("safe").await.expect("describe").partitions[0].end;
    assert_eq!(
        after,
        before + 1,
        "nothing stored was lost, the new record landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_api_works_over_tcp() {
    let (broker, server, _dir) = start(NativeServerConfig::default()).await;
    let remote = RemoteTransport::connect(server.local_addr())
        .await
        .expect("connect");
    let admin = Admin::new(remote.clone());
    admin.create_topic("remote", 3, &[]).await.expect("create");
    assert_eq!(
        admin.list_topics().await.expect("list"),
        vec!["remote".to_string()]
    );
    let producer = Producer::new(
        remote.clone(),
        ProducerConfig {
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    );
    let mut sent = Vec::new();
    for i in 0..300 {
        sent.push(
            producer
                .send(ProducerRecord::new("remote", format!("v{i}")).key(format!("k{}", i % 7)))
                .await,
        );
    }
    for d in sent {
        d.await.expect("delivered");
    }
    let mut consumer = Consumer::new(
        remote.clone(),
        ConsumerConfig {
            group_id: Some("remote-group".into()),
            auto_offset_reset: AutoOffsetReset::Earliest,
            auto_commit_interval: None,
            ..ConsumerConfig::default()
        },
    );
    consumer.subscribe(&["remote"]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 300 && tokio::time::Instant::now() < deadline {
        got.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    assert_eq!(got.len(), 300);
    consumer.commit().await.expect("commit");
    let offsets = admin.group_offsets("remote-group").await.expect("offsets");
    let total: i64 = offsets.iter().map(|(_, o)| o.offset).sum();
    assert_eq!(total, 300);
    // The member is described with the address it connected from, not what it claimed.
    let described = admin
        .describe_group("remote-group")
        .await
        .expect("describe");
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].client_host, "/127.0.0.1");
    consumer.close().await.expect("close");
    // Errors keep their type across the wire.
    assert!(matches!(
        remote
            .fetch("remote", 0, 1_000_000, 1, 1, Duration::ZERO)
            .await,
        Err(weir::BrokerError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        remote.describe_topic("nope").await,
        Err(weir::BrokerError::UnknownTopic(_))
    ));
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answer_in_order() {
    let (broker, server, _dir) = start(NativeServerConfig::default()).await;
    broker
        .create_topic("pipe", Some(1), vec![])
        .await
        .expect("create");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    // 50 requests written back to back before reading anything.
    let mut frames = Vec::new();
    for id in 1..=50u64 {
        let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
        b.push(weir_storage::Record::new(1, format!("{id}")));
        let body = RequestBody::Publish {
            topic: "pipe".into(),
            partition: Some(0),
            batches: vec![b.build(0).expect("b")],
            acks: Acks::All,
        };
        frames.extend_from_slice(&encode_frame(&Request { id, body }).expect("encode"));
    }
    s.write_all(&frames).await.expect("write");
    let mut answered = std::collections::BTreeSet::new();
    for _ in 1..=50u64 {
        let r = read_response(&mut s).await.expect("response");
        let Ok(weir::protocol::native::ResponseBody::Published { ack, .. }) = r.body else {
            panic!("{r:?}")
        };
        assert_eq!(
            ack.base_offset,
            r.id as i64 - 1,
            "applied in the order sent"
        );
        assert!(answered.insert(r.id), "one response per request");
    }
    assert_eq!(answered.len(), 50);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_or_a_close_and_hurts_nobody() {
    let cfg = NativeServerConfig {
        max_frame_bytes: 1024 * 1024,
        ..NativeServerConfig::default()
    };
    let (broker, server, _dir) = start(cfg).await;
    broker
        .create_topic("safe", Some(1), vec![])
        .await
        .expect("create");
    let addr = server.local_addr();
    still_serves(addr).await;
    let unknown = {
        // A well-formed MessagePack request naming a request type that does not exist.
        let mut v = rmp_serde::to_vec_named(&Request {
            id: 9,
            body: RequestBody::ListTopics,
        })
        .expect("enc");
        let pos = v
            .windows(10)
            .position(|w| w == b"ListTopics")
            .expect("variant name");
        v[pos..pos + 10].copy_from_slice(b"DropTables");
        let mut f = (v.len() as u32).to_be_bytes().to_vec();
        f.extend(v);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: weir\r\n\r\n".to_vec()),
        ("4 GiB frame", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("invalid MessagePack", vec![0, 0, 0, 3, 0xc1, 0xc1, 0xc1]),
        ("unknown request", unknown),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        let r = read_response(&mut s).await;
        if let Some(r) = r {
            assert_eq!(r.id, 0, "{what}");
            let e = r.body.expect_err(what);
            assert!(e.code >= 100, "{what}: {e:?}");
        }
        assert!(closed(&mut s).await, "{what}: the connection closes");
        still_serves(addr).await;
    }
    // A truncated frame, then the client goes away.
    {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&[0, 0, 1, 0, 1, 2, 3]).await.expect("write");
    }
    still_serves(addr).await;
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_a_producer() {
    let (broker, server, _dir) = start(NativeServerConfig::default()).await;
    broker
        .create_topic("busy", Some(1), vec![])
        .await
        .expect("create");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(
            TcpStream::connect(server.local_addr())
                .await
                .expect("connect"),
        );
    }
    let remote = RemoteTransport::connect(server.local_addr())
        .await
        .expect("connect");
    let producer = Producer::new(remote, ProducerConfig::default());
    let t0 = std::time::Instant::now();
    let mut sent = Vec::new();
    for i in 0..1000 {
        sent.push(
            producer
                .send(ProducerRecord::new("busy", format!("{i}")).partition(0))
                .await,
        );
    }
    for d in sent {
        d.await.expect("delivered");
    }
    let o = broker.offsets("busy", 0).await.expect("offsets");
    assert_eq!(o.end, 1000);
    println!(
        "1000 records with 1000 idle connections open: {:?}",
        t0.elapsed()
    );
    drop(idle);
    let _ = TopicPartition::new("busy", 0);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reports_a_lost_connection_and_reconnects() {
    let (broker, server, _dir) = start(NativeServerConfig::default()).await;
    broker
        .create_topic("re", Some(1), vec![])
        .await
        .expect("create");
    let addr = server.local_addr();
    let remote = RemoteTransport::connect(addr).await.expect("connect");
    assert_eq!(
        remote.list_topics().await.expect("list"),
        vec!["re".to_string()]
    );
    server.shutdown().await;
    // The server is gone: the call fails as "outcome unknown", it is not retried silently.
    let lost = remote.list_topics().await;
    assert!(
        matches!(lost, Err(weir::BrokerError::ConnectionLost(_))),
        "{lost:?}"
    );
    // Back on the same address: the next calls reconnect (with backoff) and work.
    let server = NativeServer::bind(addr, broker.clone(), NativeServerConfig::default())
        .await
        .expect("rebind");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match remote.list_topics().await {
            Ok(t) => {
                assert_eq!(t, vec!["re".to_string()]);
                break;
            }
            Err(weir::BrokerError::ConnectionLost(_)) => {
                assert!(std::time::Instant::now() < deadline, "never reconnected");
            }
            Err(e) => panic!("{e}"),
        }
    }
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}

/// `send_batch` over TCP: a batch of its own, in order after the records already sent to the
/// partition, one future for all of them; large batches travel as their own frame chunks and
/// come back intact (the vectored encoder and the zero-copy decoder on both sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batch_keeps_partition_order_and_reports_its_base_offset() {
    let (_broker, server, _dir) = start(NativeServerConfig::default()).await;
    let remote = RemoteTransport::connect(server.local_addr())
        .await
        .expect("connect");
    let producer = Producer::new(
        remote.clone(),
        ProducerConfig {
            linger: Duration::from_secs(5),
            ..ProducerConfig::default()
        },
    );
    // The topic does not exist yet: send_batch resolves (and auto-creates) it first.
    let first = producer
        .send_batch(
            "batched",
            0,
            (0..3)
                .map(|i| ProducerRecord::new("", format!("a{i}")))
                .collect(),
        )
        .await
        .await
        .expect("first batch");
    assert_eq!((first.partition, first.offset), (0, 0));
    // A record waiting out its linger is sent before the batch that follows it.
    let lingering = producer
        .send(ProducerRecord::new("batched", "b").partition(0))
        .await;
    let big: Vec<ProducerRecord> = (0..500)
        .map(|i| ProducerRecord::new("", vec![b'c'; 200]).key(format!("k{i}")))
        .collect();
    let second = producer
        .send_batch("batched", 0, big)
        .await
        .await
        .expect("second batch");
    assert_eq!(lingering.await.expect("lingering").offset, 3);
    assert_eq!(second.offset, 4);
    // An unknown partition fails the batch, nothing is sent.
    assert!(matches!(
        producer
            .send_batch("batched", 7, vec![ProducerRecord::new("", "x")])
            .await
            .await,
        Err(weir::BrokerError::UnknownPartition { partition: 7, .. })
    ));
    let mut consumer = Consumer::new(
        remote.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![TopicPartition::new("batched", 0)]);
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 504 && tokio::time::Instant::now() < deadline {
        got.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    let values: Vec<Vec<u8>> = got
        .iter()
        .map(|r| r.value.clone().expect("value").to_vec())
        .collect();
    assert_eq!(values.len(), 504);
    assert_eq!(
        values[..4],
        [
            b"a0".to_vec(),
            b"a1".to_vec(),
            b"a2".to_vec(),
            b"b".to_vec()
        ]
    );
    assert!(values[4..].iter().all(|v| v == &vec![b'c'; 200]));
    assert_eq!(got[503].key.as_deref(), Some(&b"k499"[..]));
    assert!(got.iter().enumerate().all(|(i, r)| r.offset == i as i64));
}

/// A long-poll fetch waiting on one connection does not hold back the response to a publish
/// sent after it on the same connection (responses go out as they complete, matched by id).
/// Found by `weir bench` with 4 consumers sharing a connection with the producers: every ack
/// waited behind a 1 s long poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_hold_back_later_responses() {
    let (broker, server, _dir) = start(NativeServerConfig::default()).await;
    broker
        .create_topic("hol", Some(2), vec![])
        .await
        .expect("create");
    let mut s = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let fetch = RequestBody::Fetch {
        topic: "hol".into(),
        partition: 1,
        from: 0,
        max_bytes: 1 << 20,
        min_bytes: 1,
        max_wait: Duration::from_secs(30),
    };
    let mut b = weir_storage::BatchBuilder::new(weir_storage::Compression::None);
    b.push(weir_storage::Record::new(1, "x"));
    let publish = RequestBody::Publish {
        topic: "hol".into(),
        partition: Some(0),
        batches: vec![b.build(0).expect("b")],
        acks: Acks::All,
    };
    let mut frames = encode_frame(&Request { id: 1, body: fetch })
        .expect("encode")
        .to_vec();
    frames.extend_from_slice(
        &encode_frame(&Request {
            id: 2,
            body: publish,
        })
        .expect("encode"),
    );
    s.write_all(&frames).await.expect("write");
    let first = tokio::time::timeout(Duration::from_secs(10), read_response(&mut s))
        .await
        .expect("the publish is answered while the fetch still waits")
        .expect("response");
    assert_eq!(first.id, 2);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}
