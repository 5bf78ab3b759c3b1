//! kill -9 with a transaction open: a `weir serve` child killed while a librdkafka transactional
//! producer (the `rdkafka` crate) has acknowledged but undecided records. After the restart,
//! read_committed consumers never see them, the transaction stays open (its partition's last
//! stable offset held) until the producer's next instance aborts it, and what was committed
//! before the kill is all there.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

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
