//! The seam between the user API and a broker: everything [`super::Producer`],
//! [`super::Consumer`] and [`super::Admin`] need, as one async trait, with two sides: a
//! `BrokerHandle` in-process (`super::embedded`, with the `broker` feature) and
//! [`super::RemoteTransport`] over TCP.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use weir_storage::{Batch, CommittedOffset, Offset, TopicPartition};

use crate::broker::{
    Acks, BrokerError, FetchResult, GroupDescription, GroupState, JoinGroup, JoinResult,
    OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
};

#[cfg(all(doc, feature = "broker"))]
use crate::BrokerHandle;

/// The outcome of a publish already in its partition's queue.
pub type PublishOutcome =
    futures::future::BoxFuture<'static, Result<(i32, PublishAck), BrokerError>>;

/// What the user API needs from a broker.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Queues a publish to an explicit partition and returns its outcome: publishes queued by
    /// calls made one after the other are appended in that order, however their outcomes are
    /// awaited (the producer keeps several in flight). See [`BrokerHandle::publish_in_order`].
    ///
    /// # Errors
    /// The publish could not be queued (the connection is gone).
    async fn publish_queued(
        &self,
        topic: &str,
        partition: i32,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<PublishOutcome, BrokerError>;
    /// A producer id and epoch for idempotent publishing: a fresh id for `producer_id` -1,
    /// else the same id with the next epoch. See [`BrokerHandle::init_producer_id`].
    async fn init_producer_id(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError>;
    /// See [`BrokerHandle::publish`].
    async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<(i32, PublishAck), BrokerError>;
    /// See [`BrokerHandle::fetch`].
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<FetchResult, BrokerError>;
    /// See [`BrokerHandle::list_offset`].
    async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, BrokerError>;
    /// The partition count of `topic`, creating the topic with the broker's defaults when it
    /// is unknown, `create` is set and the broker allows auto-creation.
    async fn partitions(&self, topic: &str, create: bool) -> Result<u32, BrokerError>;
    /// See [`BrokerHandle::join_group`].
    async fn join_group(&self, group: &str, join: JoinGroup) -> Result<JoinResult, BrokerError>;
    /// See [`BrokerHandle::sync_group`].
    async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncResult, BrokerError>;
    /// See [`BrokerHandle::heartbeat`].
    async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::leave_group`].
    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::commit_offsets`].
    async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::fetch_offsets`].
    async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError>;
    /// See [`BrokerHandle::create_topic`].
    async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::delete_topic`].
    async fn delete_topic(&self, name: &str) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::create_partitions`].
    async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError>;
    /// Sets `set` and resets `reset` to the broker's defaults; see
    /// [`BrokerHandle::change_topic_config`].
    async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
    ) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::list_topics`].
    async fn list_topics(&self) -> Result<Vec<String>, BrokerError>;
    /// See [`BrokerHandle::describe_topic`].
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError>;
    /// See [`BrokerHandle::list_groups`].
    async fn list_groups(&self) -> Result<Vec<(String, GroupState)>, BrokerError>;
    /// See [`BrokerHandle::describe_group`].
    async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError>;
    /// See [`BrokerHandle::delete_group`].
    async fn delete_group(&self, group: &str) -> Result<(), BrokerError>;
    /// See [`BrokerHandle::reset_offsets`].
    async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError>;
}
