//! The storage conformance suite on the sled backend, reopens included.

use std::sync::Arc;

use async_trait::async_trait;
use weir_sled::SledStorage;
use weir_storage::testkit::StorageFactory;
use weir_storage::Storage;

/// A temporary directory that is opened, closed and opened again as a [`SledStorage`].
struct Factory {
    dir: tempfile::TempDir,
}

impl Factory {
    fn new() -> Self {
        Factory {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }
}

#[async_trait]
impl StorageFactory for Factory {
    async fn open(&self) -> Arc<dyn Storage> {
        let path = self.dir.path().to_path_buf();
        // sled recovery blocks: keep it off the async worker threads.
        let storage = tokio::task::spawn_blocking(move || SledStorage::open(path))
            .await
            .expect("open task")
            .expect("open sled storage");
        Arc::new(storage)
    }
}

weir_storage::conformance_suite!(durable, Factory::new());
