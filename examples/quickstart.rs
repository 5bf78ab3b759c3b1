//! Quickstart: open Weir's default storage (segment files under `./weir-data`), append a few
//! records to a partition, read them back, commit a consumer-group offset, and print it all.
//! Run it twice: the second run finds the first run's records, recovered from disk.
//!
//! ```sh
//! cargo run --release --example quickstart
//! ```

use weir::{
    open_storage, BatchBuilder, Compression, LogConfig, Record, StorageConfig, TopicPartition,
};
use weir_storage::CommittedOffset;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cfg = StorageConfig::default();
    let storage = open_storage(&cfg).await?;
    let tp = TopicPartition::new("greetings", 0);
    let log = storage.open_log(&tp, &LogConfig::default()).await?;
    println!(
        "opened {} storage at {}; {tp} holds offsets {}..{}",
        storage.name(),
        cfg.data_dir.display(),
        log.offsets().start,
        log.offsets().end
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut batch = BatchBuilder::new(Compression::Lz4);
    for (i, word) in ["hello", "bonjour", "hallo", "hola"].iter().enumerate() {
        batch.push(
            Record::new(now, format!("{word}, weir"))
                .with_key(format!("greeting-{i}"))
                .with_header("lang-index", i.to_string()),
        );
    }
    let info = log.append(vec![batch.build(0)?]).await?;
    println!(
        "appended 4 records at offset {} (durable: fsync'd)",
        info.base_offsets[0]
    );

    let from = log.offsets().start;
    let mut next = from;
    while next < log.offsets().end {
        for b in log.read(next, 1 << 20).await? {
            for r in b.records()? {
                let key = r.record.key.as_deref().map(String::from_utf8_lossy);
                let value = r.record.value.as_deref().map(String::from_utf8_lossy);
                println!("  offset {:>4}  key {:?}  value {:?}", r.offset, key, value);
            }
            next = b.next_offset();
        }
    }

    let committed = CommittedOffset {
        offset: log.offsets().end,
        leader_epoch: -1,
        metadata: "quickstart".into(),
        commit_timestamp_ms: now,
    };
    storage
        .commit_offsets("quickstart-readers", &[(tp.clone(), committed)])
        .await?;
    println!(
        "group quickstart-readers committed {tp} at {}",
        log.offsets().end
    );
    log.close().await?;
    storage.close().await?;
    Ok(())
}
