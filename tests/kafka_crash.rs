//! kill -9 of a `weir serve` child under real clients (librdkafka through the `rdkafka` crate).
//!
//! - With a transaction open: the transactional producer has acknowledged but undecided
//!   records. After the restart, read_committed consumers never see them, the transaction stays
//!   open (its partition's last stable offset held) until the producer's next instance aborts
//!   it, and what was committed before the kill is all there.
//! - Under load: an idempotent producer keeps sending through the kill and the restart on the
//!   same port. Every record it was told was delivered is there exactly once, in the order it
//!   was sent (the batches in flight at the kill are sent again and recognised as duplicates by
//!   the producer state the restarted server rebuilt), and a group's committed offsets are what
//!   they were.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(30);

fn producer(boot: &str) -> ThreadedProducer<DefaultProducerContext> {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("transactional.id", "crash-tx")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    p.init_transactions(T).expect("init transactions");
    p
}

fn send(p: &ThreadedProducer<DefaultProducerContext>, values: &[String]) {
    for v in values {
        p.send(BaseRecord::<(), String>::to("crash").payload(v))
            .map_err(|(e, _)| e)
            .expect("queued");
    }
    p.flush(T).expect("delivered");
}

/// Every value of partition 0 up to its end, at `isolation`.
fn read(boot: &str, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("group.id", "readers")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("crash", 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + T;
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into())
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consumer error {e}"),
        }
    }
    panic!("{isolation}: no end of partition in time; read {out:?}");
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_survives_kill_9_undecided_and_its_next_instance_aborts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = common::Server::in_dir(dir.path(), "");
    let boot = first.kafka.to_string();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .create()
        .expect("admin");
    admin
        .create_topics(
            &[NewTopic::new("crash", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    drop(admin);
    let (committed, open) = (values("committed-", 10), values("open-", 5));
    let b = boot.clone();
    let (c2, o2) = (committed.clone(), open.clone());
    tokio::task::spawn_blocking(move || {
        let p = producer(&b);
        p.begin_transaction().expect("begin");
        send(&p, &c2);
        p.commit_transaction(T).expect("commit");
        p.begin_transaction().expect("begin");
        send(&p, &o2);
        // Acknowledged, undecided: the server dies now.
        std::mem::forget(p);
    })
    .await
    .expect("first producer");
    drop(first); // SIGKILL

    let second = common::Server::in_dir(dir.path(), "");
    let boot = second.kafka.to_string();
    let b = boot.clone();
    let (c2, o2) = (committed.clone(), open.clone());
    tokio::task::spawn_blocking(move || {
        assert_eq!(read(&b, "read_committed"), c2, "only what was committed");
        let all = read(&b, "read_uncommitted");
        assert_eq!(all.len(), 15, "{all:?}");
        assert!(o2.iter().all(|v| all.contains(v)), "{all:?}");
        // The next instance aborts the open transaction and goes on.
        let p = producer(&b);
        p.begin_transaction().expect("begin");
        send(&p, &["after".to_string()]);
        p.commit_transaction(T).expect("commit");
        let mut want = c2.clone();
        want.push("after".into());
        assert_eq!(read(&b, "read_committed"), want);
    })
    .await
    .expect("after the restart");
    second.terminate();
}

/// What the load test's producer was told: each delivered record's value number, partition and
/// offset, and every failure.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicUsize,
    acked: Mutex<Vec<(usize, i32, i64)>>,
    failed: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct Acks(Arc<Deliveries>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                let n = value_number(m.payload());
                self.0
                    .acked
                    .lock()
                    .unwrap()
                    .push((n, m.partition(), m.offset()));
                self.0.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Err((e, m)) => self.0.failed.lock().unwrap().push(format!(
                "{e} ({:?})",
                m.payload().map(String::from_utf8_lossy)
            )),
        }
    }
}

/// N of a value `value-N` the load test sent.
fn value_number(payload: Option<&[u8]>) -> usize {
    payload
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|v| v.strip_prefix("value-")?.parse().ok())
        .expect("a value the test sent")
}

/// Waits until `n` records have been delivered in all; fails at the first failed delivery.
fn until_delivered(d: &Deliveries, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.delivered.load(Ordering::SeqCst) < n {
        let failed = d.failed.lock().unwrap();
        assert!(failed.is_empty(), "delivery failures: {failed:?}");
        assert!(Instant::now() < deadline, "{n} deliveries in time");
        drop(failed);
        std::thread::sleep(Duration::from_millis(10));
    }
}

const LOAD_PARTITIONS: i32 = 3;

/// A group member of `group` reading "load" from `boot`.
fn member(boot: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    c.subscribe(&["load"]).expect("subscribe");
    c
}

/// The committed offsets of "load" in `group`, by partition, asked by a consumer that does not
/// join the group (a member that is not polled may leave its OffsetFetch waiting on a
/// rebalance it never serves).
fn committed_offsets(boot: &str, group: &str) -> Vec<(i32, Offset)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..LOAD_PARTITIONS {
        tpl.add_partition("load", p);
    }
    let committed = c.committed_offsets(tpl, T).expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

/// Every record of "load", partition by partition: (value number, offset).
fn read_load(boot: &str) -> HashMap<i32, Vec<(usize, i64)>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("group.id", "load-readers")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..LOAD_PARTITIONS {
        tpl.add_partition_offset("load", p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out: HashMap<i32, Vec<(usize, i64)>> = HashMap::new();
    let mut ended = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ended.len() < LOAD_PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "the end of every partition in time"
        );
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                let n = value_number(m.payload());
                out.entry(m.partition()).or_default().push((n, m.offset()));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("consumer error {e}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_an_idempotent_producer_segment_default_durability() {
    kill_9_under_an_idempotent_producer("").await;
}

/// Page-cache durability: what survives the death of the process (not of the machine) is all
/// that was acknowledged, as the records were written to the OS before the acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_an_idempotent_producer_segment_without_fsync() {
    kill_9_under_an_idempotent_producer("[topic_defaults]\ndurability = \"none\"\n").await;
}

/// sled keeps writes in its own buffers until it flushes: `always` is its crash-safe setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_an_idempotent_producer_sled() {
    kill_9_under_an_idempotent_producer("[storage]\nbackend = \"sled\"\n").await;
}

/// The load test on a server configured with `extra` (TOML).
async fn kill_9_under_an_idempotent_producer(extra: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A free port of its own, so that the restarted server listens where the clients were.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let kafka = format!("127.0.0.1:{port}");
    let first = common::Server::in_dir_at(dir.path(), &kafka, extra);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new(
                "load",
                LOAD_PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    drop(admin);

    let deliveries = Arc::new(Deliveries::default());
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (boot, acks, stop) = (kafka.clone(), Acks(deliveries.clone()), stop.clone());
        std::thread::spawn(move || {
            let p: ThreadedProducer<Acks> = ClientConfig::new()
                .set("bootstrap.servers", &boot)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .set("reconnect.backoff.ms", "50")
                .set("reconnect.backoff.max.ms", "200")
                .set("message.timeout.ms", "120000")
                .create_with_context(acks)
                .expect("producer");
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let (key, value) = (format!("key-{}", sent % 40), format!("value-{sent}"));
                match p.send(BaseRecord::to("load").key(&key).payload(&value)) {
                    Ok(()) => sent += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err((e, _)) => panic!("send: {e}"),
                }
                // ~50,000 records/s: the kill comes in the middle of the stream.
                if sent.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            p.flush(Duration::from_secs(120))
                .expect("everything delivered");
            sent
        })
    };

    // A member of group "live" consumes through the kill and the restart, committing as it goes,
    // until it has seen every offset up to `ends` (known once the producer is done).
    let ends_slot: Arc<Mutex<Option<HashMap<i32, i64>>>> = Arc::default();
    let live = {
        let (boot, ends) = (kafka.clone(), ends_slot.clone());
        std::thread::spawn(move || {
            let c = member(&boot, "live");
            let mut seen: HashMap<i32, BTreeSet<i64>> = HashMap::new();
            let (mut read, mut errors) = (0usize, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                if let Some(ends) = &*ends.lock().unwrap() {
                    let caught_up = ends.iter().all(|(p, end)| {
                        *end == 0 || seen.get(p).and_then(|o| o.last()) == Some(&(end - 1))
                    });
                    if caught_up {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "the live member caught up in time"
                );
                match c.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(m)) => {
                        seen.entry(m.partition()).or_default().insert(m.offset());
                        read += 1;
                        if read.is_multiple_of(5_000) {
                            // Fails while the server is down: the next one covers it.
                            let _ = c.commit_consumer_state(CommitMode::Async);
                        }
                    }
                    // The server's death reaches the member as transport errors.
                    Some(Err(e)) => errors.push(e.to_string()),
                }
            }
            match c.commit_consumer_state(CommitMode::Sync) {
                // Nothing new since its last commit.
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => panic!("the last commit: {e}"),
            }
            println!("the live member read {read} records; errors: {errors:?}");
            (seen, read)
        })
    };

    until_delivered(&deliveries, 20_000);
    // A group member reads part of the stream and commits where it is.
    let b = kafka.clone();
    let before = tokio::task::spawn_blocking(move || {
        let c = member(&b, "resume");
        let mut read = 0;
        let deadline = Instant::now() + T;
        while read < 5_000 {
            assert!(Instant::now() < deadline, "5,000 records in time");
            match c.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(_)) => read += 1,
                Some(Err(e)) => panic!("consumer error {e}"),
            }
        }
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        let committed = committed_offsets(&b, "resume");
        assert!(
            committed
                .iter()
                .any(|(_, o)| matches!(o, Offset::Offset(n) if *n > 0)),
            "{committed:?}"
        );
        committed
    })
    .await
    .expect("group member");
    let at_kill = deliveries.delivered.load(Ordering::SeqCst);
    first.kill();
    let second = common::Server::in_dir_at(dir.path(), &kafka, extra);
    // The producer goes on into the restarted server.
    until_delivered(&deliveries, at_kill + 20_000);
    stop.store(true, Ordering::SeqCst);
    let sent = tokio::task::spawn_blocking(move || producer.join().expect("producer"))
        .await
        .expect("join");

    println!("{sent} records sent, {at_kill} delivered before the kill");
    let failed = deliveries.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "delivery failures: {failed:?}");
    let acked = deliveries.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), sent, "every record sent was delivered");
    let b = kafka.clone();
    let (stored, after) =
        tokio::task::spawn_blocking(move || (read_load(&b), committed_offsets(&b, "resume")))
            .await
            .expect("after the restart");
    assert_eq!(after, before, "the group's committed offsets after kill -9");

    // Exactly once, at the offset the producer was told, in the order sent (per key, and so per
    // partition: a key's records share one).
    let mut seen = vec![false; sent];
    for (partition, records) in &stored {
        for pair in records.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "partition {partition} out of order: {pair:?}"
            );
        }
        for &(n, _) in records {
            assert!(!seen[n], "value-{n} stored twice");
            seen[n] = true;
        }
    }
    let stored_at: HashMap<usize, (i32, i64)> = stored
        .iter()
        .flat_map(|(p, records)| records.iter().map(move |&(n, o)| (n, (*p, o))))
        .collect();
    for (n, p, o) in acked {
        assert_eq!(
            stored_at.get(&n),
            Some(&(p, o)),
            "value-{n} where its delivery said"
        );
    }

    // The live member saw every offset, each once: the restarted broker knew its group and
    // generation (no rebalance, so no rewind to its last commit), and its group committed the
    // ends.
    let ends: HashMap<i32, i64> = (0..LOAD_PARTITIONS)
        .map(|p| {
            let end = stored
                .get(&p)
                .and_then(|r| r.last())
                .map_or(0, |&(_, o)| o + 1);
            (p, end)
        })
        .collect();
    *ends_slot.lock().unwrap() = Some(ends.clone());
    let (seen, read) = tokio::task::spawn_blocking(move || live.join().expect("live member"))
        .await
        .expect("join");
    assert_eq!(read, sent, "the live member read each record once");
    for (p, end) in &ends {
        let offsets = seen.get(p).cloned().unwrap_or_default();
        assert_eq!(
            offsets.len() as i64,
            *end,
            "partition {p}: every offset below {end} consumed"
        );
    }
    let b = kafka.clone();
    let live_committed = tokio::task::spawn_blocking(move || committed_offsets(&b, "live"))
        .await
        .expect("committed");
    let mut want: Vec<(i32, Offset)> = ends.iter().map(|(p, e)| (*p, Offset::Offset(*e))).collect();
    want.sort_by_key(|(p, _)| *p);
    assert_eq!(
        live_committed, want,
        "the live group committed every partition's end"
    );
    second.terminate();
}
