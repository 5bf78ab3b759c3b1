//! IncrementalAlterConfigs (API key 44): request and response, versions 0–1, flexible from
//! version 1.
//!
//! Field layouts follow Apache Kafka's message definitions
//! (`IncrementalAlterConfigsRequest.json`, `IncrementalAlterConfigsResponse.json`); each
//! `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The IncrementalAlterConfigs request (API key 44).
    pub struct IncrementalAlterConfigsRequest {
        resources: Vec<AlterConfigsResource> [0..],
        validate_only: bool [0..],
    }
}

kafka_struct! {
    /// An element of [`IncrementalAlterConfigsRequest::resources`].
    pub struct AlterConfigsResource {
        resource_type: i8 [0..],
        resource_name: String [0..],
        configs: Vec<AlterableConfig> [0..],
    }
}

kafka_struct! {
    /// An element of [`AlterConfigsResource::configs`]: `config_operation` is SET (0), DELETE
    /// (1), APPEND (2) or SUBTRACT (3).
    pub struct AlterableConfig {
        name: String [0..],
        config_operation: i8 [0..],
        value: Option<String> [0..] null 0,
    }
}

kafka_struct! {
    /// The IncrementalAlterConfigs response (API key 44).
    pub struct IncrementalAlterConfigsResponse {
        throttle_time_ms: i32 [0..],
        responses: Vec<AlterConfigsResourceResponse> [0..],
    }
}

kafka_struct! {
    /// An element of [`IncrementalAlterConfigsResponse::responses`].
    pub struct AlterConfigsResourceResponse {
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        resource_type: i8 [0..],
        resource_name: String [0..],
    }
}
