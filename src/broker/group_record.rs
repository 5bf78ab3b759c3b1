//! The record of a consumer group that storage keeps across restarts (Kafka's group metadata in
//! its offsets topic): generation, protocol, leader, and each member with its subscription and
//! assignment.
//!
//! ```text
//!  join phase completes, leader's assignment (Stable), group becomes Empty, a member removed
//!  during a rebalance, a static member replaced
//!      ──► ConsumerGroup::persist ──► GroupRecord::encode ──► Storage::put_group_state
//!  group actor starts ──► Storage::group_state ──► GroupRecord::decode ──► ConsumerGroup::restore
//!  broker starts ──► every stored group whose record has members is loaded
//! ```
//!
//! A restored group with members is Stable at its stored generation: its members' heartbeats,
//! syncs and commits go on as before the restart, without a rebalance, and a member that does
//! not come back is removed when its session timeout (counted from the restart) runs out, as
//! Kafka does when a coordinator loads a group. A group recorded in a rebalance rebalances
//! again when restored: its members are told to rejoin, and a member that had left before the
//! restart is not waited for (Kafka records a group only when a rebalance completes, so a member
//! that left during one is waited for until its session runs out). A member that joined during
//! the rebalance is not recorded: its next request finds it unknown and it joins again.
//!
//! A group of Kafka's consumer protocol (KIP-848) keeps its whole state in `consumer` (group and
//! assignment epochs, target assignment, each member with its epoch, subscription and
//! partitions, and for a classic member in it what its join said), written whenever a request
//! or a timeout changes it; restored, its members go on at their epochs, their sessions
//! counted from the load.
//!
//! The encoding is MessagePack with field names, so that later versions can add fields with
//! defaults; a record this build cannot read is reported and the group starts empty (its
//! offsets are stored apart and unaffected).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::consumer_protocol::ConsumerGroupState;

/// The record format this build writes and reads.
pub const VERSION: u8 = 1;

/// A group as stored. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// [`VERSION`].
    pub version: u8,
    /// The group's generation.
    pub generation: i32,
    /// A rebalance was under way (members left it, or it waited for the leader's assignment):
    /// a restored group starts it again.
    #[serde(default)]
    pub rebalancing: bool,
    /// The members' protocol type (`consumer`, `weir`, ...); `None` when Empty.
    pub protocol_type: Option<String>,
    /// The chosen assignment protocol; `None` when Empty.
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: Option<String>,
    /// When the group last became Empty (ms since the epoch): its offsets expire
    /// `[groups] offsets_retention_ms` later.
    #[serde(default)]
    pub empty_since_ms: Option<i64>,
    /// The members of the classic protocol, in member id order.
    pub members: Vec<MemberRecord>,
    /// A group of Kafka's consumer protocol (KIP-848): its epochs, members and assignments
    /// (its members are not in `members`, which are the classic protocol's).
    #[serde(default)]
    pub consumer: Option<ConsumerGroupState>,
}

/// A member as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Member id.
    pub id: String,
    /// A static member's `group.instance.id`.
    pub instance_id: Option<String>,
    /// The client's id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Session timeout, ms.
    pub session_timeout_ms: u64,
    /// Rebalance timeout, ms.
    pub rebalance_timeout_ms: u64,
    /// Its protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Its assignment in the recorded generation.
    pub assignment: Bytes,
}

impl GroupRecord {
    /// The stored bytes.
    ///
    /// # Errors
    /// Only if MessagePack encoding fails (it does not for these types).
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(self).map_err(|e| e.to_string())
    }

    /// Reads stored bytes back, checking that they describe a group this build can restore.
    ///
    /// # Errors
    /// Undecodable bytes, another format version, or an inconsistent record (members without a
    /// protocol, a leader that is not a member, duplicate or empty member ids).
    pub fn decode(bytes: &[u8]) -> Result<GroupRecord, String> {
        let r: GroupRecord = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.version != VERSION {
            return Err(format!(
                "record version {} (this build reads {VERSION})",
                r.version
            ));
        }
        if r.generation < 0 {
            return Err(format!("negative generation {}", r.generation));
        }
        // (A rebalance into an empty group has not chosen its protocol yet.)
        if !r.members.is_empty()
            && (r.protocol_type.is_none() || (r.protocol.is_none() && !r.rebalancing))
        {
            return Err("members without a protocol".into());
        }
        if r.members.is_empty() && r.rebalancing {
            return Err("a rebalance without members".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in &r.members {
            if m.id.is_empty() || !ids.insert(m.id.as_str()) {
                return Err(format!("empty or duplicate member id {:?}", m.id));
            }
        }
        if let Some(l) = &r.leader {
            if !ids.contains(l.as_str()) {
                return Err(format!("leader {l:?} is not a member"));
            }
        }
        if let Some(c) = &r.consumer {
            if !r.members.is_empty() && !c.members.is_empty() {
                return Err("members of both group protocols".into());
            }
            if c.members.keys().any(String::is_empty) {
                return Err("an empty member id".into());
            }
            if c.members
                .values()
                .any(|m| m.epoch < -2 || m.epoch > c.group_epoch)
            {
                return Err("a member epoch beyond the group epoch".into());
            }
            if c.assignment_epoch > c.group_epoch
                || c.target.keys().any(|id| !c.members.contains_key(id))
            {
                return Err("a target assignment of members the group does not have".into());
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GroupRecord {
        GroupRecord {
            version: VERSION,
            generation: 7,
            rebalancing: false,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            leader: Some("a-1".into()),
            empty_since_ms: None,
            members: vec![
                MemberRecord {
                    id: "a-1".into(),
                    instance_id: None,
                    client_id: "a".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 30_000,
                    protocols: vec![("range".into(), Bytes::from_static(&[0, 1, 2]))],
                    assignment: Bytes::from_static(&[9, 9]),
                },
                MemberRecord {
                    id: "b-2".into(),
                    instance_id: Some("static-b".into()),
                    client_id: "b".into(),
                    client_host: "/127.0.0.1".into(),
                    session_timeout_ms: 45_000,
                    rebalance_timeout_ms: 300_000,
                    protocols: vec![
                        ("cooperative-sticky".into(), Bytes::new()),
                        ("range".into(), Bytes::from_static(b"md")),
                    ],
                    assignment: Bytes::new(),
                },
            ],
            consumer: None,
        }
    }

    /// A group of the consumer protocol: one stable member, one giving up a partition.
    fn consumer_sample() -> GroupRecord {
        use crate::broker::consumer_protocol::{
            Assignment, ClassicMeta, ConsumerMember, MemberState,
        };
        let parts = |t: &str, ps: &[i32]| -> Assignment {
            [(t.to_string(), ps.iter().copied().collect())].into()
        };
        let member = |epoch, assigned, revoking, state| ConsumerMember {
            instance_id: None,
            rack_id: None,
            client_id: "rdkafka".into(),
            client_host: "/127.0.0.1".into(),
            subscribed_names: vec!["orders".into()],
            subscribed_regex: None,
            pattern: None,
            server_assignor: None,
            rebalance_timeout_ms: 300_000,
            epoch,
            previous_epoch: epoch - 1,
            state,
            assigned,
            revoking,
            classic: None,
        };
        let c = ConsumerGroupState {
            group_epoch: 4,
            assignment_epoch: 4,
            assignor: "uniform".into(),
            members: [
                (
                    "m1".to_string(),
                    member(
                        4,
                        parts("orders", &[0, 1]),
                        Assignment::new(),
                        MemberState::Stable,
                    ),
                ),
                (
                    "m2".to_string(),
                    ConsumerMember {
                        // A classic member (KIP-848's migration path).
                        classic: Some(ClassicMeta {
                            session_timeout_ms: 10_000,
                            protocols: vec![("range".into(), Bytes::from_static(b"\0\x01"))],
                            version: 3,
                        }),
                        ..member(
                            3,
                            parts("orders", &[2]),
                            parts("orders", &[3]),
                            MemberState::UnrevokedPartitions,
                        )
                    },
                ),
            ]
            .into(),
            target: [
                ("m1".to_string(), parts("orders", &[0, 1, 3])),
                ("m2".to_string(), parts("orders", &[2])),
            ]
            .into(),
            subscribed_topics: [("orders".to_string(), 4)].into(),
        };
        GroupRecord {
            version: VERSION,
            generation: 0,
            rebalancing: false,
            protocol_type: None,
            protocol: None,
            leader: None,
            empty_since_ms: None,
            members: Vec::new(),
            consumer: Some(c),
        }
    }

    #[test]
    fn consumer_protocol_groups_round_trip_and_bad_ones_are_refused() {
        let r = consumer_sample();
        assert_eq!(GroupRecord::decode(&r.encode().unwrap()), Ok(r.clone()));
        let check = |f: fn(&mut GroupRecord), why: &str| {
            let mut r = consumer_sample();
            f(&mut r);
            assert!(GroupRecord::decode(&r.encode().unwrap()).is_err(), "{why}");
        };
        check(
            |r| r.members = sample().members,
            "members of both protocols",
        );
        check(
            |r| {
                let c = r.consumer.as_mut().unwrap();
                let m = c.members.remove("m1").unwrap();
                c.members.insert(String::new(), m);
            },
            "an empty member id",
        );
        check(
            |r| {
                r.consumer
                    .as_mut()
                    .unwrap()
                    .members
                    .get_mut("m1")
                    .unwrap()
                    .epoch = 5
            },
            "a member epoch beyond the group epoch",
        );
        check(
            |r| {
                r.consumer.as_mut().unwrap().members.remove("m2");
            },
            "a target for a member that is not there",
        );
        let bytes = r.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(GroupRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(GroupRecord::decode(&r.encode().unwrap()), Ok(r));
        let empty = GroupRecord {
            version: VERSION,
            generation: 3,
            rebalancing: false,
            protocol_type: None,
            protocol: None,
            leader: None,
            empty_since_ms: Some(1_700_000_000_000),
            members: Vec::new(),
            consumer: None,
        };
        assert_eq!(GroupRecord::decode(&empty.encode().unwrap()), Ok(empty));
    }

    #[test]
    fn refuses_what_it_cannot_restore() {
        let check = |f: fn(&mut GroupRecord), why: &str| {
            let mut r = sample();
            f(&mut r);
            assert!(GroupRecord::decode(&r.encode().unwrap()).is_err(), "{why}");
        };
        check(|r| r.version = VERSION + 1, "another version");
        check(|r| r.generation = -1, "negative generation");
        check(|r| r.protocol = None, "members without a protocol");
        check(
            |r| {
                r.members.clear();
                r.leader = None;
                r.rebalancing = true;
            },
            "a rebalance without members",
        );
        check(
            |r| r.leader = Some("nobody".into()),
            "a leader that is not a member",
        );
        check(|r| r.members[1].id = "a-1".into(), "duplicate member ids");
        check(|r| r.members[0].id = String::new(), "an empty member id");
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(GroupRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(GroupRecord::decode(&[0xc1]).is_err());
    }
}
