//! The Kafka path against the native path, in the same run (BENCHMARKS.md, issue 5):
//!
//! ```sh
//! cargo bench --bench kafka                          # 3 runs of 1,000,000 records
//! KAFKA_BENCH_RUNS=5 KAFKA_BENCH_RECORDS=2000000 cargo bench --bench kafka
//! ```
//!
//! One `weir serve` child process (segment storage, `interval` durability, its Kafka and
//! native listeners on free ports). Per run, on fresh single-partition topics:
//! - librdkafka (the `rdkafka` crate): produce N records of 100 bytes (`linger.ms=5`,
//!   `batch.size=1000000`, acks=all), then consume them with librdkafka's default fetch
//!   settings, and again with `fetch.queue.backoff.ms=10`;
//! - kcat (Debian's package, its own librdkafka): `kcat -P -l` from a file of N lines with
//!   the same producer settings, then `kcat -C` with librdkafka's defaults;
//! - the same load through the native protocol with `weir bench --sequential` (batches of
//!   1,000 handed to the producer) and `weir bench --per-record` (record by record, as
//!   librdkafka's API is used).
//!
//! The CPU time the server and the librdkafka clients spend per million records is printed
//! with each run: it shows which side bounds a figure.
//!
//! Client and server share the machine's cores. Medians of the runs are printed last.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

/// Records/s producing `n` records of 100 bytes with librdkafka.
fn produce(boot: &str, topic: &str, n: u64) -> f64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", boot)
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("acks", "all")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    let value = [b'w'; 100];
    let start = Instant::now();
    for _ in 0..n {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records/s consuming `n` records from the beginning, timed from the first record (a new
/// librdkafka consumer spends ~0.5 s on its offset-query timer before its first fetch, whatever
/// the broker), with librdkafka's defaults plus `extra`.
fn consume(boot: &str, topic: &str, n: u64, extra: &[(&str, &str)]) -> f64 {
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
    let mut start = None;
    let mut got = 0;
    while got < n {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => {
                start.get_or_insert_with(Instant::now);
                got += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => panic!("no record for 10 s after {got}"),
        }
    }
    let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
    (n - 1) as f64 / elapsed.as_secs_f64().max(1e-9)
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
type Row = Vec<(&'static str, f64)>;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runs = env_or("KAFKA_BENCH_RUNS", 3);
    let n = env_or("KAFKA_BENCH_RECORDS", 1_000_000);
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
    println!("kafka bench: {runs} runs of {n} records of 100 B, one partition, segment storage");
    // Server CPU per phase, in seconds per million records: the cost of each path on the
    // broker side, apart from what each client spends.
    let per_m = |cpu: f64| cpu * 1e6 / n as f64;
    let mut rows: Vec<Row> = Vec::new();
    for run in 1..=runs {
        let mut row = Row::new();
        let topic = format!("kafka-{run}");
        create(&boot, &topic).await;
        let (c0, m0) = (cpu_of(spid), cpu_of(me));
        let (b2, t2) = (boot.clone(), topic.clone());
        let kp = tokio::task::spawn_blocking(move || produce(&b2, &t2, n))
            .await
            .expect("produce");
        let (c1, m1) = (cpu_of(spid), cpu_of(me));
        let (b2, t2) = (boot.clone(), topic.clone());
        let kc = tokio::task::spawn_blocking(move || consume(&b2, &t2, n, &[]))
            .await
            .expect("consume");
        let (c2, m2) = (cpu_of(spid), cpu_of(me));
        // librdkafka stops fetching for `fetch.queue.backoff.ms` (1 s) whenever its queue
        // holds `queued.min.messages` (100,000): a broker that fetches faster than the
        // application consumes meets that pause. The same consumer with a 10 ms backoff:
        let (b2, t2) = (boot.clone(), topic.clone());
        let kt = tokio::task::spawn_blocking(move || {
            consume(&b2, &t2, n, &[("fetch.queue.backoff.ms", "10")])
        })
        .await
        .expect("consume");
        delete(&boot, &topic).await;
        // kcat (Debian's librdkafka), producing from a file and consuming to a pipe.
        let ktopic = format!("kcat-{run}");
        create(&boot, &ktopic).await;
        let c3 = cpu_of(spid);
        let kcp = kcat_produce(&boot, &ktopic, &input, n);
        let c4 = cpu_of(spid);
        let kcc = kcat_consume(&boot, &ktopic, n);
        let c5 = cpu_of(spid);
        delete(&boot, &ktopic).await;
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
            ("rdkafka produce", kp),
            ("rdkafka consume", kc),
            ("rdkafka consume, backoff 10 ms", kt),
            ("kcat produce", kcp),
            ("kcat consume", kcc),
            ("native produce", np),
            ("native consume", nc),
            ("native per-record produce", nr),
            ("server CPU s/M: rdkafka produce", per_m(c1 - c0)),
            ("server CPU s/M: rdkafka consume", per_m(c2 - c1)),
            ("server CPU s/M: kcat produce", per_m(c4 - c3)),
            ("server CPU s/M: kcat consume", per_m(c5 - c4)),
            ("server CPU s/M: native produce+consume", per_m(c6 - c5b)),
            ("server CPU s/M: native per-record produce", per_m(c7 - c6b)),
            ("client CPU s/M: rdkafka produce", per_m(m1 - m0)),
            ("client CPU s/M: rdkafka consume", per_m(m2 - m1)),
        ]);
        println!("run {run}:");
        print_row(&row);
        rows.push(row);
    }
    let medians: Row = rows[0]
        .iter()
        .enumerate()
        .map(|(i, (label, _))| (*label, median(rows.iter().map(|r| r[i].1).collect())))
        .collect();
    println!("median of {runs}:");
    print_row(&medians);
    let m = |label: &str| {
        medians
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    println!(
        "kafka / native produce: rdkafka {:.0}%, kcat {:.0}% ({:.0}% and {:.0}% of per-record); consume: rdkafka {:.0}%, kcat {:.0}%",
        100.0 * m("rdkafka produce") / m("native produce"),
        100.0 * m("kcat produce") / m("native produce"),
        100.0 * m("rdkafka produce") / m("native per-record produce"),
        100.0 * m("kcat produce") / m("native per-record produce"),
        100.0 * m("rdkafka consume") / m("native consume"),
        100.0 * m("kcat consume") / m("native consume"),
    );
}

fn print_row(row: &Row) {
    for (label, value) in row {
        if label.contains("CPU") {
            println!("  {label:<45} {value:>10.3}");
        } else {
            println!("  {label:<45} {value:>10.0}/s");
        }
    }
}
