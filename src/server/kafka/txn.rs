//! Transactions: AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn, answered by
//! the broker's transaction coordinator ([`crate::broker::transactions`]), and the admin views
//! DescribeTransactions, ListTransactions and DescribeProducers (the last from the partitions'
//! producer state). Request fields in, Kafka error codes out; the rules live in the broker.

use std::collections::HashMap;

use weir_storage::{CommittedOffset, TopicPartition};

use crate::broker::transactions::{TxnMeta, TxnStatus};
use crate::broker::{now_ms, BrokerError};
use crate::protocol::kafka::messages::add_offsets_to_txn::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
};
use crate::protocol::kafka::messages::add_partitions_to_txn::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopicResult,
};
use crate::protocol::kafka::messages::describe_producers::{
    DescribeProducersPartitionResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeProducersTopicResponse, ProducerState,
};
use crate::protocol::kafka::messages::describe_transactions::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, DescribedTransactionState,
    DescribedTransactionTopic,
};
use crate::protocol::kafka::messages::end_txn::{EndTxnRequest, EndTxnResponse};
use crate::protocol::kafka::messages::list_transactions::{
    ListTransactionsRequest, ListTransactionsResponse, ListedTransactionState,
};
use crate::protocol::kafka::messages::txn_offset_commit::{
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, TxnOffsetCommitResponsePartition,
    TxnOffsetCommitResponseTopic,
};

use super::{groups, Session};

/// OPERATION_NOT_ATTEMPTED: the partitions of a request that failed for another partition.
const OPERATION_NOT_ATTEMPTED: i16 = 55;

/// AddPartitionsToTxn (v0–3): every partition's outcome; when one is unknown, nothing is added
/// and the others are OPERATION_NOT_ATTEMPTED.
pub(super) async fn add_partitions(
    s: &Session,
    r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let wanted: Vec<(String, i32)> = r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.name.clone(), p)))
        .collect();
    let outcome = s
        .broker
        .transactions()
        .add_partitions(
            &s.broker,
            &r.transactional_id,
            r.producer_id,
            r.producer_epoch,
            wanted,
        )
        .await;
    // One lookup per partition (a request may name many): the failed ones and their codes.
    let (failed, whole): (HashMap<(String, i32), i16>, Option<i16>) = match &outcome {
        Err(e) => (HashMap::new(), Some(e.kafka_code())),
        Ok(outcomes) => (
            outcomes
                .iter()
                .filter_map(|(tp, e)| Some((tp.clone(), e.as_ref()?.kafka_code())))
                .collect(),
            None,
        ),
    };
    let code_of = |topic: &str, partition: i32| -> i16 {
        match (whole, failed.get(&(topic.to_string(), partition))) {
            (Some(code), _) | (None, Some(&code)) => code,
            (None, None) if failed.is_empty() => 0,
            (None, None) => OPERATION_NOT_ATTEMPTED,
        }
    };
    AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below: r
            .topics
            .iter()
            .map(|t| AddPartitionsToTxnTopicResult {
                name: t.name.clone(),
                results_by_partition: t
                    .partitions
                    .iter()
                    .map(|&partition_index| AddPartitionsToTxnPartitionResult {
                        partition_index,
                        partition_error_code: code_of(&t.name, partition_index),
                    })
                    .collect(),
            })
            .collect(),
        ..AddPartitionsToTxnResponse::default()
    }
}

/// AddOffsetsToTxn: the transaction will commit offsets of a group.
pub(super) async fn add_offsets(s: &Session, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let result = s
        .broker
        .transactions()
        .add_offsets(
            &s.broker,
            &r.transactional_id,
            r.producer_id,
            r.producer_epoch,
            &r.group_id,
        )
        .await;
    AddOffsetsToTxnResponse {
        error_code: code(&result),
        ..AddOffsetsToTxnResponse::default()
    }
}

/// TxnOffsetCommit: offsets staged in the transaction; one outcome for every partition.
pub(super) async fn txn_offset_commit(
    s: &Session,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let now = now_ms();
    let offsets: Vec<(TopicPartition, CommittedOffset)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    TopicPartition::new(t.name.clone(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.clone().unwrap_or_default(),
                        commit_timestamp_ms: now,
                    },
                )
            })
        })
        .collect();
    let result = if offsets.iter().any(|(_, o)| o.offset < 0) {
        Err(BrokerError::InvalidRequest("a negative offset".into()))
    } else {
        s.broker
            .transactions()
            .commit_offsets(
                &s.broker,
                &r.transactional_id,
                r.producer_id,
                r.producer_epoch,
                &r.group_id,
                (
                    groups::member(&r.member_id, &r.group_instance_id),
                    r.generation_id,
                ),
                offsets,
            )
            .await
    };
    let error_code = code(&result);
    TxnOffsetCommitResponse {
        topics: r
            .topics
            .iter()
            .map(|t| TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code,
                    })
                    .collect(),
            })
            .collect(),
        ..TxnOffsetCommitResponse::default()
    }
}

/// EndTxn: commit or abort; answered once every marker is written.
pub(super) async fn end_txn(s: &Session, r: EndTxnRequest) -> EndTxnResponse {
    let result = s
        .broker
        .transactions()
        .end(
            &s.broker,
            &r.transactional_id,
            r.producer_id,
            r.producer_epoch,
            r.committed,
        )
        .await;
    EndTxnResponse {
        error_code: code(&result),
        ..EndTxnResponse::default()
    }
}

fn code(result: &Result<(), BrokerError>) -> i16 {
    result.as_ref().map_or_else(BrokerError::kafka_code, |()| 0)
}

/// TRANSACTIONAL_ID_NOT_FOUND.
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// When the open transaction started; -1 when none is open.
fn start_time(meta: &TxnMeta) -> i64 {
    match meta.status {
        TxnStatus::Ongoing | TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => meta.started_ms,
        _ => -1,
    }
}

/// DescribeTransactions: each id's state, producer, timeout and partitions.
pub(super) async fn describe(
    s: &Session,
    r: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut transaction_states = Vec::with_capacity(r.transactional_ids.len());
    for id in r.transactional_ids {
        let Some(meta) = s.broker.transactions().describe(&id).await else {
            transaction_states.push(DescribedTransactionState {
                error_code: TRANSACTIONAL_ID_NOT_FOUND,
                transactional_id: id,
                producer_id: -1,
                producer_epoch: -1,
                transaction_start_time_ms: -1,
                ..DescribedTransactionState::default()
            });
            continue;
        };
        let mut topics: Vec<DescribedTransactionTopic> = Vec::new();
        for (topic, p) in &meta.partitions {
            match topics.last_mut() {
                Some(t) if &t.topic == topic => t.partitions.push(*p),
                _ => topics.push(DescribedTransactionTopic {
                    topic: topic.clone(),
                    partitions: vec![*p],
                }),
            }
        }
        transaction_states.push(DescribedTransactionState {
            error_code: 0,
            transactional_id: id,
            transaction_state: meta.status.name().to_string(),
            transaction_timeout_ms: meta.timeout_ms,
            transaction_start_time_ms: start_time(&meta),
            producer_id: meta.producer_id,
            producer_epoch: meta.epoch,
            topics,
        });
    }
    DescribeTransactionsResponse {
        transaction_states,
        ..DescribeTransactionsResponse::default()
    }
}

/// DescribeProducers: per partition, the producers it remembers, their last write and the
/// first offset of any transaction they have open there (`kafka-transactions.sh
/// describe-producers`, and `find-hanging`, which looks for transactions open longer than
/// their timeout). Weir's single coordinator never changes, so its epoch is 0.
pub(super) async fn describe_producers(
    s: &Session,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(r.topics.len());
    for t in r.topics {
        let mut partitions = Vec::with_capacity(t.partition_indexes.len());
        for p in t.partition_indexes {
            let mut answer = DescribeProducersPartitionResponse {
                partition_index: p,
                ..DescribeProducersPartitionResponse::default()
            };
            match s.broker.describe_producers(&t.name, p).await {
                Ok(active) => {
                    answer.active_producers = active
                        .into_iter()
                        .map(|a| ProducerState {
                            producer_id: a.producer_id,
                            producer_epoch: i32::from(a.epoch),
                            last_sequence: a.last_sequence,
                            last_timestamp: a.last_timestamp_ms,
                            coordinator_epoch: 0,
                            current_txn_start_offset: a.current_txn_start_offset.unwrap_or(-1),
                        })
                        .collect();
                }
                Err(e) => {
                    answer.error_code = e.kafka_code();
                    answer.error_message = Some(e.to_string());
                }
            }
            partitions.push(answer);
        }
        topics.push(DescribeProducersTopicResponse {
            name: t.name,
            partitions,
        });
    }
    DescribeProducersResponse {
        topics,
        ..DescribeProducersResponse::default()
    }
}

/// ListTransactions: the ids matching every filter given (states by name, producer ids, open
/// for at least `duration_filter` ms); state names Kafka does not know are sent back.
pub(super) async fn list(s: &Session, r: ListTransactionsRequest) -> ListTransactionsResponse {
    let known = |name: &String| TxnStatus::ALL.iter().any(|st| st.name() == name);
    let unknown_state_filters: Vec<String> = r
        .state_filters
        .iter()
        .filter(|f| !known(f))
        .cloned()
        .collect();
    let now = now_ms();
    let transaction_states = s
        .broker
        .transactions()
        .list()
        .await
        .into_iter()
        .filter(|(_, m)| {
            r.state_filters.is_empty() || r.state_filters.iter().any(|f| f == m.status.name())
        })
        .filter(|(_, m)| {
            r.producer_id_filters.is_empty() || r.producer_id_filters.contains(&m.producer_id)
        })
        .filter(|(_, m)| {
            r.duration_filter < 0
                || (start_time(m) >= 0 && now.saturating_sub(m.started_ms) >= r.duration_filter)
        })
        .map(|(id, m)| ListedTransactionState {
            transactional_id: id,
            producer_id: m.producer_id,
            transaction_state: m.status.name().to_string(),
        })
        .collect();
    ListTransactionsResponse {
        unknown_state_filters,
        transaction_states,
        ..ListTransactionsResponse::default()
    }
}
