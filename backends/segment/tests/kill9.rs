//! kill -9 loop: a child process appends with `always` durability and prints each acknowledged
//! append; the parent kills it at a random moment, reopens the log and checks that every
//! acknowledged batch is there, byte for byte, that offsets are dense, and that nothing torn is
//! served. Repeats `WEIR_KILL9_ITERATIONS` times (50 by default) over the same directory, so
//! each child also recovers what the previous one left behind. The seed is printed and read
//! from `WEIR_SEED`.
//!
//! A plain `main` (harness = false): the same binary is the parent and, with `--child DIR`, the
//! child.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let dir = args.get(2).expect("--child DIR SEED");
        let seed = args
            .get(3)
            .and_then(|s| s.parse().ok())
            .expect("--child DIR SEED");
        child(Path::new(dir), seed);
        return;
    }
    let iterations: usize = std::env::var("WEIR_KILL9_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed = Rng::seed_from_env("kill9");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut acks: Vec<Ack> = Vec::new();
    let started = Instant::now();
    for iteration in 0..iterations {
        let mut proc = Command::new(&exe)
            .arg("--child")
            .arg(dir.path())
            .arg(rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = proc.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement, then a random moment, then SIGKILL.
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => {
                // Never leave a writer running behind a failed test.
                let _ = proc.kill();
                let _ = proc.wait();
                panic!("iteration {iteration} (seed {seed}): child acknowledged nothing: {e}");
            }
        };
        let mut lines = vec![first];
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        proc.kill().expect("kill -9");
        proc.wait().expect("reap");
        reader.join().expect("reader");
        lines.extend(rx.try_iter());
        // `lines()` yields a final unterminated line too; an ACK cut by the kill fails to parse
        // or names a batch the child may not have finished writing, so it is dropped.
        let complete = lines.len().saturating_sub(1);
        let new: Vec<Ack> = lines[..complete].iter().filter_map(|l| parse(l)).collect();
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
