//! Consumer groups through the embedded API: assignment without overlap, hand-over after a
//! commit, session expiry, stale generations, and resuming after a broker restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use weir::broker::{BrokerError, GroupState, MemberRef, ResetTo};
use weir::client::{AutoOffsetReset, ConsumerRecord};
use weir::config::Config;
use weir::{
    Acks, Admin, Backend, Broker, BrokerHandle, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use weir_storage::TopicPartition;

fn config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.backend = backend;
    c.data_dir = dir.to_path_buf();
    c.broker.arbiters = 2;
    c.groups.initial_rebalance_delay_ms = 0;
    c.groups.min_session_timeout_ms = 200;
    c
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some(group.to_string()),
        client_id: "test".into(),
        auto_commit_interval: None,
        auto_offset_reset: AutoOffsetReset::Earliest,
        session_timeout: Duration::from_millis(1500),
        rebalance_timeout: Duration::from_millis(3000),
        heartbeat_interval: Duration::from_millis(100),
        strategies: vec!["range".into()],
        fetch_max_bytes: 1 << 20,
        fetch_max_wait: Duration::from_millis(500),
    }
}

async fn produce(h: &BrokerHandle, topic: &str, n: usize, tag: &str) {
    let producer = Producer::new(
        h.clone(),
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::from_millis(1),
            ..ProducerConfig::default()
        },
    );
    let mut futures = Vec::new();
    for i in 0..n {
        let record = ProducerRecord::new(topic, format!("{tag}-{i}")).key(format!("k{i}"));
        futures.push(producer.send(record).await);
    }
    for f in futures {
        f.await.expect("delivered");
    }
}

fn value(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.clone().expect("value").to_vec()).expect("utf8")
}

/// Polls until `want` records arrived or 20 s passed.
async fn drain(c: &mut Consumer, want: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(200)).await.expect("poll"));
    }
    out
}

/// Polls every consumer, each in a loop of its own (as each would run in its own task: a join
/// blocks until every member has rejoined), until all of them hold the group's current
/// generation in a stable group, then checks that together they hold `total` partitions.
async fn until_assigned(
    h: &BrokerHandle,
    group: &str,
    consumers: &mut [&mut Consumer],
    total: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let n = consumers.len();
    let settled = std::sync::Arc::new(std::sync::Mutex::new(vec![false; n]));
    let loops = consumers.iter_mut().enumerate().map(|(i, c)| {
        let settled = settled.clone();
        async move {
            loop {
                c.poll(Duration::from_millis(50)).await.expect("poll");
                let d = h.describe_group(group).await.expect("describe");
                let current = d.state == GroupState::Stable
                    && d.members.len() == n
                    && c.member().map(|m| m.1) == Some(d.generation);
                let mut s = settled.lock().expect("lock");
                s[i] = current;
                if s.iter().all(|x| *x) {
                    return;
                }
                drop(s);
                assert!(Instant::now() < deadline, "group did not settle");
            }
        }
    });
    futures::future::join_all(loops).await;
    let assigned: usize = consumers.iter().map(|c| c.assignment().len()).sum();
    assert_eq!(assigned, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_and_hand_over_after_a_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Broker::start(config(Backend::Memory, dir.path()))
        .await
        .expect("start");
    let admin = Admin::new(h.clone());
    admin.create_topic("jobs", 4, &[]).await.expect("create");

    let mut c1 = Consumer::new(h.clone(), consumer_config("workers"));
    let mut c2 = Consumer::new(h.clone(), consumer_config("workers"));
    c1.subscribe(&["jobs"]).expect("subscribe");
    c2.subscribe(&["jobs"]).expect("subscribe");
    until_assigned(&h, "workers", &mut [&mut c1, &mut c2], 4).await;
    let a1: BTreeSet<TopicPartition> = c1.assignment().into_iter().collect();
    let a2: BTreeSet<TopicPartition> = c2.assignment().into_iter().collect();
    assert!(a1.is_disjoint(&a2), "{a1:?} / {a2:?}");
    assert_eq!(a1.len() + a2.len(), 4);
    assert!(!a1.is_empty() && !a2.is_empty());
    // Records produced once the group is stable are each consumed exactly once.
    produce(&h, "jobs", 400, "a").await;

    // Each consumes its share; together they see every record exactly once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let n1 = a1.iter().map(|tp| tp.partition).collect::<Vec<_>>();
    let (r1, r2) = tokio::join!(drain(&mut c1, 1), drain(&mut c2, 1));
    let mut all = r1.clone();
    all.extend(r2);
    let rest = {
        let mut more = Vec::new();
        for _ in 0..20 {
            let (x, y) = tokio::join!(
                c1.poll(Duration::from_millis(50)),
                c2.poll(Duration::from_millis(50))
            );
            more.extend(x.expect("poll"));
            more.extend(y.expect("poll"));
        }
        more
    };
    all.extend(rest);
    for r in &all {
        *seen.entry(value(r)).or_default() += 1;
    }
    assert_eq!(seen.len(), 400);
    assert!(seen.values().all(|&n| n == 1));
    assert!(r1.iter().all(|r| n1.contains(&r.partition)));

    // c1 commits and leaves; c2 takes over c1's partitions exactly after the commit.
    c1.commit().await.expect("commit");
    let committed: BTreeMap<TopicPartition, i64> = admin
        .group_offsets("workers")
        .await
        .expect("offsets")
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect();
    c1.close().await.expect("close");
    produce(&h, "jobs", 200, "b").await;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while after.len() < 200 && Instant::now() < deadline {
        after.extend(c2.poll(Duration::from_millis(100)).await.expect("poll"));
    }
    assert_eq!(c2.assignment().len(), 4);
    let values: BTreeSet<String> = after.iter().map(value).collect();
    assert_eq!(values.len(), after.len(), "nothing twice");
    assert!(
        values.iter().all(|v| v.starts_with("b-")),
        "nothing consumed before the commit comes back"
    );
    for r in after
        .iter()
        .filter(|r| a1.contains(&TopicPartition::new("jobs", r.partition)))
    {
        assert!(r.offset >= committed[&TopicPartition::new("jobs", r.partition)]);
    }
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_is_expired_and_stale_commits_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Broker::start(config(Backend::Memory, dir.path()))
        .await
        .expect("start");
    h.create_topic("t", Some(2), vec![]).await.expect("create");
    let mut c1 = Consumer::new(h.clone(), consumer_config("g"));
    let mut c2 = Consumer::new(h.clone(), consumer_config("g"));
    c1.subscribe(&["t"]).expect("subscribe");
    c2.subscribe(&["t"]).expect("subscribe");
    until_assigned(&h, "g", &mut [&mut c1, &mut c2], 2).await;
    let (old_member, old_generation) = c1.member().expect("member");
    // c1 goes silent: dropping it stops its heartbeat without leaving.
    drop(c1);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(20);
    while c2.assignment().len() < 2 {
        c2.poll(Duration::from_millis(100)).await.expect("poll");
        assert!(Instant::now() < deadline, "silent member never expired");
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "expired too early: {:?}",
        t0.elapsed()
    );
    let d = h.describe_group("g").await.expect("describe");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.state, GroupState::Stable);
    assert!(d.generation > old_generation);
    // A commit from the old generation (and the expired member) is refused.
    let offset = committed(1);
    let (m2, g2) = c2.member().expect("member");
    let stale = h
        .commit_offsets(
            "g",
            &m2,
            old_generation,
            vec![(TopicPartition::new("t", 0), offset.clone())],
        )
        .await;
    assert!(
        matches!(stale, Err(BrokerError::IllegalGeneration { .. })),
        "{stale:?}"
    );
    let gone = h
        .commit_offsets(
            "g",
            &old_member,
            g2,
            vec![(TopicPartition::new("t", 0), offset.clone())],
        )
        .await;
    assert!(
        matches!(gone, Err(BrokerError::UnknownMember(_))),
        "{gone:?}"
    );
    h.commit_offsets("g", &m2, g2, vec![(TopicPartition::new("t", 0), offset)])
        .await
        .expect("current generation commits");
    // Resetting offsets needs an empty group.
    assert!(matches!(
        h.reset_offsets("g", "t", ResetTo::Earliest).await,
        Err(BrokerError::GroupNotEmpty(_))
    ));
    c2.close().await.expect("close");
    let reset = h
        .reset_offsets("g", "t", ResetTo::Latest)
        .await
        .expect("reset");
    assert_eq!(reset.len(), 2);
    let groups = h.list_groups().await.expect("groups");
    assert_eq!(groups, vec![("g".to_string(), GroupState::Empty)]);
    h.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_after_its_commit_across_a_restart() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Broker::start(config(backend, dir.path()))
            .await
            .expect("start");
        h.create_topic("log", Some(2), vec![("retention.ms".into(), "-1".into())])
            .await
            .expect("create");
        produce(&h, "log", 100, "x").await;
        let mut c = Consumer::new(h.clone(), consumer_config("resume"));
        c.subscribe(&["log"]).expect("subscribe");
        let first = drain(&mut c, 100).await;
        assert_eq!(first.len(), 100, "{backend:?}");
        c.commit().await.expect("commit");
        c.close().await.expect("close");
        produce(&h, "log", 50, "y").await;
        h.shutdown().await.expect("shutdown");

        let h = Broker::start(config(backend, dir.path()))
            .await
            .expect("restart");
        let mut c = Consumer::new(h.clone(), consumer_config("resume"));
        c.subscribe(&["log"]).expect("subscribe");
        let second = drain(&mut c, 50).await;
        let extra = c.poll(Duration::from_millis(300)).await.expect("poll");
        assert!(
            extra.is_empty(),
            "{backend:?}: read past the new records: {extra:?}"
        );
        let values: BTreeSet<String> = second.iter().map(value).collect();
        assert_eq!(values.len(), 50, "{backend:?}");
        assert!(
            values.iter().all(|v| v.starts_with("y-")),
            "{backend:?}: resumed exactly after the commit"
        );
        c.close().await.expect("close");
        h.shutdown().await.expect("shutdown");
    }
}

fn kafka_join(
    member_id: &str,
    protocols: &[(&str, &[u8])],
    require_id: bool,
) -> weir::broker::JoinGroup {
    weir::broker::JoinGroup {
        member_id: member_id.to_string(),
        instance_id: None,
        client_id: "rdkafka".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(5),
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(n, m)| (n.to_string(), bytes::Bytes::copy_from_slice(m)))
            .collect(),
        require_known_member_id: require_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_classic_protocol_passes_opaque_assignments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Broker::start(config(Backend::Memory, dir.path()))
        .await
        .expect("start");
    // JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id.
    let first = h
        .join_group(
            "kg",
            kafka_join("", &[("range", b"m1"), ("roundrobin", b"m1rr")], true),
        )
        .await;
    let Err(BrokerError::MemberIdRequired(id1)) = first else {
        panic!("expected MEMBER_ID_REQUIRED, got {first:?}");
    };
    let j1 = h
        .join_group(
            "kg",
            kafka_join(&id1, &[("range", b"m1"), ("roundrobin", b"m1rr")], true),
        )
        .await
        .expect("join with the given id");
    assert_eq!(j1.member_id, id1);
    assert_eq!(j1.leader, id1);
    assert_eq!(j1.protocol, "range");
    assert_eq!(j1.members.len(), 1, "the leader gets the member list");
    // A member that shares no protocol is refused.
    let odd = h
        .join_group("kg", kafka_join("", &[("cooperative-sticky", b"x")], false))
        .await;
    assert!(
        matches!(odd, Err(BrokerError::InconsistentGroupProtocol)),
        "{odd:?}"
    );
    // A second member joins: the leader learns by heartbeat and rejoins; both get generation 2,
    // and the vote picks roundrobin, the only protocol both support.
    let h2 = h.clone();
    let second = tokio::spawn(async move {
        h2.join_group("kg", kafka_join("", &[("roundrobin", b"m2")], false))
            .await
    });
    until_rebalance(&h, "kg", (&id1).into(), j1.generation).await;
    let j1b = h
        .join_group(
            "kg",
            kafka_join(&id1, &[("range", b"m1"), ("roundrobin", b"m1rr")], true),
        )
        .await
        .expect("rejoin");
    let j2 = second.await.expect("task").expect("join");
    assert_eq!(j1b.generation, j1.generation + 1);
    assert_eq!(j2.generation, j1b.generation);
    assert_eq!(j1b.protocol, "roundrobin");
    let (leader, follower) = if j1b.leader == j1b.member_id {
        (&j1b, &j2)
    } else {
        (&j2, &j1b)
    };
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    let metas: BTreeSet<Vec<u8>> = leader.members.iter().map(|m| m.metadata.to_vec()).collect();
    assert_eq!(metas, BTreeSet::from([b"m1rr".to_vec(), b"m2".to_vec()]));
    // The follower's sync waits for the leader's; each gets the bytes the leader chose.
    let h3 = h.clone();
    let (fid, gen) = (follower.member_id.clone(), follower.generation);
    let follower_sync = tokio::spawn(async move { h3.sync_group("kg", &fid, gen, vec![]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let assignments = vec![
        (
            leader.member_id.clone(),
            bytes::Bytes::from_static(b"\x00leader-bytes"),
        ),
        (
            follower.member_id.clone(),
            bytes::Bytes::from_static(b"\x00follower-bytes"),
        ),
    ];
    // A leader's SyncGroup naming another protocol is refused before its assignments are
    // taken (Kafka's INCONSISTENT_GROUP_PROTOCOL); one that names none, or the group's, is not.
    for (pt, p) in [(Some("consumer"), Some("range")), (Some("connect"), None)] {
        let named = h
            .sync_group_named(
                "kg",
                &leader.member_id,
                leader.generation,
                vec![(
                    leader.member_id.clone(),
                    bytes::Bytes::from_static(b"wrong"),
                )],
                pt.map(str::to_string),
                p.map(str::to_string),
            )
            .await;
        assert!(
            matches!(named, Err(BrokerError::InconsistentGroupProtocol)),
            "{pt:?} {p:?}: {named:?}"
        );
    }
    assert_eq!(
        h.describe_group("kg").await.expect("describe").state,
        GroupState::CompletingRebalance
    );
    let ls = h
        .sync_group_named(
            "kg",
            &leader.member_id,
            leader.generation,
            assignments,
            Some("consumer".into()),
            Some("roundrobin".into()),
        )
        .await
        .expect("leader sync");
    assert_eq!(&ls.assignment[..], b"\x00leader-bytes");
    let fs = follower_sync.await.expect("task").expect("follower sync");
    assert_eq!(&fs.assignment[..], b"\x00follower-bytes");
    let d = h.describe_group("kg").await.expect("describe");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.members.len(), 2);
    // Leaving triggers a rebalance for the one who stays.
    let left = h
        .leave_group("kg", vec![(follower.member_id.clone(), None)])
        .await
        .expect("leave");
    assert!(matches!(left[..], [Ok(())]), "{left:?}");
    assert!(matches!(
        h.heartbeat("kg", &leader.member_id, leader.generation)
            .await,
        Err(BrokerError::RebalanceInProgress)
    ));
    h.shutdown().await.expect("shutdown");
}

/// A committed offset without metadata.
fn committed(offset: i64) -> weir_storage::CommittedOffset {
    weir_storage::CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    }
}

/// Heartbeats as `member` until the group answers REBALANCE_IN_PROGRESS (within 10 s).
async fn until_rebalance(h: &BrokerHandle, group: &str, member: MemberRef<'_>, generation: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.heartbeat(group, member, generation).await {
            Err(BrokerError::RebalanceInProgress) => return,
            Ok(()) => assert!(Instant::now() < deadline, "no rebalance signalled"),
            Err(e) => panic!("heartbeat: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A static member as its requests name it: (member id, instance id).
fn as_ref<'a>(m: &'a (String, &'static str)) -> MemberRef<'a> {
    MemberRef {
        id: &m.0,
        instance: Some(m.1),
    }
}

/// Static membership (KIP-345): a static member restarting into a stable group (a JoinGroup
/// with its instance id and no member id) takes its old incarnation's place and assignment
/// without a rebalance, even as the leader (it is told the old leader id, so it does not lead);
/// the old incarnation is fenced (FENCED_INSTANCE_ID, not UNKNOWN_MEMBER_ID, which would make it
/// rejoin and fence the new one in turn). New static members skip MEMBER_ID_REQUIRED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarts_without_a_rebalance_and_fences_its_old_incarnation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Broker::start(config(Backend::Memory, dir.path()))
        .await
        .expect("start");
    let static_join = |member_id: &str, instance: &str| weir::broker::JoinGroup {
        instance_id: Some(instance.to_string()),
        ..kafka_join(member_id, &[("range", b"m"), ("roundrobin", b"m")], true)
    };
    let member =
        |id: &str, instance: &'static str| -> (String, &'static str) { (id.to_string(), instance) };
    // s1 joins alone and leads; s2 joins, s1 rejoins on the heartbeat's signal.
    let j1 = h
        .join_group("sg", static_join("", "s1"))
        .await
        .expect("a static member joins without MEMBER_ID_REQUIRED");
    let s1 = member(&j1.member_id, "s1");
    h.sync_group(
        "sg",
        as_ref(&s1),
        j1.generation,
        vec![(s1.0.clone(), "a".into())],
    )
    .await
    .expect("sync");
    let h2 = h.clone();
    let second = tokio::spawn(async move { h2.join_group("sg", static_join("", "s2")).await });
    until_rebalance(&h, "sg", as_ref(&s1), j1.generation).await;
    let j1 = h
        .join_group("sg", static_join(&s1.0, "s1"))
        .await
        .expect("rejoin");
    let j2 = second.await.expect("task").expect("join");
    assert_eq!(j1.leader, s1.0, "the first member still leads");
    let s2 = member(&j2.member_id, "s2");
    let generation = j1.generation;
    let h2 = h.clone();
    let s2_ = s2.clone();
    let follower =
        tokio::spawn(async move { h2.sync_group("sg", &s2_.0, generation, vec![]).await });
    let given = vec![(s1.0.clone(), "p0".into()), (s2.0.clone(), "p1".into())];
    h.sync_group("sg", as_ref(&s1), generation, given)
        .await
        .expect("leader sync");
    follower.await.expect("task").expect("follower sync");

    // The leader restarts: a new member id, the same generation, no rebalance, and not told
    // to lead; its sync gets its old assignment.
    let again = h
        .join_group("sg", static_join("", "s1"))
        .await
        .expect("restart");
    assert_ne!(again.member_id, s1.0);
    assert_eq!(again.generation, generation, "no new generation");
    assert_eq!(again.leader, s1.0, "told the leader as it was");
    assert!(again.members.is_empty(), "not asked to assign");
    let new_s1 = member(&again.member_id, "s1");
    let synced = h
        .sync_group("sg", as_ref(&new_s1), generation, vec![])
        .await
        .expect("sync after the restart");
    assert_eq!(&synced.assignment[..], b"p0");
    h.heartbeat("sg", as_ref(&s2), generation)
        .await
        .expect("the other member sees no rebalance");
    h.heartbeat("sg", as_ref(&new_s1), generation)
        .await
        .expect("the new incarnation is a member");
    // The old incarnation is fenced wherever it turns up.
    let fenced = |r: Result<(), BrokerError>| matches!(r, Err(BrokerError::FencedInstanceId(_)));
    assert!(fenced(h.heartbeat("sg", as_ref(&s1), generation).await));
    let offsets = vec![(weir::storage::TopicPartition::new("t", 0), committed(1))];
    assert!(fenced(
        h.commit_offsets("sg", as_ref(&s1), generation, offsets.clone())
            .await
    ));
    assert!(fenced(
        h.sync_group("sg", as_ref(&s1), generation, vec![])
            .await
            .map(|_| ())
    ));
    assert!(fenced(
        h.join_group("sg", static_join(&s1.0, "s1"))
            .await
            .map(|_| ())
    ));
    // A LeaveGroup answers each member: the fenced one, an unknown one.
    let left = h
        .leave_group(
            "sg",
            vec![(s1.0.clone(), Some("s1".into())), ("ghost".into(), None)],
        )
        .await
        .expect("leave");
    assert!(
        matches!(
            left[..],
            [
                Err(BrokerError::FencedInstanceId(_)),
                Err(BrokerError::UnknownMember(_))
            ]
        ),
        "{left:?}"
    );
    h.commit_offsets("sg", as_ref(&new_s1), generation, offsets)
        .await
        .expect("the new incarnation commits");
    let d = h.describe_group("sg").await.expect("describe");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.members.len(), 2);

    // A restart that changes the protocol the group would choose does rebalance.
    let h2 = h.clone();
    let changed = tokio::spawn(async move {
        let join = weir::broker::JoinGroup {
            instance_id: Some("s2".into()),
            ..kafka_join("", &[("roundrobin", b"m")], true)
        };
        h2.join_group("sg", join).await
    });
    until_rebalance(&h, "sg", as_ref(&new_s1), generation).await;
    let rejoined = h
        .join_group("sg", static_join(&new_s1.0, "s1"))
        .await
        .expect("rejoin");
    let restarted = changed.await.expect("task").expect("join");
    assert_eq!(rejoined.generation, generation + 1);
    assert_eq!(restarted.generation, generation + 1);
    h.shutdown().await.expect("shutdown");
}

/// A group without members unloads after `empty_group_unload_ms` and loads again, offsets and
/// all, when next named: groups named once (here a thousand described by name, never joined
/// nor committed to: Dead, as Kafka answers for an unknown group) do not stay in memory;
/// requests racing an unload are sent again, never lost or failed. A group whose members all
/// left is listed as Empty until it unloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_groups_unload_and_load_again_when_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Segment, dir.path());
    c.groups.empty_group_unload_ms = 100;
    let h = Broker::start(c).await.expect("start");
    let tp = TopicPartition::new("t", 0);
    h.commit_offsets("kept", "", -1, vec![(tp.clone(), committed(42))])
        .await
        .expect("commit");
    for i in 0..1000 {
        let d = h
            .describe_group(&format!("ghost-{i}"))
            .await
            .expect("describe");
        assert_eq!(
            d.state,
            GroupState::Dead,
            "a group nobody used does not exist"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let listed: Vec<String> = h
        .list_groups()
        .await
        .expect("list")
        .into_iter()
        .map(|(g, _)| g)
        .collect();
    assert!(
        listed == ["kept"],
        "only the group with offsets, not {} groups",
        listed.len()
    );
    // Loaded again with its offsets, as often as it unloads, under concurrent requests.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let asks = (0..16).map(|_| {
            let h = h.clone();
            let tp = tp.clone();
            tokio::spawn(async move { h.fetch_offsets("kept", Some(vec![tp])).await })
        });
        for ask in futures::future::join_all(asks).await {
            let got = ask.expect("task").expect("fetch offsets");
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].1.offset, 42);
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    // A member joins an unloaded group as any other.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = h
        .join_group("kept", kafka_join("", &[("range", b"m")], false))
        .await
        .expect("join");
    assert_eq!(j.members.len(), 1);
    h.sync_group("kept", &j.member_id, j.generation, vec![])
        .await
        .expect("sync");
    // A group with members stays loaded past the unload time.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.heartbeat("kept", &j.member_id, j.generation)
            .await
            .expect("still a member");
    }
    // Its members gone and no offsets: Empty and listed, until it unloads.
    let j = h
        .join_group("passing", kafka_join("", &[("range", b"m")], false))
        .await
        .expect("join");
    h.leave_group("passing", vec![(j.member_id.clone(), None)])
        .await
        .expect("leave");
    let listed = |h: BrokerHandle| async move {
        let groups = h.list_groups().await.expect("list");
        groups
            .iter()
            .any(|(g, s)| g == "passing" && *s == GroupState::Empty)
    };
    assert!(listed(h.clone()).await, "listed while loaded");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!listed(h.clone()).await, "gone once unloaded");
    h.shutdown().await.expect("shutdown");
}

/// Kafka keeps a group's membership with its offsets: a broker restart does not make its
/// members rejoin. Two members of a stable group go on in their generation after a restart
/// (heartbeats, syncs with their assignments, commits), the group is listed Stable before anyone
/// names it, a member that does not come back is removed after its session timeout, and an
/// Empty group keeps its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_carry_on_in_their_generation_after_a_restart() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Broker::start(config(backend, dir.path()))
            .await
            .expect("start");
        let join = |id: &str, session_ms: u64| weir::broker::JoinGroup {
            session_timeout: Duration::from_millis(session_ms),
            ..kafka_join(id, &[("range", b"sub")], false)
        };
        let a = h.join_group("kept", join("", 10_000)).await.expect("join");
        h.sync_group("kept", &a.member_id, a.generation, vec![])
            .await
            .expect("sync");
        let h2 = h.clone();
        let second = tokio::spawn(async move { h2.join_group("kept", join("", 1_000)).await });
        until_rebalance(&h, "kept", (&a.member_id).into(), a.generation).await;
        let a = h
            .join_group("kept", join(&a.member_id, 10_000))
            .await
            .expect("rejoin");
        let b = second.await.expect("task").expect("join");
        let generation = a.generation;
        let given = vec![
            (a.member_id.clone(), "pa".into()),
            (b.member_id.clone(), "pb".into()),
        ];
        let h2 = h.clone();
        let b_id = b.member_id.clone();
        let follower =
            tokio::spawn(async move { h2.sync_group("kept", &b_id, generation, vec![]).await });
        h.sync_group("kept", &a.member_id, generation, given)
            .await
            .expect("leader sync");
        follower.await.expect("task").expect("follower sync");
        h.shutdown().await.expect("shutdown");

        let h = Broker::start(config(backend, dir.path()))
            .await
            .expect("restart");
        assert_eq!(
            h.list_groups().await.expect("list"),
            vec![("kept".to_string(), GroupState::Stable)],
            "{backend:?}: loaded with the broker"
        );
        let d = h.describe_group("kept").await.expect("describe");
        assert_eq!(
            (d.state, d.generation, d.leader.as_str()),
            (GroupState::Stable, generation, a.member_id.as_str()),
            "{backend:?}"
        );
        let assigned: BTreeMap<String, bytes::Bytes> = d
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.assignment.clone()))
            .collect();
        assert_eq!(
            assigned,
            BTreeMap::from([
                (a.member_id.clone(), "pa".into()),
                (b.member_id.clone(), "pb".into())
            ]),
            "{backend:?}"
        );
        for m in [&a.member_id, &b.member_id] {
            h.heartbeat("kept", m, generation)
                .await
                .expect("a heartbeat of the same generation");
        }
        let synced = h
            .sync_group("kept", &b.member_id, generation, vec![])
            .await
            .expect("sync");
        assert_eq!(synced.assignment, "pb", "{backend:?}");
        h.commit_offsets(
            "kept",
            &b.member_id,
            generation,
            vec![(TopicPartition::new("t", 0), committed(5))],
        )
        .await
        .expect("a commit of the same generation");

        // b does not come back: its session (1 s) runs out, and a is told to rejoin.
        until_rebalance(&h, "kept", (&a.member_id).into(), generation).await;
        let a = h
            .join_group("kept", join(&a.member_id, 10_000))
            .await
            .expect("rejoin alone");
        assert_eq!(a.generation, generation + 1, "{backend:?}");
        assert_eq!(a.members.len(), 1, "{backend:?}: b was removed");
        h.sync_group("kept", &a.member_id, a.generation, vec![])
            .await
            .expect("sync");
        let left = h
            .leave_group("kept", vec![(a.member_id.clone(), None)])
            .await
            .expect("leave");
        assert!(left.iter().all(Result::is_ok), "{left:?}");
        let empty_generation = h.describe_group("kept").await.expect("describe").generation;
        h.shutdown().await.expect("shutdown");

        let h = Broker::start(config(backend, dir.path()))
            .await
            .expect("restart");
        let d = h.describe_group("kept").await.expect("describe");
        assert_eq!(
            (d.state, d.generation, d.members.len()),
            (GroupState::Empty, empty_generation, 0),
            "{backend:?}: an empty group keeps its generation"
        );
        assert!(
            h.heartbeat("kept", &a.member_id, a.generation)
                .await
                .is_err(),
            "{backend:?}: the member that left is gone"
        );
        h.shutdown().await.expect("shutdown");
    }
}

/// Kafka's `group.initial.rebalance.delay.ms` holds the first rebalance of any group that was
/// Empty, not only of a new one: members arriving within the delay form one generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_delay_holds_a_join_into_any_empty_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Memory, dir.path());
    c.groups.initial_rebalance_delay_ms = 800;
    let h = Broker::start(c).await.expect("start");
    // A generation, then empty again.
    let j = h
        .join_group("again", kafka_join("", &[("range", b"m")], false))
        .await
        .expect("join");
    h.leave_group("again", vec![(j.member_id.clone(), None)])
        .await
        .expect("leave");
    let d = h.describe_group("again").await.expect("describe");
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.generation > 0);
    // Three members 100 ms apart: one rebalance when the delay runs out, with all three.
    let mut joins = Vec::new();
    for _ in 0..3 {
        let h = h.clone();
        joins.push(tokio::spawn(async move {
            h.join_group("again", kafka_join("", &[("range", b"m")], false))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut generations = BTreeSet::new();
    let mut largest_roster = 0;
    for j in joins {
        let j = tokio::time::timeout(Duration::from_secs(10), j)
            .await
            .expect("answered")
            .expect("task")
            .expect("join");
        generations.insert(j.generation);
        largest_roster = largest_roster.max(j.members.len());
    }
    assert_eq!(generations.len(), 1, "one generation: {generations:?}");
    assert_eq!(largest_roster, 3, "the leader sees all three");
    h.shutdown().await.expect("shutdown");
}

/// A member that left during a rebalance is not waited for after a restart: the group was
/// recorded rebalancing without it, so the others are told to rejoin at once and the rebalance
/// completes with them (Kafka, which records a group only when a rebalance completes, would
/// wait for the departed member's session to run out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_cut_short_by_a_restart_goes_on_without_the_member_that_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Segment, dir.path());
    // The three first joins make one generation.
    c.groups.initial_rebalance_delay_ms = 500;
    let h = Broker::start(c.clone()).await.expect("start");
    let join = |id: &str| weir::broker::JoinGroup {
        session_timeout: Duration::from_secs(60),
        ..kafka_join(id, &[("range", b"sub")], false)
    };
    // Three members, one generation.
    let mut pending = Vec::new();
    for _ in 0..3 {
        let h = h.clone();
        pending.push(tokio::spawn(
            async move { h.join_group("cut", join("")).await },
        ));
    }
    let mut joined = Vec::new();
    for p in pending {
        joined.push(p.await.expect("task").expect("join"));
    }
    let generation = joined[0].generation;
    assert!(joined.iter().all(|j| j.generation == generation));
    let mut syncs = Vec::new();
    for j in &joined {
        let (h, id) = (h.clone(), j.member_id.clone());
        syncs.push(tokio::spawn(async move {
            h.sync_group("cut", &id, generation, vec![]).await
        }));
    }
    let leader = joined
        .iter()
        .find(|j| !j.members.is_empty())
        .expect("leader");
    let given = joined
        .iter()
        .map(|j| (j.member_id.clone(), bytes::Bytes::from(j.member_id.clone())))
        .collect();
    h.sync_group("cut", &leader.member_id, generation, given)
        .await
        .expect("leader sync");
    for s in syncs {
        s.await.expect("task").expect("sync");
    }
    // One leaves; the broker stops before the others rejoin.
    let gone = joined.pop().expect("member");
    h.leave_group("cut", vec![(gone.member_id.clone(), None)])
        .await
        .expect("leave");
    h.shutdown().await.expect("shutdown");

    let h = Broker::start(c).await.expect("restart");
    let d = h.describe_group("cut").await.expect("describe");
    assert_eq!(d.state, GroupState::PreparingRebalance);
    let members: BTreeSet<String> = d.members.iter().map(|m| m.member_id.clone()).collect();
    let stayed: BTreeSet<String> = joined.iter().map(|j| j.member_id.clone()).collect();
    assert_eq!(members, stayed, "the member that left is not restored");
    let started = Instant::now();
    let mut rejoins = Vec::new();
    for j in &joined {
        assert!(matches!(
            h.heartbeat("cut", &j.member_id, generation).await,
            Err(BrokerError::RebalanceInProgress)
        ));
        let (h, id) = (h.clone(), j.member_id.clone());
        rejoins.push(tokio::spawn(
            async move { h.join_group("cut", join(&id)).await },
        ));
    }
    for r in rejoins {
        let j = r.await.expect("task").expect("rejoin");
        assert!(j.generation > generation);
    }
    // (Each member's session is 60 s: waiting for the one that left would take that long.)
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "completed without waiting for the departed member: {:?}",
        started.elapsed()
    );
    let d = h.describe_group("cut").await.expect("describe");
    assert_eq!(d.members.len(), 2);
    h.shutdown().await.expect("shutdown");
}

/// Kafka's offset expiration (`offsets.retention.minutes`, KIP-211): offsets committed without
/// membership expire by their commit time; a group's stay while it has members, however old,
/// and go `offsets_retention_ms` after it became Empty; a group left without offsets is
/// forgotten (not listed, nothing stored), also across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_expire_after_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Segment, dir.path());
    c.groups.offsets_retention_ms = 2_000;
    c.groups.offsets_retention_check_interval_ms = 100;
    c.groups.empty_group_unload_ms = 200;
    let h = Broker::start(c.clone()).await.expect("start");
    let tp = TopicPartition::new("t", 0);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };
    let at = |offset: i64, ms: i64| weir_storage::CommittedOffset {
        commit_timestamp_ms: ms,
        ..committed(offset)
    };
    // Standalone commits: one already older than the retention, one fresh.
    h.commit_offsets(
        "standalone",
        "",
        -1,
        vec![
            (tp.clone(), at(1, now() - 5_000)),
            (TopicPartition::new("t", 1), at(2, now())),
        ],
    )
    .await
    .expect("commit");
    // A member commits, and stays past the retention.
    let j = h
        .join_group("members", kafka_join("", &[("range", b"m")], false))
        .await
        .expect("join");
    h.sync_group("members", &j.member_id, j.generation, vec![])
        .await
        .expect("sync");
    // (Commit times by which, alone, one would have expired already and the other never.)
    h.commit_offsets(
        "members",
        &j.member_id,
        j.generation,
        vec![
            (tp.clone(), at(7, now() - 5_000)),
            (TopicPartition::new("t", 1), at(8, now() + 600_000)),
        ],
    )
    .await
    .expect("commit");
    let offsets = |h: BrokerHandle, g: &'static str| async move {
        h.fetch_offsets(g, None)
            .await
            .expect("fetch")
            .into_iter()
            .map(|(tp, o)| (tp.partition, o.offset))
            .collect::<Vec<_>>()
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.heartbeat("members", &j.member_id, j.generation)
            .await
            .expect("heartbeat");
    }
    assert_eq!(
        offsets(h.clone(), "members").await,
        vec![(0, 7), (1, 8)],
        "kept while a member is there"
    );
    assert_eq!(
        offsets(h.clone(), "standalone").await,
        vec![(1, 2)],
        "the old standalone commit expired, the fresh one not yet"
    );
    // The member leaves: its group's offsets go a retention later, then the group.
    h.leave_group("members", vec![(j.member_id.clone(), None)])
        .await
        .expect("leave");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        offsets(h.clone(), "members").await,
        vec![(0, 7), (1, 8)],
        "not yet"
    );
    h.shutdown().await.expect("shutdown");
    // The time it became Empty is stored with it: both go by that.
    let h = Broker::start(c).await.expect("restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = h.list_groups().await.expect("list");
        if listed.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {listed:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(offsets(h.clone(), "members").await.is_empty());
    assert!(offsets(h.clone(), "standalone").await.is_empty());
    let d = h.describe_group("members").await.expect("describe");
    assert_eq!(d.state, GroupState::Dead, "forgotten");
    h.shutdown().await.expect("shutdown");
    let storage = weir_segment::SegmentStorage::open(dir.path())
        .await
        .expect("open the data directory");
    let groups = weir_storage::Storage::list_groups(&storage)
        .await
        .expect("list");
    assert!(groups.is_empty(), "nothing stored: {groups:?}");
}

/// Kafka's `group.max.size`: a join that would add a member past `[groups] max_size` gets
/// GROUP_MAX_SIZE_REACHED; members already in the group rejoin, and a place freed is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_refuses_new_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(Backend::Memory, dir.path());
    c.groups.max_size = 2;
    let h = Broker::start(c).await.expect("start");
    let join = |id: &str| kafka_join(id, &[("range", b"m")], false);
    let a = h.join_group("full", join("")).await.expect("join");
    h.sync_group("full", &a.member_id, a.generation, vec![])
        .await
        .expect("sync");
    let h2 = h.clone();
    let second = tokio::spawn(async move { h2.join_group("full", join("")).await });
    until_rebalance(&h, "full", (&a.member_id).into(), a.generation).await;
    let a = h
        .join_group("full", join(&a.member_id))
        .await
        .expect("rejoin");
    let b = second.await.expect("task").expect("join");
    let third = h.join_group("full", join("")).await;
    assert!(
        matches!(
            third,
            Err(BrokerError::GroupMaxSizeReached { ref group, max: 2 }) if group == "full"
        ),
        "{third:?}"
    );
    assert_eq!(
        BrokerError::GroupMaxSizeReached {
            group: "full".into(),
            max: 2
        }
        .kafka_code(),
        81
    );
    let d = h.describe_group("full").await.expect("describe");
    assert_eq!(d.members.len(), 2);
    // b leaves: a newcomer fits.
    h.leave_group("full", vec![(b.member_id.clone(), None)])
        .await
        .expect("leave");
    until_rebalance(&h, "full", (&a.member_id).into(), a.generation).await;
    let a = h
        .join_group("full", join(&a.member_id))
        .await
        .expect("rejoin alone");
    h.sync_group("full", &a.member_id, a.generation, vec![])
        .await
        .expect("sync");
    let h2 = h.clone();
    let newcomer = tokio::spawn(async move { h2.join_group("full", join("")).await });
    until_rebalance(&h, "full", (&a.member_id).into(), a.generation).await;
    h.join_group("full", join(&a.member_id))
        .await
        .expect("rejoin");
    let c = newcomer.await.expect("task").expect("a place was free");
    assert_eq!(c.members.len(), 0, "a follows");
    h.shutdown().await.expect("shutdown");
}

/// Partitions a member owns, by topic id.
type OwnedById = Option<Vec<(u128, Vec<i32>)>>;

/// A heartbeat of Kafka's consumer protocol (KIP-848) as librdkafka sends it: member `id`
/// at `epoch`, owning `owned` (partitions of topic `t`, whose id is `topic`).
fn consumer_beat(
    id: &str,
    epoch: i32,
    owned: &[i32],
    topic: u128,
) -> (weir::broker::consumer_protocol::HeartbeatInput, OwnedById) {
    let input = weir::broker::consumer_protocol::HeartbeatInput {
        member_id: id.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: if epoch == 0 { 60_000 } else { -1 },
        subscribed_names: (epoch == 0).then(|| vec!["t".to_string()]),
        client_id: "rdkafka".into(),
        client_host: "/127.0.0.1".into(),
        ..Default::default()
    };
    (input, Some(vec![(topic, owned.to_vec())]))
}

/// Kafka's coordinator keeps a consumer-protocol group's members, epochs and assignments in its
/// offsets topic; Weir in the group's record. Two members share a topic (the second gets its
/// partitions once the first has given them up), commit with their epochs, and after a restart
/// carry on at the same epochs with the same partitions; a classic join whose metadata is not a
/// consumer subscription is refused;
/// the member that does not come back is removed after its session and the other gets
/// everything at a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_members_carry_on_after_a_restart() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(backend, dir.path());
        c.groups.consumer_session_timeout_ms = 1_500;
        c.groups.consumer_heartbeat_interval_ms = 500;
        let h = Broker::start(c.clone()).await.expect("start");
        let topic = h
            .create_topic("t", Some(4), vec![])
            .await
            .expect("topic")
            .id;
        let beat = |h: &BrokerHandle, id: &str, epoch: i32, owned: &[i32]| {
            let (input, owned) = consumer_beat(id, epoch, owned, topic);
            let h = h.clone();
            async move { h.consumer_group_heartbeat("k", input, owned).await }
        };
        let a = beat(&h, "a", 0, &[]).await.expect("a joins");
        assert_eq!(a.member_epoch, 1);
        assert_eq!(a.assignment, Some(vec![(topic, vec![0, 1, 2, 3])]));
        assert_eq!(a.heartbeat_interval_ms, 500);
        let b = beat(&h, "b", 0, &[]).await.expect("b joins");
        assert_eq!((b.member_epoch, b.assignment), (2, Some(vec![])));
        let a = beat(&h, "a", 1, &[0, 1, 2, 3]).await.expect("a is told");
        let kept = a.assignment.expect("a gives up half")[0].1.clone();
        assert_eq!((a.member_epoch, kept.len()), (1, 2));
        let a = beat(&h, "a", 1, &kept).await.expect("a has given them up");
        assert_eq!(a.member_epoch, 2);
        let b = beat(&h, "b", 2, &[]).await.expect("b gets the rest");
        let theirs = b.assignment.expect("b's partitions")[0].1.clone();
        assert_eq!(theirs.len(), 2);
        assert!(theirs.iter().all(|p| !kept.contains(p)));
        // Commits name the member's epoch.
        let offsets = vec![(TopicPartition::new("t", theirs[0]), committed(7))];
        h.commit_offsets("k", "b", 2, offsets.clone())
            .await
            .expect("commit at the member's epoch");
        assert!(matches!(
            h.commit_offsets("k", "b", 1, offsets.clone()).await,
            Err(BrokerError::StaleMemberEpoch {
                got: 1,
                current: 2,
                ..
            })
        ));
        // So do offset fetches of members (OffsetFetch v9); an admin's names no member.
        assert_eq!(
            h.fetch_offsets_as_member("k", None, "b", 2)
                .await
                .expect("fetch"),
            offsets
        );
        assert!(matches!(
            h.fetch_offsets_as_member("k", None, "b", 1).await,
            Err(BrokerError::StaleMemberEpoch { .. })
        ));
        assert!(matches!(
            h.fetch_offsets_as_member("k", None, "zz", 2).await,
            Err(BrokerError::UnknownMember(_))
        ));
        assert_eq!(h.fetch_offsets("k", None).await.expect("admin"), offsets);
        h.shutdown().await.expect("shutdown");

        let h = Broker::start(c.clone()).await.expect("restart");
        assert_eq!(
            h.list_groups().await.expect("list"),
            vec![("k".to_string(), GroupState::Stable)],
            "{backend:?}: loaded with the broker"
        );
        let d = h.describe_group("k").await.expect("describe");
        let cd = d.consumer.expect("a consumer-protocol group");
        assert_eq!((cd.state.as_str(), cd.group_epoch), ("Stable", 2));
        let epochs: Vec<(String, i32)> = cd
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.member_epoch))
            .collect();
        assert_eq!(
            epochs,
            vec![("a".into(), 2), ("b".into(), 2)],
            "{backend:?}"
        );
        let a = beat(&h, "a", 2, &kept).await.expect("a carries on");
        assert_eq!((a.member_epoch, a.assignment), (2, None), "{backend:?}");
        h.commit_offsets(
            "k",
            "a",
            2,
            vec![(TopicPartition::new("t", kept[0]), committed(3))],
        )
        .await
        .expect("a commits at its epoch");
        assert!(matches!(
            h.join_group("k", kafka_join("", &[("range", b"sub")], false))
                .await,
            Err(BrokerError::InconsistentGroupProtocol)
        ));
        // b never comes back: after its session a is given everything at the next epoch.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut owned = kept.clone();
        let all = loop {
            let r = beat(&h, "a", if owned.len() == 4 { 3 } else { 2 }, &owned)
                .await
                .expect("a's heartbeat");
            if let Some(given) = &r.assignment {
                owned = given[0].1.clone();
            }
            if owned.len() == 4 {
                break r;
            }
            assert!(Instant::now() < deadline, "{backend:?}: b was not removed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(all.member_epoch, 3, "{backend:?}");
        let stored = h.fetch_offsets("k", None).await.expect("offsets");
        assert_eq!(stored.len(), 2, "{backend:?}: both commits kept");
        h.shutdown().await.expect("shutdown");
    }
}

/// A consumer's classic subscription to topic `t` (the embedded consumer protocol, v1: what it
/// owns).
fn subscription(owned: &[i32]) -> bytes::Bytes {
    use weir::protocol::kafka::embedded;
    embedded::encode_subscription(&embedded::Subscription {
        version: 1,
        topics: vec!["t".into()],
        owned_partitions: if owned.is_empty() {
            Vec::new()
        } else {
            vec![("t".into(), owned.to_vec())]
        },
        generation: -1,
        ..Default::default()
    })
}

/// The partitions of topic `t` in a classic assignment.
fn assigned(bytes: &bytes::Bytes) -> Vec<i32> {
    let tps =
        weir::protocol::kafka::embedded::decode_assignment(bytes.clone()).expect("assignment");
    tps.into_iter().flat_map(|(_, ps)| ps).collect()
}

/// Kafka 4's online migration between the group protocols, with a restart in the middle: a
/// classic group of one Kafka consumer becomes a consumer-protocol group when a member of that
/// protocol joins; the classic member rejoins, is answered by the group (no leader), gives up
/// half; both carry on after a restart; when the consumer-protocol member leaves (or its
/// session runs out), the group is classic again and its member rejoins the classic way, as
/// leader of a new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_changes_protocol_under_its_classic_member_and_back() {
    for backend in [Backend::Segment, Backend::Sled] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(backend, dir.path());
        c.groups.initial_rebalance_delay_ms = 0;
        c.groups.consumer_session_timeout_ms = 3_000;
        c.groups.consumer_heartbeat_interval_ms = 500;
        let h = Broker::start(c.clone()).await.expect("start");
        let topic = h
            .create_topic("t", Some(4), vec![])
            .await
            .expect("topic")
            .id;
        // A classic consumer leads a group of its own and takes everything.
        let sub = subscription(&[]);
        let j = h
            .join_group("m", kafka_join("", &[("range", &sub)], false))
            .await
            .expect("classic join");
        let all = weir::protocol::kafka::embedded::encode_assignment(
            0,
            &[("t".into(), vec![0, 1, 2, 3])],
        );
        h.sync_group(
            "m",
            &j.member_id,
            j.generation,
            vec![(j.member_id.clone(), all)],
        )
        .await
        .expect("leader's sync");
        let classic = j.member_id.clone();
        // A consumer-protocol join the group would refuse leaves it as it was.
        let (mut input, owned) = consumer_beat("n", 0, &[], topic);
        input.server_assignor = Some("nonesuch".into());
        assert!(matches!(
            h.consumer_group_heartbeat("m", input, owned).await,
            Err(BrokerError::UnsupportedAssignor(_))
        ));
        assert!(h
            .describe_group("m")
            .await
            .expect("describe")
            .consumer
            .is_none());
        h.heartbeat("m", &classic, j.generation)
            .await
            .expect("still a classic group");
        // A consumer-protocol member joins: the group changes protocol under it.
        let (input, owned) = consumer_beat("n", 0, &[], topic);
        let n = h
            .consumer_group_heartbeat("m", input, owned)
            .await
            .expect("n joins");
        assert_eq!(
            n.assignment,
            Some(vec![]),
            "{backend:?}: c still holds everything"
        );
        let d = h.describe_group("m").await.expect("describe");
        let cd = d.consumer.expect("a consumer-protocol group");
        assert_eq!(
            cd.members
                .iter()
                .map(|m| (m.member_id.as_str(), m.classic))
                .collect::<Vec<_>>(),
            vec![("n", false), (classic.as_str(), true)]
        );
        // The classic member is told to rejoin, rejoins having given up everything (eager),
        // and is answered at once with its epoch and no leader; its sync gives it half.
        assert!(matches!(
            h.heartbeat("m", &classic, j.generation).await,
            Err(BrokerError::RebalanceInProgress)
        ));
        let r = h
            .join_group("m", kafka_join(&classic, &[("range", &sub)], true))
            .await
            .expect("rejoin");
        assert_eq!((r.leader.as_str(), r.members.len()), ("", 0));
        assert_eq!(
            (r.protocol_type.as_str(), r.protocol.as_str()),
            ("consumer", "range")
        );
        // (A SyncGroup naming another protocol type or protocol than its join's is refused,
        // as Kafka refuses it, and changes nothing.)
        for (pt, p) in [("consumer", "roundrobin"), ("connect", "range")] {
            let named = h
                .sync_group_named(
                    "m",
                    &classic,
                    r.generation,
                    vec![],
                    Some(pt.into()),
                    Some(p.into()),
                )
                .await;
            assert!(
                matches!(named, Err(BrokerError::InconsistentGroupProtocol)),
                "{pt} {p}: {named:?}"
            );
        }
        let s = h
            .sync_group_named(
                "m",
                &classic,
                r.generation,
                vec![],
                Some("consumer".into()),
                Some("range".into()),
            )
            .await
            .expect("sync");
        let mine = assigned(&s.assignment);
        assert_eq!(mine.len(), 2, "{backend:?}");
        h.heartbeat("m", &classic, r.generation)
            .await
            .expect("stable");
        let (input, owned) = consumer_beat("n", n.member_epoch, &[], topic);
        let n = h
            .consumer_group_heartbeat("m", input, owned)
            .await
            .expect("n's heartbeat");
        let theirs = n.assignment.expect("n gets the rest")[0].1.clone();
        assert!(theirs.len() == 2 && theirs.iter().all(|p| !mine.contains(p)));
        // A classic member commits with its generation.
        let offsets = vec![(TopicPartition::new("t", mine[0]), committed(5))];
        assert!(matches!(
            h.commit_offsets("m", &classic, r.generation + 1, offsets.clone())
                .await,
            Err(BrokerError::IllegalGeneration { .. })
        ));
        h.commit_offsets("m", &classic, r.generation, offsets.clone())
            .await
            .expect("commit");
        // So does an OffsetCommit older than v9, which cannot carry a consumer-protocol
        // member's epoch: Kafka's UNSUPPORTED_VERSION for such a member.
        h.commit_offsets_by_generation("m", &classic, r.generation, offsets.clone())
            .await
            .expect("a classic member's commit below v9");
        let theirs_offsets = vec![(TopicPartition::new("t", theirs[0]), committed(7))];
        assert!(matches!(
            h.commit_offsets_by_generation("m", "n", n.member_epoch, theirs_offsets.clone())
                .await,
            Err(BrokerError::UnsupportedVersion(_))
        ));
        h.commit_offsets("m", "n", n.member_epoch, theirs_offsets.clone())
            .await
            .expect("n's commit with its epoch");
        let both: BTreeMap<_, _> = offsets.iter().chain(&theirs_offsets).cloned().collect();
        h.shutdown().await.expect("shutdown");

        // After a restart both carry on where they were.
        let h = Broker::start(c.clone()).await.expect("restart");
        h.heartbeat("m", &classic, r.generation)
            .await
            .expect("the classic member carries on");
        let (input, owned) = consumer_beat("n", n.member_epoch, &theirs, topic);
        let n2 = h
            .consumer_group_heartbeat("m", input, owned)
            .await
            .expect("n carries on");
        assert_eq!(n2.member_epoch, n.member_epoch, "{backend:?}");
        // The topic gains a partition: the classic member's next heartbeat moves the group
        // epoch and tells it to rejoin; the new epoch survives a restart.
        h.create_partitions("t", 5)
            .await
            .expect("a fifth partition");
        assert!(matches!(
            h.heartbeat("m", &classic, r.generation).await,
            Err(BrokerError::RebalanceInProgress)
        ));
        let epoch = |d: weir::broker::GroupDescription| d.consumer.expect("consumer").group_epoch;
        let moved = epoch(h.describe_group("m").await.expect("describe"));
        assert!(moved > n.member_epoch, "{backend:?}");
        h.shutdown().await.expect("shutdown");
        let h = Broker::start(c.clone()).await.expect("restart");
        assert_eq!(
            epoch(h.describe_group("m").await.expect("describe")),
            moved,
            "{backend:?}"
        );
        // n leaves (segment), or goes silent until its session runs out (sled): the group is
        // classic again, and rebalances.
        if backend == Backend::Segment {
            let (mut input, _) = consumer_beat("n", -1, &[], topic);
            input.member_epoch = -1;
            h.consumer_group_heartbeat("m", input, None)
                .await
                .expect("n leaves");
        } else {
            let deadline = Instant::now() + Duration::from_secs(10);
            while h
                .describe_group("m")
                .await
                .expect("describe")
                .consumer
                .is_some()
            {
                assert!(Instant::now() < deadline, "n's session did not run out");
                // (The classic member's own session, 10 s, is kept alive meanwhile.)
                let _ = h.heartbeat("m", &classic, r.generation).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let d = h.describe_group("m").await.expect("describe");
        assert!(d.consumer.is_none(), "{backend:?}: a classic group again");
        assert_eq!(d.protocol_type, "consumer");
        assert_eq!(d.state, GroupState::PreparingRebalance, "{backend:?}");
        assert!(matches!(
            h.heartbeat("m", &classic, r.generation).await,
            Err(BrokerError::RebalanceInProgress)
        ));
        let j = h
            .join_group("m", kafka_join(&classic, &[("range", &sub)], true))
            .await
            .expect("classic rejoin");
        assert_eq!(j.leader, classic, "{backend:?}: it leads the classic group");
        assert!(j.generation > r.generation);
        let kept: BTreeMap<_, _> = h
            .fetch_offsets("m", None)
            .await
            .expect("offsets")
            .into_iter()
            .collect();
        assert_eq!(kept, both, "{backend:?}");
        h.shutdown().await.expect("shutdown");
    }
}
