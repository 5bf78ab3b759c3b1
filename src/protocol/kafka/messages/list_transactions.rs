//! ListTransactions (API key 66): request and response, versions 0–1 decoded (flexible). Version
//! 2's transactional-id pattern (a Java regular expression) is not supported.
//!
//! Field layouts follow Apache Kafka's message definitions (`ListTransactionsRequest.json`,
//! `ListTransactionsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The ListTransactions request (API key 66).
    pub struct ListTransactionsRequest {
        state_filters: Vec<String> [0..],
        producer_id_filters: Vec<i64> [0..],
        duration_filter: i64 [1..] = -1,
    }
}

kafka_struct! {
    /// The ListTransactions response (API key 66).
    pub struct ListTransactionsResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
        unknown_state_filters: Vec<String> [0..],
        transaction_states: Vec<ListedTransactionState> [0..],
    }
}

kafka_struct! {
    /// An element of [`ListTransactionsResponse::transaction_states`].
    pub struct ListedTransactionState {
        transactional_id: String [0..],
        producer_id: i64 [0..],
        transaction_state: String [0..],
    }
}
