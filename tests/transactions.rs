//! Transactions through the broker's handle, on every backend: what `read_committed` and
//! `read_uncommitted` readers see before and after a commit or an abort, the last stable
//! offset, aborted transactions listed and skipped, restarts with open and aborted
//! transactions, fencing by re-initialisation and by the timeout, transactional offset
//! commits, and the coordinator's refusals.

use std::time::Duration;

use weir::broker::transactions::TxnStatus;
use weir::broker::{AbortedFilter, BrokerError, FetchResult, Isolation, OffsetSpec};
use weir::config::Config;
use weir::{Acks, Backend, Broker, BrokerHandle};
use weir_storage::{Batch, BatchBuilder, CommittedOffset, Compression, Record, TopicPartition};

fn config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.backend = backend;
    c.data_dir = dir.to_path_buf();
    c.broker.arbiters = 2;
    c
}

async fn start_with(c: Config) -> BrokerHandle {
    Broker::start(c).await.expect("start broker")
}

/// A transactional batch of one record from `pid` at `epoch`, sequence `seq`.
fn txn(pid: i64, epoch: i16, seq: i32, value: &str) -> Batch {
    let mut b = BatchBuilder::new(Compression::None)
        .producer(pid, epoch, seq)
        .transactional(true);
    b.push(Record::new(1, value.to_string()));
    b.build(0).expect("build")
}

fn plain(value: &str) -> Batch {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(Record::new(1, value.to_string()));
    b.build(0).expect("build")
}

async fn publish(h: &BrokerHandle, p: i32, b: Batch) -> Result<i64, BrokerError> {
    h.publish("t", Some(p), vec![b], Acks::All)
        .await
        .map(|(_, ack)| ack.base_offset)
}

async fn read(h: &BrokerHandle, p: i32, from: i64, isolation: Isolation) -> FetchResult {
    h.fetch_isolated("t", p, from, (1 << 20, 0), Duration::ZERO, isolation)
        .await
        .expect("fetch")
}

/// The values a reader with `isolation` gets from partition `p`, as Kafka's consumers
/// deliver them (aborted transactions and markers skipped under `ReadCommitted`).
async fn values(h: &BrokerHandle, p: i32, isolation: Isolation) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let r = read(h, p, next, isolation).await;
        let Some(last) = r.batches.last() else {
            return out;
        };
        next = last.next_offset();
        let mut filter = AbortedFilter::new(&r.aborted);
        for b in &r.batches {
            let keep = match isolation {
                Isolation::ReadCommitted => filter.keep(b),
                Isolation::ReadUncommitted => !b.is_control(),
            };
            if keep {
                for rec in b.records().expect("decode") {
                    let v = rec.record.value.expect("value");
                    out.push(String::from_utf8(v.to_vec()).expect("utf8"));
                }
            }
        }
    }
}

async fn stable(h: &BrokerHandle, p: i32) -> (i64, i64) {
    let committed = h
        .list_offset_isolated("t", p, OffsetSpec::Latest, Isolation::ReadCommitted)
        .await
        .expect("list")
        .expect("offset");
    let all = h
        .list_offset_isolated("t", p, OffsetSpec::Latest, Isolation::ReadUncommitted)
        .await
        .expect("list")
        .expect("offset");
    (committed, all)
}

async fn add(h: &BrokerHandle, id: &str, pid: i64, epoch: i16, parts: &[i32]) {
    let outcomes = h
        .transactions()
        .add_partitions(
            h,
            id,
            pid,
            epoch,
            parts.iter().map(|&p| ("t".to_string(), p)).collect(),
        )
        .await
        .expect("add partitions");
    assert!(outcomes.iter().all(|(_, e)| e.is_none()), "{outcomes:?}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_become_visible_at_their_marker_and_aborts_never() {
    for backend in [Backend::Memory, Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = start_with(config(backend, dir.path())).await;
        h.create_topic("t", Some(2), vec![]).await.expect("create");
        publish(&h, 0, plain("a")).await.expect("a");
        let (pid, epoch) = h
            .init_transactional_producer("tx", 60_000, -1, -1)
            .await
            .expect("init");
        add(&h, "tx", pid, epoch, &[0, 1]).await;
        assert_eq!(publish(&h, 0, txn(pid, epoch, 0, "c1")).await, Ok(1));
        publish(&h, 1, txn(pid, epoch, 0, "c2")).await.expect("c2");
        publish(&h, 0, plain("b")).await.expect("b");

        // Open: committed readers stop at its first offset, the others read on.
        assert_eq!(stable(&h, 0).await, (1, 3), "{backend:?}");
        assert_eq!(
            values(&h, 0, Isolation::ReadCommitted).await,
            strings(&["a"])
        );
        assert_eq!(
            values(&h, 0, Isolation::ReadUncommitted).await,
            strings(&["a", "c1", "b"])
        );
        assert_eq!(
            read(&h, 0, 0, Isolation::ReadCommitted)
                .await
                .last_stable_offset,
            1
        );

        h.transactions()
            .end(&h, "tx", pid, epoch, true)
            .await
            .expect("commit");
        // Each partition got a commit marker: the offsets move past it.
        assert_eq!(stable(&h, 0).await, (4, 4));
        assert_eq!(stable(&h, 1).await, (2, 2));
        assert_eq!(
            values(&h, 0, Isolation::ReadCommitted).await,
            strings(&["a", "c1", "b"])
        );
        assert_eq!(
            values(&h, 1, Isolation::ReadCommitted).await,
            strings(&["c2"])
        );
        // A retried commit succeeds; aborting what committed does not.
        h.transactions()
            .end(&h, "tx", pid, epoch, true)
            .await
            .expect("commit retried");
        let e = h.transactions().end(&h, "tx", pid, epoch, false).await;
        assert!(matches!(e, Err(BrokerError::InvalidTxnState(_))), "{e:?}");

        // The next transaction aborts: listed for committed readers, who skip it.
        add(&h, "tx", pid, epoch, &[0]).await;
        assert_eq!(publish(&h, 0, txn(pid, epoch, 1, "x1")).await, Ok(4));
        h.transactions()
            .end(&h, "tx", pid, epoch, false)
            .await
            .expect("abort");
        publish(&h, 0, plain("d")).await.expect("d");
        let r = read(&h, 0, 0, Isolation::ReadCommitted).await;
        assert_eq!(r.aborted.len(), 1);
        assert_eq!(
            (r.aborted[0].producer_id, r.aborted[0].first_offset),
            (pid, 4)
        );
        assert!(read(&h, 0, 6, Isolation::ReadCommitted)
            .await
            .aborted
            .is_empty());
        let committed = strings(&["a", "c1", "b", "d"]);
        assert_eq!(values(&h, 0, Isolation::ReadCommitted).await, committed);
        assert_eq!(
            values(&h, 0, Isolation::ReadUncommitted).await,
            strings(&["a", "c1", "b", "x1", "d"])
        );
        assert_eq!(
            h.transactions().describe("tx").await.map(|m| m.status),
            Some(TxnStatus::CompleteAbort)
        );

        if backend != Backend::Memory {
            h.shutdown().await.expect("shutdown");
            let h = start_with(config(backend, dir.path())).await;
            assert_eq!(values(&h, 0, Isolation::ReadCommitted).await, committed);
            assert_eq!(stable(&h, 0).await, (7, 7));
            // The producer goes on after the restart: the coordinator remembers its id.
            add(&h, "tx", pid, epoch, &[1]).await;
            publish(&h, 1, txn(pid, epoch, 1, "c3")).await.expect("c3");
            h.transactions()
                .end(&h, "tx", pid, epoch, true)
                .await
                .expect("commit");
            assert_eq!(
                values(&h, 1, Isolation::ReadCommitted).await,
                strings(&["c2", "c3"])
            );
            h.shutdown().await.expect("shutdown");
        } else {
            h.shutdown().await.expect("shutdown");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_the_stable_offset_across_a_restart() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = start_with(config(backend, dir.path())).await;
        h.create_topic("t", Some(1), vec![]).await.expect("create");
        let (pid, epoch) = h
            .init_transactional_producer("tx", 60_000, -1, -1)
            .await
            .expect("init");
        add(&h, "tx", pid, epoch, &[0]).await;
        publish(&h, 0, plain("a")).await.expect("a");
        publish(&h, 0, txn(pid, epoch, 0, "o1")).await.expect("o1");
        publish(&h, 0, plain("b")).await.expect("b");
        h.shutdown().await.expect("shutdown");

        let h = start_with(config(backend, dir.path())).await;
        assert_eq!(stable(&h, 0).await, (1, 3), "{backend:?}");
        assert_eq!(
            values(&h, 0, Isolation::ReadCommitted).await,
            strings(&["a"])
        );
        publish(&h, 0, txn(pid, epoch, 1, "o2")).await.expect("o2");
        h.transactions()
            .end(&h, "tx", pid, epoch, false)
            .await
            .expect("abort");
        assert_eq!(
            values(&h, 0, Isolation::ReadCommitted).await,
            strings(&["a", "b"])
        );
        h.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_aborts_what_the_old_one_left_open_and_fences_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_with(config(Backend::Segment, dir.path())).await;
    h.create_topic("t", Some(1), vec![]).await.expect("create");
    let (pid, old) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    add(&h, "tx", pid, old, &[0]).await;
    publish(&h, 0, txn(pid, old, 0, "zombie"))
        .await
        .expect("write");

    let (same, new) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init again");
    assert_eq!((same, new), (pid, old + 1));
    // The retry of that request (KIP-360: it names what it replaced; its answer was lost) gets
    // the same answer, not another epoch.
    let retry = h.init_transactional_producer("tx", 60_000, pid, old).await;
    assert_eq!(retry, Ok((pid, new)));
    assert_eq!(
        stable(&h, 0).await,
        (2, 2),
        "the open transaction was aborted"
    );
    assert!(values(&h, 0, Isolation::ReadCommitted).await.is_empty());

    // The old instance is fenced everywhere: at the coordinator and in the partition.
    let e = h
        .transactions()
        .add_partitions(&h, "tx", pid, old, vec![("t".into(), 0)])
        .await;
    assert!(
        matches!(e, Err(BrokerError::InvalidProducerEpoch { .. })),
        "{e:?}"
    );
    let e = publish(&h, 0, txn(pid, old, 1, "late")).await;
    assert!(
        matches!(e, Err(BrokerError::InvalidProducerEpoch { .. })),
        "{e:?}"
    );
    let e = h.transactions().end(&h, "tx", pid, old, true).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(47));

    // The new one transacts from sequence 0 of its epoch; once it has begun, the old
    // request is no longer a retry.
    add(&h, "tx", pid, new, &[0]).await;
    let late = h.init_transactional_producer("tx", 60_000, pid, old).await;
    assert!(
        matches!(late, Err(BrokerError::InvalidProducerEpoch { .. })),
        "{late:?}"
    );
    publish(&h, 0, txn(pid, new, 0, "fresh"))
        .await
        .expect("write");
    h.transactions()
        .end(&h, "tx", pid, new, true)
        .await
        .expect("commit");
    assert_eq!(
        values(&h, 0, Isolation::ReadCommitted).await,
        strings(&["fresh"])
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_aborts_a_transaction_past_its_timeout_and_fences_its_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Memory, dir.path());
    c.broker.transaction_abort_check_interval_ms = 50;
    let h = start_with(c).await;
    h.create_topic("t", Some(1), vec![]).await.expect("create");
    let e = h.init_transactional_producer("tx", 0, -1, -1).await;
    assert!(
        matches!(e, Err(BrokerError::InvalidTransactionTimeout { .. })),
        "{e:?}"
    );
    let e = h.init_transactional_producer("tx", 900_001, -1, -1).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(50));

    let (pid, epoch) = h
        .init_transactional_producer("tx", 200, -1, -1)
        .await
        .expect("init");
    add(&h, "tx", pid, epoch, &[0]).await;
    publish(&h, 0, txn(pid, epoch, 0, "slow"))
        .await
        .expect("write");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while h.transactions().describe("tx").await.map(|m| m.status) != Some(TxnStatus::CompleteAbort)
    {
        assert!(tokio::time::Instant::now() < deadline, "not aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stable(&h, 0).await, (2, 2));
    assert!(values(&h, 0, Isolation::ReadCommitted).await.is_empty());
    let e = h.transactions().end(&h, "tx", pid, epoch, true).await;
    assert!(
        matches!(e, Err(BrokerError::InvalidProducerEpoch { .. })),
        "{e:?}"
    );
    let e = publish(&h, 0, txn(pid, epoch, 1, "late")).await;
    assert!(
        matches!(e, Err(BrokerError::InvalidProducerEpoch { .. })),
        "{e:?}"
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_committed_in_a_transaction_reach_the_group_with_the_commit_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_with(config(Backend::Sled, dir.path())).await;
    h.create_topic("t", Some(1), vec![]).await.expect("create");
    let (pid, epoch) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    let offset = |n: i64| {
        vec![(
            TopicPartition::new("in", 0),
            CommittedOffset {
                offset: n,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
        )]
    };
    let coordinator = h.transactions();
    // Without AddOffsetsToTxn the group is not part of the transaction.
    let e = coordinator
        .commit_offsets(&h, "tx", pid, epoch, "g", ("", -1), offset(5))
        .await;
    assert!(matches!(e, Err(BrokerError::InvalidTxnState(_))), "{e:?}");

    for (commit, n) in [(false, 5), (true, 7)] {
        coordinator
            .add_offsets(&h, "tx", pid, epoch, "g")
            .await
            .expect("add offsets");
        coordinator
            .commit_offsets(&h, "tx", pid, epoch, "g", ("", -1), offset(n))
            .await
            .expect("stage");
        assert!(h.fetch_offsets("g", None).await.expect("fetch").is_empty());
        coordinator
            .end(&h, "tx", pid, epoch, commit)
            .await
            .expect("end");
    }
    let committed = h.fetch_offsets("g", None).await.expect("fetch");
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].1.offset, 7, "the aborted 5 never landed");
    // A member check (KIP-447) with a member the group does not have.
    coordinator
        .add_offsets(&h, "tx", pid, epoch, "g")
        .await
        .expect("add offsets");
    let e = coordinator
        .commit_offsets(&h, "tx", pid, epoch, "g", ("ghost", 3), offset(9))
        .await;
    assert!(matches!(e, Err(BrokerError::UnknownMember(_))), "{e:?}");
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_refuses_what_does_not_fit_the_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_with(config(Backend::Memory, dir.path())).await;
    h.create_topic("t", Some(2), vec![]).await.expect("create");
    let (pid, epoch) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    let c = h.transactions();
    // Unknown ids and producer ids.
    let e = c.end(&h, "nope", pid, epoch, true).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(49));
    assert_eq!(c.len(), 1, "an unknown id leaves nothing behind");
    let e = c.end(&h, "tx", pid + 1, epoch, true).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(49));
    // Nothing open: nothing to end.
    let e = c.end(&h, "tx", pid, epoch, true).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(48));
    // An unknown partition adds nothing, and says which.
    let outcomes = c
        .add_partitions(
            &h,
            "tx",
            pid,
            epoch,
            vec![("t".into(), 0), ("t".into(), 7), ("gone".into(), 0)],
        )
        .await
        .expect("answered");
    let codes: Vec<Option<i16>> = outcomes
        .iter()
        .map(|(_, e)| e.as_ref().map(BrokerError::kafka_code))
        .collect();
    assert_eq!(codes, vec![None, Some(3), Some(3)]);
    // So partition 0 was not added: a transactional write to it is refused.
    let e = publish(&h, 0, txn(pid, epoch, 0, "v")).await;
    assert_eq!(e.map_err(|e| e.kafka_code()), Err(48));
    add(&h, "tx", pid, epoch, &[0]).await;
    let e = publish(&h, 1, txn(pid, epoch, 0, "v")).await;
    assert_eq!(
        e.map_err(|e| e.kafka_code()),
        Err(48),
        "partition 1 not added"
    );
    publish(&h, 0, txn(pid, epoch, 0, "v"))
        .await
        .expect("added");
    // Markers are the broker's: a client's control batch is refused.
    let mut marker = weir_storage::TxnMarker {
        commit: true,
        coordinator_epoch: 0,
    }
    .batch(pid, epoch, 0)
    .expect("marker");
    marker.set_base_offset(0);
    let e = publish(&h, 0, marker).await;
    assert!(e.is_err(), "{e:?}");
    h.shutdown().await.expect("shutdown");
}

/// Every file named `snapshot` under `dir` (the segment backend's producer-state snapshots).
fn remove_snapshots(dir: &std::path::Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_snapshots(&path);
        } else if path.file_name().is_some_and(|n| n == "snapshot") {
            std::fs::remove_file(&path).expect("remove snapshot");
            removed += 1;
        }
    }
    removed
}

/// Without a snapshot (a crash before the first, or one that does not fit the log) the state
/// is replayed from the log: an aborted transaction far before the tail a rebuild reads for
/// idempotence (64 MiB) is still found, and an open one still holds the stable offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_snapshot_transactions_are_replayed_from_the_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Segment, dir.path());
    c.topic_defaults.durability = weir::config::DurabilityMode::None;
    let h = start_with(c.clone()).await;
    h.create_topic("t", Some(2), vec![]).await.expect("create");
    let (pid, epoch) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    add(&h, "tx", pid, epoch, &[0]).await;
    publish(&h, 0, txn(pid, epoch, 0, "aborted"))
        .await
        .expect("write");
    h.transactions()
        .end(&h, "tx", pid, epoch, false)
        .await
        .expect("abort");
    // 70 MiB of plain batches after it.
    let big = "x".repeat(1_000_000);
    for _ in 0..70 {
        publish(&h, 0, plain(&big)).await.expect("filler");
    }
    add(&h, "tx", pid, epoch, &[1]).await;
    publish(&h, 1, plain("before")).await.expect("before");
    publish(&h, 1, txn(pid, epoch, 0, "open"))
        .await
        .expect("open");
    h.shutdown().await.expect("shutdown");
    assert!(
        remove_snapshots(dir.path()) >= 2,
        "snapshots were saved at the stop"
    );

    let h = start_with(c).await;
    let r = read(&h, 0, 0, Isolation::ReadCommitted).await;
    assert_eq!(
        r.aborted.len(),
        1,
        "the aborted transaction at offset 0 is known"
    );
    assert_eq!(r.aborted[0].first_offset, 0);
    assert_eq!(
        stable(&h, 1).await,
        (1, 2),
        "the open transaction holds partition 1"
    );
    h.transactions()
        .end(&h, "tx", pid, epoch, true)
        .await
        .expect("commit after the restart");
    assert_eq!(
        values(&h, 1, Isolation::ReadCommitted).await,
        strings(&["before", "open"])
    );
    h.shutdown().await.expect("shutdown");
}

fn keyed(pid: i64, epoch: i16, seq: i32, key: &str, value: &str) -> Batch {
    let mut b = BatchBuilder::new(Compression::None);
    if pid >= 0 {
        b = b.producer(pid, epoch, seq).transactional(true);
    }
    b.push(Record::new(1, value.to_string()).with_key(key.to_string()));
    b.build(0).expect("build")
}

/// Creates the one-partition compacted topic "t" with small segments, a pass as soon as
/// anything is dirty, and `extra` settings.
async fn create_compacted(h: &BrokerHandle, extra: &[(&str, &str)]) {
    let base = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "1024"),
        ("min.cleanable.dirty.ratio", "0.01"),
    ];
    let settings = base
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    h.create_topic("t", Some(1), settings)
        .await
        .expect("create");
}

/// Writes to another key push everything before out of the head (the active segment), so
/// that every backend compacts it.
async fn push_out_of_the_head(h: &BrokerHandle) {
    for i in 0..15 {
        let v = format!("{i:0>200}");
        publish(h, 0, keyed(-1, 0, 0, "filler", &v))
            .await
            .expect("filler");
    }
}

/// A compacted topic written transactionally (Kafka Streams' changelogs with exactly-once):
/// a committed update replaces the older value, an aborted one is removed and replaces
/// nothing, an open one waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_committed_updates_and_drops_aborted_ones() {
    for backend in [Backend::Memory, Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(backend, dir.path());
        c.broker.retention_check_interval_ms = 50;
        let h = start_with(c).await;
        create_compacted(&h, &[]).await;
        let (pid, epoch) = h
            .init_transactional_producer("tx", 60_000, -1, -1)
            .await
            .expect("init");
        publish(&h, 0, keyed(-1, 0, 0, "a", "a0"))
            .await
            .expect("a0");
        publish(&h, 0, keyed(-1, 0, 0, "b", "b0"))
            .await
            .expect("b0");
        let end = |commit: bool| {
            let h = h.clone();
            async move {
                h.transactions()
                    .end(&h, "tx", pid, epoch, commit)
                    .await
                    .expect("end");
            }
        };
        add(&h, "tx", pid, epoch, &[0]).await;
        publish(&h, 0, keyed(pid, epoch, 0, "a", "a-aborted"))
            .await
            .expect("w");
        end(false).await;
        add(&h, "tx", pid, epoch, &[0]).await;
        publish(&h, 0, keyed(pid, epoch, 1, "b", "b1"))
            .await
            .expect("w");
        end(true).await;
        add(&h, "tx", pid, epoch, &[0]).await;
        publish(&h, 0, keyed(pid, epoch, 2, "a", "a-open"))
            .await
            .expect("w");
        push_out_of_the_head(&h).await;
        let want = |v: &[String]| {
            v.contains(&"a0".to_string())
                && v.contains(&"b1".to_string())
                && v.contains(&"a-open".to_string())
                && !v.contains(&"b0".to_string())
                && !v.contains(&"a-aborted".to_string())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = values(&h, 0, Isolation::ReadUncommitted).await;
            if want(&v) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: not compacted as expected: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Committed readers see a0 and b1 now, and a-open once it commits.
        assert_eq!(
            &values(&h, 0, Isolation::ReadCommitted).await[..2],
            &strings(&["a0", "b1"])[..]
        );
        end(true).await;
        let v = values(&h, 0, Isolation::ReadCommitted).await;
        assert!(v.contains(&"a-open".to_string()), "{v:?}");
        h.shutdown().await.expect("shutdown");
    }
}

/// What DescribeProducers shows (`kafka-transactions.sh describe-producers` and
/// `find-hanging`): per partition, each producer it remembers with its epoch, last sequence
/// and write time, and the first offset of a transaction it has open there; after the
/// transaction ends, no open offset; after a restart, the same producers, rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_producers_shows_writers_and_open_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = start_with(config(Backend::Segment, dir.path())).await;
    h.create_topic("t", Some(2), vec![]).await.expect("create");
    assert_eq!(
        h.describe_producers("t", 0).await.expect("describe"),
        vec![]
    );

    let (idem, idem_epoch) = h.init_producer_id(None, -1, -1).await.expect("init");
    for seq in 0..3 {
        let mut b = BatchBuilder::new(Compression::None).producer(idem, idem_epoch, seq * 2);
        b.push(Record::new(1, "a"));
        b.push(Record::new(1, "b"));
        publish(&h, 0, b.build(0).expect("build"))
            .await
            .expect("publish");
    }
    publish(&h, 0, plain("not idempotent"))
        .await
        .expect("publish");
    let (pid, epoch) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    add(&h, "tx", pid, epoch, &[0]).await;
    let opened = publish(&h, 0, txn(pid, epoch, 0, "open"))
        .await
        .expect("publish");
    publish(&h, 0, txn(pid, epoch, 1, "still open"))
        .await
        .expect("publish");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let active = h.describe_producers("t", 0).await.expect("describe");
    assert_eq!(active.len(), 2, "{active:?}");
    let (a, t) = (&active[0], &active[1]);
    assert_eq!(
        (a.producer_id, a.epoch, a.last_sequence),
        (idem, idem_epoch, 5)
    );
    assert_eq!(a.current_txn_start_offset, None);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    assert!(a.last_timestamp_ms > before - 60_000 && a.last_timestamp_ms <= after);
    assert_eq!((t.producer_id, t.epoch, t.last_sequence), (pid, epoch, 1));
    assert_eq!(t.current_txn_start_offset, Some(opened));
    assert_eq!(
        h.describe_producers("t", 1).await.expect("describe"),
        vec![]
    );
    assert!(matches!(
        h.describe_producers("nope", 0).await,
        Err(BrokerError::UnknownTopic(_))
    ));
    assert!(h.describe_producers("t", 7).await.is_err());

    h.transactions()
        .end(&h, "tx", pid, epoch, true)
        .await
        .expect("commit");
    // The marker's write is acknowledged as the log append returns; the partition closes
    // the transaction as it takes the append's result, a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.describe_producers("t", 0).await.expect("describe")[1]
        .current_txn_start_offset
        .is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.shutdown().await.expect("shutdown");

    let h = start_with(config(Backend::Segment, dir.path())).await;
    let again = h.describe_producers("t", 0).await.expect("describe");
    let ids: Vec<(i64, i16, i32, Option<i64>)> = again
        .iter()
        .map(|a| {
            (
                a.producer_id,
                a.epoch,
                a.last_sequence,
                a.current_txn_start_offset,
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![(idem, idem_epoch, 5, None), (pid, epoch, 1, None)]
    );
    h.shutdown().await.expect("shutdown");
}

/// A compacted topic written by one transaction after another (Kafka Streams' exactly-once
/// changelogs): once later transactions overwrite a transaction's records, its commit marker
/// goes too (after `delete.retention.ms`, here 0), but for the newest; committed readers see
/// the same, and a restart that replays the whole log (no snapshot) finds no transaction open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_markers_of_overwritten_transactions_are_compacted_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Segment, dir.path());
    c.broker.retention_check_interval_ms = 50;
    let h = start_with(c.clone()).await;
    create_compacted(&h, &[("delete.retention.ms", "0")]).await;
    commit_each(&h, (0..20).map(|i| format!("v{i}"))).await;
    push_out_of_the_head(&h).await;
    wait_for_one_marker(&h, "before the restarts").await;
    let committed = values(&h, 0, Isolation::ReadCommitted).await;
    let k: Vec<&String> = committed.iter().filter(|v| v.starts_with('v')).collect();
    assert_eq!(k, ["v19"], "k's latest only: {committed:?}");
    h.shutdown().await.expect("shutdown");

    assert!(remove_snapshots(dir.path()) > 0);
    let h = start_with(c.clone()).await;
    let (stable, end) = stable(&h, 0).await;
    assert_eq!(stable, end, "no transaction left open by the replay");
    assert_eq!(values(&h, 0, Isolation::ReadCommitted).await, committed);
    // The producer goes on.
    commit_each(&h, ["after".to_string()]).await;
    let v = values(&h, 0, Isolation::ReadCommitted).await;
    assert!(v.contains(&"after".to_string()), "{v:?}");
    h.shutdown().await.expect("shutdown");

    // Markers written after the last snapshot the partition saved, with no timer running (no
    // snapshot, no compaction): the clean stop saves a snapshot at the end; after the restart
    // the state rebuilt from it lets them go, with no new write.
    let mut quiet = c.clone();
    quiet.broker.retention_check_interval_ms = 3_600_000;
    let h = start_with(quiet).await;
    commit_each(&h, (0..10).map(|i| format!("w{i}"))).await;
    push_out_of_the_head(&h).await;
    assert!(markers(&h).await > 5);
    h.shutdown().await.expect("shutdown");
    let h = start_with(c).await;
    // A committed read loads the producer state (from the snapshot).
    let v = values(&h, 0, Isolation::ReadCommitted).await;
    assert!(v.contains(&"w9".to_string()), "{v:?}");
    wait_for_one_marker(&h, "after the restart").await;
    h.shutdown().await.expect("shutdown");
}

/// A new instance of the transactional producer "tx" writes each of `values` to key "k" of
/// partition 0 of "t", one committed transaction each.
async fn commit_each(h: &BrokerHandle, values: impl IntoIterator<Item = String>) {
    let (pid, epoch) = h
        .init_transactional_producer("tx", 60_000, -1, -1)
        .await
        .expect("init");
    for (seq, v) in values.into_iter().enumerate() {
        add(h, "tx", pid, epoch, &[0]).await;
        publish(h, 0, keyed(pid, epoch, seq as i32, "k", &v))
            .await
            .expect("write");
        h.transactions()
            .end(h, "tx", pid, epoch, true)
            .await
            .expect("commit");
    }
}

/// The control batches (transaction markers) partition 0 of "t" holds.
async fn markers(h: &BrokerHandle) -> usize {
    let mut n = 0;
    let mut next = 0;
    loop {
        let r = read(h, 0, next, Isolation::ReadUncommitted).await;
        let Some(last) = r.batches.last() else {
            return n;
        };
        next = last.next_offset();
        n += r.batches.iter().filter(|b| b.is_control()).count();
    }
}

/// Waits (20 s at most) until compaction has left one marker in partition 0 of "t".
async fn wait_for_one_marker(h: &BrokerHandle, when: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while markers(h).await > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "markers left {when}: {}",
            markers(h).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
