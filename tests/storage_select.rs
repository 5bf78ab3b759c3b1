//! The backend is chosen by configuration, and the durable ones keep data across reopen.

use weir::{
    open_storage, Backend, BatchBuilder, Compression, LogConfig, Record, StorageConfig,
    TopicPartition,
};

async fn write_and_reopen(backend: Backend) -> (i64, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StorageConfig {
        backend,
        data_dir: dir.path().join("data"),
    };
    let tp = TopicPartition::new("t", 0);
    let storage = open_storage(&cfg).await.expect("open");
    let log = storage
        .open_log(&tp, &LogConfig::default())
        .await
        .expect("log");
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(Record::new(1, "one"));
    b.push(Record::new(2, "two"));
    log.append(vec![b.build(0).expect("build")])
        .await
        .expect("append");
    let first = log.offsets().end;
    log.close().await.expect("close");
    storage.close().await.expect("close");
    drop((log, storage));
    let storage = open_storage(&cfg).await.expect("reopen");
    let log = storage
        .open_log(&tp, &LogConfig::default())
        .await
        .expect("log");
    (first, log.offsets().end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backend_by_name() {
    assert_eq!("sled".parse::<Backend>(), Ok(Backend::Sled));
    assert!("postgres".parse::<Backend>().is_err());
    assert_eq!(write_and_reopen(Backend::Segment).await, (2, 2));
    assert_eq!(write_and_reopen(Backend::Sled).await, (2, 2));
    // Memory storage starts empty in each new instance.
    assert_eq!(write_and_reopen(Backend::Memory).await, (2, 0));
}
