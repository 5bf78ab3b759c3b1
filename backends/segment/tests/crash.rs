//! Crash recovery of the segment backend: torn tails are cut, everything else is reported.
//!
//! - garbage appended to the active segment is cut, all whole batches stay;
//! - the segment truncated at every byte of its last two batches recovers exactly the whole
//!   batches before the cut;
//! - a bit flipped in any byte of a batch before the tail is reported as `Corrupt` (at open for
//!   the active segment, at read for a sealed one) and never served;
//! - a read strictly within a limit leaves a first batch that does not fit unread (damage in
//!   its body goes unnoticed by it, and is reported by a read that returns the batch);
//! - a compacted log reopens with its gaps, drops a half-written replacement segment, and still
//!   calls a gap above `compacted-upto` corruption;
//! - compaction merges neighbouring segments that fit in one, and a merge a crash interrupted
//!   (its `.swap` file written, the old segments not all deleted) is finished at open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_segment::SegmentStorage;
use weir_storage::testkit::{batch_of, run, Rng};
use weir_storage::{
    Batch, BatchBuilder, CompactionPolicy, Compression, Durability, LogConfig, Offset,
    PartitionLog, Record, Storage, StorageError, TopicPartition,
};

fn tp() -> TopicPartition {
    TopicPartition::new("crash", 0)
}

fn one_segment() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        segment_bytes: 1 << 30,
        segment_ms: 1 << 40,
        index_interval_bytes: 128,
    }
}

async fn open(root: &Path, cfg: &LogConfig) -> Result<Arc<dyn PartitionLog>, StorageError> {
    let s = SegmentStorage::open(root).await?;
    s.open_log(&tp(), cfg).await
}

/// Writes `n` batches (mixed sizes and codecs) and returns them as stored.
async fn write_batches(root: &Path, cfg: &LogConfig, n: usize) -> Vec<Batch> {
    let log = open(root, cfg).await.expect("open");
    for i in 0..n {
        let codec = Compression::ALL[i % 5];
        let b = batch_of(1 + i % 4, 1_000 + i as i64, 40 + 13 * i, codec);
        log.append(vec![b]).await.expect("append");
    }
    let all = read_all(log.as_ref()).await.expect("read");
    log.close().await.expect("close");
    assert_eq!(all.len(), n);
    all
}

async fn read_all(log: &dyn PartitionLog) -> Result<Vec<Batch>, StorageError> {
    let mut out: Vec<Batch> = Vec::new();
    let mut next = log.offsets().start;
    while next < log.offsets().end {
        let got = log.read(next, 1 << 20).await?;
        next = got
            .last()
            .expect("read below end returns a batch")
            .next_offset();
        out.extend(got);
    }
    Ok(out)
}

fn segment_files(root: &Path) -> Vec<PathBuf> {
    let dir = root.join("logs").join("crash-0");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn garbage_after_the_tail_is_cut() {
    let seed = Rng::seed_from_env("garbage_after_the_tail_is_cut");
    let mut rng = Rng::new(seed);
    run(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = one_segment();
        let batches = write_batches(dir.path(), &cfg, 12).await;
        let seg = segment_files(dir.path()).pop().expect("segment");
        let clean = std::fs::read(&seg).expect("read");
        let mut cases: Vec<Vec<u8>> = vec![vec![0; 1], vec![0; 4096], vec![0xff; 61]];
        for _ in 0..20 {
            let len = 1 + rng.below(3000) as usize;
            cases.push((0..len).map(|_| rng.next_u64() as u8).collect());
        }
        // A copy of the last batch's header with a broken body, as a torn write of a real one.
        let mut fake = batches.last().expect("last").as_bytes().to_vec();
        fake.truncate(fake.len() - 3);
        cases.push(fake);
        for garbage in cases {
            let mut bytes = clean.clone();
            bytes.extend_from_slice(&garbage);
            std::fs::write(&seg, &bytes).expect("write");
            let log = open(dir.path(), &cfg).await.expect("recovers");
            assert_eq!(
                read_all(log.as_ref()).await.expect("read"),
                batches,
                "seed {seed}"
            );
            assert_eq!(
                std::fs::metadata(&seg).expect("stat").len(),
                clean.len() as u64
            );
            let next = log
                .append(vec![batch_of(1, 0, 1, Compression::None)])
                .await
                .expect("append after recovery");
            assert_eq!(
                next.base_offsets,
                vec![batches.last().expect("last").next_offset()]
            );
            log.close().await.expect("close");
            std::fs::write(&seg, &clean).expect("restore");
        }
    });
}

#[test]
fn truncation_at_every_byte_of_the_last_two_batches() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = one_segment();
        let batches = write_batches(dir.path(), &cfg, 8).await;
        let seg = segment_files(dir.path()).pop().expect("segment");
        let clean = std::fs::read(&seg).expect("read");
        let ends: Vec<usize> = batches
            .iter()
            .scan(0, |pos, b| {
                *pos += b.len();
                Some(*pos)
            })
            .collect();
        let from = ends[ends.len() - 3];
        for cut in from..clean.len() {
            std::fs::write(&seg, &clean[..cut]).expect("write");
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let log = open(dir.path(), &cfg).await.expect("recovers");
            let got = read_all(log.as_ref()).await.expect("read");
            assert_eq!(got, batches[..whole], "cut at {cut}");
            let end: Offset = batches[..whole].last().map_or(0, Batch::next_offset);
            assert_eq!(log.offsets().end, end, "cut at {cut}");
            assert_eq!(
                std::fs::metadata(&seg).expect("stat").len() as usize,
                ends[whole - 1],
                "the torn bytes are cut"
            );
            log.close().await.expect("close");
        }
    });
}

fn flip(path: &Path, clean: &[u8], at: usize, bit: u32) {
    let mut bytes = clean.to_vec();
    bytes[at] ^= 1 << (bit % 8);
    std::fs::write(path, &bytes).expect("write");
}

#[test]
fn a_bit_flip_before_the_tail_is_reported_never_served() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = one_segment();
        let batches = write_batches(dir.path(), &cfg, 6).await;
        let seg = segment_files(dir.path()).pop().expect("segment");
        let clean = std::fs::read(&seg).expect("read");
        // The third batch: two whole batches before it, three after.
        let start: usize = batches[..2].iter().map(Batch::len).sum();
        for i in 0..batches[2].len() {
            flip(&seg, &clean, start + i, i as u32);
            match open(dir.path(), &cfg).await {
                Err(StorageError::Corrupt { position, .. }) => {
                    assert!(
                        position as usize <= start + i,
                        "byte {i}: reported at {position}"
                    );
                }
                Ok(log) => panic!(
                    "byte {i}: flip went unnoticed, log opened with end {}",
                    log.offsets().end
                ),
                Err(e) => panic!("byte {i}: unexpected error {e}"),
            }
        }
        std::fs::write(&seg, &clean).expect("restore");
        let log = open(dir.path(), &cfg)
            .await
            .expect("clean file opens again");
        assert_eq!(read_all(log.as_ref()).await.expect("read"), batches);
    });
}

#[test]
fn a_bit_flip_in_a_sealed_segment_fails_the_read() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 2048,
            ..one_segment()
        };
        let batches = write_batches(dir.path(), &cfg, 30).await;
        let files = segment_files(dir.path());
        assert!(files.len() > 3, "the log must have rolled");
        let sealed = &files[1];
        let clean = std::fs::read(sealed).expect("read");
        let base: Offset = sealed
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("base offset name");
        let first = batches
            .iter()
            .find(|b| b.base_offset() == base)
            .expect("first batch of the segment");
        for i in 0..first.len() {
            flip(sealed, &clean, i, i as u32 + 3);
            // The sealed segment's index is trusted at open; the damage must show on read.
            let log = open(dir.path(), &cfg).await.expect("open");
            let mut served = Vec::new();
            let mut failed = false;
            let mut next = 0;
            while next < log.offsets().end {
                match log.read(next, 1 << 20).await {
                    Ok(got) => {
                        next = got.last().expect("batch").next_offset();
                        served.extend(got);
                    }
                    Err(StorageError::Corrupt { .. }) => {
                        failed = true;
                        break;
                    }
                    Err(e) => panic!("byte {i}: unexpected error {e}"),
                }
            }
            assert!(failed, "byte {i}: the damage was not reported");
            for b in &served {
                assert!(batches.contains(b), "byte {i}: a damaged batch was served");
            }
            log.close().await.expect("close");
        }
        std::fs::write(sealed, &clean).expect("restore");
    });
}

#[test]
fn a_batch_that_does_not_fit_a_strict_read_is_left_unread() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 2048,
            ..one_segment()
        };
        let log = open(dir.path(), &cfg).await.expect("open");
        let big = batch_of(4, 1_000, 100_000, Compression::None);
        log.append(vec![big.clone()]).await.expect("append");
        log.append(vec![batch_of(1, 2_000, 10, Compression::None)])
            .await
            .expect("append");
        log.close().await.expect("close");
        // Damage the big batch's last record, far past what a read of 1,000 bytes looks at.
        let sealed = &segment_files(dir.path())[0];
        let clean = std::fs::read(sealed).expect("read");
        assert_eq!(
            clean.len(),
            big.len(),
            "the big batch alone in the first segment"
        );
        flip(sealed, &clean, big.len() - 10, 0);
        let log = open(dir.path(), &cfg).await.expect("open");
        assert_eq!(log.read_within(2, 1000).await.expect("strict read"), vec![]);
        assert!(matches!(
            log.read(2, 1000).await,
            Err(StorageError::Corrupt { .. })
        ));
        std::fs::write(sealed, &clean).expect("restore");
        assert_eq!(log.read(2, 1000).await.expect("read"), vec![big.clone()]);
        assert_eq!(
            log.read_within(0, big.len()).await.expect("strict read"),
            vec![big]
        );
        log.close().await.expect("close");
    });
}

#[test]
fn index_files_are_rebuilt_when_missing_or_stale() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 2048,
            ..one_segment()
        };
        let batches = write_batches(dir.path(), &cfg, 30).await;
        let logdir = dir.path().join("logs").join("crash-0");
        let indexes: Vec<PathBuf> = std::fs::read_dir(&logdir)
            .expect("list")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        assert!(!indexes.is_empty());
        std::fs::remove_file(&indexes[0]).expect("remove");
        std::fs::write(&indexes[indexes.len() - 1], b"stale").expect("damage");
        let log = open(dir.path(), &cfg).await.expect("open");
        assert_eq!(read_all(log.as_ref()).await.expect("read"), batches);
        let expected = batches
            .iter()
            .flat_map(|b| b.records().expect("decode"))
            .find(|r| r.record.timestamp_ms >= 1_020)
            .map(|r| r.offset);
        assert!(expected.is_some());
        assert_eq!(log.offset_for_time(1_020).await.expect("time"), expected);
    });
}

fn remove_index_files(logdir: &Path) {
    for e in std::fs::read_dir(logdir).expect("list") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "index") {
            std::fs::remove_file(p).expect("remove index");
        }
    }
}

#[test]
fn a_compacted_log_recovers_with_its_gaps() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // A segment per batch; every batch holds keys k0, k1, k2, so compaction leaves only the
        // last closed batch and the head, with the first segment kept (empty) as the anchor.
        let cfg = LogConfig {
            segment_bytes: 1,
            ..one_segment()
        };
        let log = open(dir.path(), &cfg).await.expect("open");
        for i in 0..12 {
            let b = batch_of(3, 1_000 + i, 30, Compression::ALL[i as usize % 5]);
            log.append(vec![b]).await.expect("append");
        }
        let policy = weir_storage::CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            ..weir_storage::CompactionPolicy::default()
        };
        let stats = log
            .compact(policy, 10_000)
            .await
            .expect("compact")
            .expect("due");
        assert_eq!((stats.cleaned_upto, stats.records_removed), (33, 30));
        let before = read_all(log.as_ref()).await.expect("read");
        assert_eq!(
            before.iter().map(Batch::base_offset).collect::<Vec<_>>(),
            vec![30, 33]
        );
        log.close().await.expect("close");
        let logdir = dir.path().join("logs").join("crash-0");
        assert_eq!(
            segment_files(dir.path()).len(),
            3,
            "the anchor, batch 30, the head"
        );
        assert_eq!(
            std::fs::metadata(&segment_files(dir.path())[0])
                .expect("stat")
                .len(),
            0
        );

        // A crash while writing a replacement leaves its temporary file; the index files are
        // lost too, so every sealed segment is scanned, gaps and all.
        let leftover = logdir.join("00000000000000000030.cleaned.tmp");
        std::fs::write(&leftover, b"half a segment").expect("leftover");
        remove_index_files(&logdir);
        let log = open(dir.path(), &cfg).await.expect("reopen");
        assert_eq!(read_all(log.as_ref()).await.expect("read"), before);
        assert_eq!((log.offsets().start, log.offsets().end), (0, 36));
        assert_eq!(log.read(5, 1).await.expect("read")[0].base_offset(), 30);
        assert!(!leftover.exists());
        log.close().await.expect("close");

        // Without the record of where compaction ran, the gap is a hole: corruption.
        std::fs::remove_file(logdir.join("compacted-upto")).expect("forget");
        remove_index_files(&logdir);
        match open(dir.path(), &cfg).await {
            Err(StorageError::Corrupt { detail, .. }) => {
                assert!(
                    detail.contains("segment starts at 30 but the previous one ends at 0"),
                    "{detail}"
                );
            }
            other => panic!("a hole must be corruption: {other:?}"),
        }
    });
}

/// `close` during a compaction pass waits for the pass to stop at a segment boundary: nothing
/// is written after `close` returns, and the log reopens with every key's latest record.
#[test]
fn close_stops_a_compaction_pass_between_segments() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            durability: Durability::None,
            segment_bytes: 1,
            ..one_segment()
        };
        let log = open(dir.path(), &cfg).await.expect("open");
        for i in 0..400 {
            let b = batch_of(3, 1_000 + i, 30, Compression::None);
            log.append(vec![b]).await.expect("append");
        }
        let policy = weir_storage::CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            ..weir_storage::CompactionPolicy::default()
        };
        let pass = {
            let log = log.clone();
            tokio::spawn(async move { log.compact(policy, 10_000).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        log.close().await.expect("close");
        let logdir = dir.path().join("logs").join("crash-0");
        let files_after_close: Vec<_> = std::fs::read_dir(&logdir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        // The pass either finished before the close or stopped with `Closed`.
        match pass.await.expect("join") {
            Ok(_) | Err(StorageError::Closed) => {}
            Err(e) => panic!("{e}"),
        }
        let files_later: Vec<_> = std::fs::read_dir(&logdir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files_after_close, files_later, "written after close");
        drop(log);
        let log = open(dir.path(), &cfg).await.expect("reopen");
        let batches = read_all(log.as_ref()).await.expect("read");
        let last = batches.last().expect("the head").clone();
        assert_eq!(last.base_offset(), 399 * 3);
        // Every key (k0, k1, k2) still has its latest record, in the head.
        let keys: Vec<_> = last
            .records()
            .expect("decode")
            .into_iter()
            .map(|r| r.record.key)
            .collect();
        assert_eq!(keys.len(), 3);
        assert_eq!(log.offsets().end, 1200);
    });
}

#[test]
fn a_second_storage_on_the_same_directory_is_refused() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SegmentStorage::open(dir.path()).await.expect("open");
        let second = SegmentStorage::open(dir.path()).await;
        assert!(
            matches!(second, Err(StorageError::InvalidArgument(ref m)) if m.contains("in use")),
            "{second:?}"
        );
        first.close().await.expect("close");
        SegmentStorage::open(dir.path())
            .await
            .expect("free after close");
    });
}

/// Segments of ~2 KB, for the merge tests.
fn small_segments() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        segment_bytes: 2_000,
        segment_ms: 1 << 40,
        index_interval_bytes: 128,
    }
}

/// Batch `i` of a compacted log: ten records of ten hot keys, which later batches overwrite,
/// and one of a key of its own, which stays: compaction leaves each segment a tenth of itself.
fn keyed(i: usize) -> Batch {
    let mut b = BatchBuilder::new(Compression::None);
    let keys = (0..10)
        .map(|j| format!("hot{j}"))
        .chain([format!("own{i}")]);
    for (j, key) in keys.enumerate() {
        let value = format!("value of batch {i}, record {j}: {}", "x".repeat(40));
        b.push(Record::new(1_000 + i as i64, value).with_key(key));
    }
    b.build(0).expect("build")
}

/// Every record served, as (offset, key, value).
async fn served(log: &dyn PartitionLog) -> Vec<(Offset, Vec<u8>, Vec<u8>)> {
    read_all(log)
        .await
        .expect("read")
        .iter()
        .flat_map(|b| b.records().expect("decode"))
        .map(|r| {
            let bytes = |v: Option<bytes::Bytes>| v.map(|b| b.to_vec()).unwrap_or_default();
            (r.offset, bytes(r.record.key), bytes(r.record.value))
        })
        .collect()
}

fn files_with(root: &Path, suffix: &str) -> Vec<String> {
    std::fs::read_dir(root.join("logs").join("crash-0"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect()
}

/// Every record in `kept` was written at its offset, in order, and every key's latest written
/// record is kept.
fn assert_keeps_latest(
    written: &[(Offset, Vec<u8>, Vec<u8>)],
    kept: &[(Offset, Vec<u8>, Vec<u8>)],
) {
    assert!(kept.iter().all(|r| written.contains(r)));
    assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
    let mut latest = std::collections::HashMap::new();
    for (o, k, v) in written {
        latest.insert(k.clone(), (*o, v.clone()));
    }
    for (k, (o, v)) in &latest {
        assert!(
            kept.contains(&(*o, k.clone(), v.clone())),
            "latest of {k:?}"
        );
    }
}

/// A compaction pass writes neighbouring segments that fit in `segment.bytes` together back
/// as one segment (grouped by their sizes before the pass, as Kafka's cleaner groups them, so a
/// log's segments shrink in one pass and merge in the next): a compacted log's file count
/// follows what it keeps, not how many segments it ever rolled. What it serves is what the
/// rules keep, before and after a reopen.
#[test]
fn compaction_merges_neighbouring_segments() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = small_segments();
        let log = open(dir.path(), &cfg).await.expect("open");
        let policy = CompactionPolicy {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionPolicy::default()
        };
        let mut written = Vec::new();
        let append = |from: usize, to: usize| {
            let log = log.clone();
            let mut more = Vec::new();
            async move {
                for i in from..to {
                    let base = log
                        .append(vec![keyed(i)])
                        .await
                        .expect("append")
                        .base_offsets[0];
                    let records = keyed(i).records().expect("decode");
                    more.extend(records.into_iter().map(|r| {
                        let bytes =
                            |v: Option<bytes::Bytes>| v.map(|b| b.to_vec()).unwrap_or_default();
                        (base + r.offset, bytes(r.record.key), bytes(r.record.value))
                    }));
                }
                more
            }
        };
        written.extend(append(0, 300).await);
        let rolled = segment_files(dir.path()).len();
        assert!(rolled >= 50, "{rolled} segments");
        for (from, to) in [(300, 310), (310, 320)] {
            log.compact(policy, 10_000)
                .await
                .expect("compact")
                .expect("due");
            written.extend(append(from, to).await);
        }
        let kept = served(log.as_ref()).await;
        assert_keeps_latest(&written, &kept);
        let merged = segment_files(dir.path()).len();
        // Each segment keeps about a sixth of itself: groups of ~4 become one.
        assert!(merged <= rolled / 3, "{rolled} segments became {merged}");
        assert_eq!((log.offsets().start, log.offsets().end), (0, 320 * 11));
        log.close().await.expect("close");
        drop(log);

        let log = open(dir.path(), &cfg).await.expect("reopen");
        assert_eq!(served(log.as_ref()).await, kept);
        assert_eq!(segment_files(dir.path()).len(), merged);
        assert!(files_with(dir.path(), ".swap").is_empty());
        assert!(files_with(dir.path(), ".tmp").is_empty());
        log.close().await.expect("close");
    });
}

/// A merge is decided once its `<base>.<end>.swap` file exists: a crash after that point, with
/// none, some or all of the merged segments deleted, recovers the merged segment; a swap file
/// with a name that is not a range is corruption, not guessed at.
#[test]
fn an_interrupted_merge_is_finished_at_open() {
    run(async {
        let cfg = small_segments();
        for deleted_before_the_crash in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = open(dir.path(), &cfg).await.expect("open");
            for i in 0..60 {
                log.append(vec![keyed(i)]).await.expect("append");
            }
            let before = read_all(log.as_ref()).await.expect("read");
            log.close().await.expect("close");
            drop(log);
            let files = segment_files(dir.path());
            assert!(files.len() >= 4, "{files:?}");
            // The merge of the first three segments, all of whose batches survived.
            let merged: Vec<u8> = files[..3]
                .iter()
                .flat_map(|f| std::fs::read(f).expect("read segment"))
                .collect();
            let base = |f: &PathBuf| -> Offset {
                let stem = f.file_stem().expect("stem").to_string_lossy().into_owned();
                stem.parse().expect("base")
            };
            let swap = files[0].with_file_name(format!(
                "{:020}.{:020}.swap",
                base(&files[0]),
                base(&files[3])
            ));
            std::fs::write(&swap, &merged).expect("swap");
            for f in files[..3].iter().rev().take(deleted_before_the_crash) {
                std::fs::remove_file(f).expect("delete");
            }
            let log = open(dir.path(), &cfg).await.expect("reopen");
            assert_eq!(read_all(log.as_ref()).await.expect("read"), before);
            assert_eq!(segment_files(dir.path()).len(), files.len() - 2);
            assert!(!swap.exists());
            assert!(!files[1].exists() && !files[2].exists());
            log.close().await.expect("close");
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), &cfg).await.expect("open");
        log.close().await.expect("close");
        drop(log);
        let odd = dir.path().join("logs").join("crash-0").join("7.swap");
        std::fs::write(&odd, b"?").expect("write");
        match open(dir.path(), &cfg).await {
            Err(StorageError::Corrupt { detail, .. }) => {
                assert!(detail.contains("<base>.<end>.swap"), "{detail}")
            }
            other => panic!("a swap file without a range: {other:?}"),
        }
    });
}
