//! The conformance suite: one set of scenarios that every [`Storage`] backend must pass.
//!
//! A backend provides a [`StorageFactory`] (a location it can open, close and open again) and
//! expands the whole suite with one line in its tests:
//!
//! ```ignore
//! weir_storage::conformance_suite!(durable, my_backend_factory());   // survives reopen
//! weir_storage::conformance_suite!(volatile, MemoryFactory::default()); // in-memory only
//! ```
//!
//! Each scenario is a plain `async fn(&dyn StorageFactory)` here, so a user writing a fourth
//! backend runs exactly what the built-in ones run. Scenarios build their own runtime
//! ([`run`]), so the backend's tests need no async test framework.
//!
//! The model-based check ([`model_check`]) drives a random sequence of appends, reads, retention,
//! start-offset moves and (for durable backends) reopens against a plain `Vec` model. Its seed is
//! printed and taken from `WEIR_SEED` when set, so a failure is reproducible.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Batch, BatchBuilder, CommittedOffset, CompactionPolicy, Compression, Durability, LogConfig,
    Offset, PartitionLog, Record, Retention, Storage, StorageError, TopicPartition,
};

/// A backend under test: a location that can be opened, dropped and opened again.
#[async_trait]
pub trait StorageFactory: Send + Sync + 'static {
    /// Opens the storage at this factory's location. Called again after the previous instance
    /// was closed and dropped, it must see everything durable the previous one wrote.
    async fn open(&self) -> Arc<dyn Storage>;
}

/// Runs a scenario on a fresh two-worker runtime (backends may use `spawn_blocking`).
///
/// # Panics
/// When the runtime cannot be built, or when the scenario panics.
pub fn run<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f);
}

/// Expands the whole suite into `#[test]` functions for one backend.
///
/// `durable` adds the reopen scenarios and a model check with reopens; `volatile` runs the rest.
#[macro_export]
macro_rules! conformance_suite {
    (durable, $factory:expr) => {
        $crate::conformance_suite!(@tests $factory;
            reopen_keeps_everything, reopen_after_everything_deleted, reopen_many_segments,
            snapshots_survive_reopen, model_check_with_reopen, compaction_survives_reopen,
            compaction_model_check_with_reopen);
        $crate::conformance_suite!(volatile, $factory);
    };
    (volatile, $factory:expr) => {
        $crate::conformance_suite!(@tests $factory;
            empty_log, append_and_read_back, dense_offsets_across_appends, max_bytes_limits,
            read_from_middle_of_batch, out_of_range_offsets, timestamp_lookup,
            max_timestamp_lookup,
            invalid_append_changes_nothing, delete_before_moves_start, retention_by_time,
            retention_by_bytes, metadata_store, group_offsets, group_states, concurrent_logs,
            reads_during_appends, closed_log_refuses, large_batches, snapshots_per_log,
            append_then_reports_before_resolving, model_check_no_reopen,
            compaction_keeps_each_keys_latest_record, compaction_tombstones_lag_and_null_keys,
            compaction_keeps_each_producers_last_batch, compaction_model_check_no_reopen);
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let factory = $factory;
                $crate::testkit::run(async move { $crate::testkit::$name(&factory).await });
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn tp(topic: &str, p: i32) -> TopicPartition {
    TopicPartition::new(topic, p)
}

/// A log config that rolls segments often, so segment backends exercise many files.
pub fn small_segments(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        segment_bytes: 4096,
        segment_ms: 24 * 60 * 60 * 1000,
        index_interval_bytes: 256,
    }
}

/// A batch of `n` records whose values name their intended offset within the batch.
pub fn batch_of(n: usize, ts_ms: i64, value_len: usize, codec: Compression) -> Batch {
    let mut b = BatchBuilder::new(codec);
    for i in 0..n {
        let mut v = format!("record-{i}-").into_bytes();
        v.resize(value_len.max(v.len()), b'x');
        b.push(Record::new(ts_ms + i as i64, v).with_key(format!("k{i}")));
    }
    b.build(0).expect("build test batch")
}

async fn append_one(log: &dyn PartitionLog, b: Batch) -> Offset {
    log.append(vec![b]).await.expect("append").base_offsets[0]
}

async fn read_all(log: &dyn PartitionLog, from: Offset) -> Vec<Batch> {
    let end = log.offsets().end;
    let mut out: Vec<Batch> = Vec::new();
    let mut next = from;
    while next < end {
        let got = log.read(next, 64 * 1024).await.expect("read");
        assert!(
            !got.is_empty(),
            "read({next}) below end {end} returned nothing"
        );
        next = got.last().expect("non-empty").next_offset();
        out.extend(got);
    }
    out
}

fn assert_contiguous(batches: &[Batch]) {
    for w in batches.windows(2) {
        assert_eq!(
            w[0].next_offset(),
            w[1].base_offset(),
            "batches must be contiguous"
        );
    }
    for b in batches {
        Batch::new(b.as_bytes().clone()).expect("served batch must be valid");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A new log is empty: start = end = 0, reading at 0 returns nothing, past it is out of range.
pub async fn empty_log(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("empty", 0), &LogConfig::default())
        .await
        .expect("open");
    let o = log.offsets();
    assert_eq!((o.start, o.end, o.size_bytes), (0, 0, 0));
    assert!(log.read(0, 1024).await.expect("read at end").is_empty());
    assert!(matches!(
        log.read(1, 1024).await,
        Err(StorageError::OffsetOutOfRange {
            requested: 1,
            start: 0,
            end: 0
        })
    ));
    assert_eq!(log.offset_for_time(0).await.expect("time"), None);
    log.sync().await.expect("sync");
    assert_eq!(s.list_logs().await.expect("list"), vec![tp("empty", 0)]);
}

/// An appended batch reads back byte for byte, apart from the base offset the log assigned.
pub async fn append_and_read_back(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("rw", 0), &LogConfig::default())
        .await
        .expect("open");
    for (i, codec) in Compression::ALL.into_iter().enumerate() {
        let b = batch_of(3, 1_000 * i as i64, 20, codec);
        let mut original = b.clone();
        let info = log.append(vec![b]).await.expect("append");
        let base = 3 * i as i64;
        assert_eq!(info.base_offsets, vec![base]);
        assert_eq!(info.end, base + 3);
        original.set_base_offset(base);
        let got = log.read(base, 1 << 20).await.expect("read");
        assert_eq!(got.first(), Some(&original), "{codec:?}");
        let recs = got[0].records().expect("decode");
        assert_eq!(
            recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![base, base + 1, base + 2]
        );
    }
    let o = log.offsets();
    assert_eq!((o.start, o.end), (0, 15));
    assert!(o.size_bytes > 0);
}

/// Many appends, some of several batches, get dense, increasing offsets.
pub async fn dense_offsets_across_appends(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("dense", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    let mut expected_end = 0;
    for i in 0..60usize {
        let batches: Vec<Batch> = (0..(i % 3 + 1))
            .map(|j| batch_of((i + j) % 7 + 1, i as i64, 30, Compression::None))
            .collect();
        let counts: Vec<i64> = batches.iter().map(|b| b.record_count() as i64).collect();
        let info = log.append(batches).await.expect("append");
        for (base, n) in info.base_offsets.iter().zip(&counts) {
            assert_eq!(*base, expected_end);
            expected_end += n;
        }
        assert_eq!(info.end, expected_end);
    }
    assert_eq!(log.offsets().end, expected_end);
    let all = read_all(log.as_ref(), 0).await;
    assert_contiguous(&all);
    let offsets: Vec<Offset> = all
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, (0..expected_end).collect::<Vec<_>>());
}

/// `max_bytes` bounds a read in whole batches, but a read below the end returns at least one.
pub async fn max_bytes_limits(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("max", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    let mut sizes = Vec::new();
    for i in 0..10 {
        let b = batch_of(2, i, 100, Compression::None);
        sizes.push(b.len());
        append_one(log.as_ref(), b).await;
    }
    let one = log.read(0, 1).await.expect("read");
    assert_eq!(one.len(), 1, "at least one batch, and only one");
    // Strictly within the limit: nothing when the first batch does not fit, else what fits.
    assert!(log
        .read_within(0, sizes[0] - 1)
        .await
        .expect("read")
        .is_empty());
    assert!(log.read_within(3, 0).await.expect("read").is_empty());
    let first = log.read_within(0, sizes[0]).await.expect("read");
    assert_eq!(first, one);
    let two = log
        .read_within(1, sizes[0] + sizes[1] + sizes[2] - 1)
        .await
        .expect("read");
    assert_eq!(two.len(), 2, "the batch holding offset 1, and the next");
    assert_eq!(two[0].base_offset(), 0);
    let three = log
        .read(0, sizes[0] + sizes[1] + sizes[2])
        .await
        .expect("read");
    assert_eq!(three.len(), 3);
    let almost = log
        .read(0, sizes[0] + sizes[1] + sizes[2] - 1)
        .await
        .expect("read");
    assert_eq!(almost.len(), 2);
    let all = log.read(0, usize::MAX).await.expect("read");
    // A segmented backend may stop at a segment boundary; what it returns is contiguous.
    assert!(!all.is_empty());
    assert_contiguous(&all);
    let total: usize = read_all(log.as_ref(), 0).await.iter().map(Batch::len).sum();
    assert_eq!(total, sizes.iter().sum::<usize>());
}

/// Reading from an offset inside a batch returns that whole batch first.
pub async fn read_from_middle_of_batch(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("mid", 0), &LogConfig::default())
        .await
        .expect("open");
    append_one(log.as_ref(), batch_of(5, 0, 10, Compression::None)).await;
    append_one(log.as_ref(), batch_of(5, 0, 10, Compression::Gzip)).await;
    let got = log.read(2, 1 << 20).await.expect("read");
    assert_eq!(got[0].base_offset(), 0);
    let got = log.read(7, 1).await.expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].base_offset(), 5);
    assert_eq!(got[0].next_offset(), 10);
    assert!(log.read(10, 1 << 20).await.expect("read at end").is_empty());
}

/// Offsets below the start, above the end or negative are out of range.
pub async fn out_of_range_offsets(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("oor", 0), &LogConfig::default())
        .await
        .expect("open");
    append_one(log.as_ref(), batch_of(4, 0, 10, Compression::None)).await;
    for bad in [-1, 5, 1000, i64::MAX, i64::MIN] {
        match log.read(bad, 1024).await {
            Err(StorageError::OffsetOutOfRange {
                requested,
                start: 0,
                end: 4,
            }) => assert_eq!(requested, bad),
            other => panic!("read({bad}) gave {other:?}"),
        }
    }
}

/// `max_timestamp_offset` finds the first record with the largest timestamp among the batches
/// below a bound, as the reference scan does, across segments, ties, and a moved log start.
pub async fn max_timestamp_lookup(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("maxtime", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    let at = |below: Offset| {
        let log = log.clone();
        async move {
            let got = log.max_timestamp_offset(below).await.expect("lookup");
            let scanned = crate::log::max_timestamp_by_scan(log.as_ref(), below)
                .await
                .expect("scan");
            assert_eq!(
                got, scanned,
                "max_timestamp_offset({below}) against the scan"
            );
            got
        }
    };
    assert_eq!(at(0).await, None);
    // Batches of 5 records (timestamps +0..+4, about two batches per segment): the largest time,
    // 5004, at offset 9 and again at 19 (a tie: the earlier counts).
    for t in [1000, 5000, 3000, 5000, 2000] {
        append_one(log.as_ref(), batch_of(5, t, 300, Compression::None)).await;
    }
    assert_eq!(at(25).await, Some(9));
    assert_eq!(at(10).await, Some(9));
    assert_eq!(at(5).await, Some(4));
    assert_eq!(at(0).await, None);
    // Many batches with earlier times after it.
    for i in 0..40 {
        append_one(log.as_ref(), batch_of(2, 100 + i, 300, Compression::None)).await;
    }
    assert_eq!(at(log.offsets().end).await, Some(9));
    // A later, larger time wins.
    let late = append_one(log.as_ref(), batch_of(3, 9000, 300, Compression::Snappy)).await;
    assert_eq!(at(log.offsets().end).await, Some(late + 2));
    assert_eq!(at(late).await, Some(9));
    // The start moves past the first maximum (and cuts the batch after it): the tie remains.
    log.delete_before(12).await.expect("delete");
    assert_eq!(at(late).await, Some(19));
    log.delete_before(20).await.expect("delete");
    assert_eq!(at(late).await, Some(24));
}

/// `offset_for_time` finds the first record at or after a timestamp.
pub async fn timestamp_lookup(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("time", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    // Batches at 1000.., 2000.., 3000.. with 5 records each (timestamps +0..+4), then one that
    // goes back in time.
    for t in [1000, 2000, 3000, 1500] {
        append_one(log.as_ref(), batch_of(5, t, 300, Compression::Snappy)).await;
    }
    let at = |ts| {
        let log = log.clone();
        async move { log.offset_for_time(ts).await.expect("lookup") }
    };
    assert_eq!(at(0).await, Some(0));
    assert_eq!(at(1000).await, Some(0));
    assert_eq!(at(1002).await, Some(2));
    assert_eq!(at(1005).await, Some(5));
    assert_eq!(at(2500).await, Some(10));
    assert_eq!(at(3004).await, Some(14));
    assert_eq!(at(3005).await, None);
    // Far fewer records than a scan would visit: many batches after the target.
    for i in 0..50 {
        append_one(
            log.as_ref(),
            batch_of(2, 10_000 + i * 10, 300, Compression::None),
        )
        .await;
    }
    assert_eq!(at(10_000 + 25 * 10).await, Some(20 + 25 * 2));
}

/// An append with any invalid batch writes nothing at all.
pub async fn invalid_append_changes_nothing(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("invalid", 0), &LogConfig::default())
        .await
        .expect("open");
    append_one(log.as_ref(), batch_of(2, 0, 10, Compression::None)).await;
    // A batch whose record count disagrees with its last offset delta.
    let good = batch_of(3, 0, 10, Compression::None);
    let mut bytes = good.as_bytes().to_vec();
    bytes[57..61].copy_from_slice(&7i32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let bad = Batch::new(Bytes::from(bytes)).expect("CRC is valid");
    let r = log.append(vec![good.clone(), bad]).await;
    assert!(matches!(r, Err(StorageError::InvalidBatch(_))), "{r:?}");
    assert!(matches!(
        log.append(vec![]).await,
        Err(StorageError::InvalidBatch(_))
    ));
    assert_eq!(log.offsets().end, 2);
    assert_eq!(read_all(log.as_ref(), 0).await.len(), 1);
    // The log still works.
    assert_eq!(append_one(log.as_ref(), good).await, 2);
}

/// `delete_before` moves the start (never backwards, never past the end).
pub async fn delete_before_moves_start(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("del", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    for i in 0..40 {
        append_one(log.as_ref(), batch_of(5, i, 200, Compression::None)).await;
    }
    assert_eq!(log.delete_before(52).await.expect("delete"), 52);
    assert_eq!(log.offsets().start, 52);
    assert!(matches!(
        log.read(51, 1024).await,
        Err(StorageError::OffsetOutOfRange { start: 52, .. })
    ));
    let got = log.read(52, 1).await.expect("read at start");
    assert_eq!(got[0].base_offset(), 50);
    assert_eq!(log.delete_before(10).await.expect("backwards"), 52);
    assert_eq!(log.offset_for_time(0).await.expect("time"), Some(52));
    let all = read_all(log.as_ref(), 52).await;
    assert_contiguous(&all);
    assert_eq!(all.last().map(Batch::next_offset), Some(200));
    assert_eq!(log.delete_before(10_000).await.expect("past end"), 200);
    let o = log.offsets();
    assert_eq!((o.start, o.end), (200, 200));
    assert!(log.read(200, 1024).await.expect("empty").is_empty());
    assert_eq!(
        append_one(log.as_ref(), batch_of(1, 0, 1, Compression::None)).await,
        200
    );
}

/// Retention by time deletes old units and keeps every fresh record.
pub async fn retention_by_time(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("rtime", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    let now = now_ms();
    for i in 0..40 {
        append_one(log.as_ref(), batch_of(4, 1_000 + i, 200, Compression::None)).await;
    }
    let first_fresh = log.offsets().end;
    for _ in 0..5 {
        append_one(log.as_ref(), batch_of(4, now, 200, Compression::None)).await;
    }
    let end = log.offsets().end;
    let r = Retention {
        ms: Some(60_000),
        bytes: None,
    };
    let start = log.enforce_retention(r, now).await.expect("retention");
    assert!(start > 0, "old data must go");
    assert!(
        start <= first_fresh,
        "fresh data must stay ({start} > {first_fresh})"
    );
    assert_eq!(log.offsets().start, start);
    assert_eq!(log.offsets().end, end);
    let all = read_all(log.as_ref(), start).await;
    assert_contiguous(&all);
    assert_eq!(all.last().map(Batch::next_offset), Some(end));
    // Nothing is old enough any more at this moment.
    assert_eq!(log.enforce_retention(r, 1_000).await.expect("noop"), start);
}

/// Retention by size deletes the oldest units and never goes below the limit.
pub async fn retention_by_bytes(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("rbytes", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    for i in 0..60 {
        append_one(log.as_ref(), batch_of(2, i, 400, Compression::None)).await;
    }
    let before = log.offsets();
    let limit = before.size_bytes / 3;
    let r = Retention {
        ms: None,
        bytes: Some(limit),
    };
    let start = log.enforce_retention(r, now_ms()).await.expect("retention");
    let after = log.offsets();
    assert!(start > 0);
    assert_eq!(after.start, start);
    assert_eq!(after.end, before.end);
    assert!(after.size_bytes >= limit, "{} < {limit}", after.size_bytes);
    assert!(after.size_bytes < before.size_bytes);
    assert_contiguous(&read_all(log.as_ref(), start).await);
}

/// The metadata store keeps opaque values by key, sorted.
pub async fn metadata_store(f: &dyn StorageFactory) {
    let s = f.open().await;
    assert!(s.list_metadata().await.expect("list").is_empty());
    s.put_metadata("topic/b", b"two").await.expect("put");
    s.put_metadata("topic/a", b"one").await.expect("put");
    s.put_metadata("topic/a", b"uno").await.expect("overwrite");
    s.put_metadata("cluster", &[0, 255, 1]).await.expect("put");
    let all = s.list_metadata().await.expect("list");
    assert_eq!(
        all,
        vec![
            ("cluster".to_string(), vec![0, 255, 1]),
            ("topic/a".to_string(), b"uno".to_vec()),
            ("topic/b".to_string(), b"two".to_vec()),
        ]
    );
    s.delete_metadata("topic/b").await.expect("delete");
    s.delete_metadata("absent").await.expect("delete absent");
    assert_eq!(s.list_metadata().await.expect("list").len(), 2);
    assert!(matches!(
        s.put_metadata("", b"x").await,
        Err(StorageError::InvalidArgument(_))
    ));
}

fn committed(offset: Offset, metadata: &str) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: metadata.to_string(),
        commit_timestamp_ms: 1_700_000_000_000 + offset,
    }
}

/// Group offsets merge per partition, list, delete, and accept any group name.
pub async fn group_offsets(f: &dyn StorageFactory) {
    let s = f.open().await;
    assert!(s.fetch_offsets("nobody").await.expect("fetch").is_empty());
    let odd = "odd/group name ../ with ünïcode";
    s.commit_offsets(
        odd,
        &[
            (tp("t", 1), committed(5, "m")),
            (tp("t", 0), committed(3, "")),
        ],
    )
    .await
    .expect("commit");
    s.commit_offsets(
        odd,
        &[
            (tp("t", 1), committed(9, "later")),
            (tp("u", 0), committed(1, "")),
        ],
    )
    .await
    .expect("commit");
    s.commit_offsets("g2", &[(tp("t", 0), committed(100, ""))])
        .await
        .expect("commit");
    assert_eq!(
        s.fetch_offsets(odd).await.expect("fetch"),
        vec![
            (tp("t", 0), committed(3, "")),
            (tp("t", 1), committed(9, "later")),
            (tp("u", 0), committed(1, "")),
        ]
    );
    assert_eq!(
        s.list_groups().await.expect("groups"),
        vec!["g2".to_string(), odd.to_string()]
    );
    s.delete_offsets(odd, &[tp("t", 0), tp("absent", 3)])
        .await
        .expect("delete offsets");
    assert_eq!(s.fetch_offsets(odd).await.expect("fetch").len(), 2);
    s.delete_group("g2").await.expect("delete group");
    s.delete_group("never-existed")
        .await
        .expect("delete absent");
    assert_eq!(
        s.list_groups().await.expect("groups"),
        vec![odd.to_string()]
    );
    assert!(s.fetch_offsets("g2").await.expect("fetch").is_empty());
}

/// A group's stored state: replaced by the next, apart from its offsets, listed with the
/// groups, forgotten with the group.
pub async fn group_states(f: &dyn StorageFactory) {
    let s = f.open().await;
    let odd = "odd/group name ../ with ünïcode.offsets";
    assert_eq!(s.group_state(odd).await.expect("state"), None);
    s.put_group_state(odd, b"generation 1").await.expect("put");
    s.put_group_state(odd, &[0, 255, 7]).await.expect("replace");
    s.put_group_state("empty-state", b"").await.expect("put");
    s.commit_offsets("offsets-only", &[(tp("t", 0), committed(1, ""))])
        .await
        .expect("commit");
    s.commit_offsets(odd, &[(tp("t", 0), committed(2, ""))])
        .await
        .expect("commit");
    assert_eq!(
        s.group_state(odd).await.expect("state"),
        Some(vec![0, 255, 7])
    );
    assert_eq!(
        s.group_state("empty-state").await.expect("state"),
        Some(Vec::new())
    );
    assert_eq!(s.group_state("offsets-only").await.expect("state"), None);
    assert_eq!(
        s.list_groups().await.expect("groups"),
        vec![
            "empty-state".to_string(),
            odd.to_string(),
            "offsets-only".to_string()
        ]
    );
    // Offsets going do not take the state with them.
    s.delete_offsets(odd, &[tp("t", 0)]).await.expect("delete");
    assert!(s.fetch_offsets(odd).await.expect("fetch").is_empty());
    assert_eq!(
        s.group_state(odd).await.expect("state"),
        Some(vec![0, 255, 7])
    );
    assert!(s
        .list_groups()
        .await
        .expect("groups")
        .contains(&odd.to_string()));
    s.delete_group(odd).await.expect("delete group");
    s.delete_group("empty-state").await.expect("delete group");
    assert_eq!(s.group_state(odd).await.expect("state"), None);
    assert_eq!(
        s.list_groups().await.expect("groups"),
        vec!["offsets-only".to_string()]
    );
}

/// Many logs written at once stay independent; `list_logs` and `delete_log` see them all.
pub async fn concurrent_logs(f: &dyn StorageFactory) {
    let s = f.open().await;
    let mut tasks = Vec::new();
    let mut expected = Vec::new();
    for t in ["alpha", "beta", "gamma"] {
        for p in 0..6 {
            let tp = tp(t, p);
            expected.push(tp.clone());
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let log = s
                    .open_log(&tp, &small_segments(Durability::Always))
                    .await
                    .expect("open");
                for i in 0..20 {
                    let b = batch_of(1 + (p as usize + i) % 4, i as i64, 64, Compression::None);
                    log.append(vec![b]).await.expect("append");
                }
                let all = read_all(log.as_ref(), 0).await;
                assert_contiguous(&all);
                let values: Vec<Bytes> = all
                    .iter()
                    .flat_map(|b| b.records().expect("decode"))
                    .filter_map(|r| r.record.value)
                    .collect();
                let n: usize = (0..20).map(|i| 1 + (p as usize + i) % 4).sum();
                assert_eq!(values.len(), n, "{tp}");
                log.close().await.expect("close");
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    expected.sort();
    assert_eq!(s.list_logs().await.expect("list"), expected);
    s.delete_log(&tp("beta", 2)).await.expect("delete");
    s.delete_log(&tp("beta", 99)).await.expect("delete absent");
    let after = s.list_logs().await.expect("list");
    assert_eq!(after.len(), expected.len() - 1);
    assert!(!after.contains(&tp("beta", 2)));
    let fresh = s
        .open_log(&tp("beta", 2), &LogConfig::default())
        .await
        .expect("reopen deleted");
    assert_eq!(fresh.offsets().end, 0, "a deleted log starts over");
}

/// Reads running during appends only ever see whole, valid, contiguous batches below the end.
pub async fn reads_during_appends(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("race", 0), &small_segments(Durability::None))
        .await
        .expect("open");
    let reader = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < 400 {
                let end = log.offsets().end;
                let got = log.read(0, 1 << 20).await.expect("read");
                assert_contiguous(&got);
                if let Some(last) = got.last() {
                    assert!(last.next_offset() <= log.offsets().end);
                    assert!(end <= log.offsets().end);
                }
                let all = read_all(log.as_ref(), 0).await;
                seen = all.last().map_or(0, Batch::next_offset);
                tokio::task::yield_now().await;
            }
        })
    };
    for i in 0..100 {
        log.append(vec![batch_of(4, i, 50, Compression::None)])
            .await
            .expect("append");
    }
    reader.await.expect("reader");
}

/// After `close`, a log refuses work.
pub async fn closed_log_refuses(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("closed", 0), &LogConfig::default())
        .await
        .expect("open");
    append_one(log.as_ref(), batch_of(1, 0, 1, Compression::None)).await;
    log.close().await.expect("close");
    assert!(matches!(
        log.append(vec![batch_of(1, 0, 1, Compression::None)]).await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(log.read(0, 10).await, Err(StorageError::Closed)));
}

/// `append_then` calls `done` exactly once, with the outcome the future then returns, before
/// the future resolves; for a refused append and a closed log too.
pub async fn append_then_reports_before_resolving(f: &dyn StorageFactory) {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<std::result::Result<crate::AppendInfo, String>>>>;
    fn recorder(seen: &Seen) -> crate::log::AppendDone {
        let seen = seen.clone();
        Box::new(move |r: &crate::Result<crate::AppendInfo>| {
            let r = match r {
                Ok(info) => Ok(info.clone()),
                Err(e) => Err(e.to_string()),
            };
            seen.lock().expect("lock").push(r);
        })
    }
    let s = f.open().await;
    let log = s
        .open_log(&tp("then", 0), &LogConfig::default())
        .await
        .expect("open");
    let seen: Seen = Arc::default();
    for n in [3, 2] {
        let r = log
            .append_then(vec![batch_of(n, 0, 10, Compression::None)], recorder(&seen))
            .await
            .expect("append");
        assert_eq!(seen.lock().expect("lock").last(), Some(&Ok(r)));
    }
    assert_eq!(log.offsets().end, 5);
    let r = log.append_then(vec![], recorder(&seen)).await;
    assert!(matches!(r, Err(StorageError::InvalidBatch(_))), "{r:?}");
    assert!(matches!(seen.lock().expect("lock").last(), Some(Err(_))));
    log.close().await.expect("close");
    let r = log
        .append_then(vec![batch_of(1, 0, 1, Compression::None)], recorder(&seen))
        .await;
    assert!(matches!(r, Err(StorageError::Closed)), "{r:?}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 4, "one call per append: {seen:?}");
    assert!(seen[3].is_err());
}

/// Batches much larger than `max_bytes` and than a segment still round-trip whole.
pub async fn large_batches(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("large", 0), &small_segments(Durability::Always))
        .await
        .expect("open");
    let big = batch_of(4, 0, 300 * 1024, Compression::None);
    let small = batch_of(1, 0, 10, Compression::None);
    log.append(vec![small.clone(), big.clone(), small.clone()])
        .await
        .expect("append");
    let got = log.read(1, 10).await.expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), big.len());
    assert_eq!(got[0].base_offset(), 1);
    let got = log.read(5, 10).await.expect("read");
    assert_eq!(got[0].base_offset(), 5);
}

/// Everything durable survives close and reopen: data, start offset, metadata, group offsets.
pub async fn reopen_keeps_everything(f: &dyn StorageFactory) {
    let cfg = small_segments(Durability::Always);
    let (batches, offsets) = {
        let s = f.open().await;
        let log = s.open_log(&tp("keep", 3), &cfg).await.expect("open");
        for i in 0..30 {
            let codec = Compression::ALL[i % Compression::ALL.len()];
            append_one(log.as_ref(), batch_of(3, i as i64 * 10, 150, codec)).await;
        }
        log.delete_before(7).await.expect("delete");
        s.put_metadata("topic/keep", b"meta").await.expect("meta");
        s.commit_offsets("g", &[(tp("keep", 3), committed(42, "x"))])
            .await
            .expect("commit");
        s.put_group_state("g", b"old").await.expect("state");
        s.put_group_state("g", b"members").await.expect("state");
        s.put_group_state("state-only", b"empty")
            .await
            .expect("state");
        s.put_group_state("deleted", b"gone").await.expect("state");
        s.delete_group("deleted").await.expect("delete group");
        let batches = read_all(log.as_ref(), 7).await;
        let offsets = log.offsets();
        log.close().await.expect("close");
        s.close().await.expect("close storage");
        (batches, offsets)
    };
    let s = f.open().await;
    assert_eq!(s.list_logs().await.expect("list"), vec![tp("keep", 3)]);
    let log = s.open_log(&tp("keep", 3), &cfg).await.expect("reopen");
    let o = log.offsets();
    assert_eq!((o.start, o.end), (offsets.start, offsets.end));
    assert_eq!(read_all(log.as_ref(), 7).await, batches);
    assert_eq!(
        s.list_metadata().await.expect("meta"),
        vec![("topic/keep".to_string(), b"meta".to_vec())]
    );
    assert_eq!(
        s.fetch_offsets("g").await.expect("offsets"),
        vec![(tp("keep", 3), committed(42, "x"))]
    );
    assert_eq!(
        s.group_state("g").await.expect("state"),
        Some(b"members".to_vec())
    );
    assert_eq!(
        s.group_state("state-only").await.expect("state"),
        Some(b"empty".to_vec())
    );
    assert_eq!(s.group_state("deleted").await.expect("state"), None);
    assert_eq!(
        s.list_groups().await.expect("groups"),
        vec!["g".to_string(), "state-only".to_string()]
    );
    assert_eq!(
        append_one(log.as_ref(), batch_of(1, 0, 1, Compression::None)).await,
        90
    );
}

/// Each log keeps its own snapshot, the last one saved; deleting a log deletes its snapshot,
/// so a log recreated under the same name starts without one.
pub async fn snapshots_per_log(f: &dyn StorageFactory) {
    let cfg = small_segments(Durability::Always);
    let s = f.open().await;
    let a = s.open_log(&tp("snap", 0), &cfg).await.expect("open");
    let b = s.open_log(&tp("snap", 1), &cfg).await.expect("open");
    assert_eq!(a.load_snapshot().await.expect("load"), None);
    a.save_snapshot(b"first").await.expect("save");
    append_one(a.as_ref(), batch_of(2, 0, 10, Compression::None)).await;
    a.save_snapshot(b"second, longer than the first")
        .await
        .expect("save");
    b.save_snapshot(&[]).await.expect("save empty");
    assert_eq!(
        a.load_snapshot().await.expect("load").as_deref(),
        Some(&b"second, longer than the first"[..])
    );
    assert_eq!(b.load_snapshot().await.expect("load"), Some(vec![]));
    // The log itself is untouched by snapshots.
    assert_eq!(a.offsets().end, 2);
    assert_eq!(read_all(a.as_ref(), 0).await.len(), 1);
    a.close().await.expect("close");
    s.delete_log(&tp("snap", 0)).await.expect("delete");
    let again = s.open_log(&tp("snap", 0), &cfg).await.expect("recreate");
    assert_eq!(again.load_snapshot().await.expect("load"), None);
    assert_eq!(b.load_snapshot().await.expect("load"), Some(vec![]));
    again.close().await.expect("close");
    b.close().await.expect("close");
    assert!(matches!(
        b.save_snapshot(b"late").await,
        Err(StorageError::Closed)
    ));
}

/// A saved snapshot survives closing and reopening the storage; a deleted log's does not.
pub async fn snapshots_survive_reopen(f: &dyn StorageFactory) {
    let cfg = small_segments(Durability::Interval { interval_ms: 1000 });
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    {
        let s = f.open().await;
        let log = s.open_log(&tp("kept", 0), &cfg).await.expect("open");
        append_one(log.as_ref(), batch_of(3, 0, 10, Compression::None)).await;
        log.save_snapshot(b"old").await.expect("save");
        log.save_snapshot(&big).await.expect("save");
        let gone = s.open_log(&tp("gone", 0), &cfg).await.expect("open");
        gone.save_snapshot(b"stale").await.expect("save");
        gone.close().await.expect("close");
        s.delete_log(&tp("gone", 0)).await.expect("delete");
        log.close().await.expect("close");
        s.close().await.expect("close storage");
    }
    let s = f.open().await;
    let log = s.open_log(&tp("kept", 0), &cfg).await.expect("reopen");
    assert_eq!(log.load_snapshot().await.expect("load"), Some(big));
    assert_eq!(log.offsets().end, 3);
    let gone = s.open_log(&tp("gone", 0), &cfg).await.expect("recreate");
    assert_eq!(gone.load_snapshot().await.expect("load"), None);
}

/// A log whose every record was deleted keeps its end offset across reopen.
pub async fn reopen_after_everything_deleted(f: &dyn StorageFactory) {
    let cfg = small_segments(Durability::Always);
    {
        let s = f.open().await;
        let log = s.open_log(&tp("gone", 0), &cfg).await.expect("open");
        for i in 0..20 {
            append_one(log.as_ref(), batch_of(5, i, 300, Compression::None)).await;
        }
        assert_eq!(log.delete_before(100).await.expect("delete"), 100);
        log.close().await.expect("close");
        s.close().await.expect("close storage");
    }
    let s = f.open().await;
    let log = s.open_log(&tp("gone", 0), &cfg).await.expect("reopen");
    let o = log.offsets();
    assert_eq!((o.start, o.end), (100, 100));
    assert_eq!(
        append_one(log.as_ref(), batch_of(2, 0, 1, Compression::None)).await,
        100
    );
}

/// Data spread over many segments survives reopen, including the last, partly filled one.
pub async fn reopen_many_segments(f: &dyn StorageFactory) {
    let cfg = small_segments(Durability::None);
    let expected = {
        let s = f.open().await;
        let log = s.open_log(&tp("many", 0), &cfg).await.expect("open");
        for i in 0..200 {
            append_one(
                log.as_ref(),
                batch_of(1 + i % 5, i as i64, 100, Compression::None),
            )
            .await;
        }
        let all = read_all(log.as_ref(), 0).await;
        log.close().await.expect("close");
        s.close().await.expect("close storage");
        all
    };
    let s = f.open().await;
    let log = s.open_log(&tp("many", 0), &cfg).await.expect("reopen");
    assert_eq!(read_all(log.as_ref(), 0).await, expected);
    let expected = expected
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .find(|r| r.record.timestamp_ms >= 150)
        .map(|r| r.offset);
    assert!(expected.is_some());
    assert_eq!(log.offset_for_time(150).await.expect("time"), expected);
}

/// Closes `log` and `storage` and opens both again, as a restart would.
async fn reopened(
    f: &dyn StorageFactory,
    storage: Arc<dyn Storage>,
    log: Arc<dyn PartitionLog>,
    tp: &TopicPartition,
    cfg: &LogConfig,
    ctx: &str,
) -> (Arc<dyn Storage>, Arc<dyn PartitionLog>) {
    log.close().await.expect(ctx);
    storage.close().await.expect(ctx);
    drop(log);
    drop(storage);
    let storage = f.open().await;
    let log = storage.open_log(tp, cfg).await.expect(ctx);
    (storage, log)
}

/// The model check without reopens.
pub async fn model_check_no_reopen(f: &dyn StorageFactory) {
    model_check(f, false, 12, 120).await;
}

/// The model check with reopens (durable backends).
pub async fn model_check_with_reopen(f: &dyn StorageFactory) {
    model_check(f, true, 12, 120).await;
}

// ---------------------------------------------------------------------------------------------
// The model check

/// A small deterministic PRNG (splitmix64), so the suite needs no dependency for randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The seed from `WEIR_SEED`, or one from the clock; printed either way.
    pub fn seed_from_env(test: &str) -> u64 {
        let seed = std::env::var("WEIR_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{test}: WEIR_SEED={seed}");
        seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Drives `cases` random sequences of `steps` operations against the backend and a `Vec` model:
/// appends (several batches, every codec), reads at random offsets and sizes, offset-for-time,
/// `delete_before`, retention by size and, with `reopen`, closing and reopening the storage.
pub async fn model_check(f: &dyn StorageFactory, reopen: bool, cases: usize, steps: usize) {
    let seed = Rng::seed_from_env("model_check");
    let mut rng = Rng::new(seed);
    let cfg = small_segments(Durability::None);
    for case in 0..cases {
        let tp = tp("model", case as i32);
        let mut storage = f.open().await;
        let mut log = storage.open_log(&tp, &cfg).await.expect("open");
        // The model: (offset, timestamp, value) of every record ever appended, and the start.
        let mut model: Vec<(Offset, i64, Bytes)> = Vec::new();
        let mut start: Offset = 0;
        for step in 0..steps {
            let ctx = format!("seed {seed} case {case} step {step}");
            let end = model.len() as Offset;
            match rng.below(10) {
                0..=3 => {
                    let nb = 1 + rng.below(3) as usize;
                    let mut batches = Vec::new();
                    for _ in 0..nb {
                        let n = 1 + rng.below(6) as usize;
                        let codec = Compression::ALL[rng.below(5) as usize];
                        let ts = rng.below(10_000) as i64;
                        let mut b = BatchBuilder::new(codec);
                        for i in 0..n {
                            let len = rng.below(700) as usize;
                            let v = Bytes::from(vec![b'a' + (rng.below(26) as u8); len]);
                            b.push(Record::new(ts + i as i64, v));
                        }
                        batches.push(b.build(0).expect("build"));
                    }
                    let info = log.append(batches.clone()).await.expect(&ctx);
                    let mut next = end;
                    for (b, base) in batches.iter().zip(&info.base_offsets) {
                        assert_eq!(*base, next, "{ctx}");
                        for r in b.records().expect("decode") {
                            model.push((
                                next,
                                r.record.timestamp_ms,
                                r.record.value.unwrap_or_default(),
                            ));
                            next += 1;
                        }
                    }
                    assert_eq!(info.end, next, "{ctx}");
                }
                4..=6 => {
                    let from = start - 1 + rng.below((end - start + 3) as u64) as Offset;
                    let max = rng.below(4000) as usize;
                    let r = log.read(from, max).await;
                    if from < start || from > end {
                        assert!(
                            matches!(r, Err(StorageError::OffsetOutOfRange { .. })),
                            "{ctx}: read({from}) in [{start}, {end}] gave {r:?}"
                        );
                        continue;
                    }
                    let got = r.expect(&ctx);
                    if from == end {
                        assert!(got.is_empty(), "{ctx}");
                        continue;
                    }
                    assert!(!got.is_empty(), "{ctx}");
                    assert_contiguous(&got);
                    assert!(
                        got[0].base_offset() <= from && from < got[0].next_offset(),
                        "{ctx}"
                    );
                    if got.len() > 1 {
                        assert!(got.iter().map(Batch::len).sum::<usize>() <= max, "{ctx}");
                    }
                    for b in &got {
                        for r in b.records().expect("decode") {
                            let (o, ts, v) = &model[r.offset as usize];
                            assert_eq!((r.offset, r.record.timestamp_ms), (*o, *ts), "{ctx}");
                            assert_eq!(r.record.value.as_ref(), Some(v), "{ctx}");
                        }
                    }
                    // Strictly within: the same batches, up to the last that fits.
                    let within = log.read_within(from, max).await.expect(&ctx);
                    let mut total = 0;
                    let fit = got
                        .iter()
                        .take_while(|b| {
                            total += b.len();
                            total <= max
                        })
                        .count();
                    assert_eq!(within, got[..fit], "{ctx}: read_within({from}, {max})");
                }
                7 => {
                    let ts = rng.below(11_000) as i64;
                    let expect = model
                        .iter()
                        .skip(start as usize)
                        .find(|(_, t, _)| *t >= ts)
                        .map(|(o, _, _)| *o);
                    let got = log.offset_for_time(ts).await.expect(&ctx);
                    // Batch order, not timestamp order, decides: the first batch holding a
                    // qualifying record. The model is record order, which is the same thing
                    // for the first qualifying record.
                    assert_eq!(got, expect, "{ctx}: offset_for_time({ts})");
                    // A backend's own max-timestamp lookup agrees with the reference scan.
                    let below = start + rng.below((end - start + 1) as u64) as Offset;
                    let got = log.max_timestamp_offset(below).await.expect(&ctx);
                    let scanned = crate::log::max_timestamp_by_scan(log.as_ref(), below)
                        .await
                        .expect(&ctx);
                    assert_eq!(got, scanned, "{ctx}: max_timestamp_offset({below})");
                }
                8 => {
                    if rng.below(2) == 0 {
                        let to = start + rng.below((end - start + 2) as u64) as Offset;
                        let got = log.delete_before(to).await.expect(&ctx);
                        assert_eq!(got, to.min(end).max(start), "{ctx}");
                        start = got;
                    } else {
                        let bytes = rng.below(log.offsets().size_bytes + 1);
                        let r = Retention {
                            ms: None,
                            bytes: Some(bytes),
                        };
                        let got = log.enforce_retention(r, 0).await.expect(&ctx);
                        assert!(got >= start && got <= end, "{ctx}");
                        start = got;
                    }
                    assert_eq!(log.offsets().start, start, "{ctx}");
                }
                _ => {
                    if reopen {
                        (storage, log) = reopened(f, storage, log, &tp, &cfg, &ctx).await;
                    }
                }
            }
            let o = log.offsets();
            assert_eq!((o.start, o.end), (start, model.len() as Offset), "{ctx}");
        }
        log.close().await.expect("close");
        storage.close().await.expect("close storage");
    }
}

// ---------------------------------------------------------------------------------------------
// Compaction
//
// With `segment_bytes: 1` a segment backend rolls before every append, so each append is a
// segment of its own and its closed part (the sealed segments) is the same as that of a backend
// without segments (every batch but the newest). Then every backend must do exactly what the
// reference pass over a plain list of batches does
// ([`pass_over_batches`](crate::compaction::pass_over_batches)), byte for byte.

const COMPACT_NOW: i64 = 1_700_000_000_000;

/// One append per segment (see above).
fn compaction_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        segment_bytes: 1,
        segment_ms: 24 * 60 * 60 * 1000,
        index_interval_bytes: 64,
    }
}

/// A batch of `(key, value)` records stamped `ts`, with an optional idempotent producer.
fn keyed_batch(
    recs: &[(Option<&str>, Option<&str>)],
    ts: i64,
    codec: Compression,
    producer: Option<(i64, i32)>,
) -> Batch {
    keyed_batch_of(recs, ts, codec, producer, false)
}

/// [`keyed_batch`], transactional when `transactional`.
fn keyed_batch_of(
    recs: &[(Option<&str>, Option<&str>)],
    ts: i64,
    codec: Compression,
    producer: Option<(i64, i32)>,
    transactional: bool,
) -> Batch {
    let mut b = BatchBuilder::new(codec).transactional(transactional);
    if let Some((id, seq)) = producer {
        b = b.producer(id, 0, seq);
    }
    for (k, v) in recs {
        b.push(Record {
            timestamp_ms: ts,
            key: k.map(|k| Bytes::from(k.as_bytes().to_vec())),
            value: v.map(|v| Bytes::from(v.as_bytes().to_vec())),
            headers: Vec::new(),
        });
    }
    b.build(0).expect("build")
}

/// Every record served from `from` on, as (offset, key, value).
async fn served_records(
    log: &dyn PartitionLog,
    from: Offset,
) -> Vec<(Offset, Option<Bytes>, Option<Bytes>)> {
    read_all(log, from)
        .await
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .map(|r| (r.offset, r.record.key, r.record.value))
        .collect()
}

fn policy(ratio: f64, lag_ms: i64, delete_retention_ms: i64, max_keys: usize) -> CompactionPolicy {
    CompactionPolicy {
        min_cleanable_dirty_ratio: ratio,
        min_lag_ms: lag_ms,
        max_lag_ms: i64::MAX,
        delete_retention_ms,
        max_keys,
        // Every marker the rules let go: the suite holds each backend to the reference there.
        markers_below: Offset::MAX,
    }
}

/// Each key keeps its latest record at its offset; older records and whole batches go; the
/// newest batch (the head) is untouched; start and end stay; reads from an offset inside a
/// removed range serve the next batch; a pass with nothing new to clean is not due.
pub async fn compaction_keeps_each_keys_latest_record(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("compact", 0), &compaction_config())
        .await
        .expect("open");
    let t = COMPACT_NOW;
    let appends = [
        vec![(Some("a"), Some("a0")), (Some("b"), Some("b0"))], // 0, 1
        vec![(Some("a"), Some("a1"))],                          // 2
        vec![(Some("c"), Some("c0")), (Some("b"), Some("b1"))], // 3, 4
        vec![(Some("a"), Some("a2"))],                          // 5
        vec![(Some("b"), Some("b2"))],                          // 6: the head
    ];
    for (i, recs) in appends.iter().enumerate() {
        let codec = Compression::ALL[i % Compression::ALL.len()];
        append_one(log.as_ref(), keyed_batch(recs, t + i as i64, codec, None)).await;
    }
    let before = log.offsets();
    let p = policy(0.5, 0, i64::MAX, 1000);
    let stats = log
        .compact(p, t + 100)
        .await
        .expect("compact")
        .expect("a new log is all dirty");
    assert_eq!(stats.cleaned_upto, 6);
    assert_eq!(stats.records_removed, 3);
    let o = log.offsets();
    assert_eq!((o.start, o.end), (before.start, before.end));
    assert!(o.size_bytes < before.size_bytes);
    let kv = |o: Offset, k: &str, v: &str| {
        (
            o,
            Some(Bytes::from(k.as_bytes().to_vec())),
            Some(Bytes::from(v.as_bytes().to_vec())),
        )
    };
    let expected = vec![
        kv(3, "c", "c0"),
        kv(4, "b", "b1"),
        kv(5, "a", "a2"),
        kv(6, "b", "b2"),
    ];
    assert_eq!(served_records(log.as_ref(), 0).await, expected);
    // Batches 0..2 went whole: a read there serves batch 3..4 (the first that remains), which
    // keeps its codec.
    for from in 0..=3 {
        let got = log.read(from, 1).await.expect("read");
        assert_eq!(got[0].base_offset(), 3, "read({from})");
        assert_eq!(got[0].compression(), Ok(Compression::ALL[2]));
    }
    assert_eq!(log.read(4, 1).await.expect("read")[0].base_offset(), 3);
    assert_eq!(log.read(6, 1).await.expect("read")[0].base_offset(), 6);
    // Nothing new is closed: not due. Appends continue at the end.
    assert_eq!(log.compact(p, t + 100).await.expect("compact"), None);
    for (recs, at) in [
        ([(Some("c"), Some("c1"))], 7),
        ([(Some("z"), Some("head"))], 8),
    ] {
        let b = keyed_batch(&recs, t, Compression::None, None);
        assert_eq!(append_one(log.as_ref(), b).await, at);
    }
    let p = policy(0.0, 0, i64::MAX, 1000);
    let stats = log
        .compact(p, t + 100)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!((stats.cleaned_upto, stats.records_removed), (8, 2));
    assert_eq!(
        served_records(log.as_ref(), 0).await,
        vec![
            kv(5, "a", "a2"),
            kv(6, "b", "b2"),
            kv(7, "c", "c1"),
            kv(8, "z", "head")
        ]
    );
    // Every batch served is a valid batch that covers its original offsets.
    for b in read_all(log.as_ref(), 0).await {
        Batch::new(b.as_bytes().clone()).expect("valid");
    }
    assert_eq!(log.offset_for_time(t).await.expect("time"), Some(5));
}

/// Tombstones stay until `delete_retention_ms` after the pass that first kept them (their
/// batch's delete horizon, whatever their own timestamps), then go in a pass that is due for
/// them alone; records without a key go; the lag keeps recent batches out of a pass.
pub async fn compaction_tombstones_lag_and_null_keys(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("compact", 1), &compaction_config())
        .await
        .expect("open");
    let t = COMPACT_NOW;
    for (recs, ts) in [
        (vec![(Some("a"), Some("a0")), (None, Some("no key"))], t), // 0, 1
        (vec![(Some("a"), None)], t + 10),                          // 2: a's tombstone
        (vec![(Some("b"), Some("b0"))], t + 1000),                  // 3
        (vec![(Some("c"), Some("head"))], t + 1000),                // 4
    ] {
        append_one(
            log.as_ref(),
            keyed_batch(&recs, ts, Compression::None, None),
        )
        .await;
    }
    // With a lag of 500 ms at t + 600, only batches 0 and 1 (up to t + 10) are closed.
    let p = policy(0.0, 500, 100, 1000);
    let stats = log
        .compact(p, t + 600)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(stats.cleaned_upto, 3);
    // a0 and the keyless record go; a's tombstone stays, stamped with its delete horizon:
    // `delete.retention.ms` (100) from this pass, whatever its own timestamp.
    assert_eq!(
        (stats.records_removed, stats.tombstone_due_ms),
        (2, Some(t + 700))
    );
    let offsets = |log: Arc<dyn PartitionLog>| async move {
        served_records(log.as_ref(), 0)
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(log.clone()).await, vec![2, 3, 4]);
    let stamped = read_all(log.as_ref(), 2).await;
    assert_eq!(stamped[0].delete_horizon_ms(), Some(t + 700));
    assert_eq!(
        stamped[0].records().expect("decode")[0].record.timestamp_ms,
        t + 10
    );
    // Nothing is due before the horizon; at it, the pass removes the tombstone.
    assert_eq!(log.compact(p, t + 699).await.expect("compact"), None);
    let stats = log
        .compact(p, t + 700)
        .await
        .expect("compact")
        .expect("the horizon came");
    assert_eq!((stats.records_removed, stats.tombstone_due_ms), (1, None));
    assert_eq!(offsets(log.clone()).await, vec![3, 4]);

    // Again, on a fresh log, with a tombstone whose record timestamp is a day old (a replay, a
    // mirror): it stays its retention from the pass that first kept it, all the same.
    let log = s
        .open_log(&tp("compact", 2), &compaction_config())
        .await
        .expect("open");
    let day = 24 * 60 * 60 * 1000;
    for (recs, ts) in [
        (vec![(Some("a"), Some("a0"))], t - day),
        (vec![(Some("a"), None)], t - day),
        (vec![(Some("z"), Some("head"))], t),
    ] {
        append_one(
            log.as_ref(),
            keyed_batch(&recs, ts, Compression::None, None),
        )
        .await;
    }
    let p = policy(0.5, 0, 100, 1000);
    let stats = log.compact(p, t + 50).await.expect("compact").expect("due");
    assert_eq!(
        (stats.records_removed, stats.tombstone_due_ms),
        (1, Some(t + 150))
    );
    assert_eq!(offsets(log.clone()).await, vec![1, 2]);
    assert_eq!(log.compact(p, t + 149).await.expect("compact"), None);
    let stats = log
        .compact(p, t + 150)
        .await
        .expect("compact")
        .expect("the horizon came");
    assert_eq!(stats.records_removed, 1);
    assert_eq!(offsets(log.clone()).await, vec![2]);
    assert_eq!(log.offsets().start, 0, "compaction never moves the start");
}

/// An idempotent producer's last batch below the cleaned offset stays whole (its sequence
/// numbers must survive a restart); its earlier batches are compacted like any other.
pub async fn compaction_keeps_each_producers_last_batch(f: &dyn StorageFactory) {
    let s = f.open().await;
    let log = s
        .open_log(&tp("compact", 3), &compaction_config())
        .await
        .expect("open");
    let t = COMPACT_NOW;
    let p7 = |seq| Some((7, seq));
    for (recs, producer) in [
        (vec![(Some("a"), Some("a0"))], p7(0)), // 0
        (
            vec![(Some("a"), Some("a1")), (Some("b"), Some("b0"))],
            p7(1),
        ), // 1, 2
        (vec![(Some("a"), Some("a2")), (Some("b"), Some("b1"))], None), // 3, 4
        (vec![(Some("z"), Some("head"))], None), // 5
    ] {
        append_one(
            log.as_ref(),
            keyed_batch(&recs, t, Compression::Zstd, producer),
        )
        .await;
    }
    let stats = log
        .compact(policy(0.5, 0, i64::MAX, 1000), t)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(
        stats.records_removed, 1,
        "only a0 goes: batch 1 is producer 7's last"
    );
    let batches = read_all(log.as_ref(), 0).await;
    assert_eq!(batches[0].base_offset(), 1);
    assert_eq!(batches[0].producer_id(), 7);
    assert_eq!(batches[0].record_count(), 2);
}

/// A compacted log reads the same after reopen, remembers where its last pass stopped, keeps
/// compacting, and its gaps are not taken for corruption.
pub async fn compaction_survives_reopen(f: &dyn StorageFactory) {
    let t = COMPACT_NOW;
    let cfg = compaction_config();
    let served = {
        let s = f.open().await;
        let log = s.open_log(&tp("compact", 4), &cfg).await.expect("open");
        for i in 0..12 {
            let key = format!("k{}", i % 3);
            let value = format!("v{i}");
            let recs = [(Some(key.as_str()), Some(value.as_str()))];
            append_one(log.as_ref(), keyed_batch(&recs, t, Compression::Lz4, None)).await;
        }
        log.compact(policy(0.5, 0, i64::MAX, 1000), t)
            .await
            .expect("compact")
            .expect("due");
        let served = served_records(log.as_ref(), 0).await;
        // k2's latest closed record is 8: the head (11) is not mapped.
        assert_eq!(
            served.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![8, 9, 10, 11]
        );
        log.close().await.expect("close");
        s.close().await.expect("close storage");
        served
    };
    let s = f.open().await;
    let log = s.open_log(&tp("compact", 4), &cfg).await.expect("reopen");
    assert_eq!((log.offsets().start, log.offsets().end), (0, 12));
    assert_eq!(served_records(log.as_ref(), 0).await, served);
    assert_eq!(log.read(0, 1).await.expect("read")[0].base_offset(), 8);
    let recs = [(Some("k0"), Some("v12"))];
    assert_eq!(
        append_one(log.as_ref(), keyed_batch(&recs, t, Compression::None, None)).await,
        12
    );
    let recs = [(Some("k9"), Some("head"))];
    append_one(log.as_ref(), keyed_batch(&recs, t, Compression::None, None)).await;
    // The reopened log remembers where its last pass stopped: only 11 and 12 are dirty, not
    // everything (a log that forgot would be all dirty, and due at any ratio).
    assert_eq!(
        log.compact(policy(0.9, 0, i64::MAX, 1000), t)
            .await
            .expect("compact"),
        None
    );
    let stats = log
        .compact(policy(0.0, 0, i64::MAX, 1000), t)
        .await
        .expect("compact")
        .expect("due");
    assert_eq!(stats.records_read, 2, "the dirty part only: 11 and 12");
    assert_eq!(
        served_records(log.as_ref(), 0)
            .await
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![10, 11, 12, 13]
    );
    log.close().await.expect("close");
    s.close().await.expect("close storage");
}

/// Random appends (keys, null keys, tombstones, idempotent producers, every codec), compaction
/// passes with random policies, reads, start moves and (durable) reopens, against the reference
/// pass over a plain list of batches: served batches must match it byte for byte.
pub async fn compaction_model_check(
    f: &dyn StorageFactory,
    reopen: bool,
    cases: usize,
    steps: usize,
) {
    use crate::compaction::{apply_changes, pass_over_batches, CleanerCheckpoint};
    let seed = Rng::seed_from_env("compaction_model_check");
    let mut rng = Rng::new(seed);
    let cfg = compaction_config();
    for case in 0..cases {
        let tp = tp("compact-model", case as i32);
        let mut storage = f.open().await;
        let mut log = storage.open_log(&tp, &cfg).await.expect("open");
        let mut model: Vec<Batch> = Vec::new();
        let mut checkpoint = CleanerCheckpoint::default();
        let (mut start, mut end): (Offset, Offset) = (0, 0);
        let mut seq = [0i32; 2];
        // Producer 2 is transactional: its batches wait for a commit or an abort marker.
        let mut txn_open = false;
        for step in 0..steps {
            let ctx = format!("seed {seed} case {case} step {step}");
            let now = COMPACT_NOW + step as i64 * 10;
            match rng.below(11) {
                0..=3 => {
                    let n = 1 + rng.below(4) as usize;
                    let keys: Vec<Option<String>> = (0..n)
                        .map(|_| (rng.below(10) > 0).then(|| format!("k{}", rng.below(6))))
                        .collect();
                    let values: Vec<Option<String>> = (0..n)
                        .map(|_| (rng.below(6) > 0).then(|| format!("v{step}-{}", rng.below(1000))))
                        .collect();
                    let recs: Vec<(Option<&str>, Option<&str>)> = keys
                        .iter()
                        .zip(&values)
                        .map(|(k, v)| (k.as_deref(), v.as_deref()))
                        .collect();
                    let producer = match rng.below(3) {
                        0 => None,
                        p => {
                            let i = p as usize - 1;
                            let s = seq[i];
                            seq[i] += n as i32;
                            Some((p as i64, s))
                        }
                    };
                    let codec = Compression::ALL[rng.below(5) as usize];
                    let transactional = producer.is_some_and(|(id, _)| id == 2);
                    txn_open |= transactional;
                    let mut b = keyed_batch_of(&recs, now, codec, producer, transactional);
                    let base = append_one(log.as_ref(), b.clone()).await;
                    assert_eq!(base, end, "{ctx}");
                    b.set_base_offset(base);
                    end = b.next_offset();
                    model.push(b);
                }
                10 if txn_open => {
                    txn_open = false;
                    let marker = crate::TxnMarker {
                        commit: rng.below(2) == 0,
                        coordinator_epoch: 0,
                    };
                    let mut b = marker.batch(2, 0, now).expect("marker");
                    let base = append_one(log.as_ref(), b.clone()).await;
                    assert_eq!(base, end, "{ctx}");
                    b.set_base_offset(base);
                    end = b.next_offset();
                    model.push(b);
                }
                4..=5 => {
                    let p = CompactionPolicy {
                        max_lag_ms: [i64::MAX, 40][rng.below(2) as usize],
                        ..policy(
                            [0.0, 0.5, 0.9][rng.below(3) as usize],
                            [0, 20][rng.below(2) as usize],
                            [0, 30, i64::MAX][rng.below(3) as usize],
                            [2, 1000][rng.below(2) as usize],
                        )
                    };
                    let snapshot = model.clone();
                    let expected = pass_over_batches(
                        || snapshot.iter().cloned().map(Ok),
                        &checkpoint,
                        &p,
                        now,
                    )
                    .expect("reference pass");
                    let got = log.compact(p, now).await.expect(&ctx);
                    match expected {
                        None => assert_eq!(got, None, "{ctx}: {p:?}"),
                        Some((changes, stats)) => {
                            assert_eq!(got, Some(stats), "{ctx}: {p:?}");
                            model = apply_changes(model, changes).collect();
                            checkpoint = CleanerCheckpoint::after(&stats);
                        }
                    }
                }
                6..=7 => {
                    let from = start + rng.below((end - start + 1) as u64) as Offset;
                    let max = rng.below(3000) as usize;
                    let got = log.read(from, max).await.expect(&ctx);
                    let first = model.iter().position(|b| b.next_offset() > from);
                    match first {
                        None => assert!(got.is_empty(), "{ctx}: read({from})"),
                        Some(i) => {
                            assert!(!got.is_empty(), "{ctx}: read({from})");
                            assert_eq!(&got[..], &model[i..i + got.len()], "{ctx}: read({from})");
                        }
                    }
                }
                8 => {
                    let to = start + rng.below((end - start + 1) as u64) as Offset;
                    start = log.delete_before(to).await.expect(&ctx);
                    assert_eq!(start, to.min(end), "{ctx}");
                    model.retain(|b| b.next_offset() > start);
                }
                _ => {
                    if reopen {
                        // The checkpoint survives (durable backends keep it beside the log).
                        (storage, log) = reopened(f, storage, log, &tp, &cfg, &ctx).await;
                    }
                }
            }
            let o = log.offsets();
            assert_eq!((o.start, o.end), (start, end), "{ctx}");
        }
        assert_eq!(
            read_all(log.as_ref(), start).await,
            model,
            "seed {seed} case {case}"
        );
        log.close().await.expect("close");
        storage.close().await.expect("close storage");
    }
}

/// The compaction model check without reopens.
pub async fn compaction_model_check_no_reopen(f: &dyn StorageFactory) {
    compaction_model_check(f, false, 10, 120).await;
}

/// The compaction model check with reopens (durable backends).
pub async fn compaction_model_check_with_reopen(f: &dyn StorageFactory) {
    compaction_model_check(f, true, 10, 120).await;
}
