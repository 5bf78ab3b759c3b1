//! The topic registry actor: creates, recovers, alters and deletes topics.
//!
//! It owns the map of topic names to [`Route`]s, which it shares (read-only for everyone else)
//! with every [`super::BrokerHandle`], so publishes and fetches go straight to partition actors
//! without a hop through here. Topic metadata is persisted through [`Storage`] as
//! `topic/<name>` → MessagePack of [`TopicMeta`] before a topic becomes visible, and removed
//! after its logs are deleted, so a crash in between leaves either the whole topic or
//! recoverable leftovers.
//!
//! Admin messages use `AtomicResponse`: they are rare, must not interleave (two creates of one
//! name), and nothing on the hot path waits behind them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use weir_storage::{Storage, TopicPartition};

use super::error::BrokerError;
use super::messages::StopPartition;
use super::partition::{Partition, PartitionLimits};
use super::partitioner::Sticky;
use super::topic::{Reconfigure, Route, StopTopic, Topic};
use crate::config::TopicConfig;

/// The persisted record of a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The name.
    pub name: String,
    /// A random id (Kafka's topic id).
    pub id: u128,
    /// The partition count.
    pub partitions: u32,
    /// The settings.
    pub config: TopicConfig,
}

/// Routes by topic name, shared with the handles.
pub type Routes = Arc<RwLock<HashMap<String, Arc<Route>>>>;

const META_PREFIX: &str = "topic/";

/// Checks a topic name against Kafka's rules: `[a-zA-Z0-9._-]{1,249}`, not `.` or `..`.
///
/// # Errors
/// [`BrokerError::InvalidTopicName`] naming the rule.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let bad = |reason: &str| {
        Err(BrokerError::InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 249 {
        return bad("it is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The registry actor.
pub struct TopicRegistry {
    storage: Arc<dyn Storage>,
    defaults: TopicConfig,
    limits: PartitionLimits,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    routes: Routes,
}

impl TopicRegistry {
    /// A registry placing partition actors round-robin on `arbiters`.
    pub fn new(
        storage: Arc<dyn Storage>,
        defaults: TopicConfig,
        limits: PartitionLimits,
        arbiters: Vec<ArbiterHandle>,
        routes: Routes,
    ) -> Self {
        TopicRegistry {
            storage,
            defaults,
            limits,
            arbiters,
            next_arbiter: 0,
            routes,
        }
    }

    fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn set_route(&self, route: Option<Route>, name: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match route {
            Some(r) => routes.insert(name.to_string(), Arc::new(r)),
            None => routes.remove(name),
        };
    }

    /// Opens the logs of `range` and starts their partition actors.
    fn start_partitions(
        &mut self,
        name: &str,
        range: std::ops::Range<u32>,
        config: &TopicConfig,
    ) -> impl std::future::Future<Output = Result<Vec<Addr<Partition>>, BrokerError>> + 'static
    {
        let storage = self.storage.clone();
        let limits = self.limits.clone();
        let config = config.clone();
        let name = name.to_string();
        let homes: Vec<ArbiterHandle> = range
            .clone()
            .map(|_| {
                let a = self.arbiters[self.next_arbiter % self.arbiters.len()].clone();
                self.next_arbiter += 1;
                a
            })
            .collect();
        async move {
            let mut addrs = Vec::new();
            for (p, home) in range.zip(homes) {
                let tp = TopicPartition::new(name.clone(), p as i32);
                let log = storage.open_log(&tp, &config.log_config()).await?;
                let config = config.clone();
                let limits = limits.clone();
                addrs.push(Partition::start_in_arbiter(&home, move |_| {
                    Partition::new(tp, log, config, limits)
                }));
            }
            Ok(addrs)
        }
    }
}

impl Actor for TopicRegistry {
    type Context = Context<Self>;
}

/// Creates a topic.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Route>, BrokerError>")]
pub struct CreateTopic {
    /// The name.
    pub name: String,
    /// Partitions; the default when `None`.
    pub partitions: Option<u32>,
    /// Overrides of the default config, as `key=value` (Kafka or Weir names).
    pub configs: Vec<(String, String)>,
}

impl Handler<CreateTopic> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<Arc<Route>, BrokerError>>;

    fn handle(&mut self, msg: CreateTopic, _: &mut Self::Context) -> Self::Result {
        let prepared = (|| {
            validate_topic_name(&msg.name)?;
            if self.route(&msg.name).is_some() {
                return Err(BrokerError::TopicExists(msg.name.clone()));
            }
            let mut config = self.defaults.clone();
            if let Some(p) = msg.partitions {
                config.partitions = p;
            }
            for (k, v) in &msg.configs {
                config
                    .set(k, v)
                    .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            }
            config
                .validate()
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            Ok(config)
        })();
        let config = match prepared {
            Ok(c) => c,
            Err(e) => return AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self))),
        };
        let meta = TopicMeta {
            name: msg.name.clone(),
            id: random_id(),
            partitions: config.partitions,
            config: config.clone(),
        };
        let storage = self.storage.clone();
        let start = self.start_partitions(&msg.name, 0..config.partitions, &config);
        AtomicResponse::new(Box::pin(
            async move {
                persist(storage.as_ref(), &meta).await?;
                let partitions = start.await?;
                Ok((meta, partitions))
            }
            .into_actor(self)
            .map(
                |r: Result<(TopicMeta, Vec<Addr<Partition>>), BrokerError>, act, _| {
                    let (meta, partitions) = r?;
                    Ok(act.install(meta, partitions))
                },
            ),
        ))
    }
}

impl TopicRegistry {
    fn install(&mut self, meta: TopicMeta, partitions: Vec<Addr<Partition>>) -> Arc<Route> {
        let sticky = Arc::new(Sticky::new(random_id() as u32));
        let topic = Topic::new(
            meta.name.clone(),
            meta.config.clone(),
            partitions.clone(),
            sticky.clone(),
        )
        .start();
        let route = Route {
            name: meta.name.clone(),
            id: meta.id,
            config: meta.config,
            partitions,
            topic,
            sticky,
        };
        self.set_route(Some(route), &meta.name);
        self.route(&meta.name).expect("just installed")
    }
}

/// Loads every persisted topic and starts its actors (broker start).
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, BrokerError>")]
pub struct RecoverTopics;

impl Handler<RecoverTopics> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<usize, BrokerError>>;

    fn handle(&mut self, _: RecoverTopics, _: &mut Self::Context) -> Self::Result {
        let storage = self.storage.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let mut metas = Vec::new();
                for (key, value) in storage.list_metadata().await? {
                    if let Some(name) = key.strip_prefix(META_PREFIX) {
                        let meta: TopicMeta =
                            rmp_serde::from_slice(&value).map_err(|e| BrokerError::Storage {
                                message: format!("topic metadata of {name:?} is unreadable: {e}"),
                            })?;
                        metas.push(meta);
                    }
                }
                Ok(metas)
            }
            .into_actor(self)
            .then(|r: Result<Vec<TopicMeta>, BrokerError>, act, _| {
                let starts: Result<Vec<_>, BrokerError> = r.map(|metas| {
                    metas
                        .into_iter()
                        .map(|m| {
                            let start = act.start_partitions(&m.name, 0..m.partitions, &m.config);
                            (m, start)
                        })
                        .collect()
                });
                async move {
                    let mut out = Vec::new();
                    for (m, start) in starts? {
                        out.push((m, start.await?));
                    }
                    Ok(out)
                }
                .into_actor(act)
            })
            .map(|r: Result<Vec<_>, BrokerError>, act, _| {
                let topics = r?;
                let n = topics.len();
                for (meta, partitions) in topics {
                    act.install(meta, partitions);
                }
                Ok(n)
            }),
        ))
    }
}

/// Deletes a topic: its actors, logs, metadata and committed offsets.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct DeleteTopic {
    /// The name.
    pub name: String,
}

impl Handler<DeleteTopic> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, msg: DeleteTopic, _: &mut Self::Context) -> Self::Result {
        let Some(route) = self.route(&msg.name) else {
            let e = BrokerError::UnknownTopic(msg.name);
            return AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self)));
        };
        // Invisible at once: new publishes and fetches get UnknownTopic.
        self.set_route(None, &msg.name);
        let storage = self.storage.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let mut tps = Vec::new();
                for (p, addr) in route.partitions.iter().enumerate() {
                    // A partition that already stopped is fine; its log is closed.
                    let _ = addr.send(StopPartition).await;
                    tps.push(TopicPartition::new(route.name.clone(), p as i32));
                }
                route.topic.do_send(StopTopic);
                for tp in &tps {
                    storage.delete_log(tp).await?;
                }
                for group in storage.list_groups().await? {
                    storage.delete_offsets(&group, &tps).await?;
                }
                storage
                    .delete_metadata(&format!("{META_PREFIX}{}", route.name))
                    .await?;
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

/// Raises a topic's partition count.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Route>, BrokerError>")]
pub struct CreatePartitions {
    /// The topic.
    pub name: String,
    /// The new total.
    pub total: u32,
}

/// Changes a topic's config.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Route>, BrokerError>")]
pub struct AlterTopicConfig {
    /// The topic.
    pub name: String,
    /// `key=value` settings to change.
    pub set: Vec<(String, String)>,
    /// Settings to set back to the broker's topic defaults.
    pub reset: Vec<String>,
    /// Check the change, apply nothing.
    pub validate_only: bool,
}

impl TopicRegistry {
    /// Persists `meta` and installs the route with `partitions`.
    fn persist_and_reroute(
        &mut self,
        meta: TopicMeta,
        extra: Option<std::ops::Range<u32>>,
        existing: Vec<Addr<Partition>>,
    ) -> AtomicResponse<Self, Result<Arc<Route>, BrokerError>> {
        let storage = self.storage.clone();
        let start = extra.map(|r| self.start_partitions(&meta.name, r, &meta.config));
        AtomicResponse::new(Box::pin(
            async move {
                persist(storage.as_ref(), &meta).await?;
                let mut partitions = existing;
                if let Some(start) = start {
                    partitions.extend(start.await?);
                }
                Ok((meta, partitions))
            }
            .into_actor(self)
            .map(
                |r: Result<(TopicMeta, Vec<Addr<Partition>>), BrokerError>, act, _| {
                    let (meta, partitions) = r?;
                    let old = act
                        .route(&meta.name)
                        .ok_or_else(|| BrokerError::UnknownTopic(meta.name.clone()))?;
                    old.topic.do_send(Reconfigure {
                        config: meta.config.clone(),
                        partitions: partitions.clone(),
                    });
                    let route = Route {
                        name: meta.name.clone(),
                        id: meta.id,
                        config: meta.config,
                        partitions,
                        topic: old.topic.clone(),
                        sticky: old.sticky.clone(),
                    };
                    act.set_route(Some(route), &meta.name);
                    Ok(act.route(&meta.name).expect("just installed"))
                },
            ),
        ))
    }

    fn meta_of(route: &Route) -> TopicMeta {
        TopicMeta {
            name: route.name.clone(),
            id: route.id,
            partitions: route.partitions.len() as u32,
            config: route.config.clone(),
        }
    }
}

impl Handler<CreatePartitions> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<Arc<Route>, BrokerError>>;

    fn handle(&mut self, msg: CreatePartitions, _: &mut Self::Context) -> Self::Result {
        let checked = match self.route(&msg.name) {
            None => Err(BrokerError::UnknownTopic(msg.name.clone())),
            Some(r) if msg.total as usize <= r.partitions.len() => {
                Err(BrokerError::InvalidPartitions(format!(
                    "topic {:?} has {} partitions; the count can only grow",
                    msg.name,
                    r.partitions.len()
                )))
            }
            Some(_) if msg.total > 100_000 => Err(BrokerError::InvalidPartitions(format!(
                "{} partitions is more than 100000",
                msg.total
            ))),
            Some(r) => Ok(r),
        };
        let route = match checked {
            Ok(r) => r,
            Err(e) => return AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self))),
        };
        let mut meta = Self::meta_of(&route);
        let old = meta.partitions;
        meta.partitions = msg.total;
        meta.config.partitions = msg.total;
        self.persist_and_reroute(meta, Some(old..msg.total), route.partitions.clone())
    }
}

impl Handler<AlterTopicConfig> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<Arc<Route>, BrokerError>>;

    fn handle(&mut self, msg: AlterTopicConfig, _: &mut Self::Context) -> Self::Result {
        let checked = (|| {
            let route = self
                .route(&msg.name)
                .ok_or_else(|| BrokerError::UnknownTopic(msg.name.clone()))?;
            let mut meta = Self::meta_of(&route);
            for (k, v) in &msg.set {
                if k == "partitions" {
                    return Err(BrokerError::InvalidConfig(
                        "change the partition count with create-partitions".into(),
                    ));
                }
                meta.config
                    .set(k, v)
                    .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            }
            for k in &msg.reset {
                meta.config
                    .reset(k, &self.defaults)
                    .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            }
            meta.config
                .validate()
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            Ok((meta, route))
        })();
        match checked {
            Ok((_, route)) if msg.validate_only => {
                AtomicResponse::new(Box::pin(async move { Ok(route) }.into_actor(self)))
            }
            Ok((meta, route)) => self.persist_and_reroute(meta, None, route.partitions.clone()),
            Err(e) => AtomicResponse::new(Box::pin(async move { Err(e) }.into_actor(self))),
        }
    }
}

/// Stops every partition (draining and closing logs) and the registry itself.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct ShutdownRegistry;

impl Handler<ShutdownRegistry> for TopicRegistry {
    type Result = AtomicResponse<Self, Result<(), BrokerError>>;

    fn handle(&mut self, _: ShutdownRegistry, _: &mut Self::Context) -> Self::Result {
        let routes: Vec<Arc<Route>> = {
            let mut map = self.routes.write().unwrap_or_else(|e| e.into_inner());
            map.drain().map(|(_, r)| r).collect()
        };
        let storage = self.storage.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let mut first_error = None;
                for route in routes {
                    for addr in &route.partitions {
                        if let Ok(Err(e)) = addr.send(StopPartition).await {
                            first_error.get_or_insert(e);
                        }
                    }
                    route.topic.do_send(StopTopic);
                }
                if let Err(e) = storage.close().await {
                    first_error.get_or_insert(e.into());
                }
                first_error.map_or(Ok(()), Err)
            }
            .into_actor(self),
        ))
    }
}

/// Writes a topic's record to the metadata store.
async fn persist(storage: &dyn Storage, meta: &TopicMeta) -> Result<(), BrokerError> {
    let bytes =
        rmp_serde::to_vec_named(meta).map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
    storage
        .put_metadata(&format!("{META_PREFIX}{}", meta.name), &bytes)
        .await?;
    Ok(())
}

fn random_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    // Two independently seeded SipHashes of the clock: unique enough for ids, no dependency.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = 0u128;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        out = (out << 64) | u128::from(h.finish());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            validate_topic_name(ok).expect(ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "with space",
            "slash/y",
            "ünï",
            &"x".repeat(250),
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
