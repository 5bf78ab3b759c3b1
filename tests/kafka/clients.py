"""Real Kafka clients against a running Weir: one scenario per invocation.

    python tests/kafka/clients.py BOOTSTRAP SCENARIO

Run by tests/kafka_clients.rs against a fresh `weir serve` per scenario; exits non-zero with
a message when an expectation fails. Producers and consumers are confluent-kafka (librdkafka)
and kafka-python, crossing clients where the issue asks for it.
"""
import sys
import time
import uuid

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
import kafka  # kafka-python
from kafka.admin import KafkaAdminClient, NewTopic as KpNewTopic, ConfigResource as KpConfigResource, ConfigResourceType

BOOT = sys.argv[1]
TIMEOUT = 30


def check(cond, what):
    if not cond:
        raise AssertionError(what)


_ADMIN = []


def admin():
    """One admin client for the scenario (a dropped client cancels its futures)."""
    if not _ADMIN:
        _ADMIN.append(AdminClient({"bootstrap.servers": BOOT}))
    return _ADMIN[0]


def create(topic, partitions=1, config=None):
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})
    fs = admin().create_topics([new])
    for f in fs.values():
        f.result(TIMEOUT)


def produce_ck(topic, records, **conf):
    """records: (key, value, headers, partition) tuples; returns delivered (partition, offset)."""
    p = ck.Producer({"bootstrap.servers": BOOT, "linger.ms": 5, **conf})
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    for key, value, headers, partition in records:
        kw = {"key": key, "value": value, "on_delivery": cb}
        if headers:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(TIMEOUT)
    check(left == 0, f"{left} messages not delivered")
    check(not errors, f"delivery errors: {errors[:3]}")
    return delivered


def consume_ck(topic, count, partitions=None, offset=ck.OFFSET_BEGINNING, group=None, conf=None):
    c = ck.Consumer({
        "bootstrap.servers": BOOT,
        "group.id": group or f"g-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **(conf or {}),
    })
    if partitions is None:
        partitions = range(len(c.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions))
    c.assign([ck.TopicPartition(topic, p, offset) for p in partitions])
    out = []
    deadline = time.time() + TIMEOUT
    while len(out) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        check(m.error() is None, f"consumer error {m.error()}")
        out.append(m)
    c.close()
    check(len(out) == count, f"consumed {len(out)} of {count}")
    return out


def consume_kp(topic, count, **conf):
    c = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=BOOT,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=TIMEOUT * 1000,
        **conf,
    )
    out = []
    for m in c:
        out.append(m)
        if len(out) >= count:
            break
    c.close()
    check(len(out) == count, f"kafka-python consumed {len(out)} of {count}")
    return out


def scenario_metadata():
    create("meta", 3)
    md = admin().list_topics(timeout=TIMEOUT)
    check("meta" in md.topics, "topic listed")
    check(len(md.topics["meta"].partitions) == 3, "3 partitions")
    check(md.controller_id in md.brokers, "the controller is a listed broker")
    check(md.cluster_id, "a cluster id")
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    check("meta" in kp.list_topics(), "kafka-python lists the topic")
    cluster = kp.describe_cluster()
    check(cluster["controller_id"] == md.controller_id, f"describe cluster {cluster}")
    kp.close()


def scenario_keyed_order():
    create("keyed", 3)
    n = 10_000
    records = [(f"k{i % 50}".encode(), f"{i}".encode(), None, None) for i in range(n)]
    produce_ck("keyed", records, acks="all")
    got = consume_kp("keyed", n)
    last = {}
    for m in got:
        v = int(m.value)
        prev = last.get(m.key, -1)
        check(v > prev, f"key {m.key}: {v} after {prev}")
        last[m.key] = v
    check(len(last) == 50, "all keys seen")
    # The same key always lands on the same partition (murmur2, as Kafka's clients agree).
    parts = {}
    for m in got:
        parts.setdefault(m.key, set()).add(m.partition)
    check(all(len(p) == 1 for p in parts.values()), "one partition per key")


def scenario_positions():
    create("pos", 1)
    t0 = int(time.time() * 1000)
    records = [(None, f"v{i}".encode(), None, 0) for i in range(100)]
    p = ck.Producer({"bootstrap.servers": BOOT})
    for i, (_, v, _, _) in enumerate(records):
        p.produce("pos", value=v, partition=0, timestamp=t0 + i * 10)
    p.flush(TIMEOUT)
    # From the beginning, from an offset, from the end, from a timestamp.
    check([m.value() for m in consume_ck("pos", 100)] == [r[1] for r in records], "from beginning")
    check(consume_ck("pos", 10, offset=90)[0].value() == b"v90", "from offset 90")
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "pos-ts"})
    found = c.offsets_for_times([ck.TopicPartition("pos", 0, t0 + 505)], timeout=TIMEOUT)
    check(found[0].offset == 51, f"offset for time: {found[0].offset}")
    low, high = c.get_watermark_offsets(ck.TopicPartition("pos", 0), timeout=TIMEOUT)
    check((low, high) == (0, 100), f"watermarks {low} {high}")
    c.close()
    # The record with the largest timestamp (ListOffsets -3): the last of them.
    from confluent_kafka.admin import OffsetSpec
    newest = admin().list_offsets({ck.TopicPartition("pos", 0): OffsetSpec.max_timestamp()})
    info = next(iter(newest.values())).result(TIMEOUT)
    check((info.offset, info.timestamp) == (99, t0 + 990), f"max timestamp {info}")
    check(consume_ck("pos", 5, offset=51)[0].timestamp()[1] == t0 + 510, "timestamps kept")
    end = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "pos-end", "auto.offset.reset": "latest"})
    end.assign([ck.TopicPartition("pos", 0, ck.OFFSET_END)])
    deadline = time.time() + 3
    while time.time() < deadline:
        m = end.poll(0.2)
        check(m is None or m.error() is not None, "nothing old read from the end")
    p.produce("pos", value=b"new", partition=0)
    p.flush(TIMEOUT)
    deadline = time.time() + TIMEOUT
    got = None
    while got is None and time.time() < deadline:
        m = end.poll(0.5)
        if m is not None and m.error() is None:
            got = m
    end.close()
    check(got is not None and got.value() == b"new" and got.offset() == 100, "from end: the new record")


def scenario_shapes():
    # As on Kafka, a topic takes values above the default 1 MiB batch limit when configured to.
    create("shapes", 1, {"max.message.bytes": "2000000"})
    big = bytes(range(256)) * 4096  # 1 MiB
    records = [
        (None, b"no key", [("h1", b"a"), ("h1", b"b"), ("h2", None)], 0),
        (b"no value", None, None, 0),
        (None, None, None, 0),
        (b"big", big, None, 0),
    ]
    produce_ck("shapes", records, **{"message.max.bytes": 2_000_000})
    got = consume_ck("shapes", 4, conf={"fetch.max.bytes": 4_000_000})
    check(got[0].key() is None and got[0].value() == b"no key", "null key")
    check(got[0].headers() == [("h1", b"a"), ("h1", b"b"), ("h2", None)], f"headers {got[0].headers()}")
    check(got[1].key() == b"no value" and got[1].value() is None, "null value")
    check(got[2].key() is None and got[2].value() is None, "both null")
    check(got[3].value() == big, "1 MiB value intact")
    kp = consume_kp("shapes", 4, fetch_max_bytes=4_000_000, max_partition_fetch_bytes=2_000_000)
    check(kp[0].headers == [("h1", b"a"), ("h1", b"b"), ("h2", None)], f"kafka-python headers {kp[0].headers}")
    check(kp[3].value == big, "kafka-python reads the 1 MiB value")
    # message.timestamp.type=LogAppendTime: the broker's time replaces the producer's, in the
    # delivery report (from the produce response) and for consumers.
    create("stamped", 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    reports = []
    p = ck.Producer({"bootstrap.servers": BOOT})
    p.produce("stamped", value=b"old", timestamp=1000, on_delivery=lambda err, msg: reports.append(msg.timestamp()))
    check(p.flush(TIMEOUT) == 0, "stamped record delivered")
    after = int(time.time() * 1000)
    kind, ts = reports[0]
    check(kind == ck.TIMESTAMP_LOG_APPEND_TIME and before <= ts <= after, f"delivery report {reports}")
    m = consume_ck("stamped", 1)[0]
    check(m.timestamp() == (ck.TIMESTAMP_LOG_APPEND_TIME, ts), f"consumed {m.timestamp()} vs {ts}")
    kp = consume_kp("stamped", 1)
    check(kp[0].timestamp == ts and kp[0].timestamp_type == 1, f"kafka-python {kp[0].timestamp} {kp[0].timestamp_type}")


def scenario_compression():
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        t = f"comp-{codec}"
        create(t, 1)
        values = [f"{codec}-{i}-".encode() * 20 for i in range(500)]
        produce_ck(t, [(None, v, None, 0) for v in values], **{"compression.type": codec})
        got = consume_kp(t, 500)
        check([m.value for m in got] == values, f"{codec}: confluent -> kafka-python")
        t2 = f"comp-{codec}-kp"
        create(t2, 1)
        p = kafka.KafkaProducer(bootstrap_servers=BOOT, compression_type=codec, linger_ms=5)
        for v in values:
            p.send(t2, v, partition=0)
        p.flush(TIMEOUT)
        p.close()
        got = consume_ck(t2, 500)
        check([m.value() for m in got] == values, f"{codec}: kafka-python -> confluent")
    # A topic's compression.type: the broker recompresses what producers send in another codec
    # (uncompressed from kafka-python, gzip from confluent-kafka); both clients read it back.
    create("comp-topic-zstd", 1, {"compression.type": "zstd"})
    values = [f"t-{i}-".encode() * 20 for i in range(300)]
    p = kafka.KafkaProducer(bootstrap_servers=BOOT, linger_ms=5)
    for v in values[:150]:
        p.send("comp-topic-zstd", v, key=b"k", partition=0)
    p.flush(TIMEOUT)
    p.close()
    produce_ck("comp-topic-zstd", [(b"k", v, None, 0) for v in values[150:]], **{"compression.type": "gzip"})
    got = consume_ck("comp-topic-zstd", 300)
    check([m.value() for m in got] == values, "compression.type=zstd: confluent-kafka reads it")
    check([m.offset() for m in got] == list(range(300)), "offsets unchanged")
    got = consume_kp("comp-topic-zstd", 300)
    check([m.value for m in got] == values, "compression.type=zstd: kafka-python reads it")
    res = ConfigResource("topic", "comp-topic-zstd")
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["compression.type"].value == "zstd", f"compression.type {cfg['compression.type'].value}")


def scenario_group():
    create("grp", 3)
    # An offset of a topic the group's members will not consume, committed while it is empty.
    create("other", 1)
    other = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "two", "enable.auto.commit": False})
    other.commit(offsets=[ck.TopicPartition("other", 0, 0)], asynchronous=False)
    other.close()
    n = 3000
    produce_ck("grp", [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n)])
    conf = {
        "bootstrap.servers": BOOT,
        "group.id": "two",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    a, b = ck.Consumer(conf), ck.Consumer(conf)
    a.subscribe(["grp"])
    b.subscribe(["grp"])
    seen = []
    deadline = time.time() + TIMEOUT
    # Both members consume until each has some records and half are done.
    while len(seen) < n // 2 and time.time() < deadline:
        for c in (a, b):
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                seen.append((c is a, m.partition(), m.offset(), m.value()))
                c.commit(message=m, asynchronous=False)
    owners = {(who, p) for who, p, _, _ in seen}
    check(len({p for _, p in owners}) >= 2, "records from several partitions")
    # b leaves; a takes over every partition from the committed offsets.
    b.close()
    while len(seen) < n and time.time() < deadline:
        m = a.poll(0.2)
        if m is not None and m.error() is None:
            seen.append((True, m.partition(), m.offset(), m.value()))
            a.commit(message=m, asynchronous=False)
    values = sorted(int(v) for _, _, _, v in seen)
    check(values == list(range(n)), f"exactly once: {len(values)} records, {len(set(values))} distinct")
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    listed = kp.list_groups()
    check("two" in str(listed), f"list groups: {listed}")
    desc = kp.describe_groups(["two"])
    print("describe groups:", desc)
    check("Stable" in str(desc), f"describe: {desc}")
    kp.close()
    # OffsetDelete (kafka-python): a topic the remaining member consumes is protected, another
    # topic's offsets go; once the group is empty, "grp" goes too.
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import NoError, GroupSubscribedToTopicError
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    r = kp.delete_group_offsets("two", [KpTopicPartition("grp", 0), KpTopicPartition("other", 0)])
    check(r == {KpTopicPartition("grp", 0): GroupSubscribedToTopicError, KpTopicPartition("other", 0): NoError},
          f"delete offsets with a member: {r}")
    left = kp.list_group_offsets("two")["two"]
    check(KpTopicPartition("other", 0) not in left and KpTopicPartition("grp", 0) in left, f"offsets left {left}")
    kp.close()
    # DeleteGroups: refused while a member remains, then done; unknown groups are reported.
    check_not_deleted("two")
    a.close()
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    r = kp.delete_group_offsets("two", [KpTopicPartition("grp", 0)])
    check(r == {KpTopicPartition("grp", 0): NoError}, f"delete offsets of an empty group: {r}")
    left = kp.list_group_offsets("two")["two"]
    check(KpTopicPartition("grp", 0) not in left and KpTopicPartition("grp", 1) in left, f"deleted: {left}")
    kp.close()
    admin().delete_consumer_groups(["two"])["two"].result(TIMEOUT)
    listed = admin().list_consumer_groups().result(TIMEOUT)
    check("two" not in [g.group_id for g in listed.valid], f"deleted: {listed.valid}")
    try:
        admin().delete_consumer_groups(["never"])["never"].result(TIMEOUT)
        check(False, "deleted an unknown group")
    except ck.KafkaException as e:
        check(e.args[0].code() == ck.KafkaError.GROUP_ID_NOT_FOUND, f"unknown group: {e}")


def commit_racing(c, failed, **kw):
    """Commits synchronously. A commit racing a rebalance fails, from Kafka too:
    REBALANCE_IN_PROGRESS between the rebalance's JoinGroup and SyncGroup, ILLEGAL_GENERATION
    with the generation the rebalance replaced, and in the consumer protocol (KIP-848)
    STALE_MEMBER_EPOCH with the epoch a heartbeat answer just replaced; such failures are
    collected in `failed`."""
    try:
        c.commit(asynchronous=False, **kw)
    except ck.KafkaException as e:
        code = e.args[0].code()
        check(code in (ck.KafkaError.REBALANCE_IN_PROGRESS, ck.KafkaError.ILLEGAL_GENERATION,
                       ck.KafkaError.STALE_MEMBER_EPOCH),
              f"commit: {e}")
        failed.append(code)


def check_not_deleted(group):
    """DeleteGroups of a group with members fails with NON_EMPTY_GROUP."""
    try:
        admin().delete_consumer_groups([group])[group].result(TIMEOUT)
        check(False, f"deleted group {group} with members")
    except ck.KafkaException as e:
        check(e.args[0].code() == ck.KafkaError.NON_EMPTY_GROUP, f"non-empty group: {e}")


def take_one(c, seen, failed_commits, timeout=0.05):
    """Polls one record; its value (a number) goes to `seen` and its offset is committed
    (failures of commits racing a rebalance go to `failed_commits`). Answers whether it got
    one."""
    m = c.poll(timeout)
    if m is None or m.error() is not None:
        return False
    seen.append(int(m.value()))
    commit_racing(c, failed_commits, message=m)
    return True


def take_some(members, seen, failed_commits):
    """Takes records from each member in turn, up to 100 at a time while it has them (so that
    an idle member does not hold up a busy one)."""
    for c in members:
        for _ in range(100):
            if not take_one(c, seen, failed_commits, timeout=0.01):
                break


def scenario_cooperative():
    """librdkafka's cooperative-sticky assignor (incremental rebalancing over the classic
    protocol): a second member takes half the partitions without the first giving up the rest,
    the first takes them back when the second leaves, and every record is consumed (once,
    unless a commit raced a rebalance)."""
    create("coop", 6)
    n = 6000
    produce_ck("coop", [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n)])
    events = []

    def member(name):
        c = ck.Consumer({
            "bootstrap.servers": BOOT, "group.id": "coop", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        })
        c.subscribe(["coop"],
                    on_assign=lambda _, ps: events.append((name, "+", sorted(p.partition for p in ps))),
                    on_revoke=lambda _, ps: events.append((name, "-", sorted(p.partition for p in ps))))
        return c

    seen, failed_commits = [], []

    def take(c):
        take_one(c, seen, failed_commits)

    deadline = time.time() + TIMEOUT
    a = member("a")
    while len(seen) < 1000 and time.time() < deadline:
        take(a)
    b = member("b")
    while (len(seen) < 4000 or not b.assignment()) and time.time() < deadline:
        take(a)
        take(b)
    mine = (sorted(p.partition for p in a.assignment()), sorted(p.partition for p in b.assignment()))
    check(len(mine[0]) == 3 and sorted(mine[0] + mine[1]) == list(range(6)), f"shared: {mine}")
    b.close()
    while len(set(seen)) < n and time.time() < deadline:
        take(a)
    # Incremental: a gave up only what b got, and never the partitions it kept.
    revoked_from_a = [ps for who, what, ps in events if who == "a" and what == "-"]
    check(revoked_from_a == [mine[1]], f"a's revocations {revoked_from_a} ({events})")
    check(("b", "-", mine[1]) in events and ("a", "+", mine[1]) in events, f"handed back: {events}")
    a.close()
    # Every record at least once; exactly once unless a commit lost a race with a rebalance
    # (then the partition's next owner starts before the records it did not cover).
    check(sorted(set(seen)) == list(range(n)), f"at least once: {len(set(seen))} distinct of {n}")
    check(failed_commits or len(seen) == n, f"exactly once: {len(seen)} records of {n}")


def scenario_consumer_protocol():
    """Kafka's consumer group protocol (KIP-848, `group.protocol=consumer`, librdkafka through
    confluent-kafka): the broker assigns; a second member takes half the partitions once the
    first has given them up; describe and list show a consumer group; the first takes everything
    back when the second leaves; every record is consumed once (unless a commit raced a
    reassignment); a new member resumes from the committed offsets; a pattern subscription;
    a classic member cannot join the group."""
    create("kip848", 4)
    create("kip848-more", 2)
    n = 4000
    produce_ck("kip848", [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n)])
    conf = {
        "bootstrap.servers": BOOT, "group.id": "kip848", "group.protocol": "consumer",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }
    seen, failed_commits = [], []

    def take(c):
        take_one(c, seen, failed_commits)

    deadline = time.time() + 3 * TIMEOUT
    a = ck.Consumer(conf)
    a.subscribe(["kip848"])
    while len(seen) < 1000 and time.time() < deadline:
        take(a)
    check(len(a.assignment()) == 4, f"a alone has every partition: {a.assignment()}")
    b = ck.Consumer(conf)
    b.subscribe(["kip848"])
    while (len(seen) < 3000 or not b.assignment()) and time.time() < deadline:
        take(a)
        take(b)
    mine = (sorted(p.partition for p in a.assignment()), sorted(p.partition for p in b.assignment()))
    check(len(mine[0]) == 2 and sorted(mine[0] + mine[1]) == [0, 1, 2, 3], f"shared: {mine}")
    d = admin().describe_consumer_groups(["kip848"])["kip848"].result(TIMEOUT)
    check(d.type == ck.ConsumerGroupType.CONSUMER and d.state == ck.ConsumerGroupState.STABLE,
          f"described: {d.type} {d.state}")
    described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members)
    check(described == sorted([mine[0], mine[1]]), f"described members: {described}")
    listed = admin().list_consumer_groups().result(TIMEOUT).valid
    check([(g.group_id, g.type) for g in listed if g.group_id == "kip848"]
          == [("kip848", ck.ConsumerGroupType.CONSUMER)], f"listed: {listed}")
    # DescribeGroups (kafka-python) shows it as Kafka does: protocol type consumer, and each
    # member's assignment in the classic format.
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    g = kp.describe_groups(["kip848"])["kip848"]
    check(g["protocol_type"] == "consumer" and g["group_state"] == "Stable", f"DescribeGroups: {g}")
    parts = sorted(sorted(p for a in m["member_assignment"]["assigned_partitions"] for p in a["partitions"])
                   for m in g["members"])
    check(parts == sorted([mine[0], mine[1]]), f"DescribeGroups members: {g['members']}")
    check(all(m["member_metadata"]["topics"] == ["kip848"] for m in g["members"]), f"subscriptions: {g}")
    # The topic its members consume keeps its offsets; the group is not deleted while it has
    # members.
    from kafka import TopicPartition as KpTopicPartition
    from kafka.errors import GroupSubscribedToTopicError
    r = kp.delete_group_offsets("kip848", [KpTopicPartition("kip848", 0)])
    check(r == {KpTopicPartition("kip848", 0): GroupSubscribedToTopicError}, f"delete offsets: {r}")
    kp.close()
    check_not_deleted("kip848")
    # A classic consumer cannot join while the group has consumer-protocol members (this
    # server's `migration_policy` is "disabled"; see scenario_protocol_migration for the
    # default).
    classic = ck.Consumer({**{k: v for k, v in conf.items() if k != "group.protocol"},
                           "session.timeout.ms": 6000})
    classic.subscribe(["kip848"])
    refused = None
    while refused is None and time.time() < deadline:
        take(a)
        take(b)
        m = classic.poll(0.05)
        if m is not None and m.error() is not None:
            refused = m.error()
    check(refused is not None and refused.code() == ck.KafkaError.INCONSISTENT_GROUP_PROTOCOL,
          f"classic member: {refused}")
    classic.close()
    b.close()
    # (b may have read its partitions to the end already: a gets them back all the same.)
    while (len(set(seen)) < n or len(a.assignment()) < 4) and time.time() < deadline:
        take(a)
    check(len(a.assignment()) == 4, f"a has everything again: {a.assignment()}")
    a.close()
    check(sorted(set(seen)) == list(range(n)), f"at least once: {len(set(seen))} distinct of {n}")
    check(failed_commits or len(seen) == n, f"exactly once: {len(seen)} records of {n}")
    # A new member resumes where the group committed.
    produce_ck("kip848", [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n, n + 100)])
    c = ck.Consumer(conf)
    c.subscribe(["kip848"])
    later = []
    while len(later) < 100 and time.time() < deadline:
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            later.append(int(m.value()))
    extra = c.poll(1.0)
    c.close()
    check(sorted(later) == list(range(n, n + 100)) and extra is None, f"resumed: {len(later)}")
    # A pattern subscription takes the partitions of every matching topic.
    r = ck.Consumer({**conf, "group.id": "kip848-pattern"})
    r.subscribe(["^kip848.*"])
    while len(r.assignment()) < 6 and time.time() < deadline:
        r.poll(0.1)
    got = sorted((p.topic, p.partition) for p in r.assignment())
    r.close()
    check(got == [("kip848", i) for i in range(4)] + [("kip848-more", 0), ("kip848-more", 1)],
          f"pattern: {got}")


def scenario_protocol_migration():
    """A rolling change of a group's consumers between Kafka's two group protocols, as Kafka 4
    allows (`group.consumer.migration.policy`, bidirectional by default), with eager (range)
    and with cooperative (cooperative-sticky) librdkafka classic consumers: a classic group of
    two; one restarts with `group.protocol=consumer` (the group becomes a consumer-protocol
    group; the classic member goes on in it and gives up half its partitions to the new
    member); another classic consumer joins it as a classic member; the consumer-protocol
    member leaves (the group is classic again, and its members rebalance among themselves).
    Every record is consumed, once unless a commit raced a rebalance. Then kafka-python as a
    classic member."""
    for strategy in ("range", "cooperative-sticky"):
        migrate_with(strategy)
    migrate_kafka_python()


def migrate_kafka_python():
    """kafka-python (its own classic client, not librdkafka) as the classic member of a
    consumer-protocol group: it joins beside a `group.protocol=consumer` member and gets half;
    when that member leaves, the group is classic again and kafka-python has everything."""
    name = "migrate-kafka-python"
    create(name, 4)
    produce_ck(name, [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(1000)])
    n = ck.Consumer({"bootstrap.servers": BOOT, "group.id": name, "group.protocol": "consumer",
                     "auto.offset.reset": "earliest"})
    n.subscribe([name])
    deadline = time.time() + TIMEOUT
    while len(n.assignment()) < 4 and time.time() < deadline:
        n.poll(0.1)
    k = kafka.KafkaConsumer(name, bootstrap_servers=BOOT, group_id=name,
                            auto_offset_reset="earliest", heartbeat_interval_ms=500,
                            session_timeout_ms=6000)
    while (len(n.assignment()) != 2 or len(k.assignment()) != 2) and time.time() < deadline:
        n.poll(0.05)
        k.poll(timeout_ms=50)
    shared = (sorted(p.partition for p in n.assignment()),
              sorted(p.partition for p in k.assignment()))
    check(sorted(shared[0] + shared[1]) == [0, 1, 2, 3] and len(shared[0]) == 2,
          f"shared: {shared}")
    d = admin().describe_consumer_groups([name])[name].result(TIMEOUT)
    check(d.type == ck.ConsumerGroupType.CONSUMER and len(d.members) == 2, f"described: {d}")
    n.close()
    while len(k.assignment()) < 4 and time.time() < deadline:
        k.poll(timeout_ms=100)
    check(len(k.assignment()) == 4, f"kafka-python alone: {k.assignment()}")
    d = admin().describe_consumer_groups([name])[name].result(TIMEOUT)
    check(d.type == ck.ConsumerGroupType.CLASSIC and len(d.members) == 1, f"described: {d}")
    k.close()


def migrate_with(strategy):
    """scenario_protocol_migration with classic consumers of this assignor."""
    name = f"migrate-{strategy}"
    create(name, 4)
    n = 6000
    produce_ck(name, [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n)])
    common = {"bootstrap.servers": BOOT, "group.id": name, "auto.offset.reset": "earliest",
              "enable.auto.commit": False}
    classic_conf = {**common, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                    "partition.assignment.strategy": strategy}
    seen, failed_commits = [], []
    deadline = time.time() + 4 * TIMEOUT

    def parts(c):
        return sorted(p.partition for p in c.assignment())

    def consume_until(members, records, sizes):
        """Polls the members in turn until `records` distinct records were seen and their
        assignments have the given sizes (in order) and cover the topic."""
        def settled():
            got = [parts(c) for c in members]
            return [len(g) for g in got] == sizes and sorted(sum(got, [])) == [0, 1, 2, 3]
        while (len(set(seen)) < records or not settled()) and time.time() < deadline:
            take_some(members, seen, failed_commits)
        check(settled(),
              f"{strategy}: assignments {[parts(c) for c in members]}, wanted sizes {sizes}")

    def described(kind, members):
        d = admin().describe_consumer_groups([name])[name].result(TIMEOUT)
        check(d.type == kind and len(d.members) == members,
              f"{strategy}: described: {d.type} {d.state} {d.members}")

    a = ck.Consumer(classic_conf)
    a.subscribe([name])
    b = ck.Consumer(classic_conf)
    b.subscribe([name])
    consume_until([a, b], 1000, [2, 2])
    described(ck.ConsumerGroupType.CLASSIC, 2)
    # b restarts with the consumer protocol: the group changes protocol under a.
    b.close()
    b = ck.Consumer({**common, "group.protocol": "consumer"})
    b.subscribe([name])
    consume_until([a, b], 2500, [2, 2])
    described(ck.ConsumerGroupType.CONSUMER, 2)
    # A classic consumer joins the consumer-protocol group.
    c = ck.Consumer(classic_conf)
    c.subscribe([name])
    def three_way():
        got = [parts(m) for m in (a, b, c)]
        return all(got) and sorted(sum(got, [])) == [0, 1, 2, 3]
    while not three_way() and time.time() < deadline:
        take_some([a, b, c], seen, failed_commits)
    check(three_way(), f"{strategy}: three members: {[parts(m) for m in (a, b, c)]}")
    described(ck.ConsumerGroupType.CONSUMER, 3)
    # The consumer-protocol member leaves: the group is classic again, a and c share it.
    b.close()
    consume_until([a, c], n, [2, 2])
    described(ck.ConsumerGroupType.CLASSIC, 2)
    a.close()
    c.close()
    check(sorted(set(seen)) == list(range(n)), f"at least once: {len(set(seen))} distinct of {n}")
    check(failed_commits or len(seen) == n, f"exactly once: {len(seen)} records of {n}")


def scenario_static():
    """Static membership (group.instance.id): a member that restarts gets its partitions back
    without the other member noticing (no revocation), every record is consumed once, and a
    second consumer started with the same instance id fences the first (a fatal error)."""
    create("static", 4)
    n = 4000
    produce_ck("static", [(f"k{i}".encode(), f"{i}".encode(), None, None) for i in range(n)])
    events = []

    def member(name, instance):
        c = ck.Consumer({
            "bootstrap.servers": BOOT, "group.id": "static", "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "group.instance.id": instance,
            "session.timeout.ms": 10000, "heartbeat.interval.ms": 500,
        })
        c.subscribe(["static"],
                    on_assign=lambda _, ps: events.append((name, "+", sorted(p.partition for p in ps))),
                    on_revoke=lambda _, ps: events.append((name, "-", sorted(p.partition for p in ps))))
        return c

    seen, errors, failed_commits = [], [], []

    def take(c):
        got = False
        for m in c.consume(num_messages=500, timeout=0.05):
            if m.error() is not None:
                errors.append(m.error())
                continue
            seen.append(int(m.value()))
            got = True
        if got:
            commit_racing(c, failed_commits)

    deadline = time.time() + TIMEOUT
    a, b = member("a", "one"), member("b", "two")
    while (len(seen) < n // 3 or not a.assignment() or not b.assignment()) and time.time() < deadline:
        take(a)
        take(b)
    before = (sorted(p.partition for p in a.assignment()), sorted(p.partition for p in b.assignment()))
    check(len(before[0]) == 2 and len(before[1]) == 2, f"shared: {before}")
    a.close()  # a static member does not leave the group when it closes
    restart = len(events)
    a = member("a2", "one")
    while (len(set(seen)) < n or not a.assignment()) and time.time() < deadline:
        take(a)
        take(b)
    check(sorted(p.partition for p in a.assignment()) == before[0], f"a's partitions back: {events}")
    check(not [e for e in events[restart:] if e[0] == "b"], f"b saw a rebalance: {events}")
    check(sorted(set(seen)) == list(range(n)), f"at least once: {len(set(seen))} distinct of {n}")
    check(failed_commits or len(seen) == n, f"exactly once: {len(seen)} records of {n}")
    check(not errors, f"errors: {errors}")
    described = admin().describe_consumer_groups(["static"])["static"].result(TIMEOUT)
    instances = sorted(m.group_instance_id for m in described.members)
    check(instances == ["one", "two"], f"described members' instance ids: {instances}")
    # The same instance id twice: the newer consumer takes over, the older is fenced.
    dup = member("dup", "one")
    while not [e for e in errors if e.code() == ck.KafkaError._FATAL] and time.time() < deadline:
        take(dup)
        take(a)
    fatal = [str(e) for e in errors if e.code() == ck.KafkaError._FATAL]
    check(fatal and "fenced" in fatal[0].lower(), f"the old consumer fenced: {errors}")
    while not dup.assignment() and time.time() < deadline:
        take(dup)
    check(sorted(p.partition for p in dup.assignment()) == before[0], f"dup's partitions: {events}")
    for c in (dup, b):
        c.close()


def scenario_resume():
    create("resume", 2)
    produce_ck("resume", [(None, f"{i}".encode(), None, i % 2) for i in range(200)])
    c = kafka.KafkaConsumer("resume", bootstrap_servers=BOOT, group_id="resumer",
                            auto_offset_reset="earliest", enable_auto_commit=False,
                            consumer_timeout_ms=TIMEOUT * 1000)
    first = []
    for m in c:
        first.append(m)
        if len(first) == 120:
            break
    c.commit()
    c.close()
    produce_ck("resume", [(None, f"{i}".encode(), None, i % 2) for i in range(200, 300)])
    second = consume_ck("resume", 180, group="resumer",
                        offset=ck.OFFSET_STORED)
    got = sorted([int(m.value) for m in first] + [int(m.value()) for m in second])
    check(got == list(range(300)), f"resumed after the commit: {len(got)} records")


def scenario_idempotent():
    create("idem", 1)
    n = 5000
    produce_ck("idem", [(None, f"{i}".encode(), None, 0) for i in range(n)],
               **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
    p = kafka.KafkaProducer(bootstrap_servers=BOOT, enable_idempotence=True)
    for i in range(n, n + 500):
        p.send("idem", f"{i}".encode(), partition=0)
    p.flush(TIMEOUT)
    p.close()
    got = consume_ck("idem", n + 500)
    check([int(m.value()) for m in got] == list(range(n + 500)), "in order, no duplicates")


def scenario_configs():
    create("cfg", 1, {"retention.ms": "3600000"})
    res = ConfigResource("topic", "cfg")
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["cleanup.policy"].value == "delete", "cleanup.policy")
    check(cfg["retention.ms"].value == "3600000", f"retention.ms {cfg['retention.ms'].value}")
    check(cfg["retention.ms"].source == ck.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
          f"an override is a topic config: {cfg['retention.ms'].source}")
    check(cfg["segment.bytes"].is_default, "not overridden: a default")
    broker = ConfigResource("broker", "1")
    bcfg = admin().describe_configs([broker])[broker].result(TIMEOUT)
    check("num.partitions" in bcfg, f"broker configs {list(bcfg)}")
    # kafka-python reports the topic's overrides (its default filter).
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    r = kp.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, "cfg")])
    check("3600000" in str(r), f"kafka-python describe configs {r}")
    kp.close()
    # IncrementalAlterConfigs: SET one key, DELETE (reset) another, all or nothing.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    def alter(entries, validate_only=False):
        r = ConfigResource("topic", "cfg", incremental_configs=entries)
        return admin().incremental_alter_configs([r], validate_only=validate_only)[r]

    alter([ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
           ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)]).result(TIMEOUT)
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["segment.bytes"].value == "1048576" and not cfg["segment.bytes"].is_default,
          f"segment.bytes set: {cfg['segment.bytes']}")
    check(cfg["retention.ms"].is_default and cfg["retention.ms"].value == "604800000",
          f"retention.ms back to the default: {cfg['retention.ms'].value}")
    # validate_only changes nothing; a bad value or key fails the whole resource.
    alter([ConfigEntry("segment.bytes", "2097152", incremental_operation=AlterConfigOpType.SET)],
          validate_only=True).result(TIMEOUT)
    for bad in (ConfigEntry("segment.bytes", "lots", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET),
                ConfigEntry("cleanup.policy", "compact,archive", incremental_operation=AlterConfigOpType.SET)):
        try:
            alter([ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET), bad]).result(TIMEOUT)
            check(False, f"{bad} accepted")
        except ck.KafkaException as e:
            check(e.args[0].code() == ck.KafkaError.INVALID_CONFIG, f"{bad}: {e}")
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["segment.bytes"].value == "1048576", "validate_only changed nothing")
    check(cfg["retention.ms"].is_default, "a failed alter changed nothing")
    try:
        alter([ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)]).result(TIMEOUT)
    except ck.KafkaException as e:
        check(False, f"retention.ms=1: {e}")
    missing = ConfigResource("topic", "no-such-topic", incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    try:
        admin().incremental_alter_configs([missing])[missing].result(TIMEOUT)
        check(False, "altering a missing topic succeeded")
    except ck.KafkaException as e:
        check(e.args[0].code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART, f"missing topic: {e}")
    # AlterConfigs (kafka-python, forced: it prefers IncrementalAlterConfigs when advertised).
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    r = kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, "cfg", configs={"retention.ms": "7200000"})],
                         incremental=False)
    check(r == {"topic": {"cfg": "OK"}}, f"kafka-python alter_configs: {r}")
    r = kp.alter_configs([KpConfigResource(ConfigResourceType.TOPIC, "cfg", configs={"segment.bytes": "many"})],
                         incremental=False)
    check("Error 40" in str(r), f"a bad value: {r}")
    kp.close()
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["retention.ms"].value == "7200000", f"retention.ms {cfg['retention.ms'].value}")
    # kafka-python resends the other overrides itself (AlterConfigs resets what it omits).
    check(cfg["segment.bytes"].value == "1048576", f"segment.bytes kept: {cfg['segment.bytes'].value}")


def scenario_delete():
    # DeleteRecords: the start moves up, a consumer from the beginning starts there, and
    # -1 means the high watermark.
    create("trim", 1)
    produce_ck("trim", [(None, f"{i}".encode(), None, 0) for i in range(10)])
    # DescribeLogDirs (kafka-python): partition sizes and the file system's space.
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    dirs = kp.describe_log_dirs({"trim": [0]})
    kp.close()
    d = dirs[0]["log_dirs"][0]
    sizes = {(t["name"], p["partition_index"]): p["partition_size"] for t in d["topics"] for p in t["partitions"]}
    check(list(sizes) == [("trim", 0)] and sizes[("trim", 0)] > 0, f"log dirs {dirs}")
    check(d["total_bytes"] >= d["usable_bytes"] > 0, f"space {d['total_bytes']} {d['usable_bytes']}")
    done = admin().delete_records([ck.TopicPartition("trim", 0, 4)])
    (tp, fut), = done.items()
    check(fut.result(TIMEOUT).low_watermark == 4, "low watermark 4")
    got = consume_ck("trim", 6)
    check([int(m.value()) for m in got] == list(range(4, 10)), f"from the new start: {[m.offset() for m in got]}")
    lo, hi = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "wm"}).get_watermark_offsets(
        ck.TopicPartition("trim", 0), timeout=TIMEOUT)
    check((lo, hi) == (4, 10), f"watermarks {lo} {hi}")
    try:
        (_, fut), = admin().delete_records([ck.TopicPartition("trim", 0, 11)]).items()
        fut.result(TIMEOUT)
        check(False, "deleted beyond the high watermark")
    except ck.KafkaException as e:
        check(e.args[0].code() == ck.KafkaError.OFFSET_OUT_OF_RANGE, f"beyond the end: {e}")
    (_, fut), = admin().delete_records([ck.TopicPartition("trim", 0, ck.OFFSET_END)]).items()
    check(fut.result(TIMEOUT).low_watermark == 10, "-1 is the high watermark")
    create("gone", 2)
    produce_ck("gone", [(None, b"x", None, 0)])
    for f in admin().delete_topics(["gone"]).values():
        f.result(TIMEOUT)
    md = admin().list_topics(timeout=TIMEOUT)
    check("gone" not in md.topics, "deleted")
    kp = KafkaAdminClient(bootstrap_servers=BOOT)
    kp.create_topics([KpNewTopic("gone2", 1, 1)])
    check("gone2" in kp.list_topics(), "kafka-python created")
    kp.delete_topics(["gone2"])
    check("gone2" not in kp.list_topics(), "kafka-python deleted")
    kp.close()


def scenario_aiokafka():
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    create("aio", 2)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=BOOT)
        await p.start()
        for i in range(200):
            await p.send("aio", f"v{i}".encode(), key=f"k{i % 3}".encode())
        await p.flush()
        await p.stop()
        c = AIOKafkaConsumer("aio", bootstrap_servers=BOOT, group_id="aio-g",
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        got = []
        async for m in c:
            got.append(m.value)
            if len(got) == 200:
                break
        await c.commit()
        await c.stop()
        return got

    got = asyncio.run(asyncio.wait_for(run(), TIMEOUT))
    check(sorted(got) == sorted(f"v{i}".encode() for i in range(200)), "aiokafka round trip")


def scenario_full_disk():
    """Run on a server whose files are limited to 256 KiB: the publish that does not fit gets
    KAFKA_STORAGE_ERROR (retries=0 so that the broker's error, not a timeout, is reported);
    every record acknowledged before is read back."""
    create("full")
    p = ck.Producer({"bootstrap.servers": BOOT, "linger.ms": 0, "retries": 0,
                     "enable.idempotence": False, "message.timeout.ms": 10000})
    acked, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append(msg.value())

    for i in range(1000):
        p.produce("full", b"%08d" % i + b"." * 992, on_delivery=cb)
        p.flush(TIMEOUT)
        if errors:
            break
    check(errors, "a 256 KiB file limit refuses a record within 1 MB")
    check(errors[0].code() == ck.KafkaError.KAFKA_STORAGE_ERROR, f"the error: {errors[0]}")
    check(len(acked) > 100, f"only {len(acked)} records fit")
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "full-g",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([ck.TopicPartition("full", 0, 0)])
    got = []
    deadline = time.time() + TIMEOUT
    while len(got) < len(acked) and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    check(got == acked, f"read {len(got)} of {len(acked)} acknowledged records")


def scenario_confluent_admin():
    """librdkafka's admin calls beyond topics and configs: cluster, topic and group
    descriptions, group offsets altered and listed, list_offsets (latest, earliest, max
    timestamp), partitions added."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection, TopicPartition
    from confluent_kafka.admin import NewPartitions, OffsetSpec

    a = admin()
    create("cka", 2)
    produce_ck("cka", [(None, b"v%d" % i, None, i % 2) for i in range(10)])
    cluster = a.describe_cluster().result(TIMEOUT)
    check(cluster.controller is not None and len(cluster.nodes) == 1, "describe_cluster")
    topic = a.describe_topics(TopicCollection(["cka"]))["cka"].result(TIMEOUT)
    check(topic.name == "cka" and len(topic.partitions) == 2, "describe_topics")
    tps = [TopicPartition("cka", 0, 3), TopicPartition("cka", 1, 4)]
    for f in a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("cka-g", tps)]).values():
        f.result(TIMEOUT)
    listed = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("cka-g")])
    got = sorted((t.partition, t.offset) for t in listed["cka-g"].result(TIMEOUT).topic_partitions)
    check(got == [(0, 3), (1, 4)], f"list_consumer_group_offsets {got}")
    group = a.describe_consumer_groups(["cka-g"])["cka-g"].result(TIMEOUT)
    check(group.state.name == "EMPTY" and group.members == [], f"describe_consumer_groups {group}")
    specs = {TopicPartition("cka", 0): OffsetSpec.latest(),
             TopicPartition("cka", 1): OffsetSpec.earliest()}
    ends = {tp.partition: f.result(TIMEOUT).offset for tp, f in a.list_offsets(specs).items()}
    check(ends == {0: 5, 1: 0}, f"list_offsets {ends}")
    newest = a.list_offsets({TopicPartition("cka", 0): OffsetSpec.max_timestamp()})
    info = next(iter(newest.values())).result(TIMEOUT)
    check(0 <= info.offset < 5 and info.timestamp > 0, f"list_offsets max_timestamp {info}")
    for f in a.create_partitions([NewPartitions("cka", 3)]).values():
        f.result(TIMEOUT)
    topic = a.describe_topics(TopicCollection(["cka"]))["cka"].result(TIMEOUT)
    check(len(topic.partitions) == 3, "create_partitions")


def scenario_aiokafka_admin():
    """aiokafka's admin client (older, non-flexible versions of the admin APIs)."""
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic, RecordsToDelete
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.structs import OffsetAndMetadata

    async def run():
        a = AIOKafkaAdminClient(bootstrap_servers=BOOT)
        await a.start()
        await a.create_topics([NewTopic("aad", 2, 1)])
        check("aad" in await a.list_topics(), "aiokafka created a topic")
        described = await a.describe_topics(["aad"])
        check(len(described[0]["partitions"]) == 2, f"describe_topics {described}")
        cluster = await a.describe_cluster()
        check(cluster["controller_id"] == cluster["brokers"][0]["node_id"], f"describe_cluster {cluster}")
        p = AIOKafkaProducer(bootstrap_servers=BOOT)
        await p.start()
        for i in range(10):
            await p.send("aad", b"v%d" % i, partition=i % 2)
        await p.flush()
        await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=BOOT, group_id="aad-g", enable_auto_commit=False)
        await c.start()
        tps = [TopicPartition("aad", 0), TopicPartition("aad", 1)]
        c.assign(tps)
        await c.commit({tps[0]: OffsetAndMetadata(3, ""), tps[1]: OffsetAndMetadata(4, "")})
        await c.stop()
        listed = await a.list_consumer_groups()
        check("aad-g" in [g for g, _ in listed], f"list_consumer_groups {listed}")
        groups = await a.describe_consumer_groups(["aad-g"])
        check(groups[0].groups[0][2] == "Empty", f"describe_consumer_groups {groups}")
        offsets = await a.list_consumer_group_offsets("aad-g")
        check({tp.partition: o.offset for tp, o in offsets.items()} == {0: 3, 1: 4},
              f"list_consumer_group_offsets {offsets}")
        topic = ConfigResource(ConfigResourceType.TOPIC, "aad")
        await a.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "aad",
                                              configs={"retention.ms": "3600000"})])
        entries = (await a.describe_configs([topic]))[0].resources[0][4]
        check(("retention.ms", "3600000") in [(e[0], e[1]) for e in entries],
              f"alter_configs then describe_configs {entries}")
        await a.create_partitions({"aad": NewPartitions(3)})
        described = await a.describe_topics(["aad"])
        check(len(described[0]["partitions"]) == 3, f"create_partitions {described}")
        low = await a.delete_records({tps[0]: RecordsToDelete(2)})
        check(low == {tps[0]: 2}, f"delete_records {low}")
        await a.delete_topics(["aad"])
        check("aad" not in await a.list_topics(), "aiokafka deleted the topic")
        await a.close()

    asyncio.run(asyncio.wait_for(run(), TIMEOUT))


def read_to_end_ck(topic):
    """Every record of partition 0 up to its high watermark, with confluent-kafka."""
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": f"g-{uuid.uuid4()}",
                     "enable.auto.commit": False})
    _, high = c.get_watermark_offsets(ck.TopicPartition(topic, 0), timeout=TIMEOUT)
    c.assign([ck.TopicPartition(topic, 0, ck.OFFSET_BEGINNING)])
    out = []
    deadline = time.time() + TIMEOUT
    while (not out or out[-1].offset() < high - 1) and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None:
            check(m.error() is None, f"consumer error {m.error()}")
            out.append(m)
    c.close()
    check(out and out[-1].offset() == high - 1, f"read {len(out)} records, not up to {high}")
    return out


def scenario_compaction():
    """A compacted topic, the kind Kafka Connect and Schema Registry keep their state in: each
    key keeps its latest value at its offset, a tombstone removes its key, a keyless record is
    refused, and consumers read across the gaps compaction leaves."""
    create("table", 1, {"cleanup.policy": "compact", "segment.bytes": "1024",
                        "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"})
    res = ConfigResource("topic", "table")
    cfg = admin().describe_configs([res])[res].result(TIMEOUT)
    check(cfg["cleanup.policy"].value == "compact", f"cleanup.policy {cfg['cleanup.policy'].value}")
    check(cfg["delete.retention.ms"].value == "0", "delete.retention.ms")
    # 200 updates of 10 keys, a tombstone for k9, then writes to another key that push all of
    # them out of the active segment (the part compaction never touches); each call is a batch
    # of its own, and a batch over segment.bytes fills its segment.
    updates = [(f"k{i % 10}".encode(), f"v{i}".encode(), None, 0) for i in range(200)]
    tombstone = [(b"k9", None, None, 0)]
    offset_of = {}
    for part in [updates, tombstone] + [[(b"filler", b"x" * 150, None, 0)] * 8] * 3:
        delivered = produce_ck("table", part)
        for (key, value, _, _), (_, offset) in zip(part, delivered):
            offset_of[key] = (offset, value)
    # A record without a key is refused: INVALID_RECORD, not retried.
    p = ck.Producer({"bootstrap.servers": BOOT})
    errors = []
    p.produce("table", value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT)
    check(len(errors) == 1 and errors[0] is not None and errors[0].code() == ck.KafkaError.INVALID_RECORD,
          f"a keyless record on a compacted topic: {errors}")
    expected = {f"k{k}": offset_of[f"k{k}".encode()] for k in range(9)}
    deadline = time.time() + TIMEOUT
    while True:
        got = read_to_end_ck("table")
        keyed = [m for m in got if m.key().startswith(b"k")]
        seen = {m.key().decode(): (m.offset(), m.value()) for m in keyed}
        if len(keyed) == 9 and seen == expected:
            break
        check(time.time() < deadline, f"not compacted in time: {len(keyed)} k-records, {seen}")
        time.sleep(0.3)
    check(b"k9" not in [m.key() for m in got], "the tombstoned key is gone")
    offsets = [m.offset() for m in got]
    check(offsets == sorted(offsets) and len(offsets) < 225, f"offsets ascend, with gaps: {offsets[:20]}")
    # kafka-python reads across the gaps too.
    kp = consume_kp("table", len(got))
    check([(m.offset, m.key, m.value) for m in kp] == [(m.offset(), m.key(), m.value()) for m in got],
          "kafka-python reads what confluent-kafka reads")

    # With the default delete.retention.ms (a day) a tombstone outlives the pass that compacts
    # its segment: the pass stamps its batch with Kafka's delete horizon (the base timestamp,
    # attribute bit 6; records' timestamps become deltas from it, here negative). Clients read
    # the stamped batches with every timestamp as the producer set it, an hour in the past.
    create("keeps-deletes", 1, {"cleanup.policy": "compact", "segment.bytes": "1024",
                                "min.cleanable.dirty.ratio": "0.01"})
    hour_ago = int(time.time() * 1000) - 3_600_000
    sent = [(f"d{i % 5}".encode(), f"v{i}".encode(), hour_ago + i) for i in range(40)]
    sent.append((b"d4", None, hour_ago + 100))
    sent += [(b"filler", b"x" * 150, hour_ago + 200 + i) for i in range(24)]
    p = ck.Producer({"bootstrap.servers": BOOT, "linger.ms": 0})
    for key, value, ts in sent:
        p.produce("keeps-deletes", key=key, value=value, timestamp=ts)
        p.flush(TIMEOUT)
    latest = {}
    for offset, (key, value, ts) in enumerate(sent):
        if key.startswith(b"d"):
            latest[key] = (offset, value, ts)
    deadline = time.time() + TIMEOUT
    while True:
        got = read_to_end_ck("keeps-deletes")
        seen = {m.key(): (m.offset(), m.value(), m.timestamp()[1]) for m in got if m.key().startswith(b"d")}
        if len([m for m in got if m.key().startswith(b"d")]) == 5:
            break
        check(time.time() < deadline, f"not compacted in time: {len(got)} records")
        time.sleep(0.3)
    check(seen == latest, f"each key's latest record with its own timestamp, the tombstone kept: {seen}")
    kp = consume_kp("keeps-deletes", len(got))
    check([(m.offset, m.key, m.value, m.timestamp) for m in kp]
          == [(m.offset(), m.key(), m.value(), m.timestamp()[1]) for m in got],
          "kafka-python reads the stamped batches as confluent-kafka does")

    # A compacted topic written one transaction after another (Kafka Streams' exactly-once
    # changelogs): compaction removes the records later transactions overwrote and then the
    # commit markers of the transactions it emptied (delete.retention.ms=0); read_committed
    # readers of both libraries see each key's latest value, and the stable offset reaches the
    # high watermark (no transaction is left looking open).
    create("eos-changelog", 1, {"cleanup.policy": "compact", "segment.bytes": "1024",
                                "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"})
    p = ck.Producer({"bootstrap.servers": BOOT, "transactional.id": "eos-task", "linger.ms": 0})
    p.init_transactions(TIMEOUT)
    for i in range(30):
        p.begin_transaction()
        p.produce("eos-changelog", key=f"s{i % 3}".encode(), value=f"t{i}".encode())
        p.commit_transaction(TIMEOUT)
    produce_ck("eos-changelog", [(b"filler", b"x" * 150, None, 0)] * 24, **{"linger.ms": 0})
    latest = [(b"s0", b"t27"), (b"s1", b"t28"), (b"s2", b"t29")]
    deadline = time.time() + TIMEOUT
    while True:
        got = read_to_end_ck("eos-changelog")
        seen = [(m.key(), m.value()) for m in got if m.key().startswith(b"s")]
        if seen == latest:
            break
        check(time.time() < deadline, f"not compacted in time: {seen}")
        time.sleep(0.3)
    time.sleep(1.0)  # a few more passes: the emptied transactions' markers go
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": f"g-{uuid.uuid4()}",
                     "isolation.level": "read_uncommitted"})
    _, high = c.get_watermark_offsets(ck.TopicPartition("eos-changelog", 0), timeout=TIMEOUT)
    c.close()
    got = read_to_end_ck("eos-changelog")
    check([(m.key(), m.value()) for m in got if m.key().startswith(b"s")] == latest,
          "read_committed after the markers went")
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": f"g-{uuid.uuid4()}"})
    _, stable = c.get_watermark_offsets(ck.TopicPartition("eos-changelog", 0), timeout=TIMEOUT)
    c.close()
    check(stable == high, f"last stable offset {stable} at the high watermark {high}")
    kp = consume_kp("eos-changelog", len(got), isolation_level="read_committed")
    check([(m.key, m.value) for m in kp if m.key.startswith(b"s")] == latest,
          "kafka-python read_committed reads the same")


def read_all_ck(topic, isolation):
    """Every record of every partition of `topic` up to the high watermarks, with confluent-kafka
    at `isolation` ("read_committed" or "read_uncommitted"): values, sorted."""
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": f"g-{uuid.uuid4()}",
                     "enable.auto.commit": False, "isolation.level": isolation,
                     "enable.partition.eof": True})
    n = len(c.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions)
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(n)])
    out, eof = [], set()
    deadline = time.time() + TIMEOUT
    while len(eof) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() is not None:
            check(m.error().code() == ck.KafkaError._PARTITION_EOF, f"consumer error {m.error()}")
            eof.add(m.partition())
            continue
        out.append(m.value())
    c.close()
    check(len(eof) == n, f"{isolation}: reached the end of {len(eof)} of {n} partitions")
    return sorted(out)


def read_all_kp(topic, isolation, count):
    c = kafka.KafkaConsumer(topic, bootstrap_servers=BOOT, auto_offset_reset="earliest",
                            enable_auto_commit=False, isolation_level=isolation,
                            consumer_timeout_ms=3000)
    out = sorted(m.value for m in c)
    c.close()
    check(len(out) == count, f"kafka-python {isolation}: {len(out)} records, not {count}")
    return out


def stable_and_high(topic, partition):
    """(last stable offset, high watermark) from confluent-kafka's admin ListOffsets."""
    from confluent_kafka.admin import OffsetSpec
    from confluent_kafka import IsolationLevel
    tp = ck.TopicPartition(topic, partition)
    out = []
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        f = admin().list_offsets({tp: OffsetSpec.latest()}, isolation_level=level)[tp]
        out.append(f.result(TIMEOUT).offset)
    return tuple(out)


def scenario_transactions():
    """Transactional producers (confluent-kafka and kafka-python): committed records reach
    read_committed consumers of both clients, aborted ones never; read_uncommitted consumers
    see both; an open transaction holds the last stable offset; consume-transform-produce
    commits the group's offsets with the transaction; a second instance fences the first."""
    create("tx", 2)
    p = ck.Producer({"bootstrap.servers": BOOT, "transactional.id": "tx-ck", "linger.ms": 5})
    p.init_transactions(TIMEOUT)
    rounds = [("c", 100, True), ("a", 50, False), ("d", 10, True)]
    for prefix, n, commit in rounds:
        p.begin_transaction()
        for i in range(n):
            p.produce("tx", key=f"k{i}".encode(), value=f"{prefix}{i}".encode())
        p.flush(TIMEOUT)
        if commit:
            p.commit_transaction(TIMEOUT)
        else:
            p.abort_transaction(TIMEOUT)
    committed = sorted(f"{x}{i}".encode() for x, n, c in rounds if c for i in range(n))
    everything = sorted(f"{x}{i}".encode() for x, n, c in rounds for i in range(n))
    check(read_all_ck("tx", "read_committed") == committed, "confluent-kafka read_committed")
    check(read_all_ck("tx", "read_uncommitted") == everything, "confluent-kafka read_uncommitted")
    check(read_all_kp("tx", "read_committed", len(committed)) == committed,
          "kafka-python read_committed")
    check(read_all_kp("tx", "read_uncommitted", len(everything)) == everything,
          "kafka-python read_uncommitted")

    # An open transaction holds the last stable offset back; its commit releases it.
    p.begin_transaction()
    p.produce("tx", value=b"open", partition=0)
    p.flush(TIMEOUT)
    stable, high = stable_and_high("tx", 0)
    check(stable < high, f"open transaction: stable {stable}, high {high}")
    check(read_all_ck("tx", "read_committed") == committed, "nothing of the open transaction")
    p.commit_transaction(TIMEOUT)
    stable, high = stable_and_high("tx", 0)
    check(stable == high, f"committed: stable {stable}, high {high}")
    committed = sorted(committed + [b"open"])

    # Consume-transform-produce: the group's offsets commit with the transaction.
    create("in", 1)
    create("out", 1)
    produce_ck("in", [(None, f"i{i}".encode(), None, 0) for i in range(20)])
    c = ck.Consumer({"bootstrap.servers": BOOT, "group.id": "etl", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False})
    c.subscribe(["in"])
    for commit, want in [(False, 10), (True, 10)]:
        got = []
        deadline = time.time() + TIMEOUT
        while len(got) < want and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        check(len(got) == want, f"etl consumed {len(got)}")
        p.begin_transaction()
        for m in got:
            p.produce("out", value=m.value().upper())
        offsets = [ck.TopicPartition("in", 0, got[-1].offset() + 1)]
        p.send_offsets_to_transaction(offsets, c.consumer_group_metadata(), TIMEOUT)
        if commit:
            p.commit_transaction(TIMEOUT)
        else:
            p.abort_transaction(TIMEOUT)
            # Rewind to what the group committed (nothing yet): the input is read again.
            c.seek(ck.TopicPartition("in", 0, 0))
    c.close()
    committed_offsets = admin().list_consumer_group_offsets(
        [ck.ConsumerGroupTopicPartitions("etl")])["etl"].result(TIMEOUT).topic_partitions
    check([(t.topic, t.offset) for t in committed_offsets] == [("in", 10)],
          f"etl's committed offsets: {committed_offsets}")
    check(read_all_ck("out", "read_committed") == sorted(f"I{i}".encode() for i in range(10)),
          "only the committed transformation is visible")

    # A second instance with the same id fences the first.
    p2 = ck.Producer({"bootstrap.servers": BOOT, "transactional.id": "tx-ck"})
    p2.init_transactions(TIMEOUT)
    try:
        p.begin_transaction()
        p.produce("tx", value=b"zombie")
        p.commit_transaction(TIMEOUT)
        check(False, "the fenced producer committed")
    except ck.KafkaException as e:
        check(e.args[0].fatal(), f"fenced: {e}")
    p2.begin_transaction()
    p2.produce("tx", value=b"p2")
    p2.commit_transaction(TIMEOUT)
    committed = sorted(committed + [b"p2"])
    check(read_all_ck("tx", "read_committed") == committed, "after the fence")

    # kafka-python's transactional producer.
    kp = kafka.KafkaProducer(bootstrap_servers=BOOT, transactional_id="tx-kp")
    kp.init_transactions()
    for value, commit in [(b"kp-abort", False), (b"kp-commit", True)]:
        kp.begin_transaction()
        kp.send("tx", value=value, partition=1).get(TIMEOUT)
        if commit:
            kp.commit_transaction()
        else:
            kp.abort_transaction()
    kp.close()
    committed = sorted(committed + [b"kp-commit"])
    check(read_all_ck("tx", "read_committed") == committed, "kafka-python's transactions")

    # aiokafka's transactional producer (older, non-flexible versions of the APIs) and its
    # read_committed consumer.
    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def aio():
        p = AIOKafkaProducer(bootstrap_servers=BOOT, transactional_id="tx-aio")
        await p.start()
        try:
            for value, commit in [(b"aio-abort", False), (b"aio-commit", True)]:
                await p.begin_transaction()
                await p.send_and_wait("tx", value=value, partition=0)
                if commit:
                    await p.commit_transaction()
                else:
                    await p.abort_transaction()
        finally:
            await p.stop()
        c = AIOKafkaConsumer("tx", bootstrap_servers=BOOT, auto_offset_reset="earliest",
                             enable_auto_commit=False, isolation_level="read_committed")
        await c.start()
        try:
            got = []
            while len(got) < len(committed) + 1:
                batch = await c.getmany(timeout_ms=1000)
                if not batch:
                    break
                got += [m.value for ms in batch.values() for m in ms]
            return sorted(got)
        finally:
            await c.stop()

    got = asyncio.run(asyncio.wait_for(aio(), TIMEOUT))
    check(got == sorted(committed + [b"aio-commit"]), f"aiokafka read_committed: {len(got)} records")


if __name__ == "__main__":
    try:
        globals()[f"scenario_{sys.argv[2]}"]()
    except BaseException:
        # Exit without finalizing: librdkafka can spin forever destroying a consumer that a
        # failed scenario left open in the middle of a rebalance.
        import os
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    print(f"{sys.argv[2]}: ok")
