//! A program that talks to a Weir broker over the network, and nothing else: the same
//! `Producer`, `Consumer` and `Admin` as `examples/embedded.rs`, built on a `RemoteTransport`.
//! Such a program depends on Weir without its default features, so neither the actor system
//! nor a storage backend is compiled into it:
//!
//! ```toml
//! weir = { version = "0.1", default-features = false }
//! ```
//!
//! ```sh
//! weir serve &                                  # or any broker's native listener
//! cargo run --no-default-features --example remote -- 127.0.0.1:9292
//! ```

use std::time::Duration;

use weir::client::RemoteTransport;
use weir::{
    Admin, BrokerError, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9292".into());
    let broker = RemoteTransport::connect(addr.parse()?).await?;
    println!("connected to {addr}");

    let admin = Admin::new(broker.clone());
    match admin.create_topic("remote-demo", 3, &[]).await {
        Ok(()) | Err(BrokerError::TopicExists(_)) => {}
        Err(e) => return Err(e.into()),
    }

    // Where each partition ends before this run: the group committed up to here last time.
    let ends: Vec<i64> = admin
        .describe_topic("remote-demo")
        .await?
        .partitions
        .iter()
        .map(|p| p.end)
        .collect();

    let producer = Producer::new(broker.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("remote-demo", format!("hello #{i}")).key("me");
        deliveries.push(producer.send(record).await);
    }
    let mut sent = Vec::new();
    for delivery in deliveries {
        let meta = delivery.await?;
        println!(
            "sent to partition {} at offset {}",
            meta.partition, meta.offset
        );
        sent.push((meta.partition, meta.offset));
    }

    // A group resumes where it committed: a second run starts after the first run's records
    // (when every run commits what it read, as this one does).
    let group = ConsumerConfig {
        group_id: Some("remote-readers".into()),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(broker, group);
    consumer.subscribe(&["remote-demo"])?;
    let mut unread: std::collections::HashSet<_> = sent.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !unread.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} records sent were not read back: {unread:?}",
            unread.len()
        );
        for r in consumer.poll(Duration::from_secs(1)).await? {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
            println!(
                "read partition {} offset {}: {value}",
                r.partition, r.offset
            );
            let end = ends.get(r.partition as usize).copied().unwrap_or(0);
            anyhow::ensure!(
                r.offset >= end,
                "offset {} of partition {} was read by an earlier run of the group",
                r.offset,
                r.partition
            );
            unread.remove(&(r.partition, r.offset));
        }
    }
    consumer.commit().await?;
    consumer.close().await?;
    Ok(())
}
