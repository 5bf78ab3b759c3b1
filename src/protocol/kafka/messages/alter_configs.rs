//! AlterConfigs (API key 33): request and response, versions 0–2, flexible from version 2. The
//! legacy, whole-resource form of IncrementalAlterConfigs (44): the configs named become the
//! resource's only overrides.
//!
//! Field layouts follow Apache Kafka's message definitions (`AlterConfigsRequest.json`,
//! `AlterConfigsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The AlterConfigs request (API key 33).
    pub struct AlterConfigsRequest {
        resources: Vec<AlterConfigsResource> [0..],
        validate_only: bool [0..],
    }
}

kafka_struct! {
    /// An element of [`AlterConfigsRequest::resources`].
    pub struct AlterConfigsResource {
        resource_type: i8 [0..],
        resource_name: String [0..],
        configs: Vec<AlterableConfig> [0..],
    }
}

kafka_struct! {
    /// An element of [`AlterConfigsResource::configs`].
    pub struct AlterableConfig {
        name: String [0..],
        value: Option<String> [0..] null 0,
    }
}

kafka_struct! {
    /// The AlterConfigs response (API key 33).
    pub struct AlterConfigsResponse {
        throttle_time_ms: i32 [0..],
        responses: Vec<AlterConfigsResourceResponse> [0..],
    }
}

kafka_struct! {
    /// An element of [`AlterConfigsResponse::responses`].
    pub struct AlterConfigsResourceResponse {
        error_code: i16 [0..],
        error_message: Option<String> [0..] null 0,
        resource_type: i8 [0..],
        resource_name: String [0..],
    }
}
