//! Settings changed on an open segment log (`PartitionLog::reconfigure`, what the broker calls
//! when a topic's config is altered) apply to the appends that follow, without a reopen.

use weir_segment::SegmentStorage;
use weir_storage::testkit::{batch_of, run};
use weir_storage::{Compression, Durability, LogConfig, Storage, TopicPartition};

fn segment_files(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("logs").join("settings-0"))
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn a_smaller_segment_size_rolls_the_next_append() {
    run(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let tp = TopicPartition::new("settings", 0);
        let big = LogConfig {
            durability: Durability::None,
            segment_bytes: 1 << 30,
            ..LogConfig::default()
        };
        let storage = SegmentStorage::open(dir.path()).await.expect("open");
        let log = storage.open_log(&tp, &big).await.expect("open log");
        for i in 0..3 {
            let b = batch_of(4, 1_000 + i, 200, Compression::None);
            log.append(vec![b]).await.expect("append");
        }
        assert_eq!(segment_files(dir.path()), 1);

        log.reconfigure(&LogConfig {
            segment_bytes: 1024,
            ..big.clone()
        });
        for i in 3..6 {
            let b = batch_of(4, 1_000 + i, 200, Compression::None);
            log.append(vec![b]).await.expect("append");
        }
        // Each append after the change found the active segment above 1 KiB and rolled.
        assert_eq!(segment_files(dir.path()), 4);
        assert_eq!(log.offsets().end, 24);
        log.close().await.expect("close");
        storage.close().await.expect("close storage");

        // The records are all there after a reopen (with the original settings, as a broker
        // restarting on an older config file would).
        let storage = SegmentStorage::open(dir.path()).await.expect("reopen");
        let log = storage.open_log(&tp, &big).await.expect("reopen log");
        assert_eq!((log.offsets().start, log.offsets().end), (0, 24));
        let (mut next, mut batches) = (0, 0);
        while next < 24 {
            let got = log.read(next, 1 << 20).await.expect("read");
            next = got.last().expect("a batch").next_offset();
            batches += got.len();
        }
        assert_eq!(batches, 6);
        log.close().await.expect("close");
    });
}
