//! Storage benchmarks: append and read per backend and durability mode, with 1 KiB, 16 KiB and
//! 1 MiB appends, plus the reopen time of a 1 GiB segment log. Before criterion runs, the
//! physical references are measured on the same disk in the same run:
//!
//! - `dd if=/dev/zero of=F bs=1M count=2048 conv=fdatasync` (buffered writes, one final sync)
//! - `dd if=/dev/zero of=F bs=1M count=512 oflag=dsync` (every 1 MiB write synced)
//!
//! ```sh
//! cargo bench --bench storage                  # everything
//! cargo bench --bench storage -- append/segment # a filter, as criterion takes it
//! WEIR_BENCH_DIR=/mnt/disk cargo bench --bench storage   # another disk
//! ```
//!
//! Data goes under `target/bench-data` unless `WEIR_BENCH_DIR` says otherwise; each benchmark
//! deletes what it wrote between samples, so the disk use stays bounded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use weir::{open_storage, Backend, StorageConfig};
use weir_storage::{
    Batch, BatchBuilder, Compression, Durability, LogConfig, PartitionLog, Record, Storage,
    TopicPartition,
};

const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (16 * 1024, "16KiB"), (1024 * 1024, "1MiB")];

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("WEIR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// A batch of about `size` bytes: 1 KiB records (one record when `size` is 1 KiB).
fn batch(size: usize) -> Batch {
    let per_record = 1000.min(size);
    let mut b = BatchBuilder::new(Compression::None);
    let mut total = 0;
    while total + per_record <= size.max(per_record) {
        b.push(Record::new(1_700_000_000_000, vec![b'w'; per_record - 30]));
        total += per_record;
    }
    b.build(0).expect("batch")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `dd` and returns its rate in MB/s (as dd computes it: 10^6 bytes).
fn dd(dir: &Path, args: &[&str]) -> f64 {
    let file = dir.join("dd.bin");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(args)
        .output()
        .expect("run dd");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stderr);
    // "... copied, 1.234 s, 1.7 GB/s"
    let line = text.lines().last().unwrap_or_default();
    let (bytes, secs) = parse_dd(line).unwrap_or_else(|| panic!("unexpected dd output: {text}"));
    bytes / secs / 1e6
}

fn parse_dd(line: &str) -> Option<(f64, f64)> {
    let bytes: f64 = line.split_whitespace().next()?.parse().ok()?;
    let secs: f64 = line
        .split(", ")
        .find(|p| p.ends_with(" s"))?
        .trim_end_matches(" s")
        .parse()
        .ok()?;
    Some((bytes, secs))
}

fn dd_references(dir: &Path) {
    let mut buffered = Vec::new();
    let mut dsync = Vec::new();
    for _ in 0..3 {
        buffered.push(dd(dir, &["bs=1M", "count=2048", "conv=fdatasync"]));
        dsync.push(dd(dir, &["bs=1M", "count=512", "oflag=dsync"]));
    }
    println!(
        "reference dd bs=1M count=2048 conv=fdatasync: {:.0} MB/s (median of {:?})",
        median(&mut buffered),
        buffered
    );
    println!(
        "reference dd bs=1M count=512 oflag=dsync:     {:.0} MB/s (median of {:?})",
        median(&mut dsync),
        dsync
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Target {
    name: &'static str,
    backend: Backend,
    durability: Durability,
    label: &'static str,
}

fn targets() -> Vec<Target> {
    let mut v = vec![Target {
        name: "memory",
        backend: Backend::Memory,
        durability: Durability::None,
        label: "none",
    }];
    for (name, backend) in [("segment", Backend::Segment), ("sled", Backend::Sled)] {
        for (label, durability) in [
            ("none", Durability::None),
            ("interval", Durability::Interval { interval_ms: 100 }),
            ("always", Durability::Always),
        ] {
            v.push(Target {
                name,
                backend,
                durability,
                label,
            });
        }
    }
    v
}

async fn open(dir: &Path, t: &Target) -> (Arc<dyn Storage>, Arc<dyn PartitionLog>) {
    let _ = std::fs::remove_dir_all(dir);
    let cfg = StorageConfig {
        backend: t.backend,
        data_dir: dir.to_path_buf(),
    };
    let storage = open_storage(&cfg).await.expect("open storage");
    let log_cfg = LogConfig {
        durability: t.durability,
        ..LogConfig::default()
    };
    let log = storage
        .open_log(&TopicPartition::new("bench", 0), &log_cfg)
        .await
        .expect("open log");
    (storage, log)
}

async fn close(storage: Arc<dyn Storage>, log: Arc<dyn PartitionLog>) {
    log.close().await.expect("close log");
    storage.close().await.expect("close storage");
}

/// Opens the segment log of the reopen benchmark (recovery included); returns its size.
async fn reopen(dir: &Path) -> u64 {
    let cfg = StorageConfig {
        backend: Backend::Segment,
        data_dir: dir.to_path_buf(),
    };
    let storage = open_storage(&cfg).await.expect("open");
    let log = storage
        .open_log(&TopicPartition::new("bench", 0), &LogConfig::default())
        .await
        .expect("reopen");
    let size = log.offsets().size_bytes;
    close(storage, log).await;
    size
}

fn bench_append(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    for t in targets() {
        let mut group = c.benchmark_group(format!("append/{}/{}", t.name, t.label));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        group.warm_up_time(Duration::from_secs(1));
        let (storage, log) = rt.block_on(open(&dir.join("append"), &t));
        for (size, label) in SIZES {
            let b = batch(size);
            group.throughput(Throughput::Bytes(b.len() as u64));
            let raw = b.as_bytes().clone();
            let mut prepared = 0u64;
            group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                // Each append gets a batch buffer of its own, as one arriving from the network
                // does, so the log writes the base offset in place instead of copying a shared
                // buffer. Copying it and trimming the log (every 32 MiB) stay outside the timing.
                bench.iter_batched(
                    || {
                        prepared += raw.len() as u64;
                        if prepared >= 32 << 20 {
                            prepared = 0;
                            rt.block_on(log.delete_before(log.offsets().end))
                                .expect("trim");
                        }
                        Batch::new(bytes::Bytes::copy_from_slice(&raw)).expect("batch")
                    },
                    |batch| rt.block_on(log.append(vec![batch])).expect("append"),
                    BatchSize::SmallInput,
                );
            });
        }
        rt.block_on(close(storage, log));
        group.finish();
    }
}

fn bench_read(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    const LOG_BYTES: usize = 256 * 1024 * 1024;
    for t in targets().into_iter().filter(|t| t.label == "none") {
        let mut group = c.benchmark_group(format!("read/{}", t.name));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(4));
        let (storage, log) = rt.block_on(open(&dir.join("read"), &t));
        for (size, label) in SIZES {
            let b = batch(size);
            // 256 MiB of recently written data, then read it all in 1 MiB fetches.
            rt.block_on(async {
                log.delete_before(log.offsets().end).await.expect("trim");
                let mut written = 0;
                while written < LOG_BYTES {
                    let n = (1024 * 1024 / b.len()).max(1);
                    log.append(vec![b.clone(); n]).await.expect("append");
                    written += n * b.len();
                }
            });
            group.throughput(Throughput::Bytes(log.offsets().size_bytes));
            group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                bench.to_async(&rt).iter(|| async {
                    let mut next = log.offsets().start;
                    let end = log.offsets().end;
                    let mut bytes = 0usize;
                    while next < end {
                        let got = log.read(next, 1024 * 1024).await.expect("read");
                        bytes += got.iter().map(Batch::len).sum::<usize>();
                        next = got.last().expect("batch").next_offset();
                    }
                    bytes
                });
            });
        }
        rt.block_on(close(storage, log));
        group.finish();
    }
}

fn bench_reopen(c: &mut Criterion, dir: &Path) {
    let rt = runtime();
    let t = Target {
        name: "segment",
        backend: Backend::Segment,
        durability: Durability::None,
        label: "none",
    };
    let dir = dir.join("reopen");
    let (storage, log) = rt.block_on(open(&dir, &t));
    let b = batch(1024 * 1024);
    rt.block_on(async {
        for _ in 0..1024 {
            log.append(vec![b.clone()]).await.expect("append");
        }
        close(storage, log).await;
    });
    let mut group = c.benchmark_group("reopen/segment");
    group.sample_size(10);
    group.bench_function("1GiB", |bench| {
        bench.iter(|| {
            let size = rt.block_on(reopen(&dir));
            assert_eq!(size, 1024 * b.len() as u64);
        });
    });
    // Cold: the page cache dropped before each open (needs root; skipped with a note if not).
    let drop_caches = || {
        let _ = Command::new("sync").status();
        std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
    };
    if drop_caches() {
        group.bench_function("1GiB-cold-cache", |bench| {
            bench.iter_batched(
                || {
                    drop_caches();
                },
                |()| rt.block_on(reopen(&dir)),
                BatchSize::PerIteration,
            );
        });
    } else {
        println!("reopen/segment/1GiB-cold-cache: skipped (cannot write /proc/sys/vm/drop_caches)");
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let dir = bench_dir();
    let mut c = Criterion::default().configure_from_args();
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| {
        filter
            .as_deref()
            .is_none_or(|f| name.contains(f) || f.contains(name))
    };
    if wants("dd") {
        dd_references(&dir);
    }
    if wants("append") {
        bench_append(&mut c, &dir);
    }
    if wants("read") {
        bench_read(&mut c, &dir);
    }
    if wants("reopen") {
        bench_reopen(&mut c, &dir);
    }
    c.final_summary();
    // The last backend's data stays until the next open clears it; not after the run (sled's
    // append directory alone grows to several GiB).
    for leftover in ["append", "read"] {
        let _ = std::fs::remove_dir_all(dir.join(leftover));
    }
}
