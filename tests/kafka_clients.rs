//! Real Kafka clients against a real `weir serve` child process: kcat (Debian's librdkafka
//! 2.0.2, the strictest about flexible versions), confluent-kafka (a current librdkafka),
//! kafka-python, aiokafka and kafkajs, each scenario on a fresh server with segment storage.
//!
//! The clients are installed by `scripts/test.sh`, which exports `KAFKA_CLIENTS_PYTHON` (a virtualenv
//! with `tests/kafka/requirements.txt`) and `KAFKA_CLIENTS_KCAT`. Without them these tests fail with a
//! message saying so: they never skip.
//!
//! The Python scenarios live in `tests/kafka/clients.py`; each test here runs one of them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Scenarios run one at a time: each starts clients with their own threads, and the machine
/// may have two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

mod common;

/// A fresh `weir serve` with both listeners on free ports, and its data directory.
struct Fresh {
    /// Kept alive (killed on drop) for the test's length.
    _server: common::Server,
    kafka: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start() -> Fresh {
    start_with(None, "")
}

/// A fresh server; with `file_limit_kib`, every file it writes is limited to that size (the
/// way `tests/serve.rs` fills a "disk"); `extra` is appended to its config.
fn start_with(file_limit_kib: Option<u64>, extra: &str) -> Fresh {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("weir.toml");
    let data = dir.path().join("data").display().to_string();
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[listeners]\nnative = \"127.0.0.1:0\"\nkafka = \"127.0.0.1:0\"\n[groups]\ninitial_rebalance_delay_ms = 0\n{extra}"
        ),
    )
    .expect("config");
    let server = match file_limit_kib {
        Some(kib) => common::Server::spawn_with_file_limit(&config, kib),
        None => common::Server::spawn(&config),
    };
    Fresh {
        kafka: server.kafka,
        _server: server,
        _dir: dir,
    }
}

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests with `bash scripts/test.sh`, which installs the \
             real Kafka clients (kcat, confluent-kafka, kafka-python) and sets it"
        )
    })
}

/// The longest a client program may run: a hung client (librdkafka can spin forever destroying
/// a consumer a failed scenario did not close) fails its test instead of holding up the run.
const CLIENT_LIMIT: Duration = Duration::from_secs(240);

/// What a client program did: its exit status (`None`: killed at [`CLIENT_LIMIT`]), stdout
/// and stderr.
struct Ran {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{s}"),
            None => format!("killed after {} s", CLIENT_LIMIT.as_secs()),
        }
    }
}

/// Runs `cmd` with `stdin` as its input, within [`CLIENT_LIMIT`].
fn run_client(cmd: &mut Command, stdin: &str) -> Ran {
    let mut child = cmd
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the client");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    fn collect(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    }
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + CLIENT_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the client") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = writer.join();
    Ran {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Runs one scenario of `tests/kafka/clients.py` against a fresh server.
fn scenario(name: &str) {
    scenario_on(name, None);
}

fn scenario_on(name: &str, file_limit_kib: Option<u64>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(file_limit_kib, "");
    run_scenario(&server, name);
}

fn run_scenario(server: &Fresh, name: &str) {
    let out = run_client(
        Command::new(tool("KAFKA_CLIENTS_PYTHON"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/kafka/clients.py"
            ))
            .arg(server.kafka.to_string())
            .arg(name),
        "",
    );
    println!("{}", out.stdout);
    eprintln!("{}", out.stderr);
    assert!(
        out.succeeded(),
        "scenario {name} failed: {}",
        out.describe()
    );
}

#[test]
fn metadata_controller_and_cluster() {
    scenario("metadata");
}

#[test]
fn ten_thousand_keyed_records_keep_per_key_order() {
    scenario("keyed_order");
}

#[test]
fn consume_from_beginning_end_offset_and_timestamp() {
    scenario("positions");
}

#[test]
fn headers_null_keys_and_values_and_a_one_mib_value() {
    scenario("shapes");
}

#[test]
fn every_codec_produced_by_one_client_read_by_the_other() {
    scenario("compression");
}

#[test]
fn a_group_of_two_shares_three_partitions_exactly_once_across_a_leave() {
    scenario("group");
}

#[test]
fn committed_offsets_resume_after_a_consumer_restart() {
    scenario("resume");
}

#[test]
fn the_idempotent_producer() {
    scenario("idempotent");
}

#[test]
fn describe_and_alter_configs() {
    scenario("configs");
}

#[test]
fn delete_records_and_topics() {
    scenario("delete");
}

#[test]
fn aiokafka_produces_and_consumes_in_a_group() {
    scenario("aiokafka");
}

/// librdkafka's cooperative-sticky assignor: incremental rebalances as a member joins and
/// leaves, every record consumed (once, unless a commit raced a rebalance).
#[test]
fn cooperative_sticky_rebalances_incrementally() {
    scenario("cooperative");
}

/// Static membership: a restart without a rebalance, a duplicate instance fenced.
#[test]
fn static_members_restart_without_a_rebalance() {
    scenario("static");
}

/// A full disk reaches a Kafka producer as KAFKA_STORAGE_ERROR, and what was acknowledged
/// before it is read back whole (the server's files limited to 256 KiB).
#[test]
fn a_full_disk_reaches_kafka_clients_as_a_storage_error() {
    scenario_on("full_disk", Some(256));
}

/// confluent-kafka's admin calls beyond topics and configs.
#[test]
fn confluent_admin() {
    scenario("confluent_admin");
}

/// Kafka's consumer group protocol (KIP-848) with librdkafka's `group.protocol=consumer`:
/// server-side assignment shared and handed back without a partition held twice, describe and
/// list, resuming from commits, pattern subscriptions, classic members refused.
#[test]
fn confluent_kafka_consumer_group_protocol() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Heartbeats every second (Kafka's default is 5 s): partitions change hands sooner. The
    // scenario checks that a classic consumer is refused: no migration here.
    let server = start_with(
        None,
        "consumer_heartbeat_interval_ms = 1000\nmigration_policy = \"disabled\"\n",
    );
    run_scenario(&server, "consumer_protocol");
}

/// A rolling change of a group's consumers from the classic protocol to the consumer protocol
/// and back (Kafka 4's online migration): confluent-kafka on both sides (eager and
/// cooperative classic consumers), and kafka-python as a classic member.
#[test]
fn confluent_kafka_group_protocol_migration() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(None, "consumer_heartbeat_interval_ms = 1000\n");
    run_scenario(&server, "protocol_migration");
}

/// aiokafka's admin client: topics, cluster, group offsets, configs, partitions, records.
#[test]
fn aiokafka_admin() {
    scenario("aiokafka_admin");
}

/// Transactional producers and read_committed consumers of confluent-kafka, kafka-python and
/// aiokafka; then kcat (librdkafka 2.0.2, read_committed by default) reads the committed records only.
#[test]
fn transactions() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(None, "");
    run_scenario(&server, "transactions");
    let out = kcat(&server, &["-C", "-t", "tx", "-e", "-f", "%s\n"], None);
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut expected: Vec<String> = (0..100)
        .map(|i| format!("c{i}"))
        .chain((0..10).map(|i| format!("d{i}")))
        .chain(["open", "p2", "kp-commit", "aio-commit"].map(String::from))
        .collect();
    expected.sort_unstable();
    assert_eq!(got, expected, "{out}");
}

/// kafkajs speaks no flexible version at all (ApiVersions v2, Produce v7, Fetch v11); its
/// transactional producer too (InitProducerId v1, AddPartitionsToTxn v1, EndTxn v1,
/// TxnOffsetCommit v2).
#[test]
fn kafkajs_creates_produces_and_consumes_in_a_group() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/kafkajs")
            .is_dir(),
        "kafkajs is not installed: run the tests with `bash scripts/test.sh`, which installs it"
    );
    let out = run_client(
        Command::new("node")
            .arg(format!("{dir}/kafkajs.js"))
            .arg(server.kafka.to_string()),
        "",
    );
    println!("{}", out.stdout);
    eprintln!("{}", out.stderr);
    assert!(out.succeeded(), "kafkajs failed: {}", out.describe());
}

fn kcat(server: &Fresh, args: &[&str], stdin: Option<&str>) -> String {
    let out = run_client(
        Command::new(tool("KAFKA_CLIENTS_KCAT"))
            .arg("-b")
            .arg(server.kafka.to_string())
            .args(args),
        stdin.unwrap_or(""),
    );
    assert!(
        out.succeeded(),
        "kcat {args:?} failed ({}): {}",
        out.describe(),
        out.stderr
    );
    out.stdout
}

/// A compacted topic (`cleanup.policy=compact`), on a server whose cleaner checks every 200 ms:
/// confluent-kafka and kafka-python in the scenario, then kcat (Debian's librdkafka 2.0.2)
/// reads the compacted partition across its gaps.
#[test]
fn compacted_topics() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start_with(None, "[broker]\nretention_check_interval_ms = 200\n");
    run_scenario(&server, "compaction");
    let out = kcat(
        &server,
        &["-C", "-t", "table", "-e", "-f", "%k=%s@%o\n"],
        None,
    );
    let keyed: Vec<&str> = out.lines().filter(|l| l.starts_with('k')).collect();
    let expected: Vec<String> = (0..9)
        .map(|k| format!("k{k}=v{}@{}", 190 + k, 190 + k))
        .collect();
    assert_eq!(keyed, expected, "{out}");
    // The batches compaction stamped with a delete horizon (the scenario's `keeps-deletes`):
    // Debian's librdkafka reads each record's own timestamp, an hour before the horizon.
    let out = kcat(
        &server,
        &["-C", "-t", "keeps-deletes", "-e", "-f", "%k=%s@%o/%T\n"],
        None,
    );
    let kept: Vec<&str> = out.lines().filter(|l| l.starts_with('d')).collect();
    assert_eq!(kept.len(), 5, "{out}");
    let times: Vec<i64> = kept
        .iter()
        .map(|l| {
            l.rsplit('/')
                .next()
                .and_then(|t| t.parse().ok())
                .expect("a time")
        })
        .collect();
    // d0..d3 at offsets 35..38 (timestamps base + 35..38), the tombstone for d4 at base + 100.
    let base = times[0] - 35;
    assert_eq!(
        times,
        vec![base + 35, base + 36, base + 37, base + 38, base + 100],
        "{out}"
    );
    assert!(kept[4].starts_with("d4=@40/"), "{out}");
}

/// kcat links Debian's librdkafka 2.0.2, which mis-skips tagged fields: it connects only if
/// every flexible response writes tagged fields exactly when they are not default. (Cargo puts
/// the librdkafka that the `rdkafka` dev-dependency builds on `LD_LIBRARY_PATH`; the clients
/// run without it, so kcat uses Debian's own.)
#[test]
fn kcat_lists_produces_and_consumes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let listing = kcat(&server, &["-L"], None);
    assert!(listing.contains("1 brokers"), "{listing}");
    assert!(listing.contains("(controller)"), "{listing}");
    let lines: String = (0..1000).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    kcat(
        &server,
        &["-P", "-t", "kc", "-K:", "-z", "gzip"],
        Some(&lines),
    );
    let listing = kcat(&server, &["-L", "-t", "kc"], None);
    assert!(
        listing.contains("topic \"kc\" with 1 partitions"),
        "{listing}"
    );
    let out = kcat(&server, &["-C", "-t", "kc", "-e", "-f", "%k=%s@%o\n"], None);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 1000, "{out}");
    assert_eq!(got[0], "k0=v0@0");
    assert_eq!(got[999], "k5=v999@999");
    // From an offset, and the last 10 (negative offset from the end).
    let tail = kcat(
        &server,
        &["-C", "-t", "kc", "-o", "-10", "-e", "-f", "%s\n"],
        None,
    );
    assert_eq!(tail.lines().next(), Some("v990"), "{tail}");
    let from = kcat(
        &server,
        &["-C", "-t", "kc", "-o", "500", "-c", "1", "-f", "%s\n"],
        None,
    );
    assert_eq!(from.trim(), "v500");
}

/// kcat's other everyday uses: headers, JSON output, offsets by time (`-Q`, `-o s@TS`), and a
/// balanced consumer in a group (`-G`, librdkafka 2.0.2's group protocol).
#[test]
fn kcat_headers_times_and_groups() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = start();
    let first: String = (0..20).map(|i| format!("k:v{i}\n")).collect();
    kcat(
        &server,
        &["-P", "-t", "kt", "-K:", "-p", "0", "-H", "h1=x"],
        Some(&first),
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let since = weir::broker::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let second: String = (20..30).map(|i| format!("k:v{i}\n")).collect();
    kcat(
        &server,
        &["-P", "-t", "kt", "-K:", "-p", "0"],
        Some(&second),
    );

    let headers = kcat(&server, &["-C", "-t", "kt", "-c", "1", "-f", "%h"], None);
    assert_eq!(headers, "h1=x");
    let json = kcat(&server, &["-C", "-t", "kt", "-o", "-1", "-e", "-J"], None);
    assert!(
        json.contains("\"offset\":29") && json.contains("\"payload\":\"v29\""),
        "{json}"
    );
    let query = kcat(&server, &["-Q", "-t", &format!("kt:0:{since}")], None);
    assert!(query.contains("offset 20"), "{query}");
    let from_time = kcat(
        &server,
        &[
            "-C",
            "-t",
            "kt",
            "-o",
            &format!("s@{since}"),
            "-e",
            "-f",
            "%o ",
        ],
        None,
    );
    assert_eq!(from_time.trim(), "20 21 22 23 24 25 26 27 28 29");
    let grouped = kcat(
        &server,
        &[
            "-G",
            "ktg",
            "kt",
            "-c",
            "30",
            "-f",
            "%o ",
            "-X",
            "auto.offset.reset=earliest",
        ],
        None,
    );
    let offsets: Vec<&str> = grouped.split_whitespace().collect();
    assert_eq!(offsets.len(), 30, "{grouped}");
    assert_eq!(offsets.first(), Some(&"0"));
}
