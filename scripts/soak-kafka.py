"""Crash soak with real Kafka clients: a `weir serve` killed (-9, or stopped with SIGTERM) and
restarted again and again while an idempotent confluent-kafka producer writes keyed records and
a consumer group reads them and commits. Not part of CI; see README ("Tests beyond CI").

    .venv/bin/python scripts/soak-kafka.py [--minutes M] [--bin PATH] [--consumers N]
                                           [--transactions] [--backend segment|sled]
                                           [--group-protocol classic|consumer|mixed]

Without --bin it builds `cargo build --release --bin weir`. At the end it checks:
- the producer was told every record was delivered (no delivery errors, idempotence included),
  or with --transactions, every transaction committed or aborted (an aborted one is sent again);
- the topic holds every delivered record exactly once, at the offset its delivery reported,
  in the order sent per key (read_committed: committed transactions only, each once);
- the group, whose members are replaced now and then, read every record (at least once) and
  committed every partition's end; how many records it read twice is reported (a member
  leaving commits first, and a restart keeps the group's generation, so few or none);
- the server never exited on its own.
Exits non-zero with a message when one fails. Seeded (`--seed`) for the choice of kills.
"""
import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "soak"
# librdkafka logs every refused reconnect while the server is down; the checks say what matters.
QUIET = {"log_level": 2}
PARTITIONS = 6
KEYS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`weir serve` on a fixed Kafka port and one data directory, restarted at will."""

    def __init__(self, binary, work, port, backend):
        self.binary, self.work, self.port = binary, work, port
        self.config = os.path.join(work, "weir.toml")
        with open(self.config, "w") as f:
            f.write(f'data_dir = "{work}/data"\n[storage]\nbackend = "{backend}"\n'
                    f'[listeners]\nnative = "127.0.0.1:0"\nkafka = "127.0.0.1:{port}"\n')
        self.proc = None
        self.restarts = 0

    def start(self):
        log = open(os.path.join(self.work, f"serve-{self.restarts}.log"), "w")
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"weir serve exited with {self.proc.returncode} while starting; "
                         f"see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        sys.exit("weir serve did not listen within 60 s")

    def check_alive(self):
        if self.proc.poll() is not None:
            sys.exit(f"weir serve exited on its own with {self.proc.returncode} "
                     f"(logs in {self.work})")

    def stop(self, how):
        self.check_alive()
        self.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        code = self.proc.wait(60)
        if how == "term" and code != 0:
            sys.exit(f"weir serve exited {code} on SIGTERM (logs in {self.work})")
        self.restarts += 1


class Producer(threading.Thread):
    """Keyed values `key-K:N` (N counts per key) at up to `rate` records/s: one by one through an
    idempotent producer, or with `transactional`, in transactions of 200 records, each sent
    again in a new transaction if it had to be aborted. `committed` holds the values whose
    delivery (or transaction commit) was confirmed."""

    def __init__(self, boot, rate, transactional):
        super().__init__(daemon=True)
        conf = {"bootstrap.servers": boot, "enable.idempotence": True, "linger.ms": 5,
                "message.timeout.ms": 600000, "reconnect.backoff.max.ms": 500, **QUIET}
        if transactional:
            conf.update({"transactional.id": "soak-tx", "message.timeout.ms": 60000,
                         "transaction.timeout.ms": 60000})
        self.p = ck.Producer(conf)
        self.rate, self.transactional, self.stop = rate, transactional, threading.Event()
        self.delivered, self.errors, self.sent = {}, [], 0
        self.committed, self.aborts, self.per_key = set(), 0, [0] * KEYS

    def on_delivery(self, err, msg):
        if err is not None:
            if not self.transactional:
                self.errors.append(f"{err} ({msg.value()!r})")
        elif not self.transactional:
            self.delivered[msg.value().decode()] = (msg.partition(), msg.offset())
            self.committed.add(msg.value().decode())

    def next_values(self, n):
        out = []
        for _ in range(n):
            k = (self.sent + len(out)) % KEYS
            out.append((f"key-{k}", f"key-{k}:{self.per_key[k]}"))
            self.per_key[k] += 1
        return out

    def send(self, key, value):
        while True:
            try:
                self.p.produce(TOPIC, key=key, value=value, on_delivery=self.on_delivery)
                self.p.poll(0)
                return
            except BufferError:
                self.p.poll(0.05)

    def pace(self, start):
        ahead = self.sent / self.rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)

    def run(self):
        start = time.time()
        if not self.transactional:
            while not self.stop.is_set():
                (key, value), = self.next_values(1)
                self.send(key, value)
                self.sent += 1
                self.pace(start)
            left = self.p.flush(600)
            if left:
                self.errors.append(f"{left} records not delivered after the final flush")
            return
        self.retrying(lambda: self.p.init_transactions(30))
        batch = []
        while not self.stop.is_set():
            if not batch:
                batch = self.next_values(200)
            try:
                self.p.begin_transaction()
                for key, value in batch:
                    self.send(key, value)
                self.retrying(lambda: self.p.commit_transaction(30))
            except ck.KafkaException as e:
                if not e.args[0].txn_requires_abort():
                    self.errors.append(f"transaction: {e.args[0]}")
                    return
                self.retrying(lambda: self.p.abort_transaction(30))
                self.aborts += 1
                continue
            self.committed.update(v for _, v in batch)
            self.sent += len(batch)
            batch = []
            self.pace(start)

    def retrying(self, call):
        """`call` again while librdkafka says its error is retriable (the server is down)."""
        while True:
            try:
                return call()
            except ck.KafkaException as e:
                if not e.args[0].retriable():
                    raise
                time.sleep(0.1)


class Member(threading.Thread):
    """A group member: reads, commits every ~2,000 records (failures tolerated: the server may
    be down), and records what it read."""

    def __init__(self, boot, name, strategy):
        super().__init__(daemon=True)
        # "consumer": Kafka's consumer group protocol (KIP-848), the broker assigns; otherwise
        # the classic protocol with this client-side assignor.
        protocol = ({"group.protocol": "consumer"} if strategy == "consumer"
                    else {"partition.assignment.strategy": strategy})
        self.c = ck.Consumer({"bootstrap.servers": boot, "group.id": "soak",
                              "client.id": name, "enable.auto.commit": False,
                              "auto.offset.reset": "earliest",
                              "reconnect.backoff.max.ms": 500, **protocol, **QUIET})
        self.name, self.strategy, self.stop = name, strategy, threading.Event()
        self.read, self.assigns, self.commit_errors = [], 0, 0
        self.owned, self.last_read = set(), time.time()

    def on_assign(self, consumer, partitions):
        self.assigns += 1
        self.owned |= {tp.partition for tp in partitions}

    def on_revoke(self, consumer, partitions):
        self.owned -= {tp.partition for tp in partitions}

    def state(self):
        return (f"{self.name} ({self.strategy}): partitions {sorted(self.owned)}, last read "
                f"{time.time() - self.last_read:.0f} s ago")

    def run(self):
        self.c.subscribe([TOPIC], on_assign=self.on_assign, on_revoke=self.on_revoke,
                         on_lost=self.on_revoke)
        since_commit, last_commit = 0, time.time()
        while not self.stop.is_set():
            for m in self.c.consume(500, 0.5):
                if m.error() is None:
                    self.read.append((m.partition(), m.offset(), m.value().decode()))
                    since_commit += 1
                    self.last_read = time.time()
            # Every 2,000 records, and what is left after a second.
            if since_commit >= 2000 or (since_commit and time.time() - last_commit > 1):
                try:
                    self.c.commit(asynchronous=False)
                    since_commit, last_commit = 0, time.time()
                except ck.KafkaException as e:
                    if e.args[0].code() == ck.KafkaError._NO_OFFSET:
                        since_commit = 0
                    else:
                        self.commit_errors += 1
        try:
            self.c.commit(asynchronous=False)
        except ck.KafkaException as e:
            if e.args[0].code() != ck.KafkaError._NO_OFFSET:
                self.commit_errors += 1
        self.c.close()


def read_topic(boot):
    """Every record of the topic (committed ones only), to each partition's end:
    ({partition: [(offset, value)]}, {partition: high watermark})."""
    c = ck.Consumer({"bootstrap.servers": boot, "group.id": "soak-check",
                     "isolation.level": "read_committed", "enable.auto.commit": False,
                     "enable.partition.eof": True, **QUIET})
    ends = {p: c.get_watermark_offsets(ck.TopicPartition(TOPIC, p), 30)[1]
            for p in range(PARTITIONS)}
    c.assign([ck.TopicPartition(TOPIC, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out = {p: [] for p in range(PARTITIONS)}
    done = set()
    deadline = time.time() + 300
    while len(done) < PARTITIONS and time.time() < deadline:
        for m in c.consume(1000, 1):
            if m.error() is None:
                out[m.partition()].append((m.offset(), m.value().decode()))
            elif m.error().code() == ck.KafkaError._PARTITION_EOF:
                done.add(m.partition())
            else:
                sys.exit(f"reading the topic back: {m.error()}")
    c.close()
    if len(done) < PARTITIONS:
        sys.exit("reading the topic back did not reach every partition's end in 300 s")
    return out, ends


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--bin")
    ap.add_argument("--consumers", type=int, default=3)
    ap.add_argument("--rate", type=int, default=20000, help="records/s offered")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--backend", default="segment", choices=["segment", "sled"],
                    help="storage backend (durability: the default, always)")
    ap.add_argument("--transactions", action="store_true",
                    help="produce in transactions; the group reads committed records")
    ap.add_argument("--group-protocol", default="classic",
                    choices=["classic", "consumer", "mixed"],
                    help="the group's protocol: classic (range or cooperative-sticky by seed), "
                         "Kafka's consumer protocol (KIP-848), or mixed: each member picks the "
                         "consumer protocol or the classic protocol (range or cooperative-sticky "
                         "by seed) at random, so that the group changes protocol as members come "
                         "and go (online migration)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"seed {args.seed}", flush=True)
    binary = args.bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "weir"], check=True)
        binary = os.path.abspath("target/release/weir")
    work = tempfile.mkdtemp(prefix="weir-soak-")
    port = free_port()
    server = Server(binary, work, port, args.backend)
    server.start()
    boot = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": boot, **QUIET})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(30)

    producer = Producer(boot, args.rate, args.transactions)
    producer.start()
    strategies = (["consumer"] * 2 if args.group_protocol == "consumer"
                  else ["cooperative-sticky", "range"])

    def strategy():
        if args.group_protocol == "mixed":
            # The classic members' assignor by seed, as in a classic group.
            return rng.choice(["consumer", strategies[args.seed % 2]])
        return strategies[args.seed % 2]

    members = [Member(boot, f"m{i}", strategy()) for i in range(args.consumers)]
    for m in members:
        m.start()

    end = time.time() + args.minutes * 60
    kills = terms = replaced = 0
    live = list(members)
    while time.time() < end:
        time.sleep(rng.uniform(2, 8))
        if rng.random() < 0.3:
            # Membership churn between crashes: one member leaves, a new one joins.
            gone = live.pop(rng.randrange(len(live)))
            gone.stop.set()
            gone.join(120)
            new = Member(boot, f"m{len(members)}", strategy())
            new.start()
            members.append(new)
            live.append(new)
            replaced += 1
        how = "kill" if rng.random() < 0.8 else "term"
        server.stop(how)
        kills, terms = kills + (how == "kill"), terms + (how == "term")
        time.sleep(rng.uniform(0, 1.5))
        server.start()
        mix = (f" (members: {', '.join(m.strategy for m in live)})"
               if args.group_protocol == "mixed" else "")
        print(f"{time.time() - end + args.minutes * 60:6.0f} s: {how}, restarted; "
              f"{producer.sent} sent, {len(producer.committed)} delivered, "
              f"{sum(len(m.read) for m in members)} read{mix}", flush=True)
        # A group that stopped reading while records came: who holds what (for diagnosis; the
        # checks at the end judge).
        if time.time() - max(m.last_read for m in live) > 15:
            print("  the group has read nothing for 15 s: "
                  + "; ".join(m.state() for m in live), flush=True)

    producer.stop.set()
    producer.join()
    server.check_alive()
    problems = []
    if producer.errors:
        problems.append(f"{len(producer.errors)} delivery errors, first: {producer.errors[:3]}")
    if len(producer.committed) != producer.sent:
        problems.append(f"{producer.sent} sent, {len(producer.committed)} delivered")
    stored, ends = read_topic(boot)
    seen, last = {}, {}
    for p, records in stored.items():
        for offset, value in records:
            if value in seen:
                problems.append(f"{value} stored twice: {seen[value]} and {(p, offset)}")
            seen[value] = (p, offset)
            key, n = value.split(":")
            if last.get(key, -1) >= int(n):
                problems.append(f"{key} out of order at {(p, offset)}: {n} after {last[key]}")
            last[key] = int(n)
    for value, at in producer.delivered.items():
        if seen.get(value) != at:
            problems.append(f"{value} delivered at {at}, stored at {seen.get(value)}")
    for value in producer.committed - seen.keys():
        problems.append(f"{value} was committed and is not stored")
    for value in seen.keys() - producer.committed:
        problems.append(f"{value} is stored and was never committed")
    data = {(p, o) for p, records in stored.items() for o, _ in records}
    total = len(data)

    # The group catches up and commits: each partition's committed offset passes its last record
    # (a transaction's marker may follow it), then the members stop.
    lasts = {p: max((o for o, _ in stored[p]), default=-1) for p in range(PARTITIONS)}
    check = ck.Consumer({"bootstrap.servers": boot, "group.id": "soak", **QUIET})

    def behind():
        committed = check.committed([ck.TopicPartition(TOPIC, p) for p in range(PARTITIONS)], 30)
        return [(tp.partition, tp.offset) for tp in committed
                if lasts[tp.partition] >= 0
                and not lasts[tp.partition] < tp.offset <= ends[tp.partition]]

    deadline = time.time() + 300
    while behind() and time.time() < deadline:
        time.sleep(1)
    for m in members:
        m.stop.set()
    for m in members:
        m.join(60)
    for p, offset in behind():
        problems.append(f"partition {p}: committed {offset}, last record {lasts[p]}, "
                        f"end {ends[p]}")
    check.close()
    offsets = {(p, o) for m in members for p, o, _ in m.read}
    missing = len(data - offsets)
    if missing:
        problems.append(f"the group never read {missing} of {total} records")
    if offsets - data:
        problems.append(f"the group read {len(offsets - data)} records not in the topic")
    reads = sum(len(m.read) for m in members)
    server.stop("term")
    # What the server said besides its listeners: a panic is a failure, the rest is shown.
    said = {}
    for name in sorted(os.listdir(work)):
        if name.startswith("serve-"):
            with open(os.path.join(work, name), errors="replace") as f:
                for line in f:
                    if "listener on" in line:
                        continue
                    if "panicked" in line:
                        problems.append(f"{name}: {line.strip()}")
                    said.setdefault(line.strip()[:160], name)
    if said:
        print(f"the server's logs ({len(said)} distinct lines besides its listeners):")
        for line, name in list(said.items())[:15]:
            print(f"  {name}: {line}")
    txns = (f", in transactions ({producer.aborts} aborted and sent again)"
            if args.transactions else "")
    print(f"{args.minutes} min, {args.backend}, seed {args.seed}: {kills} kill -9 and {terms} SIGTERM restarts, "
          f"{replaced} members replaced; "
          f"{producer.sent} records produced{txns}, {total} stored; the group read {reads} "
          f"({reads - len(offsets)} twice), {sum(m.assigns for m in members)} assignments, "
          f"{sum(m.commit_errors for m in members)} failed commits")
    if problems:
        print("FAILED:", *problems[:20], sep="\n  ")
        print(f"server logs and data in {work}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", work], check=True)
    print("ok")


if __name__ == "__main__":
    main()
