//! Configuration: `weir.toml`, then `WEIR_*` environment variables, then flags.
//!
//! Every key is documented in `weir.example.toml`. Unknown keys are errors (a typo must not be
//! silently ignored), and [`Config::validate`] checks ranges and combinations with messages that
//! name the key. With no configuration at all, Weir runs on segment storage under
//! `./weir-data` with listeners on 127.0.0.1.
//!
//! Environment variables name a key by its path, upper-cased, with `_` between the parts:
//! `WEIR_DATA_DIR`, `WEIR_STORAGE_BACKEND`, `WEIR_TOPIC_DEFAULTS_PARTITIONS`,
//! `WEIR_GROUPS_SESSION_TIMEOUT_MS`. A value is read as a TOML value when it parses as one
//! (`3`, `true`) and as a string otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_storage::{CompactionPolicy, Durability, LogConfig, Retention};

use crate::Backend;

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or names an unknown key, or a value of the wrong type.
    #[error("invalid configuration{}: {message}", .origin.as_deref().map(|o| format!(" in {o}")).unwrap_or_default())]
    Parse {
        /// The file or variable the problem came from.
        origin: Option<String>,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A value outside its allowed range, or values that contradict each other.
    #[error("invalid value for {key}: {message}")]
    Invalid {
        /// The key, as written in `weir.toml`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of a broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where durable backends keep their files.
    pub data_dir: PathBuf,
    /// The storage backend.
    pub storage: StorageSection,
    /// Network listeners.
    pub listeners: Listeners,
    /// Connection handling of the listeners.
    pub server: ServerSection,
    /// The actor system and its limits.
    pub broker: BrokerSection,
    /// Defaults for topics created without explicit settings.
    pub topic_defaults: TopicConfig,
    /// Consumer-group timing.
    pub groups: GroupsSection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            storage: StorageSection::default(),
            listeners: Listeners::default(),
            server: ServerSection::default(),
            broker: BrokerSection::default(),
            topic_defaults: TopicConfig::default(),
            groups: GroupsSection::default(),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `memory`, `segment` (default) or `sled`.
    pub backend: Backend,
}

/// `[listeners]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// Weir's native protocol.
    pub native: Option<SocketAddr>,
    /// The Kafka wire protocol.
    pub kafka: Option<SocketAddr>,
    /// `host:port` Kafka clients are told to connect to (Kafka's `advertised.listeners`);
    /// unset: the address each client connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka_advertised: Option<String>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            native: Some(SocketAddr::from(([127, 0, 0, 1], 9292))),
            kafka: Some(SocketAddr::from(([127, 0, 0, 1], 9092))),
            kafka_advertised: None,
        }
    }
}

impl Listeners {
    /// `kafka_advertised` split into host and port.
    ///
    /// # Errors
    /// A value that is not `host:port` with a port number.
    pub fn kafka_advertised(&self) -> Result<Option<(String, u16)>, ConfigError> {
        let Some(v) = &self.kafka_advertised else {
            return Ok(None);
        };
        let bad = || ConfigError::Invalid {
            key: "listeners.kafka_advertised",
            message: format!("{v:?} is not host:port"),
        };
        let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Some((host.trim_matches(['[', ']']).to_string(), port)))
    }
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Largest request frame accepted (bytes); larger ones get an error and the connection closes.
    pub max_frame_bytes: usize,
    /// Most simultaneous client connections.
    pub max_connections: usize,
    /// Close a connection idle this long (ms).
    pub idle_timeout_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            max_frame_bytes: 64 * 1024 * 1024,
            max_connections: 10_000,
            idle_timeout_ms: 600_000,
        }
    }
}

/// `[broker]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// Arbiter threads the partition actors are spread over; 0 means one per core.
    pub arbiters: usize,
    /// Bytes of publishes a partition queues while its log is busy before answering `Busy`.
    pub partition_queue_bytes: usize,
    /// Most bytes one append (one group commit) writes.
    pub append_batch_bytes: usize,
    /// How often retention runs on each partition.
    pub retention_check_interval_ms: u64,
    /// Longest long-poll a fetch may ask for.
    pub max_fetch_wait_ms: u64,
    /// Most record bytes one fetch reads and returns, over all its partitions (Kafka's
    /// `fetch.max.bytes`): a client's own limits are capped here. The first batch a fetch
    /// returns may exceed it (a whole batch always goes out).
    pub fetch_max_bytes: usize,
    /// Let a produce or metadata request for an unknown topic create it with the defaults.
    pub auto_create_topics: bool,
    /// A partition forgets an idempotent producer that wrote nothing to it for this long
    /// (Kafka's `producer.id.expiration.ms`); checked with retention.
    pub producer_id_expiration_ms: u64,
    /// The most distinct keys one compaction pass maps (about 40 bytes each); a pass over more
    /// compacts what fits and leaves the rest to the next one. One pass runs at a time.
    pub compaction_max_keys: usize,
    /// The longest `transaction.timeout.ms` a transactional producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`).
    pub transaction_max_timeout_ms: u64,
    /// How often the coordinator aborts transactions open past their timeout (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`).
    pub transaction_abort_check_interval_ms: u64,
    /// A transactional id idle this long (no transaction open) is forgotten (Kafka's
    /// `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            arbiters: 0,
            partition_queue_bytes: 64 * 1024 * 1024,
            append_batch_bytes: 8 * 1024 * 1024,
            retention_check_interval_ms: 60_000,
            max_fetch_wait_ms: 30_000,
            fetch_max_bytes: 57_671_680,
            auto_create_topics: true,
            producer_id_expiration_ms: 86_400_000,
            compaction_max_keys: 1 << 20,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_check_interval_ms: 10_000,
            transactional_id_expiration_ms: 604_800_000,
        }
    }
}

/// Which time a topic's records carry (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TimestampMode {
    /// The producer's timestamps, as sent.
    #[default]
    CreateTime,
    /// The broker's clock when it appends the batch.
    LogAppendTime,
}

/// How fsync follows appends, as written in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Page cache only.
    None,
    /// fsync at most every `flush_interval_ms`.
    Interval,
    /// fsync before every acknowledgement (group commit).
    #[default]
    Always,
}

/// What happens to a topic's old records (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CleanupPolicy {
    /// Retention deletes whole segments by age and size.
    #[default]
    #[serde(rename = "delete")]
    Delete,
    /// Compaction keeps each key's latest record; nothing is deleted by age or size.
    #[serde(rename = "compact")]
    Compact,
    /// Both: compaction, and retention by age and size.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's list form: `delete`, `compact`, or both in either order.
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let (mut compact, mut delete) = (false, false);
        for part in value.split(',') {
            match part.trim() {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }

    /// Kafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Whether retention by age and size applies.
    pub fn deletes(self) -> bool {
        self != CleanupPolicy::Compact
    }

    /// Whether the topic is compacted.
    pub fn compacts(self) -> bool {
        self != CleanupPolicy::Delete
    }
}

/// The codec a topic stores batches in (Kafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    /// As each producer sent it.
    #[default]
    Producer,
    /// Stored uncompressed.
    Uncompressed,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

impl CompressionType {
    /// Parses Kafka's names.
    pub fn parse(value: &str) -> Option<CompressionType> {
        Some(match value {
            "producer" => CompressionType::Producer,
            "uncompressed" => CompressionType::Uncompressed,
            "gzip" => CompressionType::Gzip,
            "snappy" => CompressionType::Snappy,
            "lz4" => CompressionType::Lz4,
            "zstd" => CompressionType::Zstd,
            _ => return None,
        })
    }

    /// Kafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionType::Producer => "producer",
            CompressionType::Uncompressed => "uncompressed",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        }
    }

    /// The codec batches are stored in, `None` for whatever the producer used.
    pub fn codec(self) -> Option<weir_storage::Compression> {
        use weir_storage::Compression as C;
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(C::None),
            CompressionType::Gzip => Some(C::Gzip),
            CompressionType::Snappy => Some(C::Snappy),
            CompressionType::Lz4 => Some(C::Lz4),
            CompressionType::Zstd => Some(C::Zstd),
        }
    }
}

/// A share between 0 and 1 (`min.cleanable.dirty.ratio`); never NaN, hence `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Ratio(f64);

impl Eq for Ratio {}

impl Ratio {
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Ratio {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Ratio(v))
        } else {
            Err(format!("{v} is not between 0 and 1"))
        }
    }
}

impl From<Ratio> for f64 {
    fn from(r: Ratio) -> f64 {
        r.0
    }
}

/// A topic's settings (and, in `[topic_defaults]`, the defaults of new topics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicConfig {
    /// Partitions of a new topic.
    pub partitions: u32,
    /// Delete data older than this; -1 keeps it forever.
    pub retention_ms: i64,
    /// Delete the oldest data while a partition is larger than this; -1 for no limit.
    pub retention_bytes: i64,
    /// Roll to a new segment file after this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment file after this long.
    pub segment_ms: u64,
    /// `none`, `interval` or `always`.
    pub durability: DurabilityMode,
    /// The fsync interval of `interval` durability.
    pub flush_interval_ms: u64,
    /// Largest batch a producer may send (bytes, as Kafka's `max.message.bytes`).
    pub max_message_bytes: u32,
    /// `CreateTime` or `LogAppendTime` (Kafka's `message.timestamp.type`).
    pub message_timestamp_type: TimestampMode,
    /// `delete`, `compact` or `compact,delete` (Kafka's `cleanup.policy`).
    pub cleanup_policy: CleanupPolicy,
    /// Compaction leaves records younger than this alone (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// A compacted key's delete marker (null value) stays this long (`delete.retention.ms`).
    pub delete_retention_ms: i64,
    /// Compaction runs once this share of the compactable log is new
    /// (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: Ratio,
    /// `producer` (keep each batch as sent) or the codec batches are stored in, recompressing
    /// those that differ (Kafka's `compression.type`).
    pub compression_type: CompressionType,
    /// A record is compacted at the latest this long after it was written, however little of
    /// the log is dirty; the active segment also rolls after this long
    /// (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: i64,
    /// Bytes between two entries of a segment's offset and time index
    /// (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Replicas that must have a write before acks=all answers (`min.insync.replicas`). Weir
    /// is one broker: above 1, acks=all produces fail with `NotEnoughReplicas`, as on a Kafka
    /// cluster with one live replica.
    pub min_insync_replicas: u32,
    /// Kafka's `unclean.leader.election.enable`: with a single broker there is never another
    /// replica to elect, so it changes nothing; kept and reported for tools that set it.
    pub unclean_leader_election_enable: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            segment_bytes: 256 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            durability: DurabilityMode::Always,
            flush_interval_ms: 1000,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampMode::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            min_compaction_lag_ms: 0,
            delete_retention_ms: 86_400_000,
            min_cleanable_dirty_ratio: Ratio(0.5),
            compression_type: CompressionType::Producer,
            max_compaction_lag_ms: i64::MAX,
            index_interval_bytes: 4096,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
        }
    }
}

impl TopicConfig {
    /// The storage-level durability this config asks for.
    pub fn durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::None => Durability::None,
            DurabilityMode::Interval => Durability::Interval {
                interval_ms: self.flush_interval_ms,
            },
            DurabilityMode::Always => Durability::Always,
        }
    }

    /// The log settings of one of this topic's partitions. A compacted topic's active segment
    /// rolls after `max_compaction_lag_ms` at the latest, so that its records become
    /// compactable in time.
    pub fn log_config(&self) -> LogConfig {
        let segment_ms = if self.cleanup_policy.compacts() {
            let lag = u64::try_from(self.max_compaction_lag_ms).unwrap_or(u64::MAX);
            self.segment_ms.min(lag.max(1))
        } else {
            self.segment_ms
        };
        LogConfig {
            durability: self.durability(),
            segment_bytes: self.segment_bytes,
            segment_ms,
            index_interval_bytes: self.index_interval_bytes,
        }
    }

    /// The retention policy (none when the topic is only compacted).
    pub fn retention(&self) -> Retention {
        if !self.cleanup_policy.deletes() {
            return Retention::default();
        }
        Retention {
            ms: (self.retention_ms >= 0).then_some(self.retention_ms),
            bytes: u64::try_from(self.retention_bytes).ok(),
        }
    }

    /// The compaction policy, for a compacted topic; a pass maps at most `max_keys` keys.
    pub fn compaction(&self, max_keys: usize) -> Option<CompactionPolicy> {
        self.cleanup_policy.compacts().then_some(CompactionPolicy {
            min_cleanable_dirty_ratio: self.min_cleanable_dirty_ratio.get(),
            min_lag_ms: self.min_compaction_lag_ms,
            max_lag_ms: self.max_compaction_lag_ms,
            delete_retention_ms: self.delete_retention_ms,
            max_keys,
            // The partition sets it from its last durable snapshot.
            markers_below: 0,
        })
    }

    /// Applies one `key=value` override in Kafka's dotted names (`retention.ms`) or Weir's
    /// (`retention_ms`).
    ///
    /// # Errors
    /// An unknown key or a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        fn num<T: std::str::FromStr>(key: &'static str, v: &str) -> Result<T, ConfigError> {
            v.parse().map_err(|_| ConfigError::Invalid {
                key,
                message: format!("{v:?} is not a number"),
            })
        }
        match TopicConfig::key(key).as_str() {
            "partitions" => self.partitions = num("partitions", value)?,
            "retention_ms" => self.retention_ms = num("retention.ms", value)?,
            "retention_bytes" => self.retention_bytes = num("retention.bytes", value)?,
            "segment_bytes" => self.segment_bytes = num("segment.bytes", value)?,
            "segment_ms" => self.segment_ms = num("segment.ms", value)?,
            "flush_interval_ms" => {
                self.flush_interval_ms = num("flush.interval.ms", value)?;
            }
            "max_message_bytes" => self.max_message_bytes = num("max.message.bytes", value)?,
            "message_timestamp_type" => {
                self.message_timestamp_type = match value {
                    "CreateTime" => TimestampMode::CreateTime,
                    "LogAppendTime" => TimestampMode::LogAppendTime,
                    other => {
                        return Err(ConfigError::Invalid {
                            key: "message.timestamp.type",
                            message: format!("{other:?}: expected CreateTime or LogAppendTime"),
                        })
                    }
                }
            }
            "cleanup_policy" => {
                self.cleanup_policy =
                    CleanupPolicy::parse(value).ok_or_else(|| ConfigError::Invalid {
                        key: "cleanup.policy",
                        message: format!("{value:?}: expected delete, compact or compact,delete"),
                    })?;
            }
            "min_compaction_lag_ms" => {
                self.min_compaction_lag_ms = num("min.compaction.lag.ms", value)?;
            }
            "delete_retention_ms" => {
                self.delete_retention_ms = num("delete.retention.ms", value)?;
            }
            "max_compaction_lag_ms" => {
                self.max_compaction_lag_ms = num("max.compaction.lag.ms", value)?;
            }
            "index_interval_bytes" => {
                self.index_interval_bytes = num("index.interval.bytes", value)?;
            }
            "min_insync_replicas" => {
                self.min_insync_replicas = num("min.insync.replicas", value)?;
            }
            "unclean_leader_election_enable" => {
                self.unclean_leader_election_enable = match value {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ConfigError::Invalid {
                            key: "unclean.leader.election.enable",
                            message: format!("{other:?}: expected true or false"),
                        })
                    }
                };
            }
            "compression_type" => {
                self.compression_type =
                    CompressionType::parse(value).ok_or_else(|| ConfigError::Invalid {
                        key: "compression.type",
                        message: format!(
                            "{value:?}: expected producer, uncompressed, gzip, snappy, lz4 or zstd"
                        ),
                    })?;
            }
            "min_cleanable_dirty_ratio" => {
                let v: f64 = num("min.cleanable.dirty.ratio", value)?;
                self.min_cleanable_dirty_ratio =
                    Ratio::try_from(v).map_err(|message| ConfigError::Invalid {
                        key: "min.cleanable.dirty.ratio",
                        message,
                    })?;
            }
            "durability" => {
                self.durability = match value {
                    "none" => DurabilityMode::None,
                    "interval" => DurabilityMode::Interval,
                    "always" => DurabilityMode::Always,
                    other => {
                        return Err(ConfigError::Invalid {
                            key: "durability",
                            message: format!("{other:?}: expected none, interval or always"),
                        })
                    }
                }
            }
            _ => {
                return Err(ConfigError::Parse {
                    origin: None,
                    message: format!("unknown topic config {key:?}"),
                })
            }
        }
        Ok(())
    }

    /// The one spelling of a setting's name the broker compares: Kafka's dotted names and the
    /// TOML ones are the same key (`retention.ms` = `retention_ms`), and `flush_ms` is
    /// `flush_interval_ms`.
    pub fn key(name: &str) -> String {
        match name.replace('.', "_").as_str() {
            "flush_ms" => "flush_interval_ms".to_string(),
            other => other.to_string(),
        }
    }

    /// Sets `key` back to its value in `defaults` (Kafka's DELETE of a topic config override).
    ///
    /// # Errors
    /// An unknown key, or one that cannot be reset (`partitions`).
    pub fn reset(&mut self, key: &str, defaults: &TopicConfig) -> Result<(), ConfigError> {
        let key = TopicConfig::key(key);
        match defaults
            .entries()
            .into_iter()
            .find(|(k, _)| TopicConfig::key(k) == key)
        {
            Some((k, v)) => self.set(k, &v),
            None => Err(ConfigError::Parse {
                origin: None,
                message: format!("unknown topic config {key:?}"),
            }),
        }
    }

    /// Every setting as `(kafka.name, value)` pairs, for describe-config answers.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            (
                "durability",
                format!("{:?}", self.durability).to_lowercase(),
            ),
            ("flush.interval.ms", self.flush_interval_ms.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                format!("{:?}", self.message_timestamp_type),
            ),
            ("cleanup.policy", self.cleanup_policy.as_str().to_string()),
            (
                "min.compaction.lag.ms",
                self.min_compaction_lag_ms.to_string(),
            ),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.get().to_string(),
            ),
            (
                "compression.type",
                self.compression_type.as_str().to_string(),
            ),
        ]
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.partitions == 0 || self.partitions > 100_000 {
            return bad(
                "partitions",
                format!("{} is not in 1..=100000", self.partitions),
            );
        }
        if self.retention_ms < -1 {
            return bad("retention_ms", "use -1 for no time limit".into());
        }
        if self.retention_bytes < -1 {
            return bad("retention_bytes", "use -1 for no size limit".into());
        }
        if self.segment_bytes < 1024 {
            return bad(
                "segment_bytes",
                format!("{} is below 1024", self.segment_bytes),
            );
        }
        if self.segment_ms == 0 {
            return bad("segment_ms", "must be positive".into());
        }
        if self.durability == DurabilityMode::Interval && self.flush_interval_ms == 0 {
            return bad(
                "flush_interval_ms",
                "must be positive with interval durability".into(),
            );
        }
        if self.min_compaction_lag_ms < 0 {
            return bad("min_compaction_lag_ms", "must not be negative".into());
        }
        if self.delete_retention_ms < 0 {
            return bad("delete_retention_ms", "must not be negative".into());
        }
        if self.max_compaction_lag_ms < 1 {
            return bad("max_compaction_lag_ms", "must be positive".into());
        }
        if self.min_insync_replicas < 1 {
            return bad("min_insync_replicas", "must be at least 1".into());
        }
        if self.max_message_bytes < 128 {
            return bad(
                "max_message_bytes",
                format!("{} is below 128", self.max_message_bytes),
            );
        }
        Ok(())
    }
}

/// `[groups]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsSection {
    /// Smallest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`).
    pub min_session_timeout_ms: u64,
    /// Largest session timeout a member may ask for.
    pub max_session_timeout_ms: u64,
    /// How long a new group waits for more members before its first rebalance completes.
    pub initial_rebalance_delay_ms: u64,
    /// How long a group without members stays in memory; then it unloads (its committed
    /// offsets and generation stay in storage; a group without offsets is forgotten) and the
    /// next request naming it loads it again.
    pub empty_group_unload_ms: u64,
    /// How long committed offsets are kept (Kafka's `offsets.retention.minutes`, in ms): those
    /// of a group that had members expire this long after it became Empty, those committed
    /// without group membership this long after each commit; a group left without offsets is
    /// forgotten. -1 keeps them forever.
    pub offsets_retention_ms: i64,
    /// How often expired offsets are looked for (Kafka's `offsets.retention.check.interval.ms`).
    pub offsets_retention_check_interval_ms: u64,
    /// Most members a group may have (Kafka's `group.max.size`): a join past it gets
    /// GROUP_MAX_SIZE_REACHED.
    pub max_size: u32,
    /// The session timeout of members of Kafka's consumer protocol (KIP-848; Kafka's
    /// `group.consumer.session.timeout.ms`): one not heard from for this long is removed.
    pub consumer_session_timeout_ms: u64,
    /// How often those members are told to send heartbeats (Kafka's
    /// `group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval_ms: u64,
    /// Whether a group changes protocol while it has members (Kafka's
    /// `group.consumer.migration.policy`): a consumer-protocol member joining a classic group
    /// of Kafka consumers turns it into a consumer-protocol group (upgrade), and the last
    /// consumer-protocol member leaving one whose other members use the classic protocol
    /// turns it back (downgrade).
    pub migration_policy: MigrationPolicy,
}

/// `[groups] migration_policy`: which online changes of a group's protocol are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationPolicy {
    /// Both ways (Kafka 4's default).
    #[default]
    Bidirectional,
    /// Classic to consumer protocol only.
    Upgrade,
    /// Consumer to classic protocol only.
    Downgrade,
    /// Neither: a group keeps its protocol while it has members.
    Disabled,
}

impl MigrationPolicy {
    /// Whether a classic group may become a consumer-protocol group.
    pub fn upgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade
        )
    }

    /// Whether a consumer-protocol group may become a classic group.
    pub fn downgrades(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade
        )
    }
}

impl Default for GroupsSection {
    fn default() -> Self {
        GroupsSection {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            empty_group_unload_ms: 60_000,
            offsets_retention_ms: 604_800_000,
            offsets_retention_check_interval_ms: 600_000,
            max_size: i32::MAX as u32,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            migration_policy: MigrationPolicy::Bidirectional,
        }
    }
}

impl Config {
    /// Parses a `weir.toml` text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML, unknown keys and wrong types.
    pub fn from_toml(text: &str, origin: Option<&str>) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.map(str::to_string),
            message: e.message().to_string(),
        })
    }

    /// Reads a `weir.toml` file.
    ///
    /// # Errors
    /// As [`Config::from_toml`], or the file cannot be read.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, Some(&path.display().to_string()))
    }

    /// The configuration a broker runs with: `path` (or the defaults when `None`), then the
    /// process's `WEIR_*` environment variables, validated.
    ///
    /// # Errors
    /// An unreadable or invalid file, an unknown variable, a value out of range.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let base = match path {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        let config = base.apply_env(std::env::vars())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `WEIR_*` variables from `vars` (pass `std::env::vars()`), key by key.
    ///
    /// # Errors
    /// A variable that names no key, or a value of the wrong type.
    pub fn apply_env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree = toml::Value::try_from(&self).map_err(|e| ConfigError::Parse {
            origin: None,
            message: e.to_string(),
        })?;
        let mut changed = false;
        for (name, raw) in vars {
            let Some(path) = name.strip_prefix("WEIR_") else {
                continue;
            };
            // Variables the tests and tools read themselves, not configuration.
            if ["SEED", "KILL9_ITERATIONS", "BENCH_DIR", "LOG"]
                .iter()
                .any(|p| path.starts_with(p))
            {
                continue;
            }
            let path = path.to_ascii_lowercase();
            // A TOML value when it parses as one (`3`, `true`, `"x"`), a plain string otherwise.
            let value = format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_table())
                .unwrap_or_else(|| toml::Value::String(raw.clone()));
            set_path(&mut tree, &path, value).map_err(|message| ConfigError::Parse {
                origin: Some(name.clone()),
                message,
            })?;
            changed = true;
        }
        if !changed {
            return Ok(self);
        }
        tree.try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: Some("WEIR_* environment".into()),
                message: e.message().to_string(),
            })
    }

    /// The storage selection this config describes.
    pub fn storage_config(&self) -> crate::StorageConfig {
        crate::StorageConfig {
            backend: self.storage.backend,
            data_dir: self.data_dir.clone(),
        }
    }

    /// Checks every section.
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.topic_defaults.validate()?;
        self.listeners.kafka_advertised()?;
        let b = &self.broker;
        if b.partition_queue_bytes < 1024 * 1024 {
            return Err(ConfigError::Invalid {
                key: "broker.partition_queue_bytes",
                message: "must be at least 1 MiB".into(),
            });
        }
        if b.fetch_max_bytes < 1024 || b.fetch_max_bytes > i32::MAX as usize {
            return Err(ConfigError::Invalid {
                key: "broker.fetch_max_bytes",
                message: format!("{} is not in 1024..=2147483647", b.fetch_max_bytes),
            });
        }
        if b.append_batch_bytes == 0 || b.append_batch_bytes > b.partition_queue_bytes {
            return Err(ConfigError::Invalid {
                key: "broker.append_batch_bytes",
                message: "must be positive and at most broker.partition_queue_bytes".into(),
            });
        }
        if (self.topic_defaults.max_message_bytes as usize) > b.partition_queue_bytes {
            return Err(ConfigError::Invalid {
                key: "topic_defaults.max_message_bytes",
                message: "must not exceed broker.partition_queue_bytes".into(),
            });
        }
        if b.retention_check_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "broker.retention_check_interval_ms",
                message: "must be positive".into(),
            });
        }
        // An int in Kafka (`producer.id.expiration.ms`), and shown as one in DescribeConfigs.
        if !(1..=i32::MAX as u64).contains(&b.producer_id_expiration_ms) {
            return Err(ConfigError::Invalid {
                key: "broker.producer_id_expiration_ms",
                message: "must be between 1 and 2147483647".into(),
            });
        }
        // Ints in Kafka (transaction timeouts are i32 on the wire).
        for (key, value) in [
            (
                "broker.transaction_max_timeout_ms",
                b.transaction_max_timeout_ms,
            ),
            (
                "broker.transaction_abort_check_interval_ms",
                b.transaction_abort_check_interval_ms,
            ),
            (
                "broker.transactional_id_expiration_ms",
                b.transactional_id_expiration_ms,
            ),
        ] {
            if !(1..=i32::MAX as u64).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be between 1 and 2147483647".into(),
                });
            }
        }
        if self.server.max_frame_bytes < 1024 || self.server.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_frame_bytes",
                message: "max_frame_bytes must be at least 1024 and max_connections positive"
                    .into(),
            });
        }
        let g = &self.groups;
        if g.min_session_timeout_ms == 0 || g.min_session_timeout_ms > g.max_session_timeout_ms {
            return Err(ConfigError::Invalid {
                key: "groups.min_session_timeout_ms",
                message: "must be positive and at most groups.max_session_timeout_ms".into(),
            });
        }
        if g.empty_group_unload_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "groups.empty_group_unload_ms",
                message: "must be positive".into(),
            });
        }
        if g.offsets_retention_ms == 0 || g.offsets_retention_ms < -1 {
            return Err(ConfigError::Invalid {
                key: "groups.offsets_retention_ms",
                message: "must be positive, or -1 to keep offsets forever".into(),
            });
        }
        if g.max_size == 0 {
            return Err(ConfigError::Invalid {
                key: "groups.max_size",
                message: "must be positive".into(),
            });
        }
        if g.consumer_heartbeat_interval_ms == 0
            || g.consumer_heartbeat_interval_ms >= g.consumer_session_timeout_ms
            || g.consumer_session_timeout_ms > i32::MAX as u64
        {
            return Err(ConfigError::Invalid {
                key: "groups.consumer_heartbeat_interval_ms",
                message: "must be positive and below groups.consumer_session_timeout_ms".into(),
            });
        }
        if g.offsets_retention_check_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "groups.offsets_retention_check_interval_ms",
                message: "must be positive".into(),
            });
        }
        if self.storage.backend != Backend::Memory && self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: "durable backends need a data directory".into(),
            });
        }
        Ok(())
    }
}

/// Sets `value` at the key named by `path` (`topic_defaults_retention_ms`), matching section
/// names first, since keys contain underscores too.
fn set_path(tree: &mut toml::Value, path: &str, value: toml::Value) -> Result<(), String> {
    let table = tree
        .as_table_mut()
        .ok_or_else(|| "configuration is not a table".to_string())?;
    if table.contains_key(path) && !table.get(path).is_some_and(toml::Value::is_table) {
        table.insert(path.to_string(), value);
        return Ok(());
    }
    let section = table
        .iter()
        .filter(|(k, v)| v.is_table() && path.starts_with(&format!("{k}_")))
        .map(|(k, _)| k.clone())
        .max_by_key(String::len);
    match section {
        Some(section) => {
            let rest = path[section.len() + 1..].to_string();
            let sub = table
                .get_mut(&section)
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(|| format!("{section} is not a section"))?;
            if !sub.contains_key(&rest) && !matches!(rest.as_str(), "native" | "kafka") {
                return Err(format!("unknown key {section}.{rest}"));
            }
            sub.insert(rest, value);
            Ok(())
        }
        None => Err(format!("names no configuration key ({path})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = Config::from_toml("", None).expect("parse");
        assert_eq!(c, Config::default());
        assert_eq!(c.storage.backend, Backend::Segment);
        assert_eq!(c.data_dir, PathBuf::from("./weir-data"));
        c.validate().expect("valid");
    }

    #[test]
    fn the_documented_contract_parses() {
        let c = Config::from_toml(
            r#"
            data_dir = "/var/lib/weir"
            [storage]
            backend = "sled"
            [listeners]
            native = "127.0.0.1:9292"
            kafka  = "0.0.0.0:9093"
            "#,
            None,
        )
        .expect("parse");
        assert_eq!(c.storage.backend, Backend::Sled);
        assert_eq!(
            c.listeners.kafka,
            Some("0.0.0.0:9093".parse().expect("addr"))
        );
    }

    #[test]
    fn the_example_file_is_the_default_and_complete() {
        let text = include_str!("../weir.example.toml");
        let c = Config::from_toml(text, Some("weir.example.toml")).expect("parse example");
        assert_eq!(c, Config::default(), "the example documents the defaults");
        // Every key of the defaults appears in the example.
        let tree = toml::Value::try_from(Config::default()).expect("tree");
        for (section, v) in tree.as_table().expect("table") {
            match v.as_table() {
                Some(t) => {
                    for key in t.keys() {
                        assert!(
                            text.contains(&format!("\n{key} ")),
                            "example lacks {section}.{key}"
                        );
                    }
                }
                None => assert!(
                    text.contains(&format!("\n{section} ")),
                    "example lacks {section}"
                ),
            }
        }
    }

    #[test]
    fn kafka_advertised_is_host_and_port() {
        let c = Config::from_toml(
            "[listeners]\nkafka_advertised = \"broker.example.com:19092\"",
            None,
        )
        .expect("parse");
        assert_eq!(
            c.listeners.kafka_advertised().expect("valid"),
            Some(("broker.example.com".to_string(), 19092))
        );
        for bad in ["broker.example.com", ":9092", "host:port", "host:0"] {
            let c = Config::from_toml(&format!("[listeners]\nkafka_advertised = {bad:?}"), None)
                .expect("parse");
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Config::from_toml("[storage]\nbackend = \"postgres\"", Some("x.toml"))
            .expect_err("bad");
        assert!(e.to_string().contains("x.toml"), "{e}");
        let e = Config::from_toml("data_dri = \"x\"", None).expect_err("typo");
        assert!(e.to_string().contains("data_dri"), "{e}");
        let e = Config::from_toml("[topic_defaults]\nretention_mss = 1", None).expect_err("typo");
        assert!(e.to_string().contains("retention_mss"), "{e}");
        let mut c = Config::default();
        c.topic_defaults.partitions = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "partitions",
                ..
            })
        ));
        let mut c = Config::default();
        c.groups.min_session_timeout_ms = c.groups.max_session_timeout_ms + 1;
        assert!(c.validate().is_err());
        for bad in [0, 1 << 31] {
            let mut c = Config::default();
            c.broker.producer_id_expiration_ms = bad;
            assert!(matches!(
                c.validate(),
                Err(ConfigError::Invalid {
                    key: "broker.producer_id_expiration_ms",
                    ..
                })
            ));
        }
    }

    #[test]
    fn topic_configs_reset_to_the_defaults() {
        let defaults = TopicConfig::default();
        let mut c = TopicConfig::default();
        c.set("retention.ms", "1000").expect("set");
        c.set("flush_ms", "5").expect("set");
        c.set("cleanup.policy", "compact").expect("set");
        c.reset("retention.ms", &defaults).expect("reset");
        c.reset("flush.interval.ms", &defaults).expect("reset");
        c.reset("cleanup.policy", &defaults).expect("reset");
        assert_eq!(c, defaults);
        assert!(c.reset("partitions", &defaults).is_err());
        assert!(c.reset("no.such.key", &defaults).is_err());
    }

    #[test]
    fn cleanup_policies_and_compaction_settings() {
        let mut c = TopicConfig::default();
        assert!(c.retention().ms.is_some() && c.compaction(10).is_none());
        for (v, policy) in [
            ("compact", CleanupPolicy::Compact),
            ("delete, compact", CleanupPolicy::CompactDelete),
            ("compact,delete", CleanupPolicy::CompactDelete),
            ("delete", CleanupPolicy::Delete),
        ] {
            c.set("cleanup.policy", v).expect(v);
            assert_eq!(c.cleanup_policy, policy, "{v}");
        }
        for bad in ["", "archive", "compact,", "compact,archive"] {
            assert!(c.set("cleanup.policy", bad).is_err(), "{bad:?}");
        }
        c.set("cleanup.policy", "compact").expect("set");
        assert_eq!(
            c.retention(),
            Retention::default(),
            "compact alone never deletes by age"
        );
        c.set("min.compaction.lag.ms", "100").expect("set");
        c.set("delete.retention.ms", "5").expect("set");
        c.set("min.cleanable.dirty.ratio", "0.25").expect("set");
        assert!(c.set("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(c.set("min.cleanable.dirty.ratio", "NaN").is_err());
        let p = c.compaction(7).expect("compacted");
        assert_eq!(
            (p.min_lag_ms, p.delete_retention_ms, p.max_keys),
            (100, 5, 7)
        );
        assert!((p.min_cleanable_dirty_ratio - 0.25).abs() < 1e-12);
        c.set("cleanup.policy", "compact,delete").expect("set");
        assert!(c.retention().ms.is_some() && c.compaction(1).is_some());
        assert!(c
            .entries()
            .contains(&("cleanup.policy", "compact,delete".to_string())));
        // A topic record written before these settings existed still loads.
        let old: TopicConfig = toml::from_str("retention_ms = 5").expect("old record");
        assert_eq!(old.cleanup_policy, CleanupPolicy::Delete);
        assert_eq!(old.compression_type, CompressionType::Producer);
        for v in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
            c.set("compression.type", v).expect(v);
            assert_eq!(c.compression_type.as_str(), v);
        }
        assert!(c.set("compression.type", "brotli").is_err());
        // A compacted topic's segments roll after max.compaction.lag.ms at the latest.
        c.set("max.compaction.lag.ms", "5000").expect("set");
        c.set("index.interval.bytes", "128").expect("set");
        let log = c.log_config();
        assert_eq!((log.segment_ms, log.index_interval_bytes), (5000, 128));
        c.set("cleanup.policy", "delete").expect("set");
        assert_eq!(c.log_config().segment_ms, c.segment_ms);
        c.set("min.insync.replicas", "2").expect("set");
        c.set("unclean.leader.election.enable", "true")
            .expect("set");
        assert!(c.set("unclean.leader.election.enable", "yes").is_err());
        assert!(TopicConfig {
            min_insync_replicas: 0,
            ..TopicConfig::default()
        }
        .validate()
        .is_err());
        let bad = TopicConfig {
            delete_retention_ms: -1,
            ..TopicConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn environment_overrides_keys_by_path() {
        let vars = [
            ("WEIR_DATA_DIR", "/tmp/w"),
            ("WEIR_STORAGE_BACKEND", "memory"),
            ("WEIR_TOPIC_DEFAULTS_PARTITIONS", "6"),
            ("WEIR_TOPIC_DEFAULTS_DURABILITY", "interval"),
            ("WEIR_GROUPS_INITIAL_REBALANCE_DELAY_MS", "0"),
            ("WEIR_LISTENERS_KAFKA", "127.0.0.1:19092"),
            ("WEIR_SEED", "123"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let c = Config::default().apply_env(vars).expect("apply");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/w"));
        assert_eq!(c.storage.backend, Backend::Memory);
        assert_eq!(c.topic_defaults.partitions, 6);
        assert_eq!(c.topic_defaults.durability, DurabilityMode::Interval);
        assert_eq!(c.groups.initial_rebalance_delay_ms, 0);
        assert_eq!(
            c.listeners.kafka,
            Some("127.0.0.1:19092".parse().expect("addr"))
        );
        let e = Config::default()
            .apply_env([("WEIR_TOPIC_DEFAULTS_PARTITONS".to_string(), "3".to_string())])
            .expect_err("typo");
        assert!(
            e.to_string().contains("WEIR_TOPIC_DEFAULTS_PARTITONS"),
            "{e}"
        );
        let e = Config::default()
            .apply_env([(
                "WEIR_TOPIC_DEFAULTS_PARTITIONS".to_string(),
                "many".to_string(),
            )])
            .expect_err("type");
        assert!(e.to_string().contains("environment"), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_validates() {
        let dir = std::env::temp_dir().join(format!("weir-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("weir.toml");
        std::fs::write(&path, "[topic_defaults]\npartitions = 3\n").expect("write");
        assert_eq!(
            Config::load(Some(&path))
                .expect("load")
                .topic_defaults
                .partitions,
            3
        );
        std::fs::write(&path, "[topic_defaults]\npartitions = 0\n").expect("write");
        assert!(matches!(
            Config::load(Some(&path)),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Config::load(Some(&dir.join("absent.toml"))),
            Err(ConfigError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn topic_overrides_take_kafka_names() {
        let mut t = TopicConfig::default();
        t.set("retention.ms", "1000").expect("set");
        t.set("durability", "none").expect("set");
        t.set("max_message_bytes", "2048").expect("set");
        assert_eq!(t.retention_ms, 1000);
        assert_eq!(t.durability(), Durability::None);
        assert!(t.set("retention.mss", "1").is_err());
        assert!(t.set("segment.bytes", "x").is_err());
        assert_eq!(
            t.retention(),
            Retention {
                ms: Some(1000),
                bytes: None
            }
        );
    }
}
