//! Weir inside your program: start a broker, publish with a producer, consume with a group.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::time::Duration;

use weir::{Broker, Config, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The embedded default: segment files under ./weir-data, fsync before every ack.
    let broker = Broker::start(Config::default()).await?;

    let producer = Producer::new(broker.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("embedded-demo", format!("hello #{i}")).key("me");
        deliveries.push(producer.send(record).await);
    }
    for delivery in deliveries {
        let meta = delivery.await?;
        println!(
            "sent to partition {} at offset {}",
            meta.partition, meta.offset
        );
    }

    let group = ConsumerConfig {
        group_id: Some("readers".into()),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(broker.clone(), group);
    consumer.subscribe(&["embedded-demo"])?;
    let mut got = 0;
    while got < 10 {
        for r in consumer.poll(Duration::from_secs(1)).await? {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default());
            println!("read offset {}: {value}", r.offset);
            got += 1;
        }
    }
    consumer.commit().await?;
    consumer.close().await?;
    broker.shutdown().await?;
    Ok(())
}
