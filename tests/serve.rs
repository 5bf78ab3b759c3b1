//! `weir serve` as a real child process: configured by a file, driven over the native protocol,
//! stopped with SIGTERM (exit 0), started again on the same data: records and committed offsets
//! are still there. For the segment and sled backends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use weir::client::{RemoteTransport, Transport};
use weir::{Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

mod common;
use common::Server;

/// A `weir.toml` for `backend` with its data under `dir` and the native listener on a free port.
fn write_config(dir: &Path, backend: &str) -> std::path::PathBuf {
    let config = dir.join("weir.toml");
    let data = dir.join("data").display().to_string();
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[storage]\nbackend = \"{backend}\"\n[listeners]\nnative = \"127.0.0.1:0\"\nkafka = \"127.0.0.1:0\"\n[groups]\ninitial_rebalance_delay_ms = 0\n"
        ),
    )
    .expect("config");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stop_restart_keeps_records_and_offsets() {
    for backend in ["segment", "sled"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), backend);
        let child = Server::spawn(&config);
        let addr = child.native;
        let remote = RemoteTransport::connect(addr).await.expect("connect");
        Admin::new(remote.clone())
            .create_topic("kept", 2, &[("retention.ms", "-1")])
            .await
            .expect("create");
        let producer = Producer::new(remote.clone(), ProducerConfig::default());
        let mut sent = Vec::new();
        for i in 0..100 {
            sent.push(
                producer
                    .send(ProducerRecord::new("kept", format!("r{i}")).key(format!("{i}")))
                    .await,
            );
        }
        for d in sent {
            d.await.expect("delivered");
        }
        let mut consumer = Consumer::new(
            remote.clone(),
            ConsumerConfig {
                group_id: Some("keepers".into()),
                auto_commit_interval: None,
                ..ConsumerConfig::default()
            },
        );
        consumer.subscribe(&["kept"]).expect("subscribe");
        let mut got = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while got < 100 && std::time::Instant::now() < deadline {
            got += consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll")
                .len();
        }
        assert_eq!(got, 100, "{backend}");
        consumer.commit().await.expect("commit");
        consumer.close().await.expect("close");
        drop((producer, remote));
        child.terminate();

        let child = Server::spawn(&config);
        let addr = child.native;
        let remote = RemoteTransport::connect(addr).await.expect("reconnect");
        let d = remote.describe_topic("kept").await.expect("describe");
        let end: i64 = d.partitions.iter().map(|p| p.end).sum();
        assert_eq!(end, 100, "{backend}: records survive the restart");
        let committed: i64 = remote
            .fetch_offsets("keepers", None)
            .await
            .expect("offsets")
            .iter()
            .map(|(_, o)| o.offset)
            .sum();
        assert_eq!(
            committed, 100,
            "{backend}: committed offsets survive the restart"
        );
        drop(remote);
        child.terminate();

        // `weir inspect` reads the stopped server's directory.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["inspect", "--backend", backend])
            .arg(dir.path().join("data"))
            .output()
            .expect("weir inspect");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{backend}: {text}");
        let (logs, offsets): (i64, i64) = text.lines().fold((0, 0), |(l, o), line| {
            let n = |s: &str| s.trim().parse::<i64>().unwrap_or(0);
            if let Some(rest) = line.trim().strip_prefix("log kept-") {
                let records = rest.split(" (").nth(1).and_then(|r| r.split(' ').next());
                (l + records.map_or(0, n), o)
            } else if let Some(rest) = line.trim().strip_prefix("group keepers: kept-") {
                (l, o + rest.rsplit(' ').next().map_or(0, n))
            } else {
                (l, o)
            }
        });
        assert_eq!((logs, offsets), (100, 100), "{backend}: {text}");
        // The consumer left: the group's record says Empty, at the generation it reached.
        assert!(
            text.lines()
                .any(|l| l.contains("group keepers: generation") && l.contains(", 0 members")),
            "{backend}: {text}"
        );
    }
}

fn weir(addr: SocketAddr, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .arg("--broker")
        .arg(addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_against_a_server_and_after_its_restart() {
    for backend in ["segment", "sled"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), backend);
        let child = Server::spawn(&config);
        let addr = child.native;
        let (ok, out, err) = weir(
            addr,
            &[
                "topic",
                "create",
                "cli",
                "--partitions",
                "2",
                "--config",
                "retention.ms=-1",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert!(out.contains("2 partitions"), "{out}");
        let lines: String = (0..50).map(|i| format!("k{i}:v{i}\n")).collect();
        let (ok, _, err) = weir(
            addr,
            &[
                "produce",
                "cli",
                "--key-separator",
                ":",
                "--header",
                "src=test",
            ],
            Some(&lines),
        );
        assert!(ok, "{err}");
        assert!(err.contains("wrote 50 records"), "{err}");
        let (ok, out, err) = weir(
            addr,
            &[
                "consume",
                "cli",
                "--from-beginning",
                "--exit-at-end",
                "--format",
                "%k=%v %h",
            ],
            None,
        );
        assert!(ok, "{err}");
        let mut got: Vec<&str> = out.lines().collect();
        got.sort_unstable();
        assert_eq!(got.len(), 50, "{out}");
        assert!(got.iter().all(|l| l.ends_with(" src=test")));
        // A group reads 30, commits, and exits.
        let (ok, out, err) = weir(
            addr,
            &[
                "consume",
                "cli",
                "--group",
                "g",
                "--from-beginning",
                "--max-messages",
                "30",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 30);
        let (ok, out, _) = weir(addr, &["group", "describe", "g"], None);
        assert!(ok);
        assert!(out.contains("lag"), "{out}");
        child.terminate();

        let child = Server::spawn(&config);
        let addr = child.native;
        // After the restart the group resumes: exactly the 20 it had not read.
        let (ok, out, err) = weir(
            addr,
            &["consume", "cli", "--group", "g", "--exit-at-end"],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(out.lines().count(), 20, "{backend}: {out}");
        let (ok, out, _) = weir(addr, &["group", "list"], None);
        assert!(ok && out.contains("g\tEmpty"), "{out}");
        let (ok, out, _) = weir(
            addr,
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "cli",
                "--to-earliest",
            ],
            None,
        );
        assert!(ok, "{out}");
        let (ok, _, err) = weir(addr, &["topic", "describe", "nope"], None);
        assert!(!ok);
        assert!(err.starts_with("weir: unknown topic"), "{err}");
        // Topic config: set, put back to the default, and refused as a whole when one is bad.
        let (ok, out, err) = weir(
            addr,
            &["topic", "alter", "cli", "--config", "retention.ms=3600000"],
            None,
        );
        assert!(ok && out.contains("altered topic cli"), "{out}{err}");
        let (_, out, _) = weir(addr, &["topic", "describe", "cli"], None);
        assert!(out.contains("retention.ms=3600000"), "{out}");
        let (ok, _, err) = weir(
            addr,
            &[
                "topic",
                "alter",
                "cli",
                "--delete-config",
                "retention.ms",
                "--config",
                "segment.bytes=lots",
            ],
            None,
        );
        assert!(!ok && err.contains("segment.bytes"), "{err}");
        let (_, out, _) = weir(addr, &["topic", "describe", "cli"], None);
        assert!(out.contains("retention.ms=3600000"), "unchanged: {out}");
        let (ok, _, err) = weir(
            addr,
            &["topic", "alter", "cli", "--delete-config", "retention.ms"],
            None,
        );
        assert!(ok, "{err}");
        let (_, out, _) = weir(addr, &["topic", "describe", "cli"], None);
        assert!(
            out.contains("retention.ms=604800000"),
            "the default again: {out}"
        );
        // More partitions, as `kafka-topics --alter --partitions`; never fewer.
        let (_, before, _) = weir(addr, &["topic", "describe", "cli"], None);
        let count = |d: &str| -> u32 {
            let words: Vec<&str> = d.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| *w == "partitions")
                .expect("count");
            words[at + 1].parse().expect("a number")
        };
        let n = count(&before);
        let more = (n + 2).to_string();
        let (ok, out, err) = weir(
            addr,
            &["topic", "alter", "cli", "--partitions", &more],
            None,
        );
        assert!(ok, "{out}{err}");
        let (_, after, _) = weir(addr, &["topic", "describe", "cli"], None);
        assert_eq!(count(&after), n + 2, "{after}");
        let (ok, _, err) = weir(addr, &["topic", "alter", "cli", "--partitions", "1"], None);
        assert!(!ok && !err.is_empty(), "fewer partitions are refused");
        // An empty group goes with its offsets, as `kafka-consumer-groups --delete`.
        let (ok, out, err) = weir(addr, &["group", "delete", "g"], None);
        assert!(ok && out.contains("deleted group g"), "{out}{err}");
        let (_, out, _) = weir(addr, &["group", "list"], None);
        assert!(!out.contains("g\t"), "{out}");
        let (ok, out, _) = weir(addr, &["topic", "delete", "cli"], None);
        assert!(ok, "{out}");
        child.terminate();
    }
}

/// `weir consume --group G --exit-at-end` as a member the group gives no partition (another
/// member holds the only one): nothing is there to read, so it exits instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_at_end_exits_for_a_member_without_partitions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "segment");
    let child = Server::spawn(&config);
    let addr = child.native;
    let remote = RemoteTransport::connect(addr).await.expect("connect");
    Admin::new(remote.clone())
        .create_topic("lonely", 1, &[])
        .await
        .expect("create");
    let producer = Producer::new(remote.clone(), ProducerConfig::default());
    producer
        .send(ProducerRecord::new("lonely", "only"))
        .await
        .await
        .expect("delivered");
    // The holder joins first and, its member id sorting first, keeps partition 0 whatever the
    // assignor; it polls on in the background so it rejoins every rebalance.
    let mut holder = Consumer::new(
        remote.clone(),
        ConsumerConfig {
            group_id: Some("shared".into()),
            client_id: "a-holder".into(),
            ..ConsumerConfig::default()
        },
    );
    holder.subscribe(&["lonely"]).expect("subscribe");
    while holder.assignment().is_empty() {
        holder.poll(Duration::from_millis(100)).await.expect("poll");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polling = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = holder.poll(Duration::from_millis(100)).await;
            }
            let _ = holder.close().await;
        })
    };
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_weir"))
            .args(["consume", "lonely", "--group", "shared", "--exit-at-end"])
            .arg("--broker")
            .arg(addr.to_string())
            .output()
            .expect("run weir consume")
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exited on its own: {:?} {err}",
        out.status
    );
    assert!(err.contains("read 0 records"), "{err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    polling.await.expect("holder");
    child.terminate();
}

/// Every record of `topic`'s partition 0 from offset 0, as (offset, value).
async fn read_all(remote: &RemoteTransport, topic: &str) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let from = out.last().map_or(0, |(o, _)| o + 1);
        let f = remote
            .fetch(topic, 0, from, 1 << 20, 0, Duration::ZERO)
            .await
            .expect("fetch");
        let before = out.len();
        for b in &f.batches {
            for r in b.records().expect("records") {
                if r.offset >= from {
                    out.push((r.offset, r.record.value.expect("value").to_vec()));
                }
            }
        }
        if out.len() == before {
            return out;
        }
    }
}

/// A 1,000-byte record numbered `i`.
fn numbered(i: usize) -> weir::Batch {
    let mut b = weir::BatchBuilder::new(weir::Compression::None);
    b.push(weir::Record::new(weir::broker::now_ms(), numbered_value(i)));
    b.build(0).expect("batch")
}

/// A full disk (here: a file-size limit, which fails writes the same way) refuses the publish
/// that does not fit with a clear storage error, the server keeps serving, stops cleanly, and
/// after a restart with room every acknowledged record is there, nothing else, and the log
/// takes new ones. The segment backend keeps nothing of the refused write and the partition
/// usable without a restart (reads, and writes once there is room: here a new segment, after
/// `segment.bytes` is altered; other topics meanwhile); sled's log stops (fail-stop: an I/O
/// error in its flush leaves its state unknown) until the restart, and the stop exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_publish_that_does_not_fit_and_loses_nothing() {
    for backend in ["segment", "sled"] {
        full_disk(backend).await;
    }
}

async fn full_disk(backend: &str) {
    let segment = backend == "segment";
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), backend);
    let server = Server::spawn_with_file_limit(&config, 256);
    let remote = RemoteTransport::connect(server.native)
        .await
        .expect("connect");
    let admin = Admin::new(remote.clone());
    admin
        .create_topic("full", 1, &[("retention.ms", "-1")])
        .await
        .expect("create");
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..1000 {
        match remote
            .publish("full", Some(0), vec![numbered(i)], Acks::All)
            .await
        {
            Ok((_, ack)) => acked.push((ack.base_offset, i)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 256 KiB file limit refuses a publish within 1 MB");
    assert!(
        acked.len() > 50,
        "{backend}: only {} records fit",
        acked.len()
    );
    assert!(
        matches!(refusal, weir::BrokerError::Storage { .. }),
        "{backend}: {refusal:?}"
    );
    let said = refusal.to_string();
    assert!(
        said.contains("File too large"),
        "{backend}: names the cause: {said}"
    );
    let numbered_acked = |acked: &[(i64, usize)]| -> Vec<(i64, Vec<u8>)> {
        acked.iter().map(|&(o, i)| (o, numbered_value(i))).collect()
    };
    let again = remote
        .publish("full", Some(0), vec![numbered(9999)], Acks::All)
        .await
        .expect_err("still no room");
    if segment {
        // Refused for the same reason (the log did not fail); nothing was kept of it.
        assert!(said.contains("no space"), "{said}");
        assert!(again.to_string().contains("no space"), "{again}");
        let d = remote.describe_topic("full").await.expect("describe");
        assert_eq!(d.partitions[0].end, acked.len() as i64);
        assert_eq!(read_all(&remote, "full").await, numbered_acked(&acked));
        // Room again, without a restart: a smaller `segment.bytes` rolls the next append into
        // a new segment file, which the limit leaves room in.
        admin
            .alter_topic_config("full", &[("segment.bytes", "1024")])
            .await
            .expect("alter");
        let (_, ack) = remote
            .publish("full", Some(0), vec![numbered(acked.len())], Acks::All)
            .await
            .expect("a new segment has room");
        assert_eq!(ack.base_offset, acked.len() as i64);
        acked.push((ack.base_offset, acked.len()));
        // Room elsewhere is still used: a new topic's first segment takes records.
        admin
            .create_topic("other", 1, &[])
            .await
            .expect("create other");
        remote
            .publish("other", Some(0), vec![numbered(0)], Acks::All)
            .await
            .expect("another topic is served");
    } else {
        assert!(
            matches!(again, weir::BrokerError::Storage { .. }),
            "{again:?}"
        );
    }
    // The server answers what does not need the full file.
    assert!(admin
        .list_topics()
        .await
        .expect("list")
        .contains(&"full".to_string()));
    drop((admin, remote));
    if segment {
        server.terminate();
    } else {
        // The stop closes every log; the one that failed makes the exit status say so.
        assert_eq!(server.stop().code(), Some(1), "{backend}");
    }

    let server = Server::spawn(&config);
    let remote = RemoteTransport::connect(server.native)
        .await
        .expect("reconnect");
    assert_eq!(
        read_all(&remote, "full").await,
        numbered_acked(&acked),
        "{backend}: every acknowledged record, and nothing else, after the restart"
    );
    let (_, ack) = remote
        .publish("full", Some(0), vec![numbered(acked.len())], Acks::All)
        .await
        .expect("room again");
    assert_eq!(ack.base_offset, acked.len() as i64);
    drop(remote);
    server.terminate();
}

fn numbered_value(i: usize) -> Vec<u8> {
    let mut value = format!("{i:08}").into_bytes();
    value.resize(1000, b'.');
    value
}
