//! The `rdkafka` crate (librdkafka 2.12, built from source) against the Kafka listener in
//! process: a Rust application using the most common Kafka client library works unchanged.
//! Admin create, keyed produce with acks=all, a consumer group that commits and a second
//! consumer of the group that resumes after the commit, offsets for a time.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir::config::Config;
use weir::server::kafka::{KafkaServer, KafkaServerConfig};
use weir::{Backend, Broker};

fn consume(c: &BaseConsumer, n: usize) -> Vec<(Vec<u8>, Vec<u8>, i32, i64)> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("no consumer error");
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                m.partition(),
                m.offset(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdkafka_produces_consumes_and_resumes_in_a_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::default();
    c.storage.backend = Backend::Segment;
    c.data_dir = dir.path().to_path_buf();
    c.groups.initial_rebalance_delay_ms = 0;
    let broker = Broker::start(c).await.expect("broker");
    let server = KafkaServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        broker.clone(),
        KafkaServerConfig::default(),
    )
    .await
    .expect("bind");
    let boot = server.local_addr().to_string();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new("rd", 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let start_ms = weir::broker::now_ms();
    let records: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("k{}", i % 10), format!("{i}")))
        .collect();
    // Enqueued at once (`send_result`), so librdkafka batches them; then every delivery.
    let pending: Vec<_> = records
        .iter()
        .map(|(key, value)| {
            producer
                .send_result(FutureRecord::to("rd").key(key).payload(value))
                .map_err(|(e, _)| e)
                .expect("enqueued")
        })
        .collect();
    for p in pending {
        p.await.expect("not cancelled").expect("delivered");
    }

    let group = |id: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &boot)
            .set("group.id", id)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    };
    let first = group("rd-group");
    first.subscribe(&["rd"]).expect("subscribe");
    let got = consume(&first, 1200);
    assert_eq!(got.len(), 1200);
    // Per key, values arrive in the order produced.
    let mut last: std::collections::HashMap<Vec<u8>, i64> = Default::default();
    for (k, v, _, _) in &got {
        let v: i64 = std::str::from_utf8(v)
            .expect("utf8")
            .parse()
            .expect("number");
        assert!(last.get(k).is_none_or(|prev| *prev < v));
        last.insert(k.clone(), v);
    }
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    drop(first);
    // The next member of the group starts where the first committed.
    let second = group("rd-group");
    second.subscribe(&["rd"]).expect("subscribe");
    let rest = consume(&second, 800);
    assert_eq!(rest.len(), 800);
    let mut all: Vec<i64> = got
        .iter()
        .chain(&rest)
        .map(|(_, v, _, _)| std::str::from_utf8(v).expect("utf8").parse().expect("n"))
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..2000).collect::<Vec<_>>(),
        "each record exactly once"
    );

    // Offsets for a time before everything: the start of each partition.
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("rd", p, Offset::Offset(start_ms - 1000))
            .expect("tpl");
    }
    let found = second
        .offsets_for_times(tpl, Duration::from_secs(10))
        .expect("offsets for times");
    for e in found.elements() {
        assert_eq!(e.offset(), Offset::Offset(0), "{e:?}");
    }
    drop(second);
    server.shutdown().await;
    broker.shutdown().await.expect("shutdown");
}
