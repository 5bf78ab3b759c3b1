//! DeleteTopics (API key 20): request and response, versions 1–6 decoded, flexible from version 4.
//!
//! Field layouts follow Apache Kafka's message definitions (`DeleteTopicsRequest.json`,
//! `DeleteTopicsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;
use crate::protocol::kafka::wire::Uuid;

kafka_struct! {
    /// The DeleteTopics request (API key 20).
    pub struct DeleteTopicsRequest {
        topics: Vec<DeleteTopicState> [6..],
        topic_names: Vec<String> [1..5],
        timeout_ms: i32 [1..],
    }
}

kafka_struct! {
    /// An element of [`DeleteTopicsRequest::topics`].
    pub struct DeleteTopicState {
        name: Option<String> [6..] null 6,
        topic_id: Uuid [6..],
    }
}

kafka_struct! {
    /// The DeleteTopics response (API key 20).
    pub struct DeleteTopicsResponse {
        throttle_time_ms: i32 [1..],
        responses: Vec<DeletableTopicResult> [1..],
    }
}

kafka_struct! {
    /// An element of [`DeleteTopicsResponse::responses`].
    pub struct DeletableTopicResult {
        name: Option<String> [1..] null 6,
        topic_id: Uuid [6..],
        error_code: i16 [1..],
        error_message: Option<String> [5..] null 5,
    }
}
