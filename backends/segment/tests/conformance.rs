//! The storage conformance suite on the segment backend.

use std::sync::Arc;

use async_trait::async_trait;
use weir_segment::SegmentStorage;
use weir_storage::testkit::StorageFactory;
use weir_storage::Storage;

struct Factory(tempfile::TempDir);

impl Factory {
    fn new() -> Self {
        Factory(tempfile::tempdir().expect("tempdir"))
    }
}

#[async_trait]
impl StorageFactory for Factory {
    async fn open(&self) -> Arc<dyn Storage> {
        Arc::new(
            SegmentStorage::open(self.0.path())
                .await
                .expect("open segment storage"),
        )
    }
}

weir_storage::conformance_suite!(durable, Factory::new());
