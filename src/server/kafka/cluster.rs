//! The cluster as Kafka clients see it: one broker that is controller, group coordinator and
//! leader of every partition. ApiVersions, Metadata, DescribeCluster, FindCoordinator.

use crate::broker::BrokerError;
use crate::protocol::kafka::messages::describe_cluster::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use crate::protocol::kafka::messages::find_coordinator::{
    Coordinator, FindCoordinatorRequest, FindCoordinatorResponse,
};
use crate::protocol::kafka::messages::metadata::{
    MetadataRequest, MetadataResponse, MetadataResponseBroker, MetadataResponsePartition,
    MetadataResponseTopic,
};
use crate::protocol::kafka::{supported_api_versions, ApiVersionsResponse, Uuid};

use super::Session;

/// Exactly the APIs and versions this broker implements.
pub(super) fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: 0,
        api_keys: supported_api_versions(),
        ..ApiVersionsResponse::default()
    }
}

/// A topic id on the wire (Kafka's UUID) from the broker's 128-bit id.
pub(super) fn topic_uuid(id: u128) -> Uuid {
    Uuid::from(id.to_be_bytes())
}

/// Brokers (just this one) and the requested topics, auto-creating unknown ones when the
/// request and the broker's config both allow it.
pub(super) async fn metadata(s: &Session, r: MetadataRequest, version: i16) -> MetadataResponse {
    const UNKNOWN_TOPIC_ID: i16 = 100;
    // Topics named by id alone (v10+; consumers of the consumer group protocol resolve their
    // assignments this way): the id's topic, or UNKNOWN_TOPIC_ID.
    let mut by_id = Vec::new();
    let mut unknown_ids = Vec::new();
    if let Some(topics) = &r.topics {
        for t in topics
            .iter()
            .filter(|t| t.name.is_none() && t.topic_id != [0; 16])
        {
            match s.broker.topic_name(u128::from_be_bytes(t.topic_id)) {
                Some(name) => by_id.push(name),
                None => unknown_ids.push(t.topic_id),
            }
        }
    }
    let names: Vec<String> = match r.topics {
        // Null (v1+), or an empty list in v0: every topic.
        None => s.broker.list_topics(),
        Some(t) if t.is_empty() && version == 0 => s.broker.list_topics(),
        // Each topic once, as Kafka keeps them in a set: a request naming a big topic many
        // times must not multiply the answer.
        Some(t) => {
            let mut seen = std::collections::HashSet::new();
            t.into_iter()
                .filter_map(|t| t.name)
                .chain(by_id)
                .filter(|name| seen.insert(name.clone()))
                .collect()
        }
    };
    // Before v4 there is no flag and requests for unknown topics create them (Kafka's default).
    let allow_create = version < 4 || r.allow_auto_topic_creation;
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        topics.push(describe_topic(s, name, allow_create).await);
    }
    let mut seen = std::collections::HashSet::new();
    for id in unknown_ids.into_iter().filter(|id| seen.insert(*id)) {
        topics.push(MetadataResponseTopic {
            error_code: UNKNOWN_TOPIC_ID,
            name: None,
            topic_id: id,
            ..MetadataResponseTopic::default()
        });
    }
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: s.node_id,
            host: s.host.clone(),
            port: s.port,
            rack: None,
        }],
        cluster_id: Some(s.cluster_id.to_string()),
        controller_id: s.node_id,
        topics,
        ..MetadataResponse::default()
    }
}

async fn describe_topic(s: &Session, name: String, allow_create: bool) -> MetadataResponseTopic {
    let mut described = s.broker.describe_topic(&name).await;
    if matches!(described, Err(BrokerError::UnknownTopic(_)))
        && allow_create
        && s.broker.config().broker.auto_create_topics
    {
        // Created with the broker's default partition count; a racing creator is fine.
        match s.broker.create_topic(&name, None, vec![]).await {
            Ok(_) | Err(BrokerError::TopicExists(_)) => {
                described = s.broker.describe_topic(&name).await;
            }
            Err(e) => described = Err(e),
        }
    }
    match described {
        Ok(t) => MetadataResponseTopic {
            error_code: 0,
            name: Some(t.name),
            topic_id: topic_uuid(t.id),
            is_internal: false,
            partitions: (0..t.partitions.len() as i32)
                .map(|p| MetadataResponsePartition {
                    error_code: 0,
                    partition_index: p,
                    leader_id: s.node_id,
                    leader_epoch: -1,
                    replica_nodes: vec![s.node_id],
                    isr_nodes: vec![s.node_id],
                    offline_replicas: vec![],
                })
                .collect(),
            ..MetadataResponseTopic::default()
        },
        Err(e) => MetadataResponseTopic {
            error_code: e.kafka_code(),
            name: Some(name),
            ..MetadataResponseTopic::default()
        },
    }
}

/// This broker, as controller and only member.
pub(super) fn describe_cluster(s: &Session) -> DescribeClusterResponse {
    DescribeClusterResponse {
        cluster_id: s.cluster_id.to_string(),
        controller_id: s.node_id,
        brokers: vec![DescribeClusterBroker {
            broker_id: s.node_id,
            host: s.host.clone(),
            port: s.port,
            rack: None,
            is_fenced: false,
        }],
        ..DescribeClusterResponse::default()
    }
}

/// Key type 0 is a group, 1 a transactional id: this broker coordinates every one of both.
pub(super) fn find_coordinator(
    s: &Session,
    r: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    const INVALID_REQUEST: i16 = 42;
    let answer = |key: String| {
        let (code, message) = match r.key_type {
            0 | 1 if !key.is_empty() => (0, None),
            0 => (INVALID_REQUEST, Some("an empty group id".to_string())),
            1 => (
                INVALID_REQUEST,
                Some("an empty transactional id".to_string()),
            ),
            t => (INVALID_REQUEST, Some(format!("unknown key type {t}"))),
        };
        Coordinator {
            key,
            node_id: if code == 0 { s.node_id } else { -1 },
            host: if code == 0 {
                s.host.clone()
            } else {
                String::new()
            },
            port: if code == 0 { s.port } else { -1 },
            error_code: code,
            error_message: message,
        }
    };
    if version >= 4 {
        FindCoordinatorResponse {
            coordinators: r.coordinator_keys.iter().cloned().map(answer).collect(),
            ..FindCoordinatorResponse::default()
        }
    } else {
        let c = answer(r.key.clone());
        FindCoordinatorResponse {
            error_code: c.error_code,
            error_message: c.error_message,
            node_id: c.node_id,
            host: c.host,
            port: c.port,
            ..FindCoordinatorResponse::default()
        }
    }
}
