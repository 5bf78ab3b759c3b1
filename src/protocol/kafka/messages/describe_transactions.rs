//! DescribeTransactions (API key 65): request and response, version 0 (flexible).
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeTransactionsRequest.json`,
//! `DescribeTransactionsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeTransactions request (API key 65).
    pub struct DescribeTransactionsRequest {
        transactional_ids: Vec<String> [0..],
    }
}

kafka_struct! {
    /// The DescribeTransactions response (API key 65).
    pub struct DescribeTransactionsResponse {
        throttle_time_ms: i32 [0..],
        transaction_states: Vec<DescribedTransactionState> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribeTransactionsResponse::transaction_states`].
    pub struct DescribedTransactionState {
        error_code: i16 [0..],
        transactional_id: String [0..],
        transaction_state: String [0..],
        transaction_timeout_ms: i32 [0..],
        transaction_start_time_ms: i64 [0..],
        producer_id: i64 [0..],
        producer_epoch: i16 [0..],
        topics: Vec<DescribedTransactionTopic> [0..],
    }
}

kafka_struct! {
    /// An element of [`DescribedTransactionState::topics`].
    pub struct DescribedTransactionTopic {
        topic: String [0..],
        partitions: Vec<i32> [0..],
    }
}
