//! The topic actor: owns a topic's config and its partition actors, and routes publishes that
//! name no partition (keyless batches) through the sticky partitioner.
//!
//! The hot path does not come here: [`super::BrokerHandle`] caches each topic's [`Route`] (the
//! partition addresses) and sends to the partition actor directly. The topic actor serves the
//! rarer operations: keyless routing, config changes fanned out to every partition.

use std::sync::Arc;

use actix::prelude::*;
use weir_storage::Batch;

use super::error::BrokerError;
use super::messages::{Publish, UpdateTopicConfig};
use super::partition::Partition;
use super::partitioner::Sticky;
use super::types::{Acks, PublishAck};
use crate::config::TopicConfig;

/// A topic's routing snapshot, shared with every [`super::BrokerHandle`]. Replaced whole when
/// the topic changes (partitions added, config altered), never mutated.
#[derive(Debug, Clone)]
pub struct Route {
    /// The topic name.
    pub name: String,
    /// A random id, fixed at creation (Kafka's topic id).
    pub id: u128,
    /// The topic's settings.
    pub config: TopicConfig,
    /// The partition actors, by partition number.
    pub partitions: Vec<Addr<Partition>>,
    /// The topic actor.
    pub topic: Addr<Topic>,
    /// Where keyless batches go now.
    pub sticky: Arc<Sticky>,
}

impl Route {
    /// The partition actor of `partition`.
    ///
    /// # Errors
    /// [`BrokerError::UnknownPartition`].
    pub fn partition(&self, partition: i32) -> Result<&Addr<Partition>, BrokerError> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.partitions.get(p))
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: self.name.clone(),
                partition,
            })
    }
}

/// One topic's actor.
pub struct Topic {
    name: String,
    config: TopicConfig,
    partitions: Vec<Addr<Partition>>,
    sticky: Arc<Sticky>,
}

impl Topic {
    /// A topic actor over started partition actors.
    pub fn new(
        name: String,
        config: TopicConfig,
        partitions: Vec<Addr<Partition>>,
        sticky: Arc<Sticky>,
    ) -> Self {
        Topic {
            name,
            config,
            partitions,
            sticky,
        }
    }
}

impl Actor for Topic {
    type Context = Context<Self>;
}

/// Publishes to whichever partition the sticky partitioner picks; answers with the partition.
#[derive(Debug, Message)]
#[rtype(result = "Result<(i32, PublishAck), BrokerError>")]
pub struct PublishKeyless {
    /// The batches.
    pub batches: Vec<Batch>,
    /// When to answer.
    pub acks: Acks,
}

impl Handler<PublishKeyless> for Topic {
    type Result = ResponseFuture<Result<(i32, PublishAck), BrokerError>>;

    fn handle(&mut self, msg: PublishKeyless, _: &mut Self::Context) -> Self::Result {
        let n = self.partitions.len() as u32;
        let p = self.sticky.next_batch(n);
        let addr = self.partitions.get(p as usize).cloned();
        let name = self.name.clone();
        Box::pin(async move {
            let addr = addr.ok_or(BrokerError::UnknownPartition {
                topic: name,
                partition: p,
            })?;
            let ack = addr
                .send(Publish {
                    batches: msg.batches,
                    acks: msg.acks,
                })
                .await??;
            Ok((p, ack))
        })
    }
}

/// Replaces the topic's config and partition list (after an alter or added partitions).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    /// The new settings.
    pub config: TopicConfig,
    /// All partition actors, old and new.
    pub partitions: Vec<Addr<Partition>>,
}

impl Handler<Reconfigure> for Topic {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) {
        if msg.config != self.config {
            for p in &msg.partitions {
                // Config changes are rare admin operations; a full mailbox only delays them.
                p.do_send(UpdateTopicConfig(msg.config.clone()));
            }
        }
        self.config = msg.config;
        self.partitions = msg.partitions;
    }
}

/// Stops the topic actor (its partitions are stopped by the registry).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopTopic;

impl Handler<StopTopic> for Topic {
    type Result = ();

    fn handle(&mut self, _: StopTopic, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
