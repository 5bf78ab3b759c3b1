//! `weir bench`: load against a broker (over the native protocol, or embedded in this process)
//! with the public `Producer` and `Consumer`, as an application would see it.
//!
//! Producers and consumers run at the same time on one topic: producers send `--records` in
//! total, spread over `--partitions`; consumers (each assigned a share of the partitions) read
//! until they have seen every record. A progress line each second; then a summary with
//! records/s and MB/s for both sides, publish latency (the `send`/`send_batch` call →
//! acknowledgement, every batch or every 100th record; it includes waiting for buffer space, as
//! Kafka's producer-perf-test does), the same from the moment the producer had queued the
//! batch ("queued to acked": record queue time plus request latency), and end-to-end latency
//! (record timestamp → consumed, ms resolution), as p50/p99/p999/max from HDR histograms.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use weir::client::{AutoOffsetReset, DeliveryFuture, RemoteTransport, Transport};
use weir::config::{Config, DurabilityMode};
use weir::{Acks, Broker, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use weir_storage::TopicPartition;

/// `weir bench` options.
#[derive(Debug, Args)]
pub struct BenchCmd {
    /// Run against this broker's native listener (default: a broker embedded in this process).
    #[arg(long, short = 'b')]
    broker: Option<SocketAddr>,
    /// For the embedded broker: its config file (data under ./weir-bench-data otherwise).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// For the embedded broker: none, interval or always.
    #[arg(long, default_value = "interval")]
    durability: String,
    /// Topic to use (created with --partitions if missing).
    #[arg(long, default_value = "weir-bench")]
    topic: String,
    /// Partitions of a new topic.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Records to send in total.
    #[arg(long, short = 'n', default_value_t = 5_000_000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records per batch (the producer's batch size is set to hold this many).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Producer tasks.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumer tasks (0: produce only).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Send record by record through `Producer::send` (linger 5 ms) instead of handing the
    /// producer whole batches of `--batch` records (`Producer::send_batch`).
    #[arg(long)]
    per_record: bool,
    /// The producer's buffer, in batches: how many batches may be sent but unacknowledged
    /// (beyond it, sending waits). Publish latency is mostly this queue at full speed.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Publishes in flight per partition (`ProducerConfig::max_in_flight`; above 1 the
    /// producer is idempotent).
    #[arg(long, default_value_t = 5)]
    pipeline: usize,
    /// Produce everything first, then consume it (separate produce and consume figures);
    /// by default producers and consumers run at the same time.
    #[arg(long)]
    sequential: bool,
}

fn percentiles(h: &Histogram<u64>, unit: &str) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!(
        "p50 {} {unit}, p99 {} {unit}, p999 {} {unit}, max {} {unit}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}

/// The partition record `i` goes to: round-robin per record, or, in batch mode, the producer's
/// batches round-robin (producer `i % producers` sends indices `i`, `i + producers`, ...).
fn partition_of(cmd: &BenchCmd, partitions: u32, i: u64) -> u32 {
    let partitions = u64::from(partitions.max(1));
    if cmd.per_record {
        (i % partitions) as u32
    } else {
        let local = i / cmd.producers.max(1) as u64;
        (local / cmd.batch.max(1) as u64 % partitions) as u32
    }
}

/// Runs the benchmark.
///
/// # Errors
/// Bad arguments, a broker that cannot be reached or refuses the load.
pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let acks = match cmd.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => bail!("--acks {other:?}: expected 0, 1 or all"),
    };
    if cmd.producers == 0 || cmd.partitions == 0 {
        bail!("--producers and --partitions must be at least 1");
    }
    let mut embedded = None;
    let transport: Arc<dyn Transport> = match cmd.broker {
        Some(addr) => Arc::new(RemoteTransport::connect(addr).await?),
        None => {
            let mut config = Config::load(cmd.config.as_deref())?;
            if cmd.config.is_none() {
                config.data_dir = "./weir-bench-data".into();
            }
            config.topic_defaults.durability = match cmd.durability.as_str() {
                "none" => DurabilityMode::None,
                "interval" => DurabilityMode::Interval,
                "always" => DurabilityMode::Always,
                other => bail!("--durability {other:?}: expected none, interval or always"),
            };
            let broker = Broker::start(config).await?;
            embedded = Some(broker.clone());
            Arc::new(broker)
        }
    };
    let partitions = match transport.partitions(&cmd.topic, false).await {
        Ok(n) => n,
        Err(_) => {
            transport
                .create_topic(&cmd.topic, Some(cmd.partitions), vec![])
                .await?;
            cmd.partitions
        }
    };
    // Consumers start at the current end, so they read exactly this run's records.
    let mut starts = Vec::new();
    for p in 0..partitions as i32 {
        starts.push(
            transport
                .list_offset(&cmd.topic, p, weir::OffsetSpec::Latest)
                .await?
                .unwrap_or(0),
        );
    }
    println!(
        "weir bench: {} records of {} B, {} producer(s), {} consumer(s), {} partition(s), batches of {}, acks {}, {}",
        cmd.records,
        cmd.record_size,
        cmd.producers,
        cmd.consumers,
        partitions,
        cmd.batch,
        cmd.acks,
        match cmd.broker {
            Some(a) => format!("broker {a}"),
            None => format!("embedded ({})", cmd.durability),
        }
    );
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let publish_lat = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    // From the moment the producer took the batch (after waiting for buffer space) to its
    // acknowledgement: Kafka's record queue time plus request latency, without the time the
    // application spent blocked because the buffer was full.
    let queued_lat = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let e2e_lat = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let start = Instant::now();

    let spawn_consumers = |start: Instant| {
        let mut consumers = Vec::new();
        for c in 0..cmd.consumers {
            let mine: Vec<TopicPartition> = (0..partitions as i32)
                .filter(|p| *p as usize % cmd.consumers == c)
                .map(|p| TopicPartition::new(cmd.topic.clone(), p))
                .collect();
            let expected: u64 = (0..cmd.records)
                .filter(|i| partition_of(&cmd, partitions, *i) as usize % cmd.consumers == c)
                .count() as u64;
            let mut consumer = Consumer::with_transport(
                transport.clone(),
                ConsumerConfig {
                    auto_offset_reset: AutoOffsetReset::Latest,
                    auto_commit_interval: None,
                    ..ConsumerConfig::default()
                },
            );
            consumer.assign(mine.clone());
            for tp in &mine {
                consumer.seek(tp, starts[tp.partition as usize]);
            }
            let consumed = consumed.clone();
            let e2e = e2e_lat.clone();
            consumers.push(tokio::spawn(async move {
                let mut seen = 0u64;
                while seen < expected {
                    let records = consumer.poll(Duration::from_secs(1)).await?;
                    let now = weir::broker::now_ms();
                    if let Some(r) = records.first() {
                        let _ = e2e
                            .lock()
                            .expect("histogram")
                            .record((now - r.timestamp_ms).max(0) as u64);
                    }
                    seen += records.len() as u64;
                    consumed.fetch_add(records.len() as u64, Ordering::Relaxed);
                }
                anyhow::Ok(start.elapsed())
            }));
        }
        consumers
    };
    let mut consumers = if cmd.sequential {
        Vec::new()
    } else {
        spawn_consumers(start)
    };
    let value = Bytes::from(vec![b'w'; cmd.record_size]);
    let mut producers = Vec::new();
    for p in 0..cmd.producers {
        let producer = Producer::with_transport(
            transport.clone(),
            ProducerConfig {
                acks,
                linger: Duration::from_millis(5),
                batch_bytes: (cmd.record_size + 24) * cmd.batch.max(1),
                buffer_bytes: (cmd.record_size + 24) * cmd.batch.max(1) * cmd.in_flight.max(1),
                max_in_flight: cmd.pipeline.max(1),
                ..ProducerConfig::default()
            },
        );
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Instant, Instant, DeliveryFuture)>();
        let (lat, qlat) = (publish_lat.clone(), queued_lat.clone());
        let collector = tokio::spawn(async move {
            while let Some((sent, queued, d)) = rx.recv().await {
                d.await?;
                let _ = lat
                    .lock()
                    .expect("histogram")
                    .record(sent.elapsed().as_micros() as u64);
                let _ = qlat
                    .lock()
                    .expect("histogram")
                    .record(queued.elapsed().as_micros() as u64);
            }
            anyhow::Ok(())
        });
        let value = value.clone();
        let topic = cmd.topic.clone();
        let produced = produced.clone();
        let (records, producers_n) = (cmd.records, cmd.producers as u64);
        let (per_record, batch) = (cmd.per_record, cmd.batch.max(1) as u64);
        producers.push(tokio::spawn(async move {
            let mut i = p as u64;
            let mut last = None;
            let mut sent_batches = 0u64;
            while i < records {
                if per_record {
                    let partition = (i % partitions as u64) as i32;
                    // Every 100th record's publish latency is sampled.
                    let sampled = i % 100 == p as u64 % 100;
                    let sent = sampled.then(Instant::now);
                    let d = producer
                        .send(
                            ProducerRecord::new(topic.clone(), value.clone()).partition(partition),
                        )
                        .await;
                    match sent {
                        Some(sent) => {
                            let _ = tx.send((sent, Instant::now(), d));
                        }
                        None => last = Some(d),
                    }
                    produced.fetch_add(1, Ordering::Relaxed);
                    i += producers_n;
                } else {
                    // Batches go round the partitions; each producer's records are the
                    // indices p, p + producers, ... as in per-record mode, so the totals match.
                    let partition = (sent_batches % partitions as u64) as i32;
                    sent_batches += 1;
                    let mut batch_records = Vec::with_capacity(batch as usize);
                    while i < records && (batch_records.len() as u64) < batch {
                        batch_records.push(ProducerRecord::new(String::new(), value.clone()));
                        i += producers_n;
                    }
                    let n = batch_records.len() as u64;
                    let sent = Instant::now();
                    let d = producer.send_batch(&topic, partition, batch_records).await;
                    let _ = tx.send((sent, Instant::now(), d));
                    produced.fetch_add(n, Ordering::Relaxed);
                }
            }
            producer.flush().await;
            if let Some(d) = last {
                d.await?;
            }
            drop(tx);
            collector.await??;
            anyhow::Ok(start.elapsed())
        }));
    }

    let progress = {
        let (produced, consumed) = (produced.clone(), consumed.clone());
        tokio::spawn(async move {
            let (mut p0, mut c0) = (0, 0);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (p, c) = (
                    produced.load(Ordering::Relaxed),
                    consumed.load(Ordering::Relaxed),
                );
                eprintln!(
                    "{:>5.1}s  produced {p:>11} ({:>9}/s)  consumed {c:>11} ({:>9}/s)",
                    start.elapsed().as_secs_f64(),
                    p - p0,
                    c - c0
                );
                (p0, c0) = (p, c);
            }
        })
    };
    let mut produce_time = Duration::ZERO;
    for p in producers {
        produce_time = produce_time.max(p.await??);
    }
    if cmd.sequential {
        consumers = spawn_consumers(Instant::now());
    }
    let mut consume_time = Duration::ZERO;
    for c in consumers {
        consume_time = consume_time.max(c.await??);
    }
    progress.abort();
    let mb = |n: u64, t: Duration| n as f64 * cmd.record_size as f64 / t.as_secs_f64() / 1e6;
    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64();
    println!(
        "produced: {} records in {:.2}s: {:.0} records/s, {:.1} MB/s; publish latency {}; queued to acked {}",
        cmd.records,
        produce_time.as_secs_f64(),
        rate(cmd.records, produce_time),
        mb(cmd.records, produce_time),
        percentiles(&publish_lat.lock().expect("histogram"), "us"),
        percentiles(&queued_lat.lock().expect("histogram"), "us")
    );
    if cmd.consumers > 0 {
        println!(
            "consumed: {} records in {:.2}s: {:.0} records/s, {:.1} MB/s; end-to-end latency {}",
            cmd.records,
            consume_time.as_secs_f64(),
            rate(cmd.records, consume_time),
            mb(cmd.records, consume_time),
            percentiles(&e2e_lat.lock().expect("histogram"), "ms")
        );
    }
    if let Some(b) = embedded {
        b.shutdown().await?;
    }
    Ok(())
}
