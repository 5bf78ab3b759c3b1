//! kill -9 during compaction: a child process appends keyed records (`always` durability, small
//! segments) while a task of its own runs compaction passes back to back, and prints each
//! acknowledged record; the parent kills it at a random moment, reopens the log and checks that
//! recovery succeeds, that every served batch is whole, valid and in ascending offsets, and
//! that for every key a record at or after its latest acknowledged one is still there (a
//! compacted log may lose a key's older records, never its latest). Repeats
//! `WEIR_KILL9_ITERATIONS` times (50 by default) over the same directory; the seed is printed
//! and read from `WEIR_SEED`.
//!
//! A plain `main` (harness = false): the same binary is the parent and, with `--child DIR
//! SEED`, the child.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_segment::SegmentStorage;
use weir_storage::testkit::{run, Rng};
use weir_storage::{
    Batch, BatchBuilder, CompactionPolicy, Compression, Durability, LogConfig, Offset, Record,
    Storage, TopicPartition,
};

const KEYS: u64 = 8;

fn cfg() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        // Small segments: many sealed ones for every pass to rewrite.
        segment_bytes: 2048,
        segment_ms: 1 << 40,
        index_interval_bytes: 256,
    }
}

fn tp() -> TopicPartition {
    TopicPartition::new("kill9c", 0)
}

fn child(dir: &Path, seed: u64) {
    run(async move {
        let storage = SegmentStorage::open(dir)
            .await
            .expect("child: open storage");
        let log = storage
            .open_log(&tp(), &cfg())
            .await
            .expect("child: open log");
        let cleaner = {
            let log = log.clone();
            tokio::spawn(async move {
                let policy = CompactionPolicy {
                    min_cleanable_dirty_ratio: 0.0,
                    delete_retention_ms: i64::MAX,
                    ..CompactionPolicy::default()
                };
                loop {
                    log.compact(policy, i64::MAX / 2)
                        .await
                        .expect("child: compact");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let mut rng = Rng::new(seed);
        loop {
            let n = 1 + rng.below(6) as usize;
            let codec = Compression::ALL[rng.below(5) as usize];
            let mut b = BatchBuilder::new(codec);
            let mut keys = Vec::new();
            for _ in 0..n {
                let key = rng.below(KEYS);
                keys.push(key);
                let value = vec![b'v'; rng.below(300) as usize];
                b.push(Record::new(1_000, value).with_key(format!("k{key}")));
            }
            let info = log
                .append(vec![b.build(0).expect("child: build")])
                .await
                .expect("child: append");
            let base = info.base_offsets[0];
            let line: String = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!("ACK {k} {}\n", base + i as Offset))
                .collect();
            // One write per append; the parent only trusts complete lines.
            print!("{line}");
            std::io::stdout().flush().expect("child: flush");
            assert!(!cleaner.is_finished(), "child: the cleaner stopped");
        }
    });
}

/// Reopens the log and checks it; returns how many records it serves.
fn verify(dir: &Path, latest_acked: &HashMap<u64, Offset>, iteration: usize, seed: u64) -> usize {
    let ctx = format!("iteration {iteration} (seed {seed})");
    let mut served: HashMap<u64, Offset> = HashMap::new();
    let mut records = 0;
    run(async {
        let storage = SegmentStorage::open(dir)
            .await
            .expect("parent: open storage");
        let log = storage
            .open_log(&tp(), &cfg())
            .await
            .unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
        let end = log.offsets().end;
        let mut next = 0;
        while next < end {
            let got = log.read(next, 1 << 20).await.expect("parent: read");
            assert!(!got.is_empty(), "{ctx}: read({next}) below the end {end}");
            for b in &got {
                assert!(b.base_offset() >= next, "{ctx}: offsets ascend");
                Batch::new(b.as_bytes().clone()).expect("a served batch is whole and valid");
                for r in b.records().expect("a served batch decodes") {
                    let key = r.record.key.expect("every record has a key");
                    let key: u64 = std::str::from_utf8(&key[1..])
                        .expect("utf8")
                        .parse()
                        .expect("k<n>");
                    let o = served.entry(key).or_insert(r.offset);
                    *o = (*o).max(r.offset);
                    records += 1;
                }
                next = b.next_offset();
            }
        }
        log.close().await.expect("parent: close");
    });
    for (key, acked) in latest_acked {
        let kept = served.get(key).copied();
        assert!(
            kept.is_some_and(|o| o >= *acked),
            "{ctx}: key k{key} acknowledged at {acked}, served up to {kept:?}"
        );
    }
    records
}

fn main() {
    if let Some((dir, seed)) = support::child_args() {
        child(&dir, seed);
        return;
    }
    let iterations = support::iterations();
    let seed = Rng::seed_from_env("kill9_compaction");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut latest_acked: HashMap<u64, Offset> = HashMap::new();
    let started = Instant::now();
    for iteration in 0..iterations {
        let what = format!("iteration {iteration} (seed {seed})");
        let lines = support::run_and_kill(dir.path(), rng.next_u64(), rng.below(200), &what);
        for line in &lines {
            let mut it = line.strip_prefix("ACK ").unwrap_or_default().split(' ');
            let (Some(k), Some(o)) = (it.next(), it.next()) else {
                continue;
            };
            let (Ok(k), Ok(o)) = (k.parse::<u64>(), o.parse::<Offset>()) else {
                continue;
            };
            let e = latest_acked.entry(k).or_insert(o);
            *e = (*e).max(o);
        }
        let records = verify(dir.path(), &latest_acked, iteration, seed);
        println!(
            "kill9_compaction: iteration {iteration}: {} keys acknowledged, {records} records stored",
            latest_acked.len()
        );
    }
    println!(
        "kill9_compaction: {iterations} kills survived in {:.1}s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    println!("kill9_compaction: 1 passed, 0 failed");
}
