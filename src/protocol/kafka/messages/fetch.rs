//! Fetch (API key 1): request and response, versions 4–18 decoded, flexible from version 12.
//!
//! Field layouts follow Apache Kafka's message definitions (`FetchRequest.json`,
//! `FetchResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::{RecordSet, Uuid};

kafka_struct! {
    /// The Fetch request (API key 1).
    pub struct FetchRequest {
        replica_id: i32 [4..14] = -1,
        max_wait_ms: i32 [4..],
        min_bytes: i32 [4..],
        max_bytes: i32 [4..] = i32::MAX,
        isolation_level: i8 [4..],
        session_id: i32 [7..],
        session_epoch: i32 [7..] = -1,
        topics: Vec<FetchTopic> [4..],
        forgotten_topics_data: Vec<ForgottenTopic> [7..],
        rack_id: String [11..],
        cluster_id: Option<String> [12..] null 12 tag 0,
        replica_state: ReplicaState [15..] tag 1,
    }
}

kafka_struct! {
    /// An element of [`FetchRequest::topics`].
    pub struct FetchTopic {
        topic: String [4..12],
        topic_id: Uuid [13..],
        partitions: Vec<FetchPartition> [4..],
    }
}

kafka_struct! {
    /// An element of [`FetchRequest::forgotten_topics_data`].
    pub struct ForgottenTopic {
        topic: String [7..12],
        topic_id: Uuid [13..],
        partitions: Vec<i32> [7..],
    }
}

kafka_struct! {
    /// The value of [`FetchRequest::replica_state`].
    pub struct ReplicaState {
        replica_id: i32 [15..] = -1,
        replica_epoch: i64 [15..] = -1,
    }
}

kafka_struct! {
    /// An element of [`FetchTopic::partitions`].
    pub struct FetchPartition {
        partition: i32 [4..],
        current_leader_epoch: i32 [9..] = -1,
        fetch_offset: i64 [4..],
        last_fetched_epoch: i32 [12..] = -1,
        log_start_offset: i64 [5..] = -1,
        partition_max_bytes: i32 [4..],
        replica_directory_id: Uuid [17..] tag 0,
        high_watermark: i64 [18..] tag 1 = i64::MAX,
    }
}

kafka_struct! {
    /// The Fetch response (API key 1).
    pub struct FetchResponse {
        throttle_time_ms: i32 [4..],
        error_code: i16 [7..],
        session_id: i32 [7..],
        responses: Vec<FetchableTopicResponse> [4..],
        node_endpoints: Vec<NodeEndpoint> [16..] tag 0,
    }
}

kafka_struct! {
    /// An element of [`FetchResponse::responses`].
    pub struct FetchableTopicResponse {
        topic: String [4..12],
        topic_id: Uuid [13..],
        partitions: Vec<PartitionData> [4..],
    }
}

kafka_struct! {
    /// An element of [`FetchResponse::node_endpoints`].
    pub struct NodeEndpoint {
        node_id: i32 [16..],
        host: String [16..],
        port: i32 [16..],
        rack: Option<String> [16..] null 0,
    }
}

kafka_struct! {
    /// An element of [`FetchableTopicResponse::partitions`].
    pub struct PartitionData {
        partition_index: i32 [4..],
        error_code: i16 [4..],
        high_watermark: i64 [4..],
        last_stable_offset: i64 [4..] = -1,
        log_start_offset: i64 [5..] = -1,
        aborted_transactions: Option<Vec<AbortedTransaction>> [4..] null 4,
        preferred_read_replica: i32 [11..] = -1,
        records: Option<RecordSet> [4..] null 0,
        diverging_epoch: EpochEndOffset [12..] tag 0,
        current_leader: LeaderIdAndEpoch [12..] tag 1,
        snapshot_id: SnapshotId [12..] tag 2,
    }
}

kafka_struct! {
    /// An element of [`PartitionData::aborted_transactions`].
    pub struct AbortedTransaction {
        producer_id: i64 [4..],
        first_offset: i64 [4..],
    }
}

kafka_struct! {
    /// The value of [`PartitionData::diverging_epoch`].
    pub struct EpochEndOffset {
        epoch: i32 [12..] = -1,
        end_offset: i64 [12..] = -1,
    }
}

kafka_struct! {
    /// The value of [`PartitionData::current_leader`].
    pub struct LeaderIdAndEpoch {
        leader_id: i32 [12..] = -1,
        leader_epoch: i32 [12..] = -1,
    }
}

kafka_struct! {
    /// The value of [`PartitionData::snapshot_id`].
    pub struct SnapshotId {
        end_offset: i64 [4..] = -1,
        epoch: i32 [4..] = -1,
    }
}
