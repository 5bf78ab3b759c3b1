//! DescribeLogDirs (API key 35): request and response, versions 1–4, flexible from version 2.
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeLogDirsRequest.json`,
//! `DescribeLogDirsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeLogDirs request (API key 35): `None` asks for every topic.
    pub struct DescribeLogDirsRequest {
        topics: Option<Vec<DescribableLogDirTopic>> [1..] null 1,
    }
}

kafka_struct! {
    /// An element of [`DescribeLogDirsRequest::topics`].
    pub struct DescribableLogDirTopic {
        topic: String [1..],
        partitions: Vec<i32> [1..],
    }
}

kafka_struct! {
    /// The DescribeLogDirs response (API key 35).
    pub struct DescribeLogDirsResponse {
        throttle_time_ms: i32 [1..],
        error_code: i16 [3..],
        results: Vec<DescribeLogDirsResult> [1..],
    }
}

kafka_struct! {
    /// An element of [`DescribeLogDirsResponse::results`]: one log directory.
    pub struct DescribeLogDirsResult {
        error_code: i16 [1..],
        log_dir: String [1..],
        topics: Vec<DescribeLogDirsTopic> [1..],
        total_bytes: i64 [4..] = -1,
        usable_bytes: i64 [4..] = -1,
    }
}

kafka_struct! {
    /// An element of [`DescribeLogDirsResult::topics`].
    pub struct DescribeLogDirsTopic {
        name: String [1..],
        partitions: Vec<DescribeLogDirsPartition> [1..],
    }
}

kafka_struct! {
    /// An element of [`DescribeLogDirsTopic::partitions`].
    pub struct DescribeLogDirsPartition {
        partition_index: i32 [1..],
        partition_size: i64 [1..],
        offset_lag: i64 [1..],
        is_future_key: bool [1..],
    }
}
