//! Consumer groups over the classic protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, DescribeGroups, ListGroups, DeleteGroups. The
//! group actor does the work
//! (generations, leader election, protocol vote, MEMBER_ID_REQUIRED, static membership); this
//! module translates between its types and Kafka's, version by version.

use std::time::Duration;

use bytes::Bytes;
use weir_storage::{CommittedOffset, TopicPartition};

use crate::broker::{
    BrokerError, ConsumerGroupDescription, GroupDescription, GroupState, JoinGroup, MemberRef,
};
use crate::protocol::kafka::embedded;
use crate::protocol::kafka::messages::delete_groups::{
    DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse,
};
use crate::protocol::kafka::messages::describe_groups::{
    DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use crate::protocol::kafka::messages::heartbeat::{HeartbeatRequest, HeartbeatResponse};
use crate::protocol::kafka::messages::join_group::{
    JoinGroupRequest, JoinGroupResponse, JoinGroupResponseMember,
};
use crate::protocol::kafka::messages::leave_group::{
    LeaveGroupRequest, LeaveGroupResponse, MemberResponse,
};
use crate::protocol::kafka::messages::list_groups::{
    ListGroupsRequest, ListGroupsResponse, ListedGroup,
};
use crate::protocol::kafka::messages::offset_commit::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
};
use crate::protocol::kafka::messages::offset_delete::{
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetDeleteResponsePartition,
    OffsetDeleteResponseTopic,
};
use crate::protocol::kafka::messages::offset_fetch::{
    OffsetFetchRequest, OffsetFetchResponse, OffsetFetchResponseGroup,
    OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use crate::protocol::kafka::messages::sync_group::{SyncGroupRequest, SyncGroupResponse};

use super::Session;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// The Kafka error code of a group request's failure: as [`BrokerError::kafka_code`], except
/// that a broker shutting down is NOT_COORDINATOR (16), which makes clients look up the
/// coordinator again and retry (NOT_LEADER_OR_FOLLOWER means nothing to a group request).
fn group_code(e: impl std::borrow::Borrow<BrokerError>) -> i16 {
    match e.borrow() {
        BrokerError::ShuttingDown => 16,
        e => e.kafka_code(),
    }
}

/// [`group_code`] of a result (0 for success): the group requests' own `code`, kept apart from
/// [`super::code`], which maps a shutting-down broker for data requests.
fn group_result_code<T>(r: &Result<T, BrokerError>) -> i16 {
    r.as_ref().err().map_or(0, group_code)
}

fn ms(v: i32) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

/// Joins; answers when the join phase of the rebalance completes.
pub(super) async fn join(s: &Session, r: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let join = JoinGroup {
        member_id: r.member_id.clone(),
        instance_id: r.group_instance_id.clone(),
        client_id: s.client_id.clone(),
        client_host: s.client_host.clone(),
        session_timeout: ms(r.session_timeout_ms),
        // v0 has no rebalance timeout: the session timeout serves for both, as in Kafka.
        rebalance_timeout: ms(if version >= 1 {
            r.rebalance_timeout_ms
        } else {
            r.session_timeout_ms
        }),
        protocol_type: r.protocol_type.clone(),
        protocols: r
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    // Before v7 the protocol name is not nullable.
    let empty_name = (version < 7).then(String::new);
    match s.broker.join_group(&r.group_id, join).await {
        Ok(j) => JoinGroupResponse {
            error_code: 0,
            generation_id: j.generation,
            protocol_type: Some(j.protocol_type),
            protocol_name: Some(j.protocol),
            leader: j.leader,
            member_id: j.member_id,
            members: j
                .members
                .into_iter()
                .map(|m| JoinGroupResponseMember {
                    member_id: m.member_id,
                    group_instance_id: m.instance_id,
                    metadata: m.metadata,
                })
                .collect(),
            ..JoinGroupResponse::default()
        },
        Err(e) => JoinGroupResponse {
            error_code: group_code(&e),
            generation_id: -1,
            protocol_name: empty_name,
            // MEMBER_ID_REQUIRED hands the new member its id, to rejoin with.
            member_id: match e {
                BrokerError::MemberIdRequired(id) => id,
                _ => r.member_id,
            },
            ..JoinGroupResponse::default()
        },
    }
}

/// A member as a request names it (a static member with its instance id).
pub(super) fn member<'a>(id: &'a str, instance: &'a Option<String>) -> MemberRef<'a> {
    MemberRef {
        id,
        instance: instance.as_deref(),
    }
}

/// The member's assignment (from the leader: everyone's).
pub(super) async fn sync(s: &Session, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id, a.assignment))
        .collect();
    match s
        .broker
        .sync_group_named(
            &r.group_id,
            member(&r.member_id, &r.group_instance_id),
            r.generation_id,
            assignments,
            r.protocol_type,
            r.protocol_name,
        )
        .await
    {
        Ok(sync) => SyncGroupResponse {
            error_code: 0,
            protocol_type: Some(sync.protocol_type),
            protocol_name: Some(sync.protocol),
            assignment: sync.assignment,
            ..SyncGroupResponse::default()
        },
        Err(e) => SyncGroupResponse {
            error_code: group_code(e),
            ..SyncGroupResponse::default()
        },
    }
}

/// Keeps a member alive; REBALANCE_IN_PROGRESS tells it to rejoin.
pub(super) async fn heartbeat(s: &Session, r: HeartbeatRequest) -> HeartbeatResponse {
    let result = s
        .broker
        .heartbeat(
            &r.group_id,
            member(&r.member_id, &r.group_instance_id),
            r.generation_id,
        )
        .await;
    HeartbeatResponse {
        error_code: group_result_code(&result),
        ..HeartbeatResponse::default()
    }
}

/// One member (v0–2) or a batch of members by id or instance id (v3+).
pub(super) async fn leave(s: &Session, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(r.member_id.clone(), None)]
    };
    let outcomes = match s.broker.leave_group(&r.group_id, members.clone()).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            return LeaveGroupResponse {
                error_code: group_code(e),
                ..LeaveGroupResponse::default()
            }
        }
    };
    if version < 3 {
        // One member: its outcome is the request's.
        return LeaveGroupResponse {
            error_code: outcomes.first().map_or(0, group_result_code),
            ..LeaveGroupResponse::default()
        };
    }
    // Several: each member's outcome is its own, the request's is none (as from Kafka).
    LeaveGroupResponse {
        error_code: 0,
        members: members
            .into_iter()
            .zip(&outcomes)
            .map(|((member_id, group_instance_id), outcome)| MemberResponse {
                member_id,
                group_instance_id,
                error_code: group_result_code(outcome),
            })
            .collect(),
        ..LeaveGroupResponse::default()
    }
}

/// Commits offsets; partitions of unknown topics are refused one by one, the rest together.
pub(super) async fn commit(
    s: &Session,
    r: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let now = crate::broker::now_ms();
    let mut offsets = Vec::new();
    let mut refused = Vec::new();
    for t in &r.topics {
        let count = s.broker.partition_count(&t.name);
        for p in &t.partitions {
            let known =
                count.is_some_and(|n| p.partition_index >= 0 && (p.partition_index as u32) < n);
            if known {
                offsets.push((
                    TopicPartition::new(t.name.clone(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.clone().unwrap_or_default(),
                        commit_timestamp_ms: now,
                    },
                ));
            } else {
                refused.push((t.name.clone(), p.partition_index));
            }
        }
    }
    let who = member(&r.member_id, &r.group_instance_id);
    let generation = r.generation_id_or_member_epoch;
    let result = if offsets.is_empty() {
        Ok(())
    } else if version >= 9 {
        let b = &s.broker;
        b.commit_offsets(&r.group_id, who, generation, offsets)
            .await
    } else {
        // Before v9 the field is a classic generation, never a member epoch.
        let b = &s.broker;
        b.commit_offsets_by_generation(&r.group_id, who, generation, offsets)
            .await
    };
    let all = group_result_code(&result);
    OffsetCommitResponse {
        topics: r
            .topics
            .iter()
            .map(|t| OffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: if refused.contains(&(t.name.clone(), p.partition_index)) {
                            UNKNOWN_TOPIC_OR_PARTITION
                        } else {
                            all
                        },
                    })
                    .collect(),
                ..OffsetCommitResponseTopic::default()
            })
            .collect(),
        ..OffsetCommitResponse::default()
    }
}

/// One group's committed offsets: `(topic, [(partition, offset, leader epoch, metadata)])`;
/// offset -1 for a requested partition without a commit. `None` asks for every commit.
type GroupOffsets = Vec<(String, Vec<(i32, CommittedOffset)>)>;

async fn group_offsets(
    s: &Session,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
) -> Result<GroupOffsets, BrokerError> {
    let partitions = wanted.as_ref().map(|w| {
        w.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| TopicPartition::new(t.clone(), *p)))
            .collect::<Vec<_>>()
    });
    let committed = match member {
        Some((id, epoch)) => {
            s.broker
                .fetch_offsets_as_member(group, partitions, &id, epoch)
                .await?
        }
        None => s.broker.fetch_offsets(group, partitions).await?,
    };
    let none = CommittedOffset {
        offset: -1,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: -1,
    };
    Ok(match wanted {
        Some(w) => w
            .into_iter()
            .map(|(t, ps)| {
                let rows = ps
                    .into_iter()
                    .map(|p| {
                        let c = committed
                            .iter()
                            .find(|(tp, _)| tp.topic == t && tp.partition == p)
                            .map_or_else(|| none.clone(), |(_, c)| c.clone());
                        (p, c)
                    })
                    .collect();
                (t, rows)
            })
            .collect(),
        None => {
            let mut out: GroupOffsets = Vec::new();
            for (tp, c) in committed {
                match out.iter_mut().find(|(t, _)| *t == tp.topic) {
                    Some((_, rows)) => rows.push((tp.partition, c)),
                    None => out.push((tp.topic, vec![(tp.partition, c)])),
                }
            }
            out
        }
    })
}

/// Committed offsets of one group (v1–7) or several (v8+). The committed leader epoch is
/// always answered as -1: with an epoch ≥ 0 librdkafka and Java validate the position with
/// OffsetForLeaderEpoch, which this broker does not implement (its partitions never change
/// leader).
pub(super) async fn fetch_offsets(
    s: &Session,
    r: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(r.groups.len());
        // Each group once: a request naming one many times must not multiply the answer.
        let mut seen = std::collections::HashSet::new();
        for g in r.groups {
            if !seen.insert(g.group_id.clone()) {
                continue;
            }
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            // v9: a member of a consumer-protocol group names itself and its epoch (an admin
            // client sends no member id and epoch -1).
            let member = g
                .member_id
                .filter(|id| !id.is_empty() && g.member_epoch >= 0)
                .map(|id| (id, g.member_epoch));
            let result = group_offsets(s, &g.group_id, wanted, member).await;
            let unstable = unstable(s, &g.group_id, r.require_stable).await;
            groups.push(OffsetFetchResponseGroup {
                group_id: g.group_id,
                error_code: group_result_code(&result),
                topics: result
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, rows)| OffsetFetchResponseTopics {
                        partitions: rows
                            .into_iter()
                            .map(|(p, c)| OffsetFetchResponsePartitions {
                                partition_index: p,
                                committed_offset: c.offset,
                                committed_leader_epoch: -1,
                                metadata: Some(c.metadata),
                                error_code: unstable(&name, p),
                            })
                            .collect(),
                        name,
                        ..OffsetFetchResponseTopics::default()
                    })
                    .collect(),
            });
        }
        return OffsetFetchResponse {
            groups,
            ..OffsetFetchResponse::default()
        };
    }
    let wanted = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let result = group_offsets(s, &r.group_id, wanted, None).await;
    let unstable = unstable(s, &r.group_id, r.require_stable).await;
    OffsetFetchResponse {
        error_code: group_result_code(&result),
        topics: result
            .unwrap_or_default()
            .into_iter()
            .map(|(name, rows)| OffsetFetchResponseTopic {
                partitions: rows
                    .into_iter()
                    .map(|(p, c)| OffsetFetchResponsePartition {
                        partition_index: p,
                        committed_offset: c.offset,
                        committed_leader_epoch: -1,
                        metadata: Some(c.metadata),
                        error_code: unstable(&name, p),
                    })
                    .collect(),
                name,
            })
            .collect(),
        ..OffsetFetchResponse::default()
    }
}

/// For an OffsetFetch with `require_stable` (v7+): the error code of a partition, by topic
/// and index: UNSTABLE_OFFSET_COMMIT (88) while a transaction holds offsets of it not yet
/// committed, else 0.
async fn unstable(s: &Session, group: &str, require_stable: bool) -> impl Fn(&str, i32) -> i16 {
    const UNSTABLE_OFFSET_COMMIT: i16 = 88;
    let pending = if require_stable {
        s.broker.transactions().pending_offsets(group).await
    } else {
        Default::default()
    };
    move |topic: &str, partition: i32| {
        let tp = weir_storage::TopicPartition::new(topic, partition);
        if pending.contains(&tp) {
            UNSTABLE_OFFSET_COMMIT
        } else {
            0
        }
    }
}

/// State, protocol and members (with metadata and assignments) of each group.
pub(super) async fn describe(s: &Session, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(r.groups.len());
    // Each group once: a request naming one many times must not multiply the answer.
    let mut seen = std::collections::HashSet::new();
    for g in r.groups {
        if !seen.insert(g.clone()) {
            continue;
        }
        groups.push(match s.broker.describe_group(&g).await {
            Ok(GroupDescription {
                group_id,
                consumer: Some(c),
                ..
            }) => described_consumer_group(group_id, c),
            Ok(d) => DescribedGroup {
                error_code: 0,
                group_id: d.group_id,
                group_state: d.state.name().to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.metadata,
                        member_assignment: m.assignment,
                    })
                    .collect(),
                ..DescribedGroup::default()
            },
            Err(e) => DescribedGroup {
                error_code: group_code(&e),
                error_message: Some(e.to_string()),
                group_id: g,
                group_state: GroupState::Dead.name().to_string(),
                ..DescribedGroup::default()
            },
        });
    }
    DescribeGroupsResponse {
        groups,
        ..DescribeGroupsResponse::default()
    }
}

/// A group of Kafka's consumer protocol as DescribeGroups shows it (as Kafka does): its state,
/// protocol type `consumer`, its assignor as the protocol, and each member's subscription and
/// assignment in the classic consumer protocol's format.
fn described_consumer_group(group_id: String, c: ConsumerGroupDescription) -> DescribedGroup {
    DescribedGroup {
        error_code: 0,
        group_id,
        group_state: c.state,
        protocol_type: "consumer".into(),
        protocol_data: c.assignor,
        members: c
            .members
            .into_iter()
            .map(|m| DescribedGroupMember {
                // In the classic consumer protocol's format (v0), as Kafka describes them.
                member_metadata: embedded::encode_subscription(&embedded::Subscription {
                    topics: m.subscribed_topic_names,
                    generation: -1,
                    ..embedded::Subscription::default()
                }),
                member_assignment: embedded::encode_assignment(
                    0,
                    &m.assignment
                        .into_iter()
                        .map(|(topic, _, partitions)| (topic, partitions))
                        .collect::<Vec<_>>(),
                ),
                member_id: m.member_id,
                group_instance_id: m.instance_id,
                client_id: m.client_id,
                client_host: m.client_host,
            })
            .collect(),
        ..DescribedGroup::default()
    }
}

/// Every group (with members or committed offsets), filtered by state (v4+) and type (v5+).
/// Deletes a group's committed offsets of some partitions: GROUP_SUBSCRIBED_TO_TOPIC (86) for
/// a topic a member consumes (read from Kafka's consumer subscriptions), GROUP_ID_NOT_FOUND for
/// a group the broker does not know.
pub(super) async fn delete_offsets(s: &Session, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<TopicPartition> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(&t.name, p.partition_index))
        })
        .collect();
    let outcomes = match s
        .broker
        .delete_group_offsets(&r.group_id, partitions, consumer_subscription)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            return OffsetDeleteResponse {
                error_code: group_code(e),
                ..OffsetDeleteResponse::default()
            }
        }
    };
    let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::with_capacity(r.topics.len());
    for (tp, outcome) in outcomes {
        let partition = OffsetDeleteResponsePartition {
            partition_index: tp.partition,
            error_code: outcome.err().map_or(0, group_code),
        };
        match topics.last_mut() {
            Some(t) if t.name == tp.topic => t.partitions.push(partition),
            _ => topics.push(OffsetDeleteResponseTopic {
                name: tp.topic,
                partitions: vec![partition],
            }),
        }
    }
    OffsetDeleteResponse {
        topics,
        ..OffsetDeleteResponse::default()
    }
}

/// The topics of Kafka's ConsumerProtocolSubscription, `None` when the bytes are not one.
fn consumer_subscription(metadata: &[u8]) -> Option<Vec<String>> {
    embedded::decode_subscription(Bytes::copy_from_slice(metadata))
        .ok()
        .map(|s| s.topics)
}

/// Deletes groups that have no members, with their committed offsets: GROUP_ID_NOT_FOUND (69)
/// for a group the broker does not know, NON_EMPTY_GROUP (68) while members remain.
pub(super) async fn delete(s: &Session, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let known: Result<Vec<String>, BrokerError> = s
        .broker
        .list_groups()
        .await
        .map(|l| l.into_iter().map(|(name, _)| name).collect());
    let mut results = Vec::with_capacity(r.groups_names.len());
    for group_id in r.groups_names {
        let error_code = match &known {
            Err(e) => group_code(e),
            Ok(known) if !known.contains(&group_id) => {
                BrokerError::UnknownGroup(group_id.clone()).kafka_code()
            }
            Ok(_) => match s.broker.delete_group(&group_id).await {
                Ok(()) => 0,
                Err(e) => group_code(e),
            },
        };
        results.push(DeletableGroupResult {
            group_id,
            error_code,
        });
    }
    DeleteGroupsResponse {
        results,
        ..DeleteGroupsResponse::default()
    }
}

pub(super) async fn list(s: &Session, r: ListGroupsRequest) -> ListGroupsResponse {
    let listed = match s.broker.list_groups().await {
        Ok(l) => l,
        Err(e) => {
            return ListGroupsResponse {
                error_code: group_code(e),
                ..ListGroupsResponse::default()
            }
        }
    };
    let mut groups = Vec::with_capacity(listed.len());
    for (name, state) in listed {
        // Each group is described for its type, protocol type and (consumer protocol) state; a
        // group with only committed offsets is a classic one.
        let described = s.broker.describe_group(&name).await.ok();
        let consumer = described.as_ref().and_then(|d| d.consumer.as_ref());
        let group_type = if consumer.is_some() {
            "consumer"
        } else {
            "classic"
        };
        let state_name = consumer
            .map_or(state.name(), |c| c.state.as_str())
            .to_string();
        if !r.states_filter.is_empty()
            && !r
                .states_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(&state_name))
        {
            continue;
        }
        if !r.types_filter.is_empty()
            && !r
                .types_filter
                .iter()
                .any(|f| f.eq_ignore_ascii_case(group_type))
        {
            continue;
        }
        let protocol_type = match described {
            Some(d) if !d.protocol_type.is_empty() => d.protocol_type,
            // A group with only committed offsets, or of the consumer protocol.
            _ => "consumer".to_string(),
        };
        groups.push(ListedGroup {
            group_id: name,
            protocol_type,
            group_state: state_name,
            group_type: group_type.to_string(),
        });
    }
    ListGroupsResponse {
        error_code: 0,
        groups,
        ..ListGroupsResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_subscriptions_are_read_and_garbage_is_not() {
        // Version 3 of ConsumerProtocolSubscription: the topics, then null user data, no owned
        // partitions, generation -1, a null rack.
        let mut md = vec![0, 3, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        md.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        md.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            consumer_subscription(&md),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(consumer_subscription(&[]), None);
        assert_eq!(
            consumer_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]),
            None,
            "2^31 topics"
        );
        assert_eq!(
            consumer_subscription(&[0, 0, 0, 0, 0, 1, 0, 9, b'x']),
            None,
            "truncated"
        );
    }
}
