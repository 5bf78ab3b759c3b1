//! Groups of Kafka's consumer protocol (KIP-848, `group.protocol=consumer`):
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe. The group actor does the work
//! ([`crate::broker::consumer_protocol`]: epochs, server-side assignment, reconciliation); this
//! module translates between its types and Kafka's, and checks what the request itself must
//! hold. The classic requests meet these groups in `groups.rs`: a classic consumer joins one as
//! a classic member (`crate::broker::group`'s migration; INCONSISTENT_GROUP_PROTOCOL with
//! `[groups] migration_policy = "disabled"`), offset commits name the member epoch
//! (STALE_MEMBER_EPOCH), and DescribeGroups and ListGroups show them with their type.

use crate::broker::consumer_protocol::HeartbeatInput;
use crate::broker::{BrokerError, ConsumerMemberDescription};
use crate::protocol::kafka::messages::consumer_group_describe::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DescribedAssignment,
    DescribedConsumerGroup, DescribedConsumerMember, DescribedTopicPartitions,
};
use crate::protocol::kafka::messages::consumer_group_heartbeat::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, HeartbeatAssignment,
    HeartbeatTopicPartitions,
};

use super::cluster::topic_uuid;
use super::Session;

const INVALID_REQUEST: i16 = 42;
const GROUP_ID_NOT_FOUND: i16 = 69;

/// The Kafka code of a heartbeat's failure: a broker shutting down is NOT_COORDINATOR (16), so
/// that the member finds the coordinator again.
fn code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::ShuttingDown => 16,
        e => e.kafka_code(),
    }
}

fn refuse(code: i16, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse {
        error_code: code,
        error_message: Some(message),
        ..ConsumerGroupHeartbeatResponse::default()
    }
}

/// Joins, stays in or leaves a group; see [`crate::broker::consumer_protocol`].
pub(super) async fn heartbeat(
    s: &Session,
    r: ConsumerGroupHeartbeatRequest,
    version: i16,
) -> ConsumerGroupHeartbeatResponse {
    if r.group_id.is_empty() {
        return refuse(INVALID_REQUEST, "GroupId can't be empty.".into());
    }
    // From version 1 the member chooses its id (KIP-1082); before, the group does at a join.
    if r.member_id.is_empty() && (version >= 1 || r.member_epoch != 0) {
        return refuse(INVALID_REQUEST, "MemberId can't be empty.".into());
    }
    if r.instance_id.as_deref() == Some("") {
        return refuse(INVALID_REQUEST, "InstanceId can't be empty.".into());
    }
    let owned_ids = r.topic_partitions.map(|tps| {
        tps.into_iter()
            .map(|tp| (u128::from_be_bytes(tp.topic_id), tp.partitions))
            .collect()
    });
    let input = HeartbeatInput {
        member_id: r.member_id,
        member_epoch: r.member_epoch,
        instance_id: r.instance_id,
        rack_id: r.rack_id,
        rebalance_timeout_ms: r.rebalance_timeout_ms,
        subscribed_names: r.subscribed_topic_names,
        subscribed_regex: r.subscribed_topic_regex,
        server_assignor: r.server_assignor,
        owned: None,
        client_id: s.client_id.clone(),
        client_host: s.client_host.clone(),
    };
    match s
        .broker
        .consumer_group_heartbeat(&r.group_id, input, owned_ids)
        .await
    {
        Ok(a) => ConsumerGroupHeartbeatResponse {
            member_id: Some(a.member_id),
            member_epoch: a.member_epoch,
            heartbeat_interval_ms: a.heartbeat_interval_ms,
            assignment: a.assignment.map(|tps| HeartbeatAssignment {
                topic_partitions: tps
                    .into_iter()
                    .map(|(id, partitions)| HeartbeatTopicPartitions {
                        topic_id: topic_uuid(id),
                        partitions,
                    })
                    .collect(),
            }),
            ..ConsumerGroupHeartbeatResponse::default()
        },
        Err(e) => refuse(code(&e), e.to_string()),
    }
}

fn described(tps: Vec<(String, u128, Vec<i32>)>) -> DescribedAssignment {
    DescribedAssignment {
        topic_partitions: tps
            .into_iter()
            .map(|(name, id, partitions)| DescribedTopicPartitions {
                topic_id: topic_uuid(id),
                topic_name: name,
                partitions,
            })
            .collect(),
    }
}

/// Describes groups of the consumer protocol; a classic group, or one the broker does not know,
/// is GROUP_ID_NOT_FOUND (as Kafka answers: clients then describe it with DescribeGroups).
pub(super) async fn describe(
    s: &Session,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(r.group_ids.len());
    let mut seen = std::collections::HashSet::new();
    for g in r.group_ids {
        if !seen.insert(g.clone()) {
            continue;
        }
        let failed = |code: i16, message: String| DescribedConsumerGroup {
            error_code: code,
            error_message: Some(message),
            group_id: g.clone(),
            group_state: "Dead".into(),
            ..DescribedConsumerGroup::default()
        };
        groups.push(match s.broker.describe_group(&g).await {
            Ok(d) => match d.consumer {
                Some(c) => DescribedConsumerGroup {
                    group_id: d.group_id,
                    group_state: c.state,
                    group_epoch: c.group_epoch,
                    assignment_epoch: c.assignment_epoch,
                    assignor_name: c.assignor,
                    members: c.members.into_iter().map(member).collect(),
                    ..DescribedConsumerGroup::default()
                },
                None if d.state == crate::broker::GroupState::Dead => {
                    failed(GROUP_ID_NOT_FOUND, format!("Group {g} not found."))
                }
                None => failed(
                    GROUP_ID_NOT_FOUND,
                    format!("Group {g} is not a consumer group."),
                ),
            },
            Err(e) => failed(code(&e), e.to_string()),
        });
    }
    ConsumerGroupDescribeResponse {
        groups,
        ..ConsumerGroupDescribeResponse::default()
    }
}

fn member(m: ConsumerMemberDescription) -> DescribedConsumerMember {
    DescribedConsumerMember {
        member_id: m.member_id,
        instance_id: m.instance_id,
        rack_id: m.rack_id,
        member_epoch: m.member_epoch,
        client_id: m.client_id,
        client_host: m.client_host,
        subscribed_topic_names: m.subscribed_topic_names,
        subscribed_topic_regex: m.subscribed_topic_regex,
        assignment: described(m.assignment),
        target_assignment: described(m.target_assignment),
        // 0: a classic member in the group; 1: a member of the consumer protocol.
        member_type: if m.classic { 0 } else { 1 },
    }
}
