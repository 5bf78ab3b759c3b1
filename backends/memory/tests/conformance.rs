//! The storage conformance suite on the memory backend.

use std::sync::Arc;

use async_trait::async_trait;
use weir_memory::MemoryStorage;
use weir_storage::testkit::StorageFactory;
use weir_storage::Storage;

#[derive(Default)]
struct Factory(MemoryStorage);

#[async_trait]
impl StorageFactory for Factory {
    async fn open(&self) -> Arc<dyn Storage> {
        Arc::new(self.0.clone())
    }
}

weir_storage::conformance_suite!(volatile, Factory::default());
