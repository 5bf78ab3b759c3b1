//! The broker through its handle: ordering under concurrency, long-poll, retention,
//! backpressure, topics admin, restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weir::broker::BrokerError;
use weir::client::Transport as T;
use weir::config::Config;
use weir::{Acks, Backend, Broker, BrokerHandle, OffsetSpec};
use weir_storage::testkit::batch_of;
use weir_storage::{
    AppendInfo, Batch, Compression, LogConfig, LogOffsets, Offset, PartitionLog, Retention,
    Storage, TopicPartition,
};

fn config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.backend = backend;
    c.data_dir = dir.to_path_buf();
    c.broker.arbiters = 2;
    c.groups.initial_rebalance_delay_ms = 0;
    c
}

async fn start(backend: Backend, dir: &std::path::Path) -> BrokerHandle {
    Broker::start(config(backend, dir))
        .await
        .expect("start broker")
}

fn values(batches: &[Batch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .map(|r| String::from_utf8(r.record.value.expect("value").to_vec()).expect("utf8"))
        .collect()
}

fn one(value: &str) -> Batch {
    let mut b = weir_storage::BatchBuilder::new(Compression::None);
    b.push(weir_storage::Record::new(1, value.to_string()));
    b.build(0).expect("build")
}

async fn read_all(h: &BrokerHandle, topic: &str, partition: i32) -> Vec<Batch> {
    let end = h.offsets(topic, partition).await.expect("offsets").end;
    let mut next = h.offsets(topic, partition).await.expect("offsets").start;
    let mut out = Vec::new();
    while next < end {
        let r = h
            .fetch(topic, partition, next, 1 << 20, 1, Duration::ZERO)
            .await
            .expect("fetch");
        next = r.batches.last().expect("batch").next_offset();
        out.extend(r.batches);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_partition_order_under_100_concurrent_producers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(Backend::Segment, dir.path()).await;
    h.create_topic("orders", Some(2), vec![])
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for producer in 0..100 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for seq in 0..20 {
                let (p, ack) = h
                    .publish(
                        "orders",
                        Some(producer % 2),
                        vec![one(&format!("{producer}:{seq}"))],
                        Acks::All,
                    )
                    .await
                    .expect("publish");
                assert_eq!(p, producer % 2);
                offsets.push(ack.base_offset);
            }
            // One producer's acks come back in the order it sent, with growing offsets.
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
            (producer, offsets)
        }));
    }
    let mut acked: Vec<Vec<Offset>> = vec![Vec::new(); 2];
    for t in tasks {
        let (producer, offsets) = t.await.expect("producer");
        acked[(producer % 2) as usize].extend(offsets);
    }
    for p in 0..2 {
        let batches = read_all(&h, "orders", p).await;
        // Dense offsets: every offset 0..n exactly once, each acknowledged exactly once.
        let mut acks = acked[p as usize].clone();
        acks.sort_unstable();
        assert_eq!(acks, (0..1000).collect::<Vec<_>>());
        let vals = values(&batches);
        assert_eq!(vals.len(), 1000);
        // Per producer, the log holds its records in the order they were sent.
        for producer in (p..100).step_by(2) {
            let seqs: Vec<u32> = vals
                .iter()
                .filter_map(|v| v.split_once(':'))
                .filter(|(pr, _)| pr.parse::<i32>().ok() == Some(producer))
                .map(|(_, s)| s.parse().expect("seq"))
                .collect();
            assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "producer {producer}");
        }
    }
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_is_woken_by_a_publish_and_expires_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(Backend::Memory, dir.path()).await;
    h.create_topic("events", Some(1), vec![])
        .await
        .expect("create");
    // Past the end: waits for the deadline, then returns nothing.
    let t0 = Instant::now();
    let r = h
        .fetch("events", 0, 0, 1024, 1, Duration::from_millis(300))
        .await
        .expect("fetch");
    assert!(r.batches.is_empty());
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(r.high_watermark, 0);
    // A waiting fetch is answered by the publish, long before its deadline.
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = h
                .fetch("events", 0, 0, 1024, 1, Duration::from_secs(20))
                .await
                .expect("fetch");
            (r, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.publish("events", Some(0), vec![one("wake up")], Acks::All)
        .await
        .expect("publish");
    let (r, waited) = waiter.await.expect("waiter");
    assert_eq!(values(&r.batches), vec!["wake up"]);
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(r.high_watermark, 1);
    // min_bytes: not satisfied by a small publish, returned at the deadline with what there is.
    let r = h
        .fetch("events", 0, 0, 1024, 1 << 20, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert_eq!(values(&r.batches), vec!["wake up"]);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_errors_and_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(Backend::Memory, dir.path());
    cfg.broker.auto_create_topics = false;
    let h = Broker::start(cfg).await.expect("start");
    assert!(matches!(
        h.publish("nope", Some(0), vec![one("x")], Acks::All).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(matches!(
        h.create_topic("bad name", None, vec![]).await,
        Err(BrokerError::InvalidTopicName { .. })
    ));
    // Timestamps below are from 1970: keep them despite the 7-day default retention.
    let cfgs = vec![
        ("max.message.bytes".into(), "300".into()),
        ("retention.ms".into(), "-1".into()),
    ];
    h.create_topic("t", Some(2), cfgs).await.expect("create");
    assert!(matches!(
        h.create_topic("t", None, vec![]).await,
        Err(BrokerError::TopicExists(_))
    ));
    assert!(matches!(
        h.publish("t", Some(2), vec![one("x")], Acks::All).await,
        Err(BrokerError::UnknownPartition { partition: 2, .. })
    ));
    let big = batch_of(1, 0, 400, Compression::None);
    assert!(matches!(
        h.publish("t", Some(0), vec![big], Acks::All).await,
        Err(BrokerError::MessageTooLarge { max: 300, .. })
    ));
    for i in 0..3 {
        let mut b = weir_storage::BatchBuilder::new(Compression::None);
        b.push(weir_storage::Record::new(1000 * (i + 1), format!("v{i}")));
        h.publish("t", Some(1), vec![b.build(0).expect("b")], Acks::All)
            .await
            .expect("publish");
    }
    assert_eq!(
        h.list_offset("t", 1, OffsetSpec::Earliest)
            .await
            .expect("e"),
        Some(0)
    );
    assert_eq!(
        h.list_offset("t", 1, OffsetSpec::Latest).await.expect("l"),
        Some(3)
    );
    assert_eq!(
        h.list_offset("t", 1, OffsetSpec::Timestamp(1500))
            .await
            .expect("ts"),
        Some(1)
    );
    assert_eq!(
        h.list_offset("t", 1, OffsetSpec::Timestamp(9999))
            .await
            .expect("ts"),
        None
    );
    assert!(matches!(
        h.fetch("t", 1, 4, 1024, 1, Duration::ZERO).await,
        Err(BrokerError::OffsetOutOfRange {
            requested: 4,
            start: 0,
            end: 3
        })
    ));
    // Keyless publishes spread over partitions.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (p, _) = h
            .publish("t", None, vec![one("k")], Acks::All)
            .await
            .expect("publish");
        seen.insert(p);
    }
    assert_eq!(seen.len(), 2);
    // acks=0 answers without an offset, and the record still lands.
    let (_, ack) = h
        .publish("t", Some(0), vec![one("fire")], Acks::None)
        .await
        .expect("publish");
    assert_eq!(ack.base_offset, -1);
    h.create_partitions("t", 4).await.expect("grow");
    assert_eq!(h.partition_count("t"), Some(4));
    assert!(h.create_partitions("t", 3).await.is_err());
    h.alter_topic_config("t", vec![("retention.bytes".into(), "1000000".into())])
        .await
        .expect("alter");
    assert!(h
        .alter_topic_config("t", vec![("retention.mss".into(), "1".into())])
        .await
        .is_err());
    let d = h.describe_topic("t").await.expect("describe");
    assert_eq!(d.config.retention_bytes, 1_000_000);
    assert_eq!(d.partitions.len(), 4);
    assert_eq!(h.delete_records("t", 1, 2).await.expect("trim"), 2);
    assert_eq!(h.list_topics(), vec!["t".to_string()]);
    h.delete_topic("t").await.expect("delete");
    assert!(h.list_topics().is_empty());
    assert!(matches!(
        h.fetch("t", 0, 0, 1, 1, Duration::ZERO).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_time_and_size_runs_on_its_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(Backend::Segment, dir.path());
    cfg.broker.retention_check_interval_ms = 100;
    let h = Broker::start(cfg).await.expect("start");
    let small = vec![
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.ms".to_string(), "60000".to_string()),
    ];
    h.create_topic("old", Some(1), small.clone())
        .await
        .expect("create");
    // Records stamped in 1970: far older than a minute.
    for i in 0..50 {
        h.publish(
            "old",
            Some(0),
            vec![batch_of(2, i, 300, Compression::None)],
            Acks::All,
        )
        .await
        .expect("publish");
    }
    let now = weir::broker::now_ms();
    h.publish(
        "old",
        Some(0),
        vec![batch_of(2, now, 300, Compression::None)],
        Acks::All,
    )
    .await
    .expect("publish fresh");
    let end = h.offsets("old", 0).await.expect("offsets").end;
    wait_until(|| async { h.offsets("old", 0).await.expect("o").start > 0 }).await;
    let o = h.offsets("old", 0).await.expect("offsets");
    assert_eq!(o.end, end);
    assert!(o.start <= end - 2, "the fresh batch stays");

    let by_size = vec![
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.ms".to_string(), "-1".to_string()),
        ("retention.bytes".to_string(), "20000".to_string()),
    ];
    h.create_topic("big", Some(1), by_size)
        .await
        .expect("create");
    for i in 0..100 {
        h.publish(
            "big",
            Some(0),
            vec![batch_of(2, now + i, 300, Compression::None)],
            Acks::All,
        )
        .await
        .expect("publish");
    }
    wait_until(|| async { h.offsets("big", 0).await.expect("o").size_bytes < 40_000 }).await;
    let o = h.offsets("big", 0).await.expect("offsets");
    assert!(
        o.size_bytes >= 20_000,
        "never below the limit: {}",
        o.size_bytes
    );
    assert!(o.start > 0);
    h.shutdown().await.expect("shutdown");
}

async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "condition not reached in 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A storage whose logs take `delay` per append: the slow disk of the backpressure test.
#[derive(Debug)]
struct SlowStorage {
    inner: weir_memory::MemoryStorage,
    delay: Duration,
    appends: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct SlowLog {
    inner: Arc<dyn PartitionLog>,
    delay: Duration,
    appends: Arc<AtomicUsize>,
}

#[async_trait]
impl PartitionLog for SlowLog {
    async fn append(&self, batches: Vec<Batch>) -> weir_storage::Result<AppendInfo> {
        tokio::time::sleep(self.delay).await;
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(batches).await
    }
    async fn read(&self, from: Offset, max_bytes: usize) -> weir_storage::Result<Vec<Batch>> {
        self.inner.read(from, max_bytes).await
    }
    fn offsets(&self) -> LogOffsets {
        self.inner.offsets()
    }
    fn reconfigure(&self, cfg: &weir_storage::LogConfig) {
        self.inner.reconfigure(cfg);
    }
    async fn offset_for_time(&self, ts: i64) -> weir_storage::Result<Option<Offset>> {
        self.inner.offset_for_time(ts).await
    }
    async fn delete_before(&self, offset: Offset) -> weir_storage::Result<Offset> {
        self.inner.delete_before(offset).await
    }
    async fn enforce_retention(&self, r: Retention, now: i64) -> weir_storage::Result<Offset> {
        self.inner.enforce_retention(r, now).await
    }
    async fn sync(&self) -> weir_storage::Result<()> {
        self.inner.sync().await
    }
    async fn compact(
        &self,
        policy: weir_storage::CompactionPolicy,
        now_ms: i64,
    ) -> weir_storage::Result<Option<weir_storage::CompactionStats>> {
        self.inner.compact(policy, now_ms).await
    }
    async fn save_snapshot(&self, snapshot: &[u8]) -> weir_storage::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self) -> weir_storage::Result<Option<Vec<u8>>> {
        self.inner.load_snapshot().await
    }
    async fn close(&self) -> weir_storage::Result<()> {
        self.inner.close().await
    }
}

#[async_trait]
impl Storage for SlowStorage {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn open_log(
        &self,
        tp: &TopicPartition,
        cfg: &LogConfig,
    ) -> weir_storage::Result<Arc<dyn PartitionLog>> {
        Ok(Arc::new(SlowLog {
            inner: self.inner.open_log(tp, cfg).await?,
            delay: self.delay,
            appends: self.appends.clone(),
        }))
    }
    async fn delete_log(&self, tp: &TopicPartition) -> weir_storage::Result<()> {
        self.inner.delete_log(tp).await
    }
    async fn list_logs(&self) -> weir_storage::Result<Vec<TopicPartition>> {
        self.inner.list_logs().await
    }
    async fn put_metadata(&self, k: &str, v: &[u8]) -> weir_storage::Result<()> {
        self.inner.put_metadata(k, v).await
    }
    async fn delete_metadata(&self, k: &str) -> weir_storage::Result<()> {
        self.inner.delete_metadata(k).await
    }
    async fn list_metadata(&self) -> weir_storage::Result<Vec<(String, Vec<u8>)>> {
        self.inner.list_metadata().await
    }
    async fn commit_offsets(
        &self,
        g: &str,
        o: &[(TopicPartition, weir_storage::CommittedOffset)],
    ) -> weir_storage::Result<()> {
        self.inner.commit_offsets(g, o).await
    }
    async fn fetch_offsets(
        &self,
        g: &str,
    ) -> weir_storage::Result<Vec<(TopicPartition, weir_storage::CommittedOffset)>> {
        self.inner.fetch_offsets(g).await
    }
    async fn delete_offsets(&self, g: &str, p: &[TopicPartition]) -> weir_storage::Result<()> {
        self.inner.delete_offsets(g, p).await
    }
    async fn put_group_state(&self, g: &str, state: &[u8]) -> weir_storage::Result<()> {
        self.inner.put_group_state(g, state).await
    }
    async fn group_state(&self, g: &str) -> weir_storage::Result<Option<Vec<u8>>> {
        self.inner.group_state(g).await
    }
    async fn list_groups(&self) -> weir_storage::Result<Vec<String>> {
        self.inner.list_groups().await
    }
    async fn delete_group(&self, g: &str) -> weir_storage::Result<()> {
        self.inner.delete_group(g).await
    }
    async fn close(&self) -> weir_storage::Result<()> {
        self.inner.close().await
    }
}

/// A memory broker whose appends each take `delay` (counted in `appends`), with a 2 MiB
/// partition queue and 256 KiB appends, and a one-partition `topic`.
async fn slow_broker(delay: Duration, appends: Arc<AtomicUsize>, topic: &str) -> BrokerHandle {
    let storage = Arc::new(SlowStorage {
        inner: weir_memory::MemoryStorage::new(),
        delay,
        appends,
    });
    let mut cfg = Config::default();
    cfg.storage.backend = Backend::Memory;
    cfg.broker.partition_queue_bytes = 2 * 1024 * 1024;
    cfg.broker.append_batch_bytes = 256 * 1024;
    let h = Broker::start_with_storage(cfg, storage)
        .await
        .expect("start");
    h.create_topic(topic, Some(1), vec![])
        .await
        .expect("create");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_log_pushes_back_instead_of_growing_memory() {
    let appends = Arc::new(AtomicUsize::new(0));
    let h = slow_broker(Duration::from_millis(50), appends.clone(), "slow").await;
    let batch = batch_of(10, 0, 10_000, Compression::None); // ~100 KB
    let mut accepted = 0usize;
    let mut busy = 0usize;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let h = h.clone();
        let b = batch.clone();
        tasks.push(tokio::spawn(async move {
            h.publish("slow", Some(0), vec![b], Acks::All).await
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => accepted += 1,
            Err(BrokerError::Busy {
                queued_bytes,
                max_bytes,
                ..
            }) => {
                assert!(queued_bytes <= max_bytes);
                busy += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(
        busy > 0,
        "a 2 MiB queue cannot take 6 MB faster than the log writes"
    );
    assert!(accepted >= 10);
    // Everything acknowledged is in the log, nothing refused is.
    let o = h.offsets("slow", 0).await.expect("offsets");
    assert_eq!(o.end, accepted as i64 * 10);
    // Group commit: fewer appends than accepted publishes.
    assert!(
        appends.load(Ordering::SeqCst) < accepted,
        "{} appends",
        appends.load(Ordering::SeqCst)
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_data_survive_a_restart() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = start(backend, dir.path()).await;
        h.create_topic("kept", Some(3), vec![("retention.ms".into(), "-1".into())])
            .await
            .expect("create");
        for p in 0..3 {
            h.publish("kept", Some(p), vec![one(&format!("p{p}"))], Acks::All)
                .await
                .expect("publish");
        }
        h.shutdown().await.expect("shutdown");
        assert!(h
            .publish("kept", Some(0), vec![one("late")], Acks::All)
            .await
            .is_err());
        let h = start(backend, dir.path()).await;
        assert_eq!(h.list_topics(), vec!["kept".to_string()], "{backend:?}");
        let d = h.describe_topic("kept").await.expect("describe");
        assert_eq!(d.config.retention_ms, -1);
        for p in 0..3 {
            assert_eq!(
                values(&read_all(&h, "kept", p).await),
                vec![format!("p{p}")]
            );
        }
        h.shutdown().await.expect("shutdown");
    }
}

/// Several publishes in flight per partition, through a queue that overflows: the refused
/// publish and everything sent behind it go again (idempotent, under a fresh producer id), so
/// the log holds every record once, in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_producer_keeps_order_through_a_full_queue() {
    use weir::{Producer, ProducerConfig, ProducerRecord};
    let h = slow_broker(
        Duration::from_millis(20),
        Arc::new(AtomicUsize::new(0)),
        "piped",
    )
    .await;
    let producer = Producer::new(
        h.clone(),
        ProducerConfig {
            linger: Duration::from_millis(1),
            batch_bytes: 100 * 1024,
            buffer_bytes: 16 * 1024 * 1024,
            max_in_flight: 5,
            ..ProducerConfig::default()
        },
    );
    let n = 8_000;
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let mut value = format!("{i:08}").into_bytes();
        value.resize(1000, b'.');
        deliveries.push(
            producer
                .send(ProducerRecord::new("piped", value).partition(0))
                .await,
        );
    }
    let mut offsets = Vec::with_capacity(n);
    for d in deliveries {
        offsets.push(d.await.expect("delivered").offset);
    }
    assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>(), "acked in order");
    let mut values = Vec::with_capacity(n);
    for b in read_all(&h, "piped", 0).await {
        for r in b.records().expect("records") {
            let v = r.record.value.expect("value");
            values.push(String::from_utf8_lossy(&v[..8]).into_owned());
        }
    }
    let expected: Vec<String> = (0..n).map(|i| format!("{i:08}")).collect();
    assert_eq!(values.len(), n, "each record once");
    assert!(values == expected, "in the order sent");
    h.shutdown().await.expect("shutdown");
}

/// A `LogAppendTime` topic stamps each batch with the broker's clock at its append (the
/// records then read as that time), and the acknowledgement says which time it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_topics_stamp_batches_with_the_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.storage.backend = Backend::Segment;
    cfg.data_dir = dir.path().to_path_buf();
    let h = Broker::start(cfg).await.expect("start");
    h.create_topic(
        "stamped",
        Some(1),
        vec![("message.timestamp.type".into(), "LogAppendTime".into())],
    )
    .await
    .expect("create");
    h.create_topic("created", Some(1), vec![])
        .await
        .expect("create");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    let before = now();
    // Producer timestamps from 1970.
    let (_, ack) = h
        .publish(
            "stamped",
            Some(0),
            vec![batch_of(3, 5, 10, Compression::Lz4)],
            Acks::All,
        )
        .await
        .expect("publish");
    let after = now();
    assert!(
        (before..=after).contains(&ack.log_append_time_ms),
        "{ack:?}"
    );
    let got = h
        .fetch("stamped", 0, 0, 1 << 20, 1, Duration::ZERO)
        .await
        .expect("fetch");
    let b = &got.batches[0];
    assert_eq!(b.max_timestamp(), ack.log_append_time_ms);
    let records = b.records().expect("decode");
    assert!(records
        .iter()
        .all(|r| r.record.timestamp_ms == ack.log_append_time_ms));
    // The time index follows: the batch is found by its append time, not by 1970.
    assert_eq!(
        h.list_offset("stamped", 0, OffsetSpec::Timestamp(before))
            .await
            .expect("by time"),
        Some(0)
    );
    let (_, ack) = h
        .publish(
            "created",
            Some(0),
            vec![batch_of(1, 5, 10, Compression::None)],
            Acks::All,
        )
        .await
        .expect("publish");
    assert_eq!(
        ack.log_append_time_ms, -1,
        "CreateTime topics keep the producer's time"
    );
    let described = h.describe_topic("stamped").await.expect("describe");
    assert!(described
        .config
        .entries()
        .contains(&("message.timestamp.type", "LogAppendTime".to_string())));
    h.shutdown().await.expect("shutdown");
}

/// A transport that counts the publishes and fetches its client starts, over a broker handle.
#[derive(Clone)]
struct CountingTransport {
    inner: BrokerHandle,
    publishes: Arc<AtomicUsize>,
    /// Publishes the broker refused as busy (a full partition queue).
    busy: Arc<AtomicUsize>,
    fetches: Arc<AtomicUsize>,
}

impl CountingTransport {
    fn new(inner: BrokerHandle) -> Self {
        CountingTransport {
            inner,
            publishes: Arc::default(),
            busy: Arc::default(),
            fetches: Arc::default(),
        }
    }
}

#[async_trait]
impl T for CountingTransport {
    async fn publish_queued(
        &self,
        topic: &str,
        partition: i32,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<weir::client::PublishOutcome, BrokerError> {
        use futures::FutureExt;
        self.publishes.fetch_add(1, Ordering::SeqCst);
        let busy = self.busy.clone();
        let outcome = T::publish_queued(&self.inner, topic, partition, batches, acks).await?;
        Ok(outcome
            .inspect(move |r| {
                if matches!(r, Err(BrokerError::Busy { .. })) {
                    busy.fetch_add(1, Ordering::SeqCst);
                }
            })
            .boxed())
    }
    async fn init_producer_id(&self, id: i64, epoch: i16) -> Result<(i64, i16), BrokerError> {
        T::init_producer_id(&self.inner, id, epoch).await
    }
    async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<(i32, weir::broker::PublishAck), BrokerError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        T::publish(&self.inner, topic, partition, batches, acks).await
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<weir::broker::FetchResult, BrokerError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        T::fetch(
            &self.inner,
            topic,
            partition,
            from,
            max_bytes,
            min_bytes,
            max_wait,
        )
        .await
    }
    async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, BrokerError> {
        T::list_offset(&self.inner, topic, partition, spec).await
    }
    async fn partitions(&self, topic: &str, create: bool) -> Result<u32, BrokerError> {
        T::partitions(&self.inner, topic, create).await
    }
    async fn join_group(
        &self,
        group: &str,
        join: weir::broker::JoinGroup,
    ) -> Result<weir::broker::JoinResult, BrokerError> {
        T::join_group(&self.inner, group, join).await
    }
    async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, bytes::Bytes)>,
    ) -> Result<weir::broker::SyncResult, BrokerError> {
        T::sync_group(&self.inner, group, member_id, generation, assignments).await
    }
    async fn heartbeat(&self, group: &str, member: &str, gen: i32) -> Result<(), BrokerError> {
        T::heartbeat(&self.inner, group, member, gen).await
    }
    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError> {
        T::leave_group(&self.inner, group, member_id).await
    }
    async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(TopicPartition, weir_storage::CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        T::commit_offsets(&self.inner, group, member_id, generation, offsets).await
    }
    async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, weir_storage::CommittedOffset)>, BrokerError> {
        T::fetch_offsets(&self.inner, group, partitions).await
    }
    async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> Result<(), BrokerError> {
        T::create_topic(&self.inner, name, partitions, configs).await
    }
    async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        T::delete_topic(&self.inner, name).await
    }
    async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        T::create_partitions(&self.inner, name, total).await
    }
    async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
    ) -> Result<(), BrokerError> {
        T::alter_topic_config(&self.inner, name, set, reset).await
    }
    async fn list_topics(&self) -> Result<Vec<String>, BrokerError> {
        weir::client::Transport::list_topics(&self.inner).await
    }
    async fn describe_topic(
        &self,
        name: &str,
    ) -> Result<weir::broker::TopicDescription, BrokerError> {
        T::describe_topic(&self.inner, name).await
    }
    async fn list_groups(&self) -> Result<Vec<(String, weir::broker::GroupState)>, BrokerError> {
        T::list_groups(&self.inner).await
    }
    async fn describe_group(
        &self,
        group: &str,
    ) -> Result<weir::broker::GroupDescription, BrokerError> {
        T::describe_group(&self.inner, group).await
    }
    async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        T::delete_group(&self.inner, group).await
    }
    async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: weir::broker::ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError> {
        T::reset_offsets(&self.inner, group, topic, to).await
    }
}

/// The producer keeps its publishes in flight while the application keeps sending: a batch
/// handed over while an earlier publish waits for its (slow) append is sent at once, up to
/// `max_in_flight`, instead of after the earlier one's acknowledgement (which drained the
/// pipeline on every round trip and cost a third of the throughput at small buffers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_sends_while_earlier_publishes_are_in_flight() {
    let appends = Arc::new(AtomicUsize::new(0));
    let h = slow_broker(Duration::from_secs(2), appends.clone(), "pipelined").await;
    let transport = CountingTransport::new(h.clone());
    let publishes = transport.publishes.clone();
    let producer = weir::Producer::new(transport, weir::ProducerConfig::default());
    let batch = |i: usize| {
        (0..10)
            .map(|j| weir::ProducerRecord::new("", format!("{i}-{j}")))
            .collect::<Vec<_>>()
    };
    let started = |n: usize| {
        let publishes = publishes.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(1);
            while publishes.load(Ordering::SeqCst) < n {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            true
        }
    };
    let first = producer.send_batch("pipelined", 0, batch(0)).await;
    assert!(started(1).await, "the first batch is sent");
    // Its append takes 2 s; the second batch goes out long before that.
    let second = producer.send_batch("pipelined", 0, batch(1)).await;
    assert!(
        started(2).await,
        "the second batch waited for the first one's acknowledgement"
    );
    assert_eq!(
        appends.load(Ordering::SeqCst),
        0,
        "no append has finished yet"
    );
    assert_eq!(first.await.expect("first").offset, 0);
    assert_eq!(second.await.expect("second").offset, 10);
    h.shutdown().await.expect("shutdown");
}

/// The consumer fetches ahead: when `poll` returns records, the partition's next fetch is
/// already on its way (it waits at the broker for new records while the application works),
/// as Kafka's consumers prefetch; before, each `poll` started its fetch only once called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_fetches_ahead_while_the_application_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(Backend::Memory, dir.path()).await;
    h.create_topic("ahead", Some(1), vec![])
        .await
        .expect("create");
    h.publish(
        "ahead",
        Some(0),
        vec![batch_of(5, 0, 10, Compression::None)],
        Acks::All,
    )
    .await
    .expect("publish");
    let transport = CountingTransport::new(h.clone());
    let fetches = transport.fetches.clone();
    let mut consumer = weir::Consumer::new(transport, weir::ConsumerConfig::default());
    let tp = TopicPartition::new("ahead", 0);
    consumer.assign(vec![tp.clone()]);
    let got = consumer.poll(Duration::from_secs(5)).await.expect("poll");
    assert_eq!(got.len(), 5);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "the fetch that brought the records, and the next one from offset 5"
    );
    // The fetch in flight brings what is published next.
    h.publish(
        "ahead",
        Some(0),
        vec![batch_of(3, 0, 10, Compression::None)],
        Acks::All,
    )
    .await
    .expect("publish");
    let got = consumer.poll(Duration::from_secs(5)).await.expect("poll");
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6, 7]);
    // A seek drops the fetch ahead: the next poll reads from the new position.
    consumer.seek(&tp, 1);
    let got = consumer.poll(Duration::from_secs(5)).await.expect("poll");
    assert_eq!(got.first().map(|r| r.offset), Some(1));
    h.shutdown().await.expect("shutdown");
}

/// A producer that outruns a slow partition gets some of its publishes refused as busy (the
/// partition's queue is bounded) and sends them again, with everything it had sent behind
/// them, under a fresh producer id: every record is written once, in the order sent, and
/// every delivery reports the offset the record got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_partition_makes_the_producer_resend_in_order_without_duplicates() {
    let appends = Arc::new(AtomicUsize::new(0));
    let h = slow_broker(Duration::from_millis(20), appends, "resent").await;
    let transport = CountingTransport::new(h.clone());
    let busy = transport.busy.clone();
    let producer = weir::Producer::new(transport, weir::ProducerConfig::default());
    let (batches, per) = (60usize, 1000usize);
    let mut deliveries = Vec::new();
    for b in 0..batches {
        let records = (0..per)
            .map(|i| weir::ProducerRecord::new("", format!("{:06}-{:80}", b * per + i, "")))
            .collect();
        deliveries.push(producer.send_batch("resent", 0, records).await);
    }
    for (b, d) in deliveries.into_iter().enumerate() {
        let meta = d.await.expect("delivered");
        assert_eq!(
            meta.offset,
            (b * per) as i64,
            "batch {b} got the offset of its place"
        );
    }
    assert!(
        busy.load(Ordering::SeqCst) > 0,
        "the partition's queue filled (the test must exercise the resend)"
    );
    let mut got = Vec::new();
    let mut from = 0;
    while got.len() < batches * per {
        let f = h
            .fetch("resent", 0, from, 4 << 20, 1, Duration::from_secs(1))
            .await
            .expect("fetch");
        for b in &f.batches {
            for r in b.records().expect("records") {
                if r.offset >= from {
                    got.push(
                        String::from_utf8(r.record.value.expect("value").to_vec()).expect("utf8"),
                    );
                }
            }
            from = b.next_offset();
        }
    }
    let expected: Vec<String> = (0..batches * per)
        .map(|i| format!("{i:06}-{:80}", ""))
        .collect();
    assert!(got == expected, "every record once, in order");
    assert_eq!(
        h.offsets("resent", 0).await.expect("offsets").end,
        (batches * per) as i64
    );
    h.shutdown().await.expect("shutdown");
}

/// A batch of one keyed record (a `None` value is a tombstone), stamped now.
fn keyed(key: &str, value: Option<&str>) -> Batch {
    let mut b = weir_storage::BatchBuilder::new(Compression::Lz4);
    b.push(weir_storage::Record {
        timestamp_ms: weir::broker::now_ms(),
        key: Some(key.as_bytes().to_vec().into()),
        value: value.map(|v| format!("{v:-<300}").into_bytes().into()),
        headers: Vec::new(),
    });
    b.build(0).expect("build")
}

/// `(offset, key, value)` of every record served, values without their padding.
async fn keyed_records(h: &BrokerHandle, topic: &str) -> Vec<(Offset, String, Option<String>)> {
    read_all(h, topic, 0)
        .await
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .map(|r| {
            let key = r.record.key.expect("key");
            let value = r
                .record
                .value
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            (
                r.offset,
                String::from_utf8(key.to_vec()).expect("utf8"),
                value.map(|v| v.trim_end_matches('-').to_string()),
            )
        })
        .collect()
}

/// A compacted topic on every backend, through the broker's own timer: each key keeps its
/// latest value at its original offset, a deleted key (tombstone) disappears once
/// `delete.retention.ms` has passed, a keyless record is refused with `InvalidRecord`, the
/// result survives a restart, and a `delete` topic altered to `compact` gets compacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_keep_each_keys_latest_value() {
    for backend in [Backend::Memory, Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(backend, dir.path());
        cfg.broker.retention_check_interval_ms = 50;
        let h = Broker::start(cfg.clone()).await.expect("start");
        let settings = |policy: &str| {
            vec![
                ("cleanup.policy".to_string(), policy.to_string()),
                ("segment.bytes".to_string(), "1024".to_string()),
                ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
                ("delete.retention.ms".to_string(), "0".to_string()),
            ]
        };
        h.create_topic("table", Some(1), settings("compact"))
            .await
            .expect("create");
        let err = h
            .publish("table", Some(0), vec![one("no key")], Acks::All)
            .await
            .expect_err("a keyless record");
        assert!(matches!(err, BrokerError::InvalidRecord(_)), "{err:?}");
        assert_eq!(err.kafka_code(), 87);
        // 40 updates of 4 keys, then a tombstone for k3 and two more writes.
        for i in 0..40 {
            let b = keyed(&format!("k{}", i % 4), Some(&format!("v{i}")));
            h.publish("table", Some(0), vec![b], Acks::All)
                .await
                .expect("publish");
        }
        for b in [
            keyed("k3", None),
            keyed("k0", Some("v40")),
            keyed("k9", Some("last")),
        ] {
            h.publish("table", Some(0), vec![b], Acks::All)
                .await
                .expect("publish");
        }
        // Writes to another key push the records above out of the head (the segment
        // backend's active segment), so that every backend compacts all of them.
        for i in 0..15 {
            let b = keyed("filler", Some(&format!("f{i}")));
            h.publish("table", Some(0), vec![b], Acks::All)
                .await
                .expect("publish");
        }
        let expected = vec![
            (37, "k1".to_string(), Some("v37".to_string())),
            (38, "k2".to_string(), Some("v38".to_string())),
            (41, "k0".to_string(), Some("v40".to_string())),
            (42, "k9".to_string(), Some("last".to_string())),
        ];
        let k_records = |h: BrokerHandle| async move {
            let all = keyed_records(&h, "table").await;
            all.into_iter()
                .filter(|r| r.1.starts_with('k'))
                .collect::<Vec<_>>()
        };
        wait_until(|| async { k_records(h.clone()).await == expected }).await;
        let o = h.offsets("table", 0).await.expect("offsets");
        assert_eq!((o.start, o.end), (0, 58), "{backend:?}");
        // A fetch from an offset compaction removed serves what follows it.
        let r = h
            .fetch("table", 0, 3, 1 << 20, 1, Duration::ZERO)
            .await
            .expect("fetch");
        assert_eq!(r.batches[0].base_offset(), 37, "{backend:?}");
        let d = h.describe_topic("table").await.expect("describe");
        assert_eq!(d.config.cleanup_policy.as_str(), "compact");

        h.create_topic("log", Some(1), settings("delete"))
            .await
            .expect("create");
        for i in 0..10 {
            let b = keyed("same", Some(&format!("v{i}")));
            h.publish("log", Some(0), vec![b], Acks::All)
                .await
                .expect("publish");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(keyed_records(&h, "log").await.len(), 10, "{backend:?}");
        h.alter_topic_config("log", vec![("cleanup.policy".into(), "compact".into())])
            .await
            .expect("alter");
        for i in 0..15 {
            let b = keyed("other", Some(&format!("x{i}")));
            h.publish("log", Some(0), vec![b], Acks::All)
                .await
                .expect("publish");
        }
        let same = |h: BrokerHandle| async move {
            let all = keyed_records(&h, "log").await;
            all.iter().filter(|r| r.1 == "same").count()
        };
        wait_until(|| async { same(h.clone()).await == 1 }).await;
        h.shutdown().await.expect("shutdown");

        if backend != Backend::Memory {
            let h = Broker::start(cfg).await.expect("restart");
            assert_eq!(k_records(h.clone()).await, expected, "{backend:?}");
            let b = keyed("k1", Some("after restart"));
            assert_eq!(
                h.publish("table", Some(0), vec![b], Acks::All)
                    .await
                    .expect("publish")
                    .1
                    .base_offset,
                58
            );
            h.shutdown().await.expect("shutdown");
        }
    }
}

/// A topic's `compression.type` other than `producer`: every batch is stored in that codec,
/// whatever the producer used, with its offsets, producer identity and records unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_compression_type_recompresses_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start(Backend::Segment, dir.path()).await;
    h.create_topic(
        "zipped",
        Some(1),
        vec![("compression.type".into(), "zstd".into())],
    )
    .await
    .expect("create");
    let sent: Vec<Batch> = Compression::ALL
        .iter()
        .map(|&c| batch_of(4, 1_000, 200, c))
        .collect();
    for b in &sent {
        h.publish("zipped", Some(0), vec![b.clone()], Acks::All)
            .await
            .expect("publish");
    }
    let stored = read_all(&h, "zipped", 0).await;
    assert_eq!(stored.len(), sent.len());
    for (s, b) in stored.iter().zip(&sent) {
        assert_eq!(s.compression(), Ok(Compression::Zstd));
        let records = |b: &Batch| -> Vec<_> {
            b.records()
                .expect("decode")
                .into_iter()
                .map(|r| r.record)
                .collect()
        };
        assert_eq!(records(s), records(b));
    }
    assert_eq!(h.offsets("zipped", 0).await.expect("offsets").end, 20);
    // `producer` keeps each batch as sent.
    h.alter_topic_config(
        "zipped",
        vec![("compression.type".into(), "producer".into())],
    )
    .await
    .expect("alter");
    let lz4 = batch_of(2, 1_000, 50, Compression::Lz4);
    h.publish("zipped", Some(0), vec![lz4], Acks::All)
        .await
        .expect("publish");
    let last = h
        .fetch("zipped", 0, 20, 1 << 20, 1, Duration::ZERO)
        .await
        .expect("fetch");
    assert_eq!(last.batches[0].compression(), Ok(Compression::Lz4));
    h.shutdown().await.expect("shutdown");
}

/// `min.insync.replicas` above the one replica of a single broker fails acks=all publishes
/// with NotEnoughReplicas (Kafka's 19), not acks=1; `max.compaction.lag.ms` rolls a compacted
/// topic's active segment (here long before `segment.ms`), so its records get compacted. (That
/// a little dirt past the lag makes a pass due is the conformance model check's part.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_and_max_compaction_lag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(Backend::Segment, dir.path());
    cfg.broker.retention_check_interval_ms = 50;
    let h = Broker::start(cfg).await.expect("start");
    h.create_topic(
        "replicated",
        Some(1),
        vec![("min.insync.replicas".into(), "2".into())],
    )
    .await
    .expect("create");
    let err = h
        .publish("replicated", Some(0), vec![one("x")], Acks::All)
        .await
        .expect_err("acks=all");
    assert!(
        matches!(err, BrokerError::NotEnoughReplicas { required: 2 }),
        "{err:?}"
    );
    assert_eq!(err.kafka_code(), 19);
    h.publish("replicated", Some(0), vec![one("x")], Acks::Leader)
        .await
        .expect("acks=1 needs only the leader");
    assert_eq!(h.offsets("replicated", 0).await.expect("offsets").end, 1);

    h.create_topic(
        "lagged",
        Some(1),
        vec![
            ("cleanup.policy".into(), "compact".into()),
            ("min.cleanable.dirty.ratio".into(), "0.99".into()),
            ("max.compaction.lag.ms".into(), "100".into()),
        ],
    )
    .await
    .expect("create");
    for i in 0..5 {
        let b = keyed("a", Some(&format!("v{i}")));
        h.publish("lagged", Some(0), vec![b], Acks::All)
            .await
            .expect("publish");
    }
    // The active segment rolls after max.compaction.lag.ms: a later append starts a new one.
    tokio::time::sleep(Duration::from_millis(150)).await;
    h.publish("lagged", Some(0), vec![keyed("b", Some("head"))], Acks::All)
        .await
        .expect("publish");
    let only_latest = |h: BrokerHandle| async move {
        let r = keyed_records(&h, "lagged").await;
        r.iter().map(|r| r.0).collect::<Vec<_>>() == vec![4, 5]
    };
    wait_until(|| only_latest(h.clone())).await;
    h.shutdown().await.expect("shutdown");
}
