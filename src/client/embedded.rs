//! The in-process side of the [`Transport`] seam: a [`BrokerHandle`] is a transport, so a
//! `Producer`, `Consumer` or `Admin` built on one talks to the broker in this process without
//! a socket or an encoding step in between.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use weir_storage::{Batch, CommittedOffset, Offset, TopicPartition};

use super::transport::{PublishOutcome, Transport};
use crate::broker::{
    Acks, BrokerError, BrokerHandle, FetchResult, GroupDescription, GroupState, JoinGroup,
    JoinResult, OffsetSpec, PublishAck, ResetTo, SyncResult, TopicDescription,
};

#[async_trait]
impl Transport for BrokerHandle {
    async fn publish_queued(
        &self,
        topic: &str,
        partition: i32,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<PublishOutcome, BrokerError> {
        Ok(self
            .publish_in_order(topic, Some(partition), batches, acks)
            .await)
    }

    async fn init_producer_id(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), BrokerError> {
        BrokerHandle::init_producer_id(self, None, producer_id, producer_epoch).await
    }

    async fn publish(
        &self,
        topic: &str,
        partition: Option<i32>,
        batches: Vec<Batch>,
        acks: Acks,
    ) -> Result<(i32, PublishAck), BrokerError> {
        BrokerHandle::publish(self, topic, partition, batches, acks).await
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        max_bytes: usize,
        min_bytes: usize,
        max_wait: Duration,
    ) -> Result<FetchResult, BrokerError> {
        BrokerHandle::fetch(self, topic, partition, from, max_bytes, min_bytes, max_wait).await
    }
    async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<Option<Offset>, BrokerError> {
        BrokerHandle::list_offset(self, topic, partition, spec).await
    }
    async fn partitions(&self, topic: &str, create: bool) -> Result<u32, BrokerError> {
        if let Some(n) = self.partition_count(topic) {
            return Ok(n);
        }
        if create && self.config().broker.auto_create_topics {
            match self.create_topic(topic, None, Vec::new()).await {
                Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.partition_count(topic)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))
    }
    async fn join_group(&self, group: &str, join: JoinGroup) -> Result<JoinResult, BrokerError> {
        BrokerHandle::join_group(self, group, join).await
    }
    async fn sync_group(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<SyncResult, BrokerError> {
        BrokerHandle::sync_group(self, group, member_id, generation, assignments).await
    }
    async fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), BrokerError> {
        BrokerHandle::heartbeat(self, group, member_id, generation).await
    }
    async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError> {
        let left = BrokerHandle::leave_group(self, group, vec![(member_id.to_string(), None)]);
        left.await?.into_iter().collect()
    }
    async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        offsets: Vec<(TopicPartition, CommittedOffset)>,
    ) -> Result<(), BrokerError> {
        BrokerHandle::commit_offsets(self, group, member_id, generation, offsets).await
    }
    async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError> {
        BrokerHandle::fetch_offsets(self, group, partitions).await
    }
    async fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        configs: Vec<(String, String)>,
    ) -> Result<(), BrokerError> {
        BrokerHandle::create_topic(self, name, partitions, configs)
            .await
            .map(|_| ())
    }
    async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        BrokerHandle::delete_topic(self, name).await
    }
    async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        BrokerHandle::create_partitions(self, name, total).await
    }
    async fn alter_topic_config(
        &self,
        name: &str,
        set: Vec<(String, String)>,
        reset: Vec<String>,
    ) -> Result<(), BrokerError> {
        BrokerHandle::change_topic_config(self, name, set, reset, false).await
    }
    async fn list_topics(&self) -> Result<Vec<String>, BrokerError> {
        Ok(BrokerHandle::list_topics(self))
    }
    async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        BrokerHandle::describe_topic(self, name).await
    }
    async fn list_groups(&self) -> Result<Vec<(String, GroupState)>, BrokerError> {
        BrokerHandle::list_groups(self).await
    }
    async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        BrokerHandle::describe_group(self, group).await
    }
    async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        BrokerHandle::delete_group(self, group).await
    }
    async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError> {
        BrokerHandle::reset_offsets(self, group, topic, to).await
    }
}
