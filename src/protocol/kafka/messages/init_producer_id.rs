//! InitProducerId (API key 22): request and response, versions 0–5 decoded, flexible from version 2.
//!
//! Field layouts follow Apache Kafka's message definitions (`InitProducerIdRequest.json`,
//! `InitProducerIdResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The InitProducerId request (API key 22).
    pub struct InitProducerIdRequest {
        transactional_id: Option<String> [0..] null 0,
        transaction_timeout_ms: i32 [0..],
        producer_id: i64 [3..] = -1,
        producer_epoch: i16 [3..] = -1,
    }
}

kafka_struct! {
    /// The InitProducerId response (API key 22).
    pub struct InitProducerIdResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
        producer_id: i64 [0..] = -1,
        producer_epoch: i16 [0..],
        ongoing_txn_producer_id: i64 [6..] = -1,
        ongoing_txn_producer_epoch: i16 [6..] = -1,
    }
}
