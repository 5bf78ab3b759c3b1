//! What is particular to the sled backend: what an acknowledged append means on disk, the
//! directory lock and its release, one handle per log, and what recovery refuses to serve.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_sled::{SledConfig, SledStorage};
use weir_storage::testkit::{batch_of, run};
use weir_storage::{Compression, Durability, LogConfig, Storage, StorageError, TopicPartition};

async fn open(path: &Path, config: SledConfig) -> SledStorage {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || SledStorage::with_config(path, config))
        .await
        .expect("open task")
        .expect("open sled storage")
}

fn cfg(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default()
    }
}

/// What a kill -9 would leave: a copy of the files as they are on disk right now.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("image dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            crash_image(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Without sled's background flusher, only this backend's own flushes reach the disk: an
/// `Always` append (and an `Interval` one whose interval has passed) is in the files when it
/// returns; a `None` append is not, which is the weaker durability the crate docs warn about.
#[test]
fn always_appends_are_on_disk_when_they_return() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, image) = (dir.path().join("live"), dir.path().join("image"));
        let no_flusher = SledConfig {
            flush_every_ms: None,
            ..SledConfig::default()
        };
        let s = open(&live, no_flusher).await;
        let always = s
            .open_log(&TopicPartition::new("always", 0), &cfg(Durability::Always))
            .await
            .expect("open");
        let interval = s
            .open_log(
                &TopicPartition::new("interval", 0),
                &cfg(Durability::Interval { interval_ms: 0 }),
            )
            .await
            .expect("open");
        let none = s
            .open_log(&TopicPartition::new("none", 0), &cfg(Durability::None))
            .await
            .expect("open");
        let batch = batch_of(3, 1_000, 100, Compression::Lz4);
        always.append(vec![batch.clone()]).await.expect("append");
        interval.append(vec![batch.clone()]).await.expect("append");
        none.append(vec![batch.clone()]).await.expect("append");
        assert_eq!(
            none.offsets().end,
            3,
            "acknowledged and readable in the process"
        );

        crash_image(&live, &image);
        let crashed = open(&image, SledConfig::default()).await;
        for (topic, end) in [("always", 3), ("interval", 3), ("none", 0)] {
            let log = crashed
                .open_log(&TopicPartition::new(topic, 0), &LogConfig::default())
                .await
                .expect("open after crash");
            assert_eq!(log.offsets().end, end, "{topic}");
            if end > 0 {
                let got = log.read(0, 1 << 20).await.expect("read");
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].as_bytes(), batch.as_bytes(), "{topic}");
            }
            log.close().await.expect("close");
        }
        crashed.close().await.expect("close");
        s.close().await.expect("close");
    });
}

/// Dropping everything without `close` after an `Always` append loses nothing.
#[test]
fn always_data_survives_drop_without_close() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let tp = TopicPartition::new("dropped", 1);
        {
            let s: Arc<dyn Storage> = Arc::new(open(dir.path(), SledConfig::default()).await);
            let log = s
                .open_log(&tp, &cfg(Durability::Always))
                .await
                .expect("open");
            log.append(vec![batch_of(2, 0, 10, Compression::None)])
                .await
                .expect("append");
            // The last sled handles flush as they drop: keep that off the async threads.
            tokio::task::spawn_blocking(move || drop((log, s)))
                .await
                .expect("drop");
        }
        let s = open(dir.path(), SledConfig::default()).await;
        let log = s
            .open_log(&tp, &LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().end, 2);
        assert_eq!(log.read(0, 1).await.expect("read").len(), 1);
        s.close().await.expect("close");
    });
}

/// sled locks its directory: a second storage on it is refused while the first is open, and
/// accepted once the first is closed, even though a log handle of the first is still alive
/// (storage close closes it).
#[test]
fn close_releases_the_directory_lock() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().to_path_buf();
        let tp = TopicPartition::new("held", 0);
        let first = open(&path, SledConfig::default()).await;
        let log = first
            .open_log(&tp, &cfg(Durability::None))
            .await
            .expect("open");
        log.append(vec![batch_of(4, 0, 10, Compression::None)])
            .await
            .expect("append");

        let p = path.clone();
        let second = tokio::task::spawn_blocking(move || SledStorage::open(p))
            .await
            .expect("task");
        assert!(matches!(second, Err(StorageError::Io { .. })), "{second:?}");

        first.close().await.expect("close storage");
        assert!(matches!(log.read(0, 10).await, Err(StorageError::Closed)));
        assert!(matches!(
            log.append(vec![batch_of(1, 0, 1, Compression::None)]).await,
            Err(StorageError::Closed)
        ));
        assert!(matches!(first.list_logs().await, Err(StorageError::Closed)));

        let again = open(&path, SledConfig::default()).await;
        let log = again
            .open_log(&tp, &LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().end, 4, "close flushed the None append");
        again.close().await.expect("close");
    });
}

/// A log has one open handle at a time; once closed it can be opened again.
#[test]
fn one_open_handle_per_log() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = open(dir.path(), SledConfig::default()).await;
        let tp = TopicPartition::new("once", 0);
        let log = s.open_log(&tp, &LogConfig::default()).await.expect("open");
        log.append(vec![batch_of(2, 0, 10, Compression::None)])
            .await
            .expect("append");
        assert!(matches!(
            s.open_log(&tp, &LogConfig::default()).await,
            Err(StorageError::InvalidArgument(_))
        ));
        log.close().await.expect("close");
        log.close().await.expect("close is idempotent");
        let log = s
            .open_log(&tp, &LogConfig::default())
            .await
            .expect("reopen");
        assert_eq!(log.offsets().end, 2);
        assert!(matches!(
            s.open_log(&TopicPartition::new("neg", -1), &LogConfig::default())
                .await,
            Err(StorageError::InvalidArgument(_))
        ));
        s.close().await.expect("close");
    });
}

/// Edits, with raw sled, a copy of `from` (or a new directory), and returns a copy of the
/// result. Copies and never the directories themselves: sled's I/O threads may hold a
/// just-dropped database's lock a moment longer, and a copy carries no lock.
async fn edited_copy(
    from: Option<&Path>,
    work: &Path,
    edit: impl FnOnce(&sled::Db) + Send + 'static,
) -> PathBuf {
    let (scratch, result) = (work.join("scratch"), work.join("result"));
    if let Some(from) = from {
        crash_image(from, &scratch);
    }
    let s = scratch.clone();
    tokio::task::spawn_blocking(move || {
        let db = sled::open(s).expect("raw open");
        edit(&db);
        db.flush().expect("flush");
    })
    .await
    .expect("edit");
    crash_image(&scratch, &result);
    result
}

/// A batch damaged on disk is reported when the log opens, never served.
#[test]
fn a_damaged_batch_is_corrupt_not_served() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let tp = TopicPartition::new("damaged", 0);
        {
            let s = open(&live, SledConfig::default()).await;
            let log = s.open_log(&tp, &LogConfig::default()).await.expect("open");
            for _ in 0..3 {
                log.append(vec![batch_of(2, 0, 50, Compression::None)])
                    .await
                    .expect("append");
            }
            s.close().await.expect("close");
        }
        let damaged = edited_copy(Some(&live), dir.path(), |db| {
            let tree = db.open_tree("log:damaged:0").expect("tree");
            let key = 2i64.to_be_bytes();
            let mut value = tree.get(key).expect("get").expect("batch at 2").to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x55;
            tree.insert(key, value).expect("insert");
        })
        .await;
        let s = open(&damaged, SledConfig::default()).await;
        match s.open_log(&tp, &LogConfig::default()).await {
            Err(StorageError::Corrupt { position, .. }) => assert_eq!(position, 2),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        s.close().await.expect("close");
    });
}

/// A log tree without its state (a `delete_log` cut short) is dropped on open; the partition
/// starts over.
#[test]
fn an_orphan_log_tree_is_dropped() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let orphaned = edited_copy(None, dir.path(), |db| {
            let tree = db.open_tree("log:orphan:0").expect("tree");
            tree.insert(0i64.to_be_bytes(), b"not a batch".to_vec())
                .expect("insert");
        })
        .await;
        let s = open(&orphaned, SledConfig::default()).await;
        assert!(s.list_logs().await.expect("list").is_empty());
        let log = s
            .open_log(&TopicPartition::new("orphan", 0), &LogConfig::default())
            .await
            .expect("open");
        assert_eq!(log.offsets().end, 0);
        assert!(log.read(0, 10).await.expect("read").is_empty());
        s.close().await.expect("close");
    });
}
