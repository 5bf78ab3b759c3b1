//! [`Admin`]: topics, groups and offsets, as Kafka's admin client offers them.

use std::sync::Arc;

use weir_storage::{CommittedOffset, Offset, TopicPartition};

use super::Transport;
use crate::broker::{BrokerError, GroupDescription, GroupState, ResetTo, TopicDescription};

/// Administration of topics and groups over any [`Transport`].
#[derive(Clone)]
pub struct Admin {
    transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin client over `transport` (a [`crate::BrokerHandle`] for an embedded broker).
    pub fn new(transport: impl Transport) -> Self {
        Admin {
            transport: Arc::new(transport),
        }
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// An invalid name or config, an existing topic.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> Result<(), BrokerError> {
        let configs = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.transport
            .create_topic(name, Some(partitions), configs)
            .await
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// An unknown topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.transport.delete_topic(name).await
    }

    /// Raises a topic's partition count.
    ///
    /// # Errors
    /// An unknown topic, a count that does not grow.
    pub async fn create_partitions(&self, name: &str, total: u32) -> Result<(), BrokerError> {
        self.transport.create_partitions(name, total).await
    }

    /// Changes topic settings.
    ///
    /// # Errors
    /// An unknown topic or key, an invalid value.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: &[(&str, &str)],
    ) -> Result<(), BrokerError> {
        let set = set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.transport
            .alter_topic_config(name, set, Vec::new())
            .await
    }

    /// Sets topic settings back to the broker's topic defaults (Kafka's `--delete-config`).
    ///
    /// # Errors
    /// An unknown topic or key.
    pub async fn reset_topic_config(&self, name: &str, keys: &[&str]) -> Result<(), BrokerError> {
        let reset = keys.iter().map(|k| k.to_string()).collect();
        self.transport
            .alter_topic_config(name, Vec::new(), reset)
            .await
    }

    /// Topic names, sorted.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn list_topics(&self) -> Result<Vec<String>, BrokerError> {
        self.transport.list_topics().await
    }

    /// A topic's config and per-partition offsets.
    ///
    /// # Errors
    /// An unknown topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, BrokerError> {
        self.transport.describe_topic(name).await
    }

    /// Groups with their state.
    ///
    /// # Errors
    /// Transport or storage failures.
    pub async fn list_groups(&self) -> Result<Vec<(String, GroupState)>, BrokerError> {
        self.transport.list_groups().await
    }

    /// A group's members, assignments and committed offsets.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        self.transport.describe_group(group).await
    }

    /// Committed offsets of a group.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn group_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, BrokerError> {
        self.transport.fetch_offsets(group, None).await
    }

    /// Deletes an empty group.
    ///
    /// # Errors
    /// A group with members.
    pub async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        self.transport.delete_group(group).await
    }

    /// Moves an empty group's offsets on `topic`.
    ///
    /// # Errors
    /// A group with members, an unknown topic.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<(TopicPartition, Offset)>, BrokerError> {
        self.transport.reset_offsets(group, topic, to).await
    }
}
