//! # Weir: an event streaming platform you run in one command or embed in your program
//!
//! Producers append records to **topics**, split into **partitions**: append-only, durable logs
//! with dense offsets. Consumers read from any offset, alone or in consumer groups.
//!
//! The map (see `DESIGN.md` in the project's shared notes for the reasoning):
//!
//! ```text
//! Kafka clients / Weir clients / embedding program
//!        └─► BrokerHandle ─► partition actors ─► PartitionLog ─┐
//!                         └► group actors ─────► offset store ─┴─► Storage: memory | segment | sled
//! ```
//!
//! Modules: [`config`] (weir.toml and `WEIR_*`), [`broker`] (the actors and [`BrokerHandle`]),
//! [`client`] (`Producer`, `Consumer`, `Admin` over a [`client::Transport`]: in-process or
//! TCP), [`protocol`] (sans-IO wire codecs), `server` (listeners). Storage is
//! [`weir_storage`] with its backends; `open_storage` picks one by configuration.
//!
//! Features: `broker` (the actor system, the backends, the listeners) and `cli` (the `weir`
//! binary), both on by default. Without them the crate is the remote client: [`client`] over
//! `client::RemoteTransport`, the native codec and the broker's vocabulary
//! ([`broker::types`], [`BrokerError`]).

// Weir's shipped code has no unsafe code (the workspace denies it; only a benchmark's calls
// into librdkafka are allowed it).
#![forbid(unsafe_code)]

pub mod broker;
pub mod client;
pub mod config;
pub(crate) mod net;
pub mod protocol;
#[cfg(feature = "broker")]
pub mod server;

use std::path::PathBuf;

pub use broker::{Acks, BrokerError, OffsetSpec};
#[cfg(feature = "broker")]
pub use broker::{Broker, BrokerHandle};
pub use client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
pub use config::Config;
pub use weir_storage as storage;
pub use weir_storage::{
    Batch, BatchBuilder, Compression, Durability, LogConfig, PartitionLog, Record, Storage,
    StorageError, TopicPartition,
};

/// Which storage backend a broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Everything in memory; nothing survives the process.
    Memory,
    /// Segment files under the data directory (the default).
    #[default]
    Segment,
    /// A sled database under the data directory.
    Sled,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "memory" => Ok(Backend::Memory),
            "segment" => Ok(Backend::Segment),
            "sled" => Ok(Backend::Sled),
            other => Err(format!(
                "unknown storage backend {other:?}: expected memory, segment or sled"
            )),
        }
    }
}

/// Where and how a broker stores its data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageConfig {
    /// The backend.
    pub backend: Backend,
    /// The data directory (unused by `memory`).
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Segment,
            data_dir: PathBuf::from("./weir-data"),
        }
    }
}

/// Opens the configured storage. The segment backend keeps its files under `data_dir`, sled its
/// database under `data_dir/sled`.
///
/// # Errors
/// The backend's error when the directory cannot be created or opened, or recovery fails.
#[cfg(feature = "broker")]
pub async fn open_storage(
    cfg: &StorageConfig,
) -> Result<std::sync::Arc<dyn Storage>, StorageError> {
    Ok(match cfg.backend {
        Backend::Memory => std::sync::Arc::new(weir_memory::MemoryStorage::new()),
        Backend::Segment => {
            std::sync::Arc::new(weir_segment::SegmentStorage::open(&cfg.data_dir).await?)
        }
        Backend::Sled => {
            let path = cfg.data_dir.join("sled");
            let storage = tokio::task::spawn_blocking(move || weir_sled::SledStorage::open(path))
                .await
                .map_err(|e| StorageError::Backend(format!("opening sled: {e}")))??;
            std::sync::Arc::new(storage)
        }
    })
}
