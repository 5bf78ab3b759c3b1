//! AddOffsetsToTxn (API key 25): request and response, versions 0–3 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`AddOffsetsToTxnRequest.json`,
//! `AddOffsetsToTxnResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The AddOffsetsToTxn request (API key 25).
    pub struct AddOffsetsToTxnRequest {
        transactional_id: String [0..],
        producer_id: i64 [0..],
        producer_epoch: i16 [0..],
        group_id: String [0..],
    }
}

kafka_struct! {
    /// The AddOffsetsToTxn response (API key 25).
    pub struct AddOffsetsToTxnResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
    }
}
