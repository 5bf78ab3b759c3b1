//! kill -9 loop: a child process appends with `always` durability and prints each acknowledged
//! append; the parent kills it at a random moment, reopens the log and checks that every
//! acknowledged batch is there, byte for byte, that offsets are dense, and that nothing torn is
//! served. Repeats `WEIR_KILL9_ITERATIONS` times (50 by default) over the same directory, so
//! each child also recovers what the previous one left behind. The seed is printed and read
//! from `WEIR_SEED`.
//!
//! A plain `main` (harness = false): the same binary is the parent and, with `--child DIR`, the
//! child.

mod support;

use std::path::Path;
use std::time::Instant;

use weir_segment::SegmentStorage;
use weir_storage::testkit::{batch_of, run, Rng};
use weir_storage::{Batch, Compression, Durability, LogConfig, Offset, Storage, TopicPartition};

fn cfg() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        // Small segments, so kills also land in the middle of rolls.
        segment_bytes: 64 * 1024,
        segment_ms: 1 << 40,
        index_interval_bytes: 1024,
    }
}

fn tp() -> TopicPartition {
    TopicPartition::new("kill9", 0)
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
        let mut rng = Rng::new(seed);
        loop {
            let n = 1 + rng.below(3) as usize;
            let batches: Vec<Batch> = (0..n)
                .map(|_| {
                    batch_of(
                        1 + rng.below(20) as usize,
                        rng.below(1 << 40) as i64,
                        rng.below(600) as usize,
                        Compression::ALL[rng.below(5) as usize],
                    )
                })
                .collect();
            let crcs: Vec<u32> = batches.iter().map(Batch::crc).collect();
            let counts: Vec<i32> = batches.iter().map(Batch::record_count).collect();
            let info = log.append(batches).await.expect("child: append");
            let mut line = String::new();
            for ((base, crc), count) in info.base_offsets.iter().zip(crcs).zip(counts) {
                line.push_str(&format!("ACK {base} {count} {crc}\n"));
            }
            // One write per append; the parent only trusts complete lines.
            print!("{line}");
            use std::io::Write;
            std::io::stdout().flush().expect("child: flush");
        }
    });
}

struct Ack {
    base: Offset,
    count: i32,
    crc: u32,
}

fn parse(line: &str) -> Option<Ack> {
    let mut it = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        base: it.next()?.parse().ok()?,
        count: it.next()?.parse().ok()?,
        crc: it.next()?.parse().ok()?,
    })
}

fn verify(dir: &Path, acks: &[Ack], iteration: usize, seed: u64) -> usize {
    let mut batches = Vec::new();
    run(async {
        let storage = SegmentStorage::open(dir)
            .await
            .expect("parent: open storage");
        let log = storage.open_log(&tp(), &cfg()).await.unwrap_or_else(|e| {
            panic!("iteration {iteration} (seed {seed}): recovery failed: {e}")
        });
        let end = log.offsets().end;
        let mut next = 0;
        while next < end {
            let got = log.read(next, 1 << 20).await.expect("parent: read");
            for b in &got {
                assert_eq!(b.base_offset(), next, "offsets are dense (seed {seed})");
                Batch::new(b.as_bytes().clone()).expect("a served batch is whole and valid");
                b.records().expect("a served batch decodes");
                next = b.next_offset();
            }
            batches.extend(got);
        }
        log.close().await.expect("parent: close");
    });
    for ack in acks {
        let found = batches
            .iter()
            .find(|b| b.base_offset() == ack.base)
            .unwrap_or_else(|| {
                panic!(
                    "iteration {iteration} (seed {seed}): acknowledged batch at {} is missing",
                    ack.base
                )
            });
        assert_eq!(
            (found.crc(), found.record_count()),
            (ack.crc, ack.count),
            "iteration {iteration} (seed {seed}): acknowledged batch at {} differs",
            ack.base
        );
    }
    batches.len()
}

fn main() {
    if let Some((dir, seed)) = support::child_args() {
        child(&dir, seed);
        return;
    }
    let iterations = support::iterations();
    let seed = Rng::seed_from_env("kill9");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acks: Vec<Ack> = Vec::new();
    let started = Instant::now();
    for iteration in 0..iterations {
        let what = format!("iteration {iteration} (seed {seed})");
        let lines = support::run_and_kill(dir.path(), rng.next_u64(), rng.below(120), &what);
        let new: Vec<Ack> = lines.iter().filter_map(|l| parse(l)).collect();
        acks.extend(new);
        let stored = verify(dir.path(), &acks, iteration, seed);
        println!(
            "kill9: iteration {iteration}: {} acknowledged batches, {stored} stored",
            acks.len()
        );
    }
    println!(
        "kill9: {iterations} kills survived in {:.1}s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    println!("kill9: 1 passed, 0 failed");
}
