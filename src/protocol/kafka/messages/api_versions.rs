//! ApiVersions (API key 18): request and response, versions 0–4 decoded, flexible from version 3.
//!
//! Field layouts follow Apache Kafka's message definitions (`ApiVersionsRequest.json`,
//! `ApiVersionsResponse.json`); each `kafka_struct!` below is one struct of them.

use crate::protocol::kafka::macros::kafka_struct;

kafka_struct! {
    /// The ApiVersions request (API key 18).
    pub struct ApiVersionsRequest {
        client_software_name: String [3..],
        client_software_version: String [3..],
    }
}

kafka_struct! {
    /// The ApiVersions response (API key 18).
    pub struct ApiVersionsResponse {
        error_code: i16 [0..],
        api_keys: Vec<ApiVersion> [0..],
        throttle_time_ms: i32 [1..],
        supported_features: Vec<SupportedFeatureKey> [3..] tag 0,
        finalized_features_epoch: i64 [3..] tag 1 = -1,
        finalized_features: Vec<FinalizedFeatureKey> [3..] tag 2,
        zk_migration_ready: bool [3..] tag 3,
    }
}

kafka_struct! {
    /// An element of [`ApiVersionsResponse::api_keys`].
    pub struct ApiVersion {
        api_key: i16 [0..],
        min_version: i16 [0..],
        max_version: i16 [0..],
    }
}

kafka_struct! {
    /// An element of [`ApiVersionsResponse::supported_features`].
    pub struct SupportedFeatureKey {
        name: String [3..],
        min_version: i16 [3..],
        max_version: i16 [3..],
    }
}

kafka_struct! {
    /// An element of [`ApiVersionsResponse::finalized_features`].
    pub struct FinalizedFeatureKey {
        name: String [3..],
        max_version_level: i16 [3..],
        min_version_level: i16 [3..],
    }
}
