//! Admin: CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions, DescribeLogDirs,
//! DescribeConfigs,
//! IncrementalAlterConfigs and AlterConfigs (topic configs; broker configs come from
//! `weir.toml`), and
//! InitProducerId (producer ids for the idempotent producer).

use crate::broker::BrokerError;
use crate::config::TopicConfig;
use crate::protocol::kafka::messages::alter_configs::{
    AlterConfigsRequest, AlterConfigsResourceResponse, AlterConfigsResponse,
};
use crate::protocol::kafka::messages::create_partitions::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use crate::protocol::kafka::messages::create_topics::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsRequest, CreateTopicsResponse,
};
use crate::protocol::kafka::messages::delete_records::{
    DeleteRecordsPartitionResult, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteRecordsTopicResult,
};
use crate::protocol::kafka::messages::delete_topics::{
    DeletableTopicResult, DeleteTopicsRequest, DeleteTopicsResponse,
};
use crate::protocol::kafka::messages::describe_configs::{
    DescribeConfigsRequest, DescribeConfigsResourceResult, DescribeConfigsResponse,
    DescribeConfigsResult,
};
use crate::protocol::kafka::messages::describe_log_dirs::{
    DescribeLogDirsPartition, DescribeLogDirsRequest, DescribeLogDirsResponse,
    DescribeLogDirsResult, DescribeLogDirsTopic,
};
use crate::protocol::kafka::messages::incremental_alter_configs::{
    AlterConfigsResourceResponse as IncrementalAlterResourceResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use crate::protocol::kafka::messages::init_producer_id::{
    InitProducerIdRequest, InitProducerIdResponse,
};

use super::cluster::topic_uuid;
use super::Session;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const INVALID_CONFIG: i16 = 40;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config types.
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;

/// A config as DescribeConfigs reports it: name, value, source, type.
type ConfigEntry = (String, String, i8, i8);

/// A topic's configs as Kafka names them, with Kafka's type of each; values set on the topic
/// (differing from the broker's defaults) are reported as topic configs, the rest as defaults.
fn topic_configs(config: &TopicConfig, defaults: &TopicConfig) -> Vec<ConfigEntry> {
    let default_entries = defaults.entries();
    config
        .entries()
        .into_iter()
        .map(|(k, v)| {
            let source = if default_entries.iter().any(|(dk, dv)| *dk == k && *dv == v) {
                SOURCE_DEFAULT
            } else {
                SOURCE_TOPIC
            };
            let kind = if v == "true" || v == "false" {
                TYPE_BOOLEAN
            } else if v.parse::<i64>().is_ok() {
                TYPE_LONG
            } else if v.parse::<f64>().is_ok() {
                TYPE_DOUBLE
            } else {
                TYPE_STRING
            };
            (k.to_string(), v, source, kind)
        })
        .collect()
}

/// Creates topics (or, with `validate_only`, checks they could be created).
pub(super) async fn create_topics(s: &Session, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let defaults = s.broker.config().topic_defaults.clone();
    // A topic named more than once is not created, each of its entries answered
    // INVALID_REQUEST, as by Kafka.
    let repeated = super::repeated(r.topics.iter().map(|t| t.name.clone()));
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        if repeated.contains(&t.name) {
            topics.push(failed(
                t.name,
                INVALID_REQUEST,
                "the request names this topic more than once",
            ));
            continue;
        }
        let partitions = if !t.assignments.is_empty() {
            Some(t.assignments.len() as u32)
        } else if t.num_partitions > 0 {
            Some(t.num_partitions as u32)
        } else if t.num_partitions == -1 {
            None
        } else {
            topics.push(failed(
                t.name,
                INVALID_PARTITIONS,
                "partitions must be at least 1",
            ));
            continue;
        };
        if t.replication_factor > 1 || t.replication_factor == 0 || t.replication_factor < -1 {
            topics.push(failed(
                t.name,
                INVALID_REPLICATION_FACTOR,
                &format!(
                    "replication factor {} on a single broker (use 1 or -1)",
                    t.replication_factor
                ),
            ));
            continue;
        }
        let configs: Vec<(String, String)> = t
            .configs
            .into_iter()
            .filter_map(|c| c.value.map(|v| (c.name, v)))
            .collect();
        let result = if r.validate_only {
            validate(s, &t.name, partitions, &configs, &defaults)
        } else {
            s.broker
                .create_topic(&t.name, partitions, configs)
                .await
                .map(|_| ())
        };
        topics.push(match result {
            Ok(()) => {
                let described = s.broker.describe_topic(&t.name).await.ok();
                let config = described
                    .as_ref()
                    .map_or(defaults.clone(), |d| d.config.clone());
                CreatableTopicResult {
                    name: t.name,
                    topic_id: described.as_ref().map_or([0; 16], |d| topic_uuid(d.id)),
                    error_code: 0,
                    num_partitions: partitions.unwrap_or(defaults.partitions) as i32,
                    replication_factor: 1,
                    configs: Some(
                        topic_configs(&config, &defaults)
                            .into_iter()
                            .map(|(name, value, source, _)| CreatableTopicConfigs {
                                name,
                                value: Some(value),
                                read_only: false,
                                config_source: source,
                                is_sensitive: false,
                            })
                            .collect(),
                    ),
                    ..CreatableTopicResult::default()
                }
            }
            Err(e) => failed(t.name, e.kafka_code(), &e.to_string()),
        });
    }
    CreateTopicsResponse {
        topics,
        ..CreateTopicsResponse::default()
    }
}

/// The checks of a create without creating.
fn validate(
    s: &Session,
    name: &str,
    partitions: Option<u32>,
    configs: &[(String, String)],
    defaults: &TopicConfig,
) -> Result<(), BrokerError> {
    crate::broker::registry::validate_topic_name(name)?;
    if s.broker.partition_count(name).is_some() {
        return Err(BrokerError::TopicExists(name.to_string()));
    }
    let mut config = defaults.clone();
    if let Some(n) = partitions {
        config.partitions = n;
    }
    for (k, v) in configs {
        config
            .set(k, v)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    }
    config
        .validate()
        .map_err(|e| BrokerError::InvalidConfig(e.to_string()))
}

fn failed(name: String, code: i16, message: &str) -> CreatableTopicResult {
    CreatableTopicResult {
        name,
        error_code: code,
        error_message: Some(message.to_string()),
        ..CreatableTopicResult::default()
    }
}

/// Deletes topics by name (v1–5) or by name or id (v6+).
pub(super) async fn delete_topics(s: &Session, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut wanted: Vec<(Option<String>, [u8; 16])> = r
        .topic_names
        .into_iter()
        .map(|n| (Some(n), [0; 16]))
        .collect();
    wanted.extend(r.topics.into_iter().map(|t| (t.name, t.topic_id)));
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = match name {
            Some(n) => Some(n),
            None => find_by_id(s, id).await,
        };
        let Some(name) = name else {
            responses.push(DeletableTopicResult {
                name: None,
                topic_id: id,
                error_code: UNKNOWN_TOPIC_ID,
                error_message: Some("no topic has this id".into()),
            });
            continue;
        };
        let result = s.broker.delete_topic(&name).await;
        responses.push(DeletableTopicResult {
            name: Some(name),
            topic_id: id,
            error_code: super::code(&result),
            error_message: result.err().map(|e| e.to_string()),
        });
    }
    DeleteTopicsResponse {
        responses,
        ..DeleteTopicsResponse::default()
    }
}

async fn find_by_id(s: &Session, id: [u8; 16]) -> Option<String> {
    for name in s.broker.list_topics() {
        if let Ok(d) = s.broker.describe_topic(&name).await {
            if topic_uuid(d.id) == id {
                return Some(name);
            }
        }
    }
    None
}

/// Grows topics to `count` partitions.
pub(super) async fn create_partitions(
    s: &Session,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let result = if t.count < 1 {
            Err(BrokerError::InvalidPartitions(format!(
                "{} partitions requested",
                t.count
            )))
        } else if r.validate_only {
            match s.broker.partition_count(&t.name) {
                None => Err(BrokerError::UnknownTopic(t.name.clone())),
                Some(n) if n >= t.count as u32 => Err(BrokerError::InvalidPartitions(format!(
                    "the topic has {n} partitions already"
                ))),
                Some(_) => Ok(()),
            }
        } else {
            s.broker.create_partitions(&t.name, t.count as u32).await
        };
        results.push(CreatePartitionsTopicResult {
            name: t.name,
            error_code: super::code(&result),
            error_message: result.err().map(|e| e.to_string()),
        });
    }
    CreatePartitionsResponse {
        results,
        ..CreatePartitionsResponse::default()
    }
}

/// Topic configs (resource type 2) and broker configs (4), optionally only some keys.
pub(super) async fn describe_configs(
    s: &Session,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let defaults = s.broker.config().topic_defaults.clone();
    let mut results = Vec::with_capacity(r.resources.len());
    // Each resource once: a request naming one many times must not multiply the answer.
    let mut seen = std::collections::HashSet::new();
    for res in r.resources {
        if !seen.insert((res.resource_type, res.resource_name.clone())) {
            continue;
        }
        let entries: Result<Vec<ConfigEntry>, (i16, String)> = match res.resource_type {
            RESOURCE_TOPIC => match s.broker.describe_topic(&res.resource_name).await {
                Ok(d) => Ok(topic_configs(&d.config, &defaults)),
                Err(e) => Err((e.kafka_code(), e.to_string())),
            },
            RESOURCE_BROKER => Ok(broker_configs(s, &defaults)),
            t => Err((
                INVALID_REQUEST,
                format!("resource type {t} is not supported"),
            )),
        };
        results.push(match entries {
            Ok(entries) => DescribeConfigsResult {
                error_code: 0,
                error_message: None,
                resource_type: res.resource_type,
                resource_name: res.resource_name,
                configs: entries
                    .into_iter()
                    .filter(|(k, ..)| {
                        res.configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|w| w == k))
                    })
                    .map(
                        |(name, value, source, kind)| DescribeConfigsResourceResult {
                            name,
                            value: Some(value),
                            read_only: res.resource_type == RESOURCE_BROKER,
                            config_source: source,
                            is_sensitive: false,
                            synonyms: Vec::new(),
                            config_type: kind,
                            documentation: None,
                        },
                    )
                    .collect(),
            },
            Err((code, message)) => DescribeConfigsResult {
                error_code: code,
                error_message: Some(message),
                resource_type: res.resource_type,
                resource_name: res.resource_name,
                configs: Vec::new(),
            },
        });
    }
    DescribeConfigsResponse {
        results,
        ..DescribeConfigsResponse::default()
    }
}

/// The broker's configs under Kafka's broker names.
fn broker_configs(s: &Session, defaults: &TopicConfig) -> Vec<ConfigEntry> {
    let c = s.broker.config();
    vec![
        (
            "auto.create.topics.enable".into(),
            c.broker.auto_create_topics.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_BOOLEAN,
        ),
        (
            "num.partitions".into(),
            defaults.partitions.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "log.retention.ms".into(),
            defaults.retention_ms.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_LONG,
        ),
        (
            "log.retention.bytes".into(),
            defaults.retention_bytes.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_LONG,
        ),
        (
            "log.segment.bytes".into(),
            defaults.segment_bytes.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "fetch.max.bytes".into(),
            c.broker.fetch_max_bytes.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "message.max.bytes".into(),
            defaults.max_message_bytes.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "log.message.timestamp.type".into(),
            format!("{:?}", defaults.message_timestamp_type),
            SOURCE_STATIC_BROKER,
            TYPE_STRING,
        ),
        (
            "log.cleanup.policy".into(),
            defaults.cleanup_policy.as_str().into(),
            SOURCE_STATIC_BROKER,
            TYPE_STRING,
        ),
        (
            "log.cleaner.enable".into(),
            "true".into(),
            SOURCE_DEFAULT,
            TYPE_BOOLEAN,
        ),
        (
            "log.cleaner.min.compaction.lag.ms".into(),
            defaults.min_compaction_lag_ms.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_LONG,
        ),
        (
            "log.cleaner.delete.retention.ms".into(),
            defaults.delete_retention_ms.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_LONG,
        ),
        (
            "log.cleaner.min.cleanable.ratio".into(),
            defaults.min_cleanable_dirty_ratio.get().to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_DOUBLE,
        ),
        (
            "broker.id".into(),
            s.node_id.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
        (
            "producer.id.expiration.ms".into(),
            c.broker.producer_id_expiration_ms.to_string(),
            SOURCE_STATIC_BROKER,
            TYPE_INT,
        ),
    ]
}

/// The one log directory (`data_dir`) with the size of each partition asked for (every topic
/// when `topics` is null; unknown topics and partitions are left out, as Kafka does), and the
/// file system's size and free space (v4).
pub(super) async fn describe_log_dirs(
    s: &Session,
    r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let wanted: Vec<(String, Option<Vec<i32>>)> = match r.topics {
        None => s
            .broker
            .list_topics()
            .into_iter()
            .map(|t| (t, None))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic, Some(t.partitions)))
            .collect(),
    };
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, partitions) in wanted {
        let Ok(d) = s.broker.describe_topic(&name).await else {
            continue;
        };
        let sizes = d
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| partitions.as_ref().is_none_or(|p| p.contains(&(*i as i32))))
            .map(|(i, o)| DescribeLogDirsPartition {
                partition_index: i as i32,
                partition_size: i64::try_from(o.size_bytes).unwrap_or(i64::MAX),
                offset_lag: 0,
                is_future_key: false,
            })
            .collect();
        topics.push(DescribeLogDirsTopic {
            name,
            partitions: sizes,
        });
    }
    let data_dir = s.broker.config().data_dir.clone();
    let (total_bytes, usable_bytes) = match rustix::fs::statvfs(&data_dir) {
        Ok(v) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(v.f_frsize)).unwrap_or(i64::MAX);
            (bytes(v.f_blocks), bytes(v.f_bavail))
        }
        Err(_) => (-1, -1),
    };
    let log_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
    DescribeLogDirsResponse {
        results: vec![DescribeLogDirsResult {
            error_code: 0,
            log_dir: log_dir.display().to_string(),
            topics,
            total_bytes,
            usable_bytes,
        }],
        ..DescribeLogDirsResponse::default()
    }
}

/// Moves partitions' log start offsets forward: the records below `offset` (-1: the high
/// watermark) become unreadable and their space is reclaimed; the answer is the new start (the
/// low watermark). An offset above the high watermark is OFFSET_OUT_OF_RANGE, as in Kafka.
pub(super) async fn delete_records(s: &Session, r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let outcome = match s.broker.offsets(&t.name, p.partition_index).await {
                Err(e) => Err(e.kafka_code()),
                Ok(o) if p.offset == -1 || (0..=o.end).contains(&p.offset) => {
                    let before = if p.offset == -1 { o.end } else { p.offset };
                    s.broker
                        .delete_records(&t.name, p.partition_index, before)
                        .await
                        .map_err(|e| e.kafka_code())
                }
                Ok(_) => Err(OFFSET_OUT_OF_RANGE),
            };
            let (low_watermark, error_code) = match outcome {
                Ok(start) => (start, 0),
                Err(code) => (-1, code),
            };
            partitions.push(DeleteRecordsPartitionResult {
                partition_index: p.partition_index,
                low_watermark,
                error_code,
            });
        }
        topics.push(DeleteRecordsTopicResult {
            name: t.name,
            partitions,
        });
    }
    DeleteRecordsResponse {
        topics,
        ..DeleteRecordsResponse::default()
    }
}

/// Changes topic configs key by key: SET a value, DELETE an override (back to the broker's
/// topic default), all of one resource or none of it. APPEND and SUBTRACT apply to list configs,
/// which Weir's topics do not have. Broker configs are read-only (they come from `weir.toml`).
pub(super) async fn incremental_alter_configs(
    s: &Session,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let mut change = ConfigChange::default();
        for c in res.configs {
            let op = match (c.config_operation, c.value) {
                (OP_SET, Some(v)) => Ok(Some(v)),
                (OP_SET, None) => Err((INVALID_REQUEST, format!("SET {} without a value", c.name))),
                (OP_DELETE, _) => Ok(None),
                (OP_APPEND | OP_SUBTRACT, _) => Err((
                    INVALID_CONFIG,
                    format!(
                        "{} is not a list config: APPEND and SUBTRACT do not apply",
                        c.name
                    ),
                )),
                (op, _) => Err((INVALID_REQUEST, format!("unknown config operation {op}"))),
            };
            change.add(c.name, op);
        }
        let outcome = alter_resource(
            s,
            res.resource_type,
            &res.resource_name,
            change,
            r.validate_only,
        )
        .await;
        responses.push(resource_response(
            outcome,
            res.resource_type,
            res.resource_name,
        ));
    }
    IncrementalAlterConfigsResponse {
        responses,
        ..IncrementalAlterConfigsResponse::default()
    }
}

/// Replaces a resource's configs (Kafka's legacy AlterConfigs): the configs named are set
/// (a null value resets one), every other one goes back to the broker's topic default.
pub(super) async fn alter_configs(s: &Session, r: AlterConfigsRequest) -> AlterConfigsResponse {
    let defaults = s.broker.config().topic_defaults.clone();
    let mut responses = Vec::with_capacity(r.resources.len());
    for res in r.resources {
        let mut change = ConfigChange::default();
        for c in res.configs {
            change.add(c.name, Ok(c.value));
        }
        for (name, _) in defaults.entries() {
            if !change.names.contains(&TopicConfig::key(name)) {
                change.reset.push(name.to_string());
            }
        }
        let outcome = alter_resource(
            s,
            res.resource_type,
            &res.resource_name,
            change,
            r.validate_only,
        )
        .await;
        let response = resource_response(outcome, res.resource_type, res.resource_name);
        responses.push(AlterConfigsResourceResponse {
            error_code: response.error_code,
            error_message: response.error_message,
            resource_type: response.resource_type,
            resource_name: response.resource_name,
        });
    }
    AlterConfigsResponse {
        responses,
        ..AlterConfigsResponse::default()
    }
}

/// The changes an alter-configs request asks of one resource.
#[derive(Default)]
struct ConfigChange {
    set: Vec<(String, String)>,
    reset: Vec<String>,
    /// Names seen ([`TopicConfig::key`]), to refuse one named twice.
    names: std::collections::HashSet<String>,
    /// The first problem: the resource is then refused whole.
    bad: Option<(i16, String)>,
}

impl ConfigChange {
    /// Adds `name`: a value to set, `None` to reset it, or why it cannot be done.
    fn add(&mut self, name: String, op: Result<Option<String>, (i16, String)>) {
        if self.bad.is_some() {
            return;
        }
        if !self.names.insert(TopicConfig::key(&name)) {
            self.bad = Some((INVALID_REQUEST, format!("config {name} is listed twice")));
            return;
        }
        match op {
            Ok(Some(v)) => self.set.push((name, v)),
            Ok(None) => self.reset.push(name),
            Err(e) => self.bad = Some(e),
        }
    }
}

/// Applies `change` to a resource: topics through the broker, all or nothing; broker configs
/// are read-only.
async fn alter_resource(
    s: &Session,
    resource_type: i8,
    name: &str,
    change: ConfigChange,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    match resource_type {
        RESOURCE_TOPIC => match change.bad {
            Some(e) => Err(e),
            None => s
                .broker
                .change_topic_config(name, change.set, change.reset, validate_only)
                .await
                .map_err(|e| (e.kafka_code(), e.to_string())),
        },
        RESOURCE_BROKER => Err((
            INVALID_REQUEST,
            "broker configs come from weir.toml and do not change at runtime".into(),
        )),
        t => Err((
            INVALID_REQUEST,
            format!("resource type {t} is not supported"),
        )),
    }
}

fn resource_response(
    outcome: Result<(), (i16, String)>,
    resource_type: i8,
    resource_name: String,
) -> IncrementalAlterResourceResponse {
    let (error_code, error_message) = match outcome {
        Ok(()) => (0, None),
        Err((code, message)) => (code, Some(message)),
    };
    IncrementalAlterResourceResponse {
        error_code,
        error_message,
        resource_type,
        resource_name,
    }
}

/// A producer id and epoch for an idempotent or a transactional producer.
pub(super) async fn init_producer_id(
    s: &Session,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let result = match r.transactional_id.as_deref() {
        Some(id) => {
            s.broker
                .init_transactional_producer(
                    id,
                    r.transaction_timeout_ms,
                    r.producer_id,
                    r.producer_epoch,
                )
                .await
        }
        None => {
            s.broker
                .init_producer_id(None, r.producer_id, r.producer_epoch)
                .await
        }
    };
    match result {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
            error_code: 0,
            producer_id,
            producer_epoch,
            ..InitProducerIdResponse::default()
        },
        Err(e) => InitProducerIdResponse {
            error_code: e.kafka_code(),
            producer_id: -1,
            producer_epoch: -1,
            ..InitProducerIdResponse::default()
        },
    }
}
