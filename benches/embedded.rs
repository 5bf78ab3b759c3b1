//! The embedded path, end to end without a network: one producer sends 100-byte records
//! through `Producer` into a running broker, then one consumer reads them back through
//! `Consumer`. Memory storage, and segment storage with `interval` durability.
//!
//! Reports records/s (median of `WEIR_BENCH_RUNS` runs, 3 by default) and publish latency
//! percentiles (send to acknowledgement, every 100th record sampled, all runs together).
//!
//! ```sh
//! cargo bench --bench embedded
//! WEIR_BENCH_RECORDS=10000000 WEIR_BENCH_RUNS=5 cargo bench --bench embedded
//! WEIR_BENCH_DURABILITY=always cargo bench --bench embedded   # none | interval | always
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use weir::client::AutoOffsetReset;
use weir::config::{Config, DurabilityMode};
use weir::{
    Acks, Backend, Broker, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use weir_storage::TopicPartition;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    produce_rate: f64,
    consume_rate: f64,
}

async fn run(backend: Backend, records: usize, latencies: &mut Histogram<u64>) -> Run {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut config = Config::default();
    config.storage.backend = backend;
    config.data_dir = dir.path().to_path_buf();
    config.topic_defaults.durability = match std::env::var("WEIR_BENCH_DURABILITY").as_deref() {
        Ok("none") => DurabilityMode::None,
        Ok("always") => DurabilityMode::Always,
        _ => DurabilityMode::Interval,
    };
    config.topic_defaults.flush_interval_ms = 1000;
    let broker = Broker::start(config).await.expect("start");
    broker
        .create_topic("bench", Some(1), vec![])
        .await
        .expect("topic");

    let producer = Producer::new(
        broker.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(5),
            batch_bytes: 1024 * 1024,
            buffer_bytes: 64 * 1024 * 1024,
            ..ProducerConfig::default()
        },
    );
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(Instant, weir::client::DeliveryFuture)>();
    let collector = tokio::spawn(async move {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        while let Some((sent, delivery)) = rx.recv().await {
            delivery.await.expect("delivered");
            h.record(sent.elapsed().as_micros() as u64).expect("record");
        }
        h
    });
    let value = Bytes::from(vec![b'w'; 100]);
    let start = Instant::now();
    for i in 0..records {
        let record = ProducerRecord::new("bench", value.clone()).partition(0);
        let sent = Instant::now();
        let delivery = producer.send(record).await;
        if i % 100 == 0 {
            let _ = tx.send((sent, delivery));
        }
    }
    producer.flush().await;
    let produce = start.elapsed();
    drop(tx);
    latencies
        .add(collector.await.expect("collector"))
        .expect("merge");

    let mut consumer = Consumer::new(
        broker.clone(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            auto_commit_interval: None,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(vec![TopicPartition::new("bench", 0)]);
    let start = Instant::now();
    let mut read = 0;
    while read < records {
        read += consumer
            .poll(Duration::from_secs(5))
            .await
            .expect("poll")
            .len();
    }
    let consume = start.elapsed();
    broker.shutdown().await.expect("shutdown");
    Run {
        produce_rate: records as f64 / produce.as_secs_f64(),
        consume_rate: records as f64 / consume.as_secs_f64(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let records = env("WEIR_BENCH_RECORDS", 5_000_000);
    let runs = env("WEIR_BENCH_RUNS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, backend) in [
        ("memory", Backend::Memory),
        ("segment/interval", Backend::Segment),
    ] {
        let mut latencies = Histogram::<u64>::new(3).expect("histogram");
        let mut produced = Vec::new();
        let mut consumed = Vec::new();
        for _ in 0..runs {
            let r = rt.block_on(run(backend, records, &mut latencies));
            produced.push(r.produce_rate);
            consumed.push(r.consume_rate);
        }
        println!(
            "embedded {name}: {records} x 100 B, {runs} runs: produce {:.2} M records/s (runs {}), consume {:.2} M records/s (runs {}); publish latency p50 {} us, p99 {} us, p999 {} us, max {} us",
            median(produced.clone()) / 1e6,
            produced.iter().map(|r| format!("{:.2}", r / 1e6)).collect::<Vec<_>>().join(" "),
            median(consumed.clone()) / 1e6,
            consumed.iter().map(|r| format!("{:.2}", r / 1e6)).collect::<Vec<_>>().join(" "),
            latencies.value_at_quantile(0.5),
            latencies.value_at_quantile(0.99),
            latencies.value_at_quantile(0.999),
            latencies.max(),
        );
    }
}
