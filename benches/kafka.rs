//! The Kafka path against the native path, in the same run (BENCHMARKS.md, issue 5):
//!
//! ```sh
//! cargo bench --bench kafka                          # 3 runs of 1,000,000 records
//! KAFKA_BENCH_RUNS=5 KAFKA_BENCH_RECORDS=2000000 cargo bench --bench kafka
//! KAFKA_BENCH_COMPARE=tansu=127.0.0.1:9092 cargo bench --bench kafka   # side by side
//! ```
//!
//! One `weir serve` child process (segment storage, `interval` durability, its Kafka and
//! native listeners on free ports). Per run, on fresh single-partition topics:
//! - librdkafka (the `rdkafka` crate): produce N records of 100 bytes (`linger.ms=5`,
//!   `batch.size=1000000`, acks=all, librdkafka's default queue of 100,000 records, waiting
//!   for room as a producing application does), then consume them with librdkafka's default fetch
//!   settings (printing the longest wait between two records and where it came: librdkafka's
//!   1 s fetch backoff), and again with `fetch.queue.backoff.ms=10`;
//! - the same librdkafka through its batch calls, as an application that moves many records
//!   at once uses it: `rd_kafka_produce_batch` (10,000 records per call, copied, partition 0)
//!   and `rd_kafka_consume_batch_queue` (up to 10,000 per call, what confluent-kafka's
//!   `Consumer.consume(num_messages)` calls), same settings otherwise;
//! - the same batch calls against an endpoint in this process that stores nothing (Weir's
//!   codec: every produced batch acknowledged at once, every fetch answered from one prepared
//!   batch): librdkafka's own ceiling on this machine, in the same run, so that Weir's figures
//!   read as a share of it and its ratio to the native path as the best any Kafka path could
//!   show with this client;
//! - kcat (Debian's package, its own librdkafka): `kcat -P -l` from a file of N lines with
//!   the same producer settings, then `kcat -C` with librdkafka's defaults;
//! - a lean Kafka client built on Weir's own codec (batches of 9,000 records, 5 produce
//!   requests in flight; one fetch at a time, every record decoded): the broker's Kafka path
//!   with a client as cheap as the native one;
//! - the same load through the native protocol with `weir bench --sequential` (batches of
//!   1,000 handed to the producer) and `weir bench --per-record` (record by record, as
//!   librdkafka's API is used).
//!
//! The CPU time the server and the librdkafka clients spend per million records is printed
//! with each run: it shows which side bounds a figure.
//!
//! With `KAFKA_BENCH_COMPARE=NAME=HOST:PORT`, every run also takes the `rdkafka` phases to
//! that (already running) Kafka-compatible broker, before or after Weir's in alternate runs,
//! and the median of the runs' Weir/other ratios is printed last
//! (`scripts/bench-kafka-compare.sh` does this with tansu, a Kafka-compatible Rust broker, on
//! its in-memory storage).
//!
//! With `KAFKA_BENCH_CLIENT_PRELOAD=/path/to/libmalloc.so`, every run also produces (to fresh
//! topics) and consumes Weir's batch-call topic twice more through the batch calls, each time
//! in a child process of this bench, once as it is and once with that library in `LD_PRELOAD`
//! (the same client code; librdkafka's own `malloc` calls go to the preloaded
//! allocator): the native client runs on mimalloc (the `weir` binary's allocator), librdkafka
//! on glibc's `malloc`, whose arena lock its fetch thread (one allocation per record) and the
//! application thread (one free per record) contend for. Debian's `libmimalloc2.0` gives the
//! like-for-like comparison:
//! `KAFKA_BENCH_CLIENT_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 cargo bench --bench kafka`.
//!
//! Client and server share the machine's cores. Medians of the runs are printed last.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(dir: &std::path::Path) -> (Server, SocketAddr, SocketAddr) {
    let config = dir.join("weir.toml");
    let data = dir.join("data").display().to_string();
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[listeners]\nnative = \"127.0.0.1:0\"\nkafka = \"127.0.0.1:0\"\n"
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .expect("weir serve");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut native, mut kafka) = (None, None);
    for line in lines.map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("weir: native listener on ") {
            native = a.trim().parse().ok();
        }
        if let Some(a) = line.strip_prefix("weir: kafka listener on ") {
            kafka = a.trim().parse().ok();
        }
        if native.is_some() && kafka.is_some() {
            break;
        }
    }
    (
        Server(child),
        native.expect("native listener"),
        kafka.expect("kafka listener"),
    )
}

/// Deletes a topic once its phases are done, so that every phase writes into the same state of
/// the page cache (not behind gigabytes of earlier phases; BENCHMARKS.md, native protocol).
async fn delete(boot: &str, topic: &str) {
    let r = admin(boot)
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .expect("delete");
    assert!(r.iter().all(Result::is_ok), "{r:?}");
}

fn admin(boot: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", boot)
        .create()
        .expect("admin")
}

async fn create(boot: &str, topic: &str) {
    let r = admin(boot)
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(r.iter().all(Result::is_ok), "{r:?}");
}

/// librdkafka's own default for `queue.buffering.max.messages`: the records a producer holds
/// that the broker has not acknowledged yet. The producers below wait for room (serving
/// delivery reports) before handing over more, as an application that produces without end
/// must. A queue that held all `n` records instead made a fresh producer touch ~300 MB of new
/// memory per million records (~73,000 page faults, 0.2 s of system time) and ran it 25–35%
/// slower than one that reuses its queue's memory (`KAFKA_BENCH_PRODUCER_QUEUE=1000000` with
/// the client child under `/usr/bin/time` shows it; BENCHMARKS.md, session 14).
const PRODUCER_QUEUE: u64 = 100_000;

/// [`PRODUCER_QUEUE`], or `KAFKA_BENCH_PRODUCER_QUEUE` if set.
fn producer_queue() -> u64 {
    static QUEUE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *QUEUE.get_or_init(|| {
        std::env::var("KAFKA_BENCH_PRODUCER_QUEUE").map_or(PRODUCER_QUEUE, |v| {
            v.parse()
                .expect("KAFKA_BENCH_PRODUCER_QUEUE: a number of records")
        })
    })
}

/// The benchmark's producer settings (issue 5's): `linger.ms=5`, `batch.size=1000000`,
/// acks=all, and librdkafka's default queue size ([`producer_queue`]).
fn producer_config(boot: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", boot)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("acks", "all")
        .set("queue.buffering.max.messages", producer_queue().to_string());
    config
}

/// Serves delivery reports until librdkafka's queue has room for `k` more records.
fn wait_for_room(producer: &BaseProducer, k: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count().max(0) as u64 + k > producer_queue() {
        assert!(
            Instant::now() < deadline,
            "no room in librdkafka's queue in 120 s"
        );
        serve_deliveries(producer);
    }
}

/// Waits up to 1 ms for librdkafka's next event and serves it: a delivery report's records
/// are checked and released. Not the rdkafka crate's `poll`, which keeps polling until its
/// timeout, without blocking once less than a millisecond is left: a bench producer waiting
/// for room that way spun on `clock_gettime` for 8% of its profile, a core's share taken
/// from librdkafka's own threads. (A C application's `rd_kafka_poll` blocks until an event.)
#[allow(unsafe_code)] // librdkafka's event API has no safe wrapper for this in the crate
fn serve_deliveries(producer: &BaseProducer) {
    use rdkafka::bindings as rd;
    // SAFETY: a valid client handle; the queue reference taken here is released below.
    let queue = unsafe { rd::rd_kafka_queue_get_main(producer.client().native_ptr()) };
    // SAFETY: a valid queue; an event returned is ours until destroyed below.
    let event = unsafe { rd::rd_kafka_queue_poll(queue, 1) };
    // SAFETY: the reference taken above.
    unsafe { rd::rd_kafka_queue_destroy(queue) };
    if event.is_null() {
        return;
    }
    // SAFETY: a valid event, destroyed once, after the last use of its messages.
    unsafe {
        match rd::rd_kafka_event_type(event) {
            rd::RD_KAFKA_EVENT_DR => loop {
                let m = rd::rd_kafka_event_message_next(event);
                if m.is_null() {
                    break;
                }
                assert_eq!(
                    (*m).err,
                    rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    "delivery failed"
                );
            },
            rd::RD_KAFKA_EVENT_ERROR => eprintln!(
                "librdkafka: {:?}",
                std::ffi::CStr::from_ptr(rd::rd_kafka_event_error_string(event))
            ),
            _ => {}
        }
        rd::rd_kafka_event_destroy(event);
    }
}

/// Records/s producing `n` records of 100 bytes with librdkafka, one `send` per record,
/// until the last delivery report.
fn produce(boot: &str, topic: &str, n: u64) -> f64 {
    let producer: BaseProducer = producer_config(boot).create().expect("producer");
    let value = [b'w'; 100];
    let start = Instant::now();
    for _ in 0..n {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    wait_for_room(&producer, 1);
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    await_deliveries(&producer);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Returns once every delivery report is in ([`serve_deliveries`]). Not the rdkafka crate's
/// `flush`: it polls in steps of 100 ms, a fixed ~100 ms added to each run (a quarter of a
/// 1 M record run).
fn await_deliveries(producer: &BaseProducer) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while producer.in_flight_count() > 0 {
        assert!(Instant::now() < deadline, "not delivered in 120 s");
        serve_deliveries(producer);
    }
}

/// Records/s producing `n` records as [`produce`] does (the same settings), but handed to
/// librdkafka 10,000 at a time with `rd_kafka_produce_batch` (its C API for enqueueing many
/// records under one lock, `RD_KAFKA_MSG_F_COPY` as `send` does) to partition 0 (no
/// partitioner call per record). The same client library doing the same work with less of
/// its own CPU per record.
#[allow(unsafe_code)] // librdkafka's batch calls have no safe wrapper in the rdkafka crate
fn produce_batched(boot: &str, topic: &str, n: u64) -> f64 {
    use rdkafka::bindings as rd;
    const CHUNK: u64 = 10_000;
    let producer: BaseProducer = producer_config(boot).create().expect("producer");
    let name = std::ffi::CString::new(topic).expect("topic name");
    // SAFETY: a valid client handle and NUL-terminated name; the handle is released below.
    let rkt = unsafe {
        rd::rd_kafka_topic_new(
            producer.client().native_ptr(),
            name.as_ptr(),
            std::ptr::null_mut(),
        )
    };
    assert!(!rkt.is_null(), "rd_kafka_topic_new");
    let mut value = [b'w'; 100];
    let message = rd::rd_kafka_message_t {
        err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
        rkt: std::ptr::null_mut(),
        partition: 0,
        payload: value.as_mut_ptr().cast(),
        len: value.len(),
        key: std::ptr::null_mut(),
        key_len: 0,
        offset: 0,
        _private: std::ptr::null_mut(),
    };
    let mut messages = vec![message; CHUNK as usize];
    let start = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK) as usize;
        // Only this thread adds records, so the room found stays.
        wait_for_room(&producer, k as u64);
        // SAFETY: `k` initialised messages; with RD_KAFKA_MSG_F_COPY librdkafka copies each
        // payload before returning, and a null `_private` is the `()` delivery opaque.
        let queued = unsafe {
            rd::rd_kafka_produce_batch(
                rkt,
                0,
                rd::RD_KAFKA_MSG_F_COPY,
                messages.as_mut_ptr(),
                k as i32,
            )
        };
        if queued as usize != k {
            let e = messages[..k]
                .iter()
                .find(|m| m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
            panic!(
                "produce_batch queued {queued} of {k}: {:?}",
                e.map(|m| m.err)
            );
        }
        left -= k as u64;
    }
    await_deliveries(&producer);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    // SAFETY: every message is delivered; nothing refers to the topic handle any more.
    unsafe { rd::rd_kafka_topic_destroy(rkt) };
    rate
}

/// Records/s consuming `n` records from the beginning as [`consume`] does (librdkafka's
/// defaults plus `extra`, timed from the first record), but polled 10,000 at a time with
/// `rd_kafka_consume_batch_queue`, the call confluent-kafka's `Consumer.consume(num_messages)`
/// makes: the application thread's cost per record drops, leaving the client's fetch thread
/// more of the machine.
#[allow(unsafe_code)] // librdkafka's batch calls have no safe wrapper in the rdkafka crate
fn consume_batched(boot: &str, topic: &str, n: u64, extra: &[(&str, &str)]) -> f64 {
    use rdkafka::bindings as rd;
    const CHUNK: usize = 10_000;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", boot)
        .set("group.id", "kafka-bench")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    // SAFETY: a valid consumer handle; the queue reference is released below.
    let queue = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
    assert!(!queue.is_null(), "rd_kafka_queue_get_consumer");
    let mut batch: Vec<*mut rd::rd_kafka_message_t> = vec![std::ptr::null_mut(); CHUNK];
    let (mut got, mut start) = (0u64, None);
    while got < n {
        // SAFETY: room for CHUNK message pointers; each returned message is destroyed below.
        let k =
            unsafe { rd::rd_kafka_consume_batch_queue(queue, 10_000, batch.as_mut_ptr(), CHUNK) };
        assert!(k > 0, "no record for 10 s after {got}");
        start.get_or_insert_with(Instant::now);
        for &m in &batch[..k as usize] {
            // SAFETY: a message librdkafka returned, read once and destroyed once.
            let err = unsafe { (*m).err };
            unsafe { rd::rd_kafka_message_destroy(m) };
            assert_eq!(
                err,
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                "consume after {got}"
            );
            got += 1;
        }
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    // SAFETY: the reference taken above.
    unsafe { rd::rd_kafka_queue_destroy(queue) };
    (n - 1) as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The environment variable that makes this bench a client child: `PHASE BOOT TOPIC N`, with
/// PHASE `produce` ([`produce_batched`] into a topic that exists) or `consume`
/// ([`consume_batched`] with librdkafka's defaults); the child prints the rate and exits.
const CHILD: &str = "KAFKA_BENCH_CHILD";

/// Runs one batch-call phase (`produce` or `consume`) in a child process of this bench, with
/// `lib` in `LD_PRELOAD` if given, on `topic`; returns its records/s.
fn in_child(phase: &str, lib: Option<&std::ffi::OsStr>, boot: &str, topic: &str, n: u64) -> f64 {
    let mut child = Command::new(std::env::current_exe().expect("this bench"));
    child.env(CHILD, format!("{phase} {boot} {topic} {n}"));
    if let Some(lib) = lib {
        child.env("LD_PRELOAD", lib);
    }
    let out = child
        .stderr(Stdio::inherit())
        .output()
        .expect("client child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client child failed: {text}");
    text.trim().parse().expect("the child's rate")
}

/// If this process is a client child ([`CHILD`]), runs its phase and exits.
fn run_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let mut parts = spec.split(' ');
    let (Some(phase), Some(boot), Some(topic), Some(n)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("{CHILD}: PHASE BOOT TOPIC N, got {spec:?}");
    };
    let n = n.parse().expect("a record count");
    let rate = match phase {
        "produce" => produce_batched(boot, topic, n),
        "consume" => consume_batched(boot, topic, n, &[]),
        other => panic!("{CHILD}: no phase {other:?}"),
    };
    println!("{rate}");
    std::process::exit(0);
}

/// Collects the median round trip of the broker's requests in each statistics window
/// librdkafka reports (µs): the broker's share of a consumer's fetch cycle.
#[derive(Default)]
struct RoundTrips(std::sync::Mutex<Vec<i64>>);

impl ClientContext for RoundTrips {
    fn stats(&self, s: rdkafka::Statistics) {
        let windows = s.brokers.values().filter(|b| b.nodeid >= 0);
        let p50s = windows.filter_map(|b| b.rtt.as_ref().filter(|w| w.cnt > 0).map(|w| w.p50));
        self.0.lock().expect("lock").extend(p50s);
    }
}

impl ConsumerContext for RoundTrips {}

/// What [`consume`] measured.
struct Consumed {
    /// Records/s, from the first record to the last.
    rate: f64,
    /// The median of librdkafka's median round trips to the broker in each 100 ms, in µs
    /// (fetches, mostly).
    round_trip_us: f64,
    /// The longest wait between two records the application saw (ms), and how many records
    /// it had then: librdkafka's 1 s fetch backoff shows here.
    longest_pause_ms: f64,
    pause_after: f64,
}

/// Consumes `n` records from the beginning, timed from the first record (a new librdkafka
/// consumer spends ~0.5 s on its offset-query timer before its first fetch, whatever the
/// broker), with librdkafka's defaults plus `extra`.
fn consume(boot: &str, topic: &str, n: u64, extra: &[(&str, &str)]) -> Consumed {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", boot)
        .set("group.id", "kafka-bench")
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "100");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer<RoundTrips> = config
        .create_with_context(RoundTrips::default())
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let mut start = None;
    let mut got = 0;
    let mut last = Instant::now();
    let (mut longest, mut pause_after) = (Duration::ZERO, 0);
    while got < n {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => {
                let now = Instant::now();
                if start.is_some() && now - last > longest {
                    (longest, pause_after) = (now - last, got);
                }
                start.get_or_insert(now);
                last = now;
                got += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("no record for 10 s after {got}"),
        }
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    let rtts = consumer.context().0.lock().expect("lock").clone();
    let round_trip_us = if rtts.is_empty() {
        f64::NAN
    } else {
        median(rtts.into_iter().map(|v| v as f64).collect())
    };
    Consumed {
        rate: (n - 1) as f64 / elapsed.as_secs_f64().max(1e-9),
        round_trip_us,
        longest_pause_ms: longest.as_secs_f64() * 1e3,
        pause_after: pause_after as f64,
    }
}

/// Records/s of the application's poll loop alone: the consumer may first fetch all `n`
/// records into its queue (`queued.min.messages`), gets twice the time that took at
/// `consumed_per_s` (the rate this broker just served) plus a second for it after the first
/// record, and is then timed polling the rest. The most this client could consume against
/// any broker (the poll loop then has the cores to itself; in a real run it shares them with
/// the fetching).
fn consume_poll_loop(boot: &str, topic: &str, n: u64, consumed_per_s: f64) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("group.id", "kafka-bench")
        .set("enable.auto.commit", "false")
        .set("queued.min.messages", n.clamp(1, 10_000_000).to_string())
        .set("queued.max.messages.kbytes", "2097151")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let first = consumer.poll(Duration::from_secs(10));
    assert!(matches!(first, Some(Ok(_))), "no first record");
    std::thread::sleep(Duration::from_secs_f64(
        1.0 + 2.0 * n as f64 / consumed_per_s,
    ));
    let start = Instant::now();
    for got in 1..n {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("no record for 10 s after {got}"),
        }
    }
    (n - 1) as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

/// The kcat binary (`KAFKA_BENCH_KCAT`, default `kcat` on the PATH; Debian's package).
fn kcat() -> String {
    std::env::var("KAFKA_BENCH_KCAT").unwrap_or_else(|_| "kcat".into())
}

/// Records/s producing the `n` lines of `input` (100 bytes each) with `kcat -P -l`, the same
/// producer settings as [`produce`]; timed over the whole process (start-up included).
fn kcat_produce(boot: &str, topic: &str, input: &std::path::Path, n: u64) -> f64 {
    let start = Instant::now();
    let status = Command::new(kcat())
        .args(["-P", "-b", boot, "-t", topic, "-X", "linger.ms=5"])
        .args(["-X", "batch.size=1000000", "-X", "acks=all"])
        .args(["-X", "queue.buffering.max.messages=1000000"])
        .args(["-X", "queue.buffering.max.kbytes=1048576", "-l"])
        .arg(input)
        .env_remove("LD_LIBRARY_PATH")
        .status()
        .unwrap_or_else(|e| panic!("running {} (apt-get install kcat): {e}", kcat()));
    assert!(status.success(), "kcat -P failed: {status}");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records/s consuming `n` records from the beginning with `kcat -C` (librdkafka defaults,
/// one line per record), timed from the first record as in [`consume`].
fn kcat_consume(boot: &str, topic: &str, n: u64) -> f64 {
    let mut child = Command::new(kcat())
        .args(["-C", "-b", boot, "-t", topic, "-o", "beginning", "-e", "-q"])
        .args(["-f", "%o\\n"])
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {} (apt-get install kcat): {e}", kcat()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a first record").expect("read");
    let start = Instant::now();
    let got = 1 + lines.map_while(Result::ok).count() as u64;
    let elapsed = start.elapsed();
    assert_eq!(first.trim(), "0", "kcat started at offset {first}");
    let status = child.wait().expect("kcat");
    assert!(status.success(), "kcat -C failed: {status}");
    assert_eq!(got, n, "kcat consumed {got} of {n}");
    (n - 1) as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A Kafka endpoint that stores nothing (Weir's codec, in this process): it acknowledges every
/// produced batch at once and answers every fetch from one prepared batch, its base offset
/// written into each answer. librdkafka against it runs at its own ceiling on this machine:
/// the most any broker could let it reach, so Weir's figures can be read as a share of it,
/// and its ratio to the native path as the best a Kafka path could show with this client.
mod null {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use weir::protocol::kafka::messages::fetch::{
        FetchRequest, FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use weir::protocol::kafka::messages::find_coordinator::{
        Coordinator, FindCoordinatorRequest, FindCoordinatorResponse,
    };
    use weir::protocol::kafka::messages::list_offsets::{
        ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
        ListOffsetsTopicResponse,
    };
    use weir::protocol::kafka::messages::metadata::{
        MetadataRequest, MetadataResponse, MetadataResponseBroker, MetadataResponsePartition,
        MetadataResponseTopic,
    };
    use weir::protocol::kafka::messages::produce::{
        PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse,
    };
    use weir::protocol::kafka::{
        decode_request, encode_api_versions_unsupported, encode_response, supported_api_versions,
        ApiKey, ApiVersionsResponse, RecordSet, Request, Response,
    };
    use weir_storage::{BatchBuilder, Compression, Record};

    /// Records per served batch (what librdkafka packs under `batch.size=1000000`).
    const BATCH: u64 = 9_000;
    /// The APIs a librdkafka producer and an assigned consumer use.
    const APIS: [ApiKey; 6] = [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::Metadata,
        ApiKey::FindCoordinator,
        ApiKey::ApiVersions,
    ];

    /// The endpoint: every topic has one partition holding `n` records of 100 bytes to read;
    /// produced records are counted (for their offsets) and dropped.
    pub struct Endpoint {
        addr: SocketAddr,
        n: i64,
        produced: AtomicI64,
        batches: std::sync::Mutex<HashMap<u64, Bytes>>,
    }

    /// Starts the endpoint on a free loopback port; returns its `host:port`.
    pub async fn start(n: u64) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = Arc::new(Endpoint {
            addr: listener.local_addr().expect("address"),
            n: n as i64,
            produced: AtomicI64::new(0),
            batches: std::sync::Mutex::new(HashMap::new()),
        });
        let addr = endpoint.addr.to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(endpoint.clone().serve(stream));
            }
        });
        addr
    }

    impl Endpoint {
        /// Answers one connection's requests in order.
        async fn serve(self: Arc<Self>, stream: TcpStream) {
            stream.set_nodelay(true).expect("nodelay");
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::with_capacity(256 << 10, r);
            while let Ok(len) = r.read_u32().await {
                assert!(len <= 200 << 20, "request of {len} bytes");
                let mut frame = vec![0u8; len as usize];
                if r.read_exact(&mut frame).await.is_err() {
                    return;
                }
                let frame = Bytes::from(frame);
                let header = weir::protocol::kafka::peek_header(&frame).expect("header");
                let (id, version) = (header.correlation_id, header.api_version);
                let encoded = if header.api_key == ApiKey::ApiVersions
                    && !header.api_key.is_supported(version)
                {
                    encode_api_versions_unsupported(id).expect("encode")
                } else {
                    let (_, request) = decode_request(frame).expect("a request");
                    let Some(response) = self.answer(request).await else {
                        continue; // acks=0
                    };
                    encode_response(id, version, &response).expect("encode")
                };
                let prefix = encoded.length_prefix().expect("length");
                if w.write_all(&prefix).await.is_err() {
                    return;
                }
                for chunk in encoded.chunks() {
                    if w.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }

        async fn answer(&self, request: Request) -> Option<Response> {
            Some(match request {
                Request::ApiVersions(_) => Response::ApiVersions(ApiVersionsResponse {
                    api_keys: supported_api_versions()
                        .into_iter()
                        .filter(|v| APIS.iter().any(|k| *k as i16 == v.api_key))
                        .collect(),
                    ..Default::default()
                }),
                Request::Metadata(r) => Response::Metadata(self.metadata(r)),
                Request::FindCoordinator(r) => Response::FindCoordinator(self.coordinator(r)),
                Request::Produce(r) => {
                    if r.acks == 0 {
                        return None;
                    }
                    Response::Produce(self.produce(r))
                }
                Request::ListOffsets(r) => Response::ListOffsets(self.list_offsets(r)),
                Request::Fetch(r) => Response::Fetch(self.fetch(r).await),
                other => panic!("the null endpoint does not answer {other:?}"),
            })
        }

        fn metadata(&self, r: MetadataRequest) -> MetadataResponse {
            let names = r
                .topics
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.name);
            MetadataResponse {
                brokers: vec![MetadataResponseBroker {
                    node_id: 0,
                    host: self.addr.ip().to_string(),
                    port: i32::from(self.addr.port()),
                    rack: None,
                }],
                cluster_id: Some("null".into()),
                controller_id: 0,
                topics: names
                    .map(|name| MetadataResponseTopic {
                        name: Some(name),
                        topic_id: [1; 16],
                        partitions: vec![MetadataResponsePartition {
                            partition_index: 0,
                            leader_id: 0,
                            replica_nodes: vec![0],
                            isr_nodes: vec![0],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }

        fn coordinator(&self, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
            let (host, port) = (self.addr.ip().to_string(), i32::from(self.addr.port()));
            let mut keys = r.coordinator_keys;
            if keys.is_empty() {
                keys.push(r.key);
            }
            FindCoordinatorResponse {
                node_id: 0,
                host: host.clone(),
                port,
                coordinators: keys
                    .into_iter()
                    .map(|key| Coordinator {
                        key,
                        node_id: 0,
                        host: host.clone(),
                        port,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }

        /// Acknowledges every batch at the next offsets (each batch's last offset delta
        /// says how many records it holds).
        fn produce(&self, r: ProduceRequest) -> ProduceResponse {
            ProduceResponse {
                responses: r
                    .topic_data
                    .into_iter()
                    .map(|t| TopicProduceResponse {
                        name: t.name,
                        partition_responses: t
                            .partition_data
                            .into_iter()
                            .map(|p| {
                                let count = records_in(&p.records.unwrap_or_default());
                                PartitionProduceResponse {
                                    index: p.index,
                                    base_offset: self.produced.fetch_add(count, Ordering::Relaxed),
                                    log_start_offset: 0,
                                    ..Default::default()
                                }
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }

        /// Earliest is 0, anything else the end (`n`).
        fn list_offsets(&self, r: ListOffsetsRequest) -> ListOffsetsResponse {
            ListOffsetsResponse {
                topics: r
                    .topics
                    .into_iter()
                    .map(|t| ListOffsetsTopicResponse {
                        name: t.name,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| ListOffsetsPartitionResponse {
                                partition_index: p.partition_index,
                                offset: if p.timestamp == -2 { 0 } else { self.n },
                                ..Default::default()
                            })
                            .collect(),
                    })
                    .collect(),
                ..Default::default()
            }
        }

        /// One batch from the fetch offset (the prepared one, its base offset written in),
        /// or, at the end, nothing after the request's `max_wait_ms`.
        async fn fetch(&self, r: FetchRequest) -> FetchResponse {
            let offset = r
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map_or(self.n, |p| p.fetch_offset);
            if offset >= self.n {
                let wait = r.max_wait_ms.clamp(0, 1_000) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            FetchResponse {
                responses: r
                    .topics
                    .into_iter()
                    .map(|t| FetchableTopicResponse {
                        topic: t.topic,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|p| PartitionData {
                                partition_index: p.partition,
                                high_watermark: self.n,
                                last_stable_offset: self.n,
                                log_start_offset: 0,
                                records: Some(self.batch_at(p.fetch_offset)),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        }

        /// The records from `offset`: a prepared batch of up to [`BATCH`] records, its first
        /// 8 bytes (the base offset, outside the batch's CRC) replaced.
        fn batch_at(&self, offset: i64) -> RecordSet {
            let count = (self.n - offset).clamp(0, BATCH as i64) as u64;
            if count == 0 {
                return RecordSet::default();
            }
            let batch = self
                .batches
                .lock()
                .expect("lock")
                .entry(count)
                .or_insert_with(|| {
                    let mut b = BatchBuilder::new(Compression::None);
                    let value = Bytes::from_static(&[b'w'; 100]);
                    for _ in 0..count {
                        b.push(Record::new(weir::broker::now_ms(), value.clone()));
                    }
                    b.build(0).expect("batch").into_bytes()
                })
                .clone();
            RecordSet::new(vec![
                Bytes::copy_from_slice(&offset.to_be_bytes()),
                batch.slice(8..),
            ])
        }
    }

    /// The records in a record set: each batch's last offset delta plus one.
    fn records_in(set: &Bytes) -> i64 {
        let (mut at, mut count) = (0usize, 0i64);
        while set.len() >= at + 27 {
            let len = u32::from_be_bytes(set[at + 8..at + 12].try_into().expect("4 bytes"));
            let delta = i32::from_be_bytes(set[at + 23..at + 27].try_into().expect("4 bytes"));
            count += i64::from(delta) + 1;
            at += 12 + len as usize;
        }
        count
    }
}

/// A lean Kafka client written with Weir's own codec (`weir::protocol::kafka`) and batch
/// builder: the Kafka path's broker side measured with a client as cheap as the native one, so
/// that the Kafka/native ratio compares the two protocols rather than two clients.
mod lean {
    use std::collections::VecDeque;
    use std::time::Instant;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;
    use weir::protocol::kafka::messages::fetch::{FetchPartition, FetchRequest, FetchTopic};
    use weir::protocol::kafka::messages::produce::{
        PartitionProduceData, ProduceRequest, TopicProduceData,
    };
    use weir::protocol::kafka::{
        decode_response, encode_request, ApiKey, Request, RequestHeader, Response,
    };
    use weir_storage::batch::split_batches;
    use weir_storage::{BatchBuilder, Compression, Record};

    /// Records per produce batch: as many as librdkafka puts in one under `batch.size=1000000`
    /// (below the broker's 1 MiB `max.message.bytes`).
    const BATCH: u64 = 9_000;
    /// Produce requests in flight on the connection.
    const IN_FLIGHT: usize = 5;
    const PRODUCE_VERSION: i16 = 9;
    const FETCH_VERSION: i16 = 12;

    async fn send(
        s: &mut (impl AsyncWriteExt + Unpin),
        api: ApiKey,
        id: i32,
        version: i16,
        r: Request,
    ) {
        let header = RequestHeader {
            api_key: api,
            api_version: version,
            correlation_id: id,
            client_id: Some("lean".into()),
        };
        let frame = encode_request(&header, &r).expect("encode");
        s.write_all(&frame.length_prefix().expect("length"))
            .await
            .expect("write");
        for chunk in frame.chunks() {
            s.write_all(chunk).await.expect("write");
        }
    }

    async fn response(s: &mut (impl AsyncReadExt + Unpin), api: ApiKey, version: i16) -> Response {
        let len = s.read_u32().await.expect("read") as usize;
        assert!(len <= 200 << 20, "response of {len} bytes");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.expect("read");
        decode_response(api, version, Bytes::from(body))
            .expect("decode")
            .1
    }

    /// Records/s producing `n` records of 100 bytes in batches of [`BATCH`] with acks=all,
    /// [`IN_FLIGHT`] requests at a time, timed until the last acknowledgement.
    pub async fn produce(addr: &str, topic: &str, n: u64) -> f64 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::with_capacity(64 << 10, r);
        let value = Bytes::from_static(&[b'w'; 100]);
        let start = Instant::now();
        let (mut sent, mut acked, mut id) = (0u64, 0u64, 0i32);
        let mut in_flight = VecDeque::new();
        while acked < n {
            while sent < n && in_flight.len() < IN_FLIGHT {
                let count = BATCH.min(n - sent);
                let mut b = BatchBuilder::new(Compression::None);
                let now = weir::broker::now_ms();
                for _ in 0..count {
                    b.push(Record::new(now, value.clone()));
                }
                let batch = b.build(0).expect("batch").into_bytes();
                let request = ProduceRequest {
                    acks: -1,
                    timeout_ms: 30_000,
                    topic_data: vec![TopicProduceData {
                        name: topic.into(),
                        partition_data: vec![PartitionProduceData {
                            index: 0,
                            records: Some(batch),
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                id += 1;
                send(
                    &mut w,
                    ApiKey::Produce,
                    id,
                    PRODUCE_VERSION,
                    Request::Produce(request),
                )
                .await;
                in_flight.push_back(count);
                sent += count;
            }
            let Response::Produce(p) = response(&mut r, ApiKey::Produce, PRODUCE_VERSION).await
            else {
                panic!("not a produce response")
            };
            let part = &p.responses[0].partition_responses[0];
            assert_eq!(part.error_code, 0, "produce error");
            acked += in_flight.pop_front().expect("in flight");
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// Records/s consuming `n` records from offset 0, one fetch at a time (as librdkafka
    /// does) with librdkafka's default sizes, decoding every record.
    pub async fn consume(addr: &str, topic: &str, n: u64) -> f64 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut s = BufReader::with_capacity(64 << 10, stream);
        let start = Instant::now();
        let (mut offset, mut got, mut id) = (0i64, 0u64, 0i32);
        while got < n {
            let request = FetchRequest {
                max_wait_ms: 500,
                min_bytes: 1,
                max_bytes: 52_428_800,
                topics: vec![FetchTopic {
                    topic: topic.into(),
                    partitions: vec![FetchPartition {
                        partition: 0,
                        fetch_offset: offset,
                        partition_max_bytes: 1_048_576,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            id += 1;
            send(
                s.get_mut(),
                ApiKey::Fetch,
                id,
                FETCH_VERSION,
                Request::Fetch(request),
            )
            .await;
            let Response::Fetch(f) = response(&mut s, ApiKey::Fetch, FETCH_VERSION).await else {
                panic!("not a fetch response")
            };
            let part = &f.responses[0].partitions[0];
            assert_eq!(part.error_code, 0, "fetch error");
            let bytes = part
                .records
                .as_ref()
                .map(|r| r.to_bytes())
                .unwrap_or_default();
            for batch in split_batches(bytes).expect("batches") {
                for record in batch.records().expect("records") {
                    if record.offset >= offset {
                        got += 1;
                    }
                }
                offset = offset.max(batch.next_offset());
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    }
}

/// `weir bench` through the native protocol; returns (produced/s, consumed/s if consumed).
fn native(addr: SocketAddr, topic: &str, n: u64, extra: &[&str]) -> (f64, Option<f64>) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "--broker", &addr.to_string(), "--topic", topic])
        .args(["-n", &n.to_string()])
        .args(extra)
        .stderr(Stdio::null())
        .output()
        .expect("weir bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weir bench failed: {text}");
    let rate = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).map(|l| {
            l.split(": ")
                .nth(2)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse::<f64>().ok())
                .expect("a rate")
        })
    };
    (rate("produced:").expect("produced"), rate("consumed:"))
}

/// CPU seconds a process has used so far (user + system, from /proc): the server's, or this
/// benchmark's own (the librdkafka clients run in it).
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One run's figures, in the order they are printed: (label, value).
type Row = Vec<(String, f64)>;

/// A second Kafka-compatible broker to run the same librdkafka phases against, interleaved
/// with Weir's in every run (`KAFKA_BENCH_COMPARE=NAME=HOST:PORT`, already running): the
/// side-by-side figure BENCHMARKS.md compares with (issue 5's reference broker).
/// `KAFKA_BENCH_COMPARE_PID`, if set, is that broker's process id, to read its CPU time.
fn compare_with() -> Option<(String, String, Option<u32>)> {
    let spec = std::env::var("KAFKA_BENCH_COMPARE").ok()?;
    let (name, addr) = spec
        .split_once('=')
        .expect("KAFKA_BENCH_COMPARE=NAME=HOST:PORT");
    let pid = std::env::var("KAFKA_BENCH_COMPARE_PID")
        .ok()
        .map(|p| p.parse().expect("KAFKA_BENCH_COMPARE_PID: a process id"));
    Some((name.to_string(), addr.to_string(), pid))
}

/// The librdkafka phases against one broker, on fresh topics that are deleted afterwards:
/// `rdkafka` produce, consume with the defaults and with a 10 ms queue backoff, the poll
/// loop's own rate ([`consume_poll_loop`]), the batch calls ([`produce_batched`],
/// [`consume_batched`]), and, if
/// `with_kcat`, kcat produce and consume. Figures are labelled `{name} ...`; `cpu` reads the
/// CPU seconds of the broker process (when its id is known) and of this process.
async fn kafka_phases(
    name: &str,
    boot: &str,
    run: u64,
    input: &std::path::Path,
    n: u64,
    cpu: &dyn Fn() -> (Option<f64>, f64),
    with_kcat: bool,
) -> Row {
    let per_m = |cpu: f64| cpu * 1e6 / n as f64;
    let topic = format!("{name}-rdkafka-{run}");
    create(boot, &topic).await;
    let (s0, m0) = cpu();
    let (b2, t2) = (boot.to_string(), topic.clone());
    let kp = tokio::task::spawn_blocking(move || produce(&b2, &t2, n))
        .await
        .expect("produce");
    let (s1, m1) = cpu();
    let (b2, t2) = (boot.to_string(), topic.clone());
    let defaults = tokio::task::spawn_blocking(move || consume(&b2, &t2, n, &[]))
        .await
        .expect("consume");
    let (s2, m2) = cpu();
    // librdkafka stops fetching for `fetch.queue.backoff.ms` (1 s) whenever its queue holds
    // `queued.min.messages` (100,000): a broker that fetches faster than the application
    // consumes meets that pause. The same consumer with a 10 ms backoff:
    let (b2, t2) = (boot.to_string(), topic.clone());
    let backoff = tokio::task::spawn_blocking(move || {
        consume(&b2, &t2, n, &[("fetch.queue.backoff.ms", "10")])
    })
    .await
    .expect("consume");
    let (kt, rtt) = (backoff.rate, backoff.round_trip_us);
    let (b2, t2) = (boot.to_string(), topic.clone());
    let kl = tokio::task::spawn_blocking(move || consume_poll_loop(&b2, &t2, n, kt))
        .await
        .expect("consume");
    delete(boot, &topic).await;
    // The same client through its batch calls (produce_batch, consume_batch_queue).
    let btopic = format!("{name}-batched-{run}");
    create(boot, &btopic).await;
    let (b2, t2) = (boot.to_string(), btopic.clone());
    let bp = tokio::task::spawn_blocking(move || produce_batched(&b2, &t2, n))
        .await
        .expect("produce");
    let (b2, t2) = (boot.to_string(), btopic.clone());
    let bc = tokio::task::spawn_blocking(move || consume_batched(&b2, &t2, n, &[]))
        .await
        .expect("consume");
    let (b2, t2) = (boot.to_string(), btopic.clone());
    let bt = tokio::task::spawn_blocking(move || {
        consume_batched(&b2, &t2, n, &[("fetch.queue.backoff.ms", "10")])
    })
    .await
    .expect("consume");
    // The same batch-call consumer with another allocator under librdkafka, if asked for.
    let preloaded = match std::env::var_os("KAFKA_BENCH_CLIENT_PRELOAD") {
        Some(lib) if name == "weir" => {
            let (b2, t2) = (boot.to_string(), btopic.clone());
            let rates = tokio::task::spawn_blocking(move || {
                let plain = in_child("consume", None, &b2, &t2, n);
                (plain, in_child("consume", Some(&lib), &b2, &t2, n))
            })
            .await
            .expect("consume");
            Some(rates)
        }
        _ => None,
    };
    delete(boot, &btopic).await;
    // And the batch-call producer, each on a fresh topic.
    let mut preloaded_produce = None;
    if let (Some(lib), "weir") = (std::env::var_os("KAFKA_BENCH_CLIENT_PRELOAD"), name) {
        let mut rates = Vec::new();
        for lib in [None, Some(lib)] {
            let ptopic = format!("{name}-child-produce-{run}-{}", rates.len());
            create(boot, &ptopic).await;
            let (b2, t2) = (boot.to_string(), ptopic.clone());
            let rate = tokio::task::spawn_blocking(move || {
                in_child("produce", lib.as_deref(), &b2, &t2, n)
            })
            .await
            .expect("produce");
            delete(boot, &ptopic).await;
            rates.push(rate);
        }
        preloaded_produce = Some((rates[0], rates[1]));
    }
    let mut row: Row = vec![
        (format!("{name} rdkafka produce"), kp),
        (format!("{name} rdkafka consume"), defaults.rate),
        (
            format!("{name} rdkafka consume: longest pause ms"),
            defaults.longest_pause_ms,
        ),
        (
            format!("{name} rdkafka consume: paused after record"),
            defaults.pause_after,
        ),
        (format!("{name} rdkafka consume, backoff 10 ms"), kt),
        (format!("{name} rdkafka consume: poll loop alone"), kl),
        (
            format!("{name} rdkafka consume, backoff 10 ms: round trip µs"),
            rtt,
        ),
        (format!("{name} rdkafka batch calls: produce"), bp),
        (format!("{name} rdkafka batch calls: consume"), bc),
        (
            format!("{name} rdkafka batch calls: consume, backoff 10 ms"),
            bt,
        ),
    ];
    if let Some((plain, preloaded)) = preloaded {
        row.extend([
            (
                format!("{name} rdkafka batch calls: consume, child process"),
                plain,
            ),
            (
                format!("{name} rdkafka batch calls: consume, child, malloc preloaded"),
                preloaded,
            ),
        ]);
    }
    if let Some((plain, preloaded)) = preloaded_produce {
        row.extend([
            (
                format!("{name} rdkafka batch calls: produce, child process"),
                plain,
            ),
            (
                format!("{name} rdkafka batch calls: produce, child, malloc preloaded"),
                preloaded,
            ),
        ]);
    }
    if let [Some(s0), Some(s1), Some(s2)] = [s0, s1, s2] {
        row.extend([
            (
                format!("{name} server CPU s/M: rdkafka produce"),
                per_m(s1 - s0),
            ),
            (
                format!("{name} server CPU s/M: rdkafka consume"),
                per_m(s2 - s1),
            ),
        ]);
    }
    if with_kcat {
        // kcat (Debian's librdkafka), producing from a file and consuming to a pipe.
        let ktopic = format!("{name}-kcat-{run}");
        create(boot, &ktopic).await;
        let (s3, _) = cpu();
        let kcp = kcat_produce(boot, &ktopic, input, n);
        let (s4, _) = cpu();
        let kcc = kcat_consume(boot, &ktopic, n);
        let (s5, _) = cpu();
        delete(boot, &ktopic).await;
        row.extend([
            (format!("{name} kcat produce"), kcp),
            (format!("{name} kcat consume"), kcc),
        ]);
        if let [Some(s3), Some(s4), Some(s5)] = [s3, s4, s5] {
            row.extend([
                (
                    format!("{name} server CPU s/M: kcat produce"),
                    per_m(s4 - s3),
                ),
                (
                    format!("{name} server CPU s/M: kcat consume"),
                    per_m(s5 - s4),
                ),
            ]);
        }
    }
    row.extend([
        (
            format!("{name} client CPU s/M: rdkafka produce"),
            per_m(m1 - m0),
        ),
        (
            format!("{name} client CPU s/M: rdkafka consume"),
            per_m(m2 - m1),
        ),
    ]);
    row
}

#[tokio::main]
async fn main() {
    run_child();
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runs = env_or("KAFKA_BENCH_RUNS", 3);
    let n = env_or("KAFKA_BENCH_RECORDS", 1_000_000);
    let other = compare_with();
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, native_addr, kafka_addr) = start(dir.path());
    let boot = kafka_addr.to_string();
    let (spid, me) = (server.0.id(), std::process::id());
    let input = dir.path().join("records.txt");
    std::fs::write(
        &input,
        [[b'w'; 100].as_slice(), b"\n"].concat().repeat(n as usize),
    )
    .expect("kcat input");
    let null_addr = null::start(n).await;
    println!("kafka bench: {runs} runs of {n} records of 100 B, one partition, segment storage");
    if let Some((name, addr, _)) = &other {
        println!("side by side with {name} at {addr}");
    }
    // Server CPU per phase, in seconds per million records: the cost of each path on the
    // broker side, apart from what each client spends.
    let per_m = |cpu: f64| cpu * 1e6 / n as f64;
    let weir_cpu = || (Some(cpu_of(spid)), cpu_of(me));
    let other_pid = other.as_ref().and_then(|o| o.2);
    let other_cpu = || (other_pid.map(cpu_of), cpu_of(me));
    // A process's first librdkafka client is slower than the next ones, whatever the broker
    // (it touches its heap's pages for the first time; with a queue holding all `n` records,
    // as this bench had until session 14, ~1.5 times slower): one untimed produce and consume
    // first, so that no broker gets the cold client.
    let warm = "warm-up".to_string();
    create(&boot, &warm).await;
    let (b2, t2) = (boot.clone(), warm.clone());
    let rate = tokio::task::spawn_blocking(move || {
        let r = produce(&b2, &t2, n);
        consume(&b2, &t2, n, &[("fetch.queue.backoff.ms", "10")]);
        r
    })
    .await
    .expect("warm-up");
    delete(&boot, &warm).await;
    println!("warm-up produce (not counted): {rate:.0}/s");
    let mut rows: Vec<Row> = Vec::new();
    for run in 1..=runs {
        let mut row = Row::new();
        // Each broker goes first in every other run, so that neither always meets the page
        // cache or the client state the other left behind; rows keep one order.
        let other_first = other.is_some() && run % 2 == 0;
        let mut theirs = Row::new();
        if let Some((name, addr, _)) = other.as_ref().filter(|_| other_first) {
            theirs = kafka_phases(name, addr, run, &input, n, &other_cpu, false).await;
        }
        row.extend(kafka_phases("weir", &boot, run, &input, n, &weir_cpu, true).await);
        if let Some((name, addr, _)) = other.as_ref().filter(|_| !other_first) {
            // Without kcat: Debian's kcat (librdkafka 2.0.2) cannot read tansu 0.6's
            // ApiVersions answer ("Read underflow"), the tagged-field pitfall of
            // KAFKA-NOTES.md.
            theirs = kafka_phases(name, addr, run, &input, n, &other_cpu, false).await;
        }
        row.extend(theirs);
        // The same librdkafka batch calls against an endpoint that stores nothing: the
        // client's own ceiling on this machine, in this run.
        let ztopic = format!("null-{run}");
        let (a, t) = (null_addr.clone(), ztopic.clone());
        let (zp, zc) = tokio::task::spawn_blocking(move || {
            (produce_batched(&a, &t, n), consume_batched(&a, &t, n, &[]))
        })
        .await
        .expect("null endpoint");
        row.extend([
            ("null rdkafka batch calls: produce".to_string(), zp),
            ("null rdkafka batch calls: consume".to_string(), zc),
        ]);
        if let Some(lib) = std::env::var_os("KAFKA_BENCH_CLIENT_PRELOAD") {
            let (a, t) = (null_addr.clone(), ztopic);
            let zm =
                tokio::task::spawn_blocking(move || in_child("consume", Some(&lib), &a, &t, n))
                    .await
                    .expect("null endpoint");
            row.push((
                "null rdkafka batch calls: consume, child, malloc preloaded".to_string(),
                zm,
            ));
        }
        // The same Kafka path with a client as lean as the native one (Weir's codec).
        let ltopic = format!("lean-{run}");
        create(&boot, &ltopic).await;
        let c_l0 = cpu_of(spid);
        let lp = lean::produce(&boot, &ltopic, n).await;
        let c_l1 = cpu_of(spid);
        let lc = lean::consume(&boot, &ltopic, n).await;
        let c_l2 = cpu_of(spid);
        delete(&boot, &ltopic).await;
        row.extend([
            ("lean kafka produce".to_string(), lp),
            ("lean kafka consume".to_string(), lc),
            (
                "server CPU s/M: lean kafka produce".to_string(),
                per_m(c_l1 - c_l0),
            ),
            (
                "server CPU s/M: lean kafka consume".to_string(),
                per_m(c_l2 - c_l1),
            ),
        ]);
        let ntopic = format!("native-{run}");
        let c5b = cpu_of(spid);
        let (np, nc) = native(native_addr, &ntopic, n, &["--sequential"]);
        let c6 = cpu_of(spid);
        delete(&boot, &ntopic).await;
        let rtopic = format!("per-record-{run}");
        let c6b = cpu_of(spid);
        let (nr, _) = native(
            native_addr,
            &rtopic,
            n,
            &["--per-record", "--consumers", "0"],
        );
        let c7 = cpu_of(spid);
        delete(&boot, &rtopic).await;
        let nc = nc.expect("consumed");
        row.extend([
            ("native produce".to_string(), np),
            ("native consume".to_string(), nc),
            ("native per-record produce".to_string(), nr),
            (
                "server CPU s/M: native produce+consume".to_string(),
                per_m(c6 - c5b),
            ),
            (
                "server CPU s/M: native per-record produce".to_string(),
                per_m(c7 - c6b),
            ),
        ]);
        println!("run {run}:");
        print_row(&row);
        rows.push(row);
    }
    let medians: Row = rows[0]
        .iter()
        .enumerate()
        .map(|(i, (label, _))| (label.clone(), median(rows.iter().map(|r| r[i].1).collect())))
        .collect();
    println!("median of {runs}:");
    print_row(&medians);
    let m = |label: &str| {
        medians
            .iter()
            .find(|(l, _)| l == label)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    println!(
        "kafka / native produce: rdkafka {:.0}%, kcat {:.0}% ({:.0}% and {:.0}% of per-record); consume: rdkafka {:.0}%, kcat {:.0}%",
        100.0 * m("weir rdkafka produce") / m("native produce"),
        100.0 * m("weir kcat produce") / m("native produce"),
        100.0 * m("weir rdkafka produce") / m("native per-record produce"),
        100.0 * m("weir kcat produce") / m("native per-record produce"),
        100.0 * m("weir rdkafka consume") / m("native consume"),
        100.0 * m("weir kcat consume") / m("native consume"),
    );
    println!(
        "kafka (librdkafka's batch calls) / native: produce {:.0}%, consume {:.0}%",
        100.0 * m("weir rdkafka batch calls: produce") / m("native produce"),
        100.0 * m("weir rdkafka batch calls: consume") / m("native consume"),
    );
    println!(
        "kafka (librdkafka's batch calls) / native, median of the runs' own ratios: produce {:.0}%, consume {:.0}%",
        100.0 * median_ratio(&rows, "weir rdkafka batch calls: produce", "native produce"),
        100.0 * median_ratio(&rows, "weir rdkafka batch calls: consume", "native consume"),
    );
    if std::env::var_os("KAFKA_BENCH_CLIENT_PRELOAD").is_some() {
        println!(
            "kafka (librdkafka's batch calls in a child process) / native, median of the runs' own ratios: produce {:.0}% as it is, {:.0}% with the preloaded malloc; consume {:.0}% as it is, {:.0}% with the preloaded malloc",
            100.0
                * median_ratio(
                    &rows,
                    "weir rdkafka batch calls: produce, child process",
                    "native produce"
                ),
            100.0
                * median_ratio(
                    &rows,
                    "weir rdkafka batch calls: produce, child, malloc preloaded",
                    "native produce"
                ),
            100.0
                * median_ratio(
                    &rows,
                    "weir rdkafka batch calls: consume, child process",
                    "native consume"
                ),
            100.0
                * median_ratio(
                    &rows,
                    "weir rdkafka batch calls: consume, child, malloc preloaded",
                    "native consume"
                ),
        );
    }
    let ratio = |a: &str, b: &str| 100.0 * median_ratio(&rows, a, b);
    println!(
        "librdkafka's batch calls, weir / an endpoint that stores nothing (the client's ceiling), median of the runs' own ratios: produce {:.0}%, consume {:.0}%; that endpoint / native: produce {:.0}%, consume {:.0}%",
        ratio("weir rdkafka batch calls: produce", "null rdkafka batch calls: produce"),
        ratio("weir rdkafka batch calls: consume", "null rdkafka batch calls: consume"),
        ratio("null rdkafka batch calls: produce", "native produce"),
        ratio("null rdkafka batch calls: consume", "native consume"),
    );
    if std::env::var_os("KAFKA_BENCH_CLIENT_PRELOAD").is_some() {
        let (w, z) = (
            "weir rdkafka batch calls: consume, child, malloc preloaded",
            "null rdkafka batch calls: consume, child, malloc preloaded",
        );
        println!(
            "the same with the preloaded malloc (consume in a child): weir / that endpoint {:.0}%, that endpoint / native {:.0}%",
            ratio(w, z),
            ratio(z, "native consume"),
        );
    }
    println!(
        "lean kafka / native: produce {:.0}%, consume {:.0}%",
        100.0 * m("lean kafka produce") / m("native produce"),
        100.0 * m("lean kafka consume") / m("native consume"),
    );
    if let Some((name, _, _)) = &other {
        let ratio =
            |phase: &str| median_ratio(&rows, &format!("weir {phase}"), &format!("{name} {phase}"));
        println!(
            "weir / {name} (median of the runs' ratios): rdkafka produce {:.2}, consume {:.2}, consume 10 ms backoff {:.2}; batch calls: produce {:.2}, consume {:.2}",
            ratio("rdkafka produce"),
            ratio("rdkafka consume"),
            ratio("rdkafka consume, backoff 10 ms"),
            ratio("rdkafka batch calls: produce"),
            ratio("rdkafka batch calls: consume"),
        );
    }
}

/// The median over the runs of each run's `a / b`: the two figures of one run met the same
/// state of this shared machine within a minute, which two medians taken apart do not.
fn median_ratio(rows: &[Row], a: &str, b: &str) -> f64 {
    let value = |r: &Row, label: &str| {
        r.iter()
            .find(|(l, _)| l == label)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    median(rows.iter().map(|r| value(r, a) / value(r, b)).collect())
}

fn print_row(row: &Row) {
    for (label, value) in row {
        if label.contains("CPU") {
            println!("  {label:<50} {value:>10.3}");
        } else if label.ends_with("µs") || label.ends_with("pause ms") || label.ends_with("record")
        {
            println!("  {label:<50} {value:>10.0}");
        } else {
            println!("  {label:<50} {value:>10.0}/s");
        }
    }
}
