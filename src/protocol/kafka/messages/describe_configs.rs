//! DescribeConfigs (API key 32): request and response, versions 1–4 decoded, flexible from version 4.
//!
//! Field layouts follow Apache Kafka's message definitions (`DescribeConfigsRequest.json`,
//! `DescribeConfigsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The DescribeConfigs request (API key 32).
    pub struct DescribeConfigsRequest {
        resources: Vec<DescribeConfigsResource> [1..],
        include_synonyms: bool [1..],
        include_documentation: bool [3..],
    }
}

kafka_struct! {
    /// An element of [`DescribeConfigsRequest::resources`].
    pub struct DescribeConfigsResource {
        resource_type: i8 [1..],
        resource_name: String [1..],
        configuration_keys: Option<Vec<String>> [1..] null 0,
    }
}

kafka_struct! {
    /// The DescribeConfigs response (API key 32).
    pub struct DescribeConfigsResponse {
        throttle_time_ms: i32 [1..],
        results: Vec<DescribeConfigsResult> [1..],
    }
}

kafka_struct! {
    /// An element of [`DescribeConfigsResponse::results`].
    pub struct DescribeConfigsResult {
        error_code: i16 [1..],
        error_message: Option<String> [1..] null 0,
        resource_type: i8 [1..],
        resource_name: String [1..],
        configs: Vec<DescribeConfigsResourceResult> [1..],
    }
}

kafka_struct! {
    /// An element of [`DescribeConfigsResult::configs`].
    pub struct DescribeConfigsResourceResult {
        name: String [1..],
        value: Option<String> [1..] null 0,
        read_only: bool [1..],
        config_source: i8 [1..] = -1,
        is_sensitive: bool [1..],
        synonyms: Vec<DescribeConfigsSynonym> [1..],
        config_type: i8 [3..],
        documentation: Option<String> [3..] null 0,
    }
}

kafka_struct! {
    /// An element of [`DescribeConfigsResourceResult::synonyms`].
    pub struct DescribeConfigsSynonym {
        name: String [1..],
        value: Option<String> [1..] null 0,
        source: i8 [1..],
    }
}
