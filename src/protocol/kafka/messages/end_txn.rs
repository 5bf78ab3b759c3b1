//! EndTxn (API key 26): request and response, versions 0–3 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`EndTxnRequest.json`,
//! `EndTxnResponse.json`); each `kafka_struct!` below is one struct of them. The response's
//! version 5 fields (`ProducerId`, `ProducerEpoch`, KIP-890) are beyond the decoded versions and
//! left out.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The EndTxn request (API key 26).
    pub struct EndTxnRequest {
        transactional_id: String [0..],
        producer_id: i64 [0..],
        producer_epoch: i16 [0..],
        committed: bool [0..],
    }
}

kafka_struct! {
    /// The EndTxn response (API key 26).
    pub struct EndTxnResponse {
        throttle_time_ms: i32 [0..],
        error_code: i16 [0..],
    }
}
