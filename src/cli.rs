//! The client subcommands of `weir`, in the shape of Kafka's scripts and kcat: `topic`,
//! `produce`, `consume`, `group`. Each talks to `--broker` over the native protocol and prints
//! one clear line on error (the process then exits non-zero).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use weir::broker::{OffsetSpec, ResetTo};
use weir::client::{AutoOffsetReset, ConsumerRecord, RemoteTransport, Transport};
use weir::{Acks, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord};
use weir_storage::TopicPartition;

/// Where the broker is.
#[derive(Debug, Args, Clone)]
pub struct BrokerArg {
    /// The broker's native listener.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9292", global = true)]
    pub broker: SocketAddr,
}

/// `weir topic ...`
#[derive(Debug, Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partitions (the broker default when omitted).
        #[arg(long, short)]
        partitions: Option<u32>,
        /// Topic config, `key=value` (repeatable): retention.ms, segment.bytes, durability, ...
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
    },
    /// List topics.
    List,
    /// Partitions, offsets and config of a topic.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change a topic: add partitions, set config keys, or put keys back to the broker's
    /// defaults.
    Alter {
        /// Topic name.
        name: String,
        /// Grow the topic to this many partitions (partitions are only ever added).
        #[arg(long, short)]
        partitions: Option<u32>,
        /// Set `key=value` (repeatable).
        #[arg(long = "config", short = 'c')]
        configs: Vec<String>,
        /// Put `key` back to the broker's topic default (repeatable).
        #[arg(long = "delete-config")]
        delete_configs: Vec<String>,
    },
}

/// `weir produce TOPIC`
#[derive(Debug, Args)]
pub struct ProduceCmd {
    /// Topic to write to (created with the defaults if the broker allows).
    topic: String,
    /// Split each line into key and value at the first SEP.
    #[arg(long)]
    key_separator: Option<String>,
    /// A header for every record, `k=v` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Write to this partition (default: by key, or sticky).
    #[arg(long, short)]
    partition: Option<i32>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
}

/// `weir consume TOPIC`
#[derive(Debug, Args)]
pub struct ConsumeCmd {
    /// Topic to read.
    topic: String,
    /// Start at the beginning (default without a group: the end).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long)]
    offset: Option<i64>,
    /// Read only this partition.
    #[arg(long, short)]
    partition: Option<i32>,
    /// Consume as a member of this group (commits what it read when it exits).
    #[arg(long, short)]
    group: Option<String>,
    /// Exit after this many records.
    #[arg(long)]
    max_messages: Option<usize>,
    /// `json` (one JSON object per line), or a format with %k %v %o %p %t %h and \n \t.
    #[arg(long, short, default_value = "%v")]
    format: String,
    /// Exit when every partition has been read to its end.
    #[arg(long, short = 'e')]
    exit_at_end: bool,
}

/// `weir group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// List groups and their state.
    List,
    /// Members, assignment, committed offsets and lag of a group.
    Describe {
        /// Group id.
        group: String,
    },
    /// Delete an empty group and its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
    /// Move an empty group's committed offsets on a topic.
    ResetOffsets {
        /// Group id.
        group: String,
        /// The topic.
        #[arg(long)]
        topic: String,
        /// To the log start.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To the log end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To an offset (clamped to the log).
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// To the first record at or after a time: RFC 3339 (2026-11-25T10:00:00Z) or ms.
        #[arg(long, group = "to")]
        to_datetime: Option<String>,
    },
}

async fn connect(addr: SocketAddr) -> anyhow::Result<RemoteTransport> {
    RemoteTransport::connect(addr)
        .await
        .with_context(|| format!("cannot reach a Weir broker at {addr}"))
}

/// `key=value` arguments as pairs.
fn key_values(args: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|c| {
            c.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--config {c:?} is not key=value"))
        })
        .collect()
}

/// Runs `weir topic ...`.
///
/// # Errors
/// Connection and broker errors, as one line.
pub async fn topic(broker: SocketAddr, cmd: TopicCmd) -> anyhow::Result<()> {
    let t = connect(broker).await?;
    let admin = Admin::new(t.clone());
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            configs,
        } => {
            t.create_topic(&name, partitions, key_values(&configs)?)
                .await?;
            let n = t.partitions(&name, false).await?;
            println!("created topic {name} with {n} partitions");
        }
        TopicCmd::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                bail!(
                    "nothing to change: give --partitions N, --config key=value or --delete-config key"
                );
            }
            let set = key_values(&configs)?;
            if let Some(total) = partitions {
                admin.create_partitions(&name, total).await?;
                println!("topic {name} has {total} partitions");
            }
            if !set.is_empty() || !delete_configs.is_empty() {
                t.alter_topic_config(&name, set, delete_configs).await?;
                println!("altered topic {name}");
            }
        }
        TopicCmd::List => {
            for name in admin.list_topics().await? {
                println!("{name}");
            }
        }
        TopicCmd::Describe { name } => {
            let d = admin.describe_topic(&name).await?;
            println!(
                "topic {}  partitions {}  id {:032x}",
                d.name,
                d.partitions.len(),
                d.id
            );
            for (p, o) in d.partitions.iter().enumerate() {
                println!(
                    "  partition {p}: start {}  end {}  records {}  bytes {}",
                    o.start,
                    o.end,
                    o.end - o.start,
                    o.size_bytes
                );
            }
            for (k, v) in d.config.entries() {
                println!("  {k}={v}");
            }
        }
        TopicCmd::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

/// Runs `weir produce`: stdin lines become records.
///
/// # Errors
/// Bad arguments, connection or broker errors.
pub async fn produce(broker: SocketAddr, cmd: ProduceCmd) -> anyhow::Result<()> {
    let acks = match cmd.acks.as_str() {
        "0" => Acks::None,
        "1" => Acks::Leader,
        "all" | "-1" => Acks::All,
        other => bail!("--acks {other:?}: expected 0, 1 or all"),
    };
    let headers = cmd
        .headers
        .iter()
        .map(|h| {
            h.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--header {h:?} is not k=v"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let t = connect(broker).await?;
    let producer = Producer::new(
        t,
        ProducerConfig {
            acks,
            ..ProducerConfig::default()
        },
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut deliveries = std::collections::VecDeque::new();
    let mut written = 0usize;
    while let Some(line) = rx.recv().await {
        let (key, value) = match &cmd.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let mut record = ProducerRecord::new(cmd.topic.clone(), value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = cmd.partition {
            record = record.partition(p);
        }
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        deliveries.push_back(producer.send(record).await);
        // Keep the number of unanswered futures bounded; the producer batches meanwhile.
        while deliveries.len() > 100_000 {
            if let Some(d) = deliveries.pop_front() {
                d.await?;
                written += 1;
            }
        }
    }
    for d in deliveries {
        d.await?;
        written += 1;
    }
    eprintln!("wrote {written} records to {}", cmd.topic);
    Ok(())
}

fn render(format: &str, r: &ConsumerRecord) -> String {
    let text = |b: &Option<bytes::Bytes>| {
        b.as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    if format == "json" {
        let headers: Vec<serde_json::Value> = r
            .headers
            .iter()
            .map(|h| serde_json::json!({"key": h.key, "value": text(&h.value)}))
            .collect();
        return serde_json::json!({
            "topic": &*r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp_ms,
            "key": r.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
            "value": r.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
            "headers": headers,
        })
        .to_string();
    }
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(f)) => {
                chars.next();
                match f {
                    'k' => out.push_str(&text(&r.key)),
                    'v' => out.push_str(&text(&r.value)),
                    'o' => out.push_str(&r.offset.to_string()),
                    'p' => out.push_str(&r.partition.to_string()),
                    't' => out.push_str(&r.timestamp_ms.to_string()),
                    'T' => out.push_str(&r.topic),
                    'h' => {
                        let hs: Vec<String> = r
                            .headers
                            .iter()
                            .map(|h| format!("{}={}", h.key, text(&h.value)))
                            .collect();
                        out.push_str(&hs.join(","));
                    }
                    '%' => out.push('%'),
                    other => {
                        out.push('%');
                        out.push(other);
                    }
                }
            }
            ('\\', Some('n')) => {
                chars.next();
                out.push('\n');
            }
            ('\\', Some('t')) => {
                chars.next();
                out.push('\t');
            }
            (c, _) => out.push(c),
        }
    }
    out
}

/// Runs `weir consume`: records to stdout.
///
/// # Errors
/// Bad arguments, connection or broker errors.
pub async fn consume(broker: SocketAddr, cmd: ConsumeCmd) -> anyhow::Result<()> {
    if cmd.offset.is_some() && cmd.partition.is_none() {
        bail!("--offset needs --partition");
    }
    let t = connect(broker).await?;
    let partitions = t.partitions(&cmd.topic, false).await?;
    // As Kafka's console consumer: the end unless --from-beginning (a group resumes from its
    // committed offsets either way).
    let reset = if cmd.from_beginning {
        AutoOffsetReset::Earliest
    } else {
        AutoOffsetReset::Latest
    };
    let mut consumer = Consumer::new(
        t.clone(),
        ConsumerConfig {
            group_id: cmd.group.clone(),
            client_id: "weir-cli".into(),
            auto_commit_interval: cmd.group.as_ref().map(|_| Duration::from_secs(5)),
            auto_offset_reset: reset,
            ..ConsumerConfig::default()
        },
    );
    let assigned: Vec<TopicPartition> = match cmd.partition {
        Some(p) => vec![TopicPartition::new(cmd.topic.clone(), p)],
        None => (0..partitions as i32)
            .map(|p| TopicPartition::new(cmd.topic.clone(), p))
            .collect(),
    };
    if cmd.group.is_some() && cmd.partition.is_none() {
        consumer.subscribe(&[cmd.topic.as_str()])?;
    } else {
        consumer.assign(assigned.clone());
        if let (Some(o), Some(p)) = (cmd.offset, cmd.partition) {
            consumer.seek(&TopicPartition::new(cmd.topic.clone(), p), o);
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut count = 0usize;
    let limit = cmd.max_messages.unwrap_or(usize::MAX);
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    if cmd.exit_at_end {
        for p in 0..partitions as i32 {
            let end = t
                .list_offset(&cmd.topic, p, OffsetSpec::Latest)
                .await?
                .unwrap_or(0);
            ends.insert(p, end);
        }
    }
    // A reader that goes away (`| head`) ends the run like --max-messages does: cleanly,
    // committing what was written and leaving the group.
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    let mut unassigned_polls = 0;
    'read: while count < limit {
        let records = consumer.poll(Duration::from_millis(500)).await?;
        for (i, r) in records.iter().enumerate() {
            let stop = match writeln!(out, "{}", render(&cmd.format, r)) {
                Err(e) if gone(&e) => Some(i),
                other => {
                    other?;
                    count += 1;
                    (count >= limit).then_some(i + 1)
                }
            };
            if let Some(first_unwritten) = stop {
                // Records fetched but not written must not count as consumed: move each
                // partition back to its first unwritten record before committing.
                let mut rewind: BTreeMap<i32, i64> = BTreeMap::new();
                for r in &records[first_unwritten..] {
                    rewind.entry(r.partition).or_insert(r.offset);
                }
                for (p, offset) in rewind {
                    consumer.seek(&TopicPartition::new(cmd.topic.clone(), p), offset);
                }
                break 'read;
            }
        }
        match out.flush() {
            Err(e) if gone(&e) => break,
            other => other?,
        }
        if cmd.exit_at_end {
            let mine = consumer.assignment();
            let done = if mine.is_empty() {
                // A group member the group gave no partition (more members than partitions):
                // nothing is there to read. A poll joins and syncs before it returns, so two
                // polls in a row without an assignment are not a rebalance in passing.
                unassigned_polls += 1;
                unassigned_polls >= 2
            } else {
                unassigned_polls = 0;
                mine.iter().all(|tp| {
                    consumer
                        .position(tp)
                        .is_some_and(|pos| pos >= ends.get(&tp.partition).copied().unwrap_or(0))
                })
            };
            if done && records.is_empty() {
                break;
            }
        }
    }
    if let Err(e) = out.flush() {
        if !gone(&e) {
            return Err(e.into());
        }
    }
    drop(out);
    if cmd.group.is_some() {
        consumer.commit().await.ok();
    }
    consumer.close().await?;
    eprintln!("read {count} records from {}", cmd.topic);
    Ok(())
}

/// Parses `--to-datetime`: milliseconds since the epoch, or RFC 3339 in UTC or with an offset.
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || anyhow!("--to-datetime {s:?}: expected RFC 3339 (2026-11-25T10:00:00Z) or ms");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = match (d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) => (y, m, day),
        _ => return Err(bad()),
    };
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        (
            t,
            sign * (oh.parse::<i64>().map_err(|_| bad())? * 60
                + om.parse::<i64>().map_err(|_| bad())?),
        )
    } else {
        (rest, 0)
    };
    let mut parts = time.split(':');
    let h: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let mi: i64 = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let sec: f64 = parts.next().unwrap_or("0").parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec >= 61.0 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 - offset_min * 60;
    Ok(secs * 1000 + (sec * 1000.0).round() as i64)
}

/// Runs `weir group ...`.
///
/// # Errors
/// Connection and broker errors.
pub async fn group(broker: SocketAddr, cmd: GroupCmd) -> anyhow::Result<()> {
    let t = connect(broker).await?;
    let admin = Admin::new(t.clone());
    match cmd {
        GroupCmd::List => {
            for (g, state) in admin.list_groups().await? {
                println!("{g}\t{}", state.name());
            }
        }
        GroupCmd::Describe { group } => {
            let d = admin.describe_group(&group).await?;
            println!(
                "group {}  state {}  generation {}  protocol {}  members {}",
                d.group_id,
                d.state.name(),
                d.generation,
                if d.protocol.is_empty() {
                    "-"
                } else {
                    &d.protocol
                },
                d.members.len()
            );
            for m in &d.members {
                let assigned: Vec<(String, Vec<i32>)> =
                    rmp_serde::from_slice(&m.assignment).unwrap_or_default();
                let a: Vec<String> = assigned
                    .iter()
                    .map(|(t, ps)| format!("{t}{ps:?}"))
                    .collect();
                println!(
                    "  member {} ({}, {})  assigned {}",
                    m.member_id,
                    m.client_id,
                    m.client_host,
                    a.join(" ")
                );
            }
            for (tp, o) in &d.offsets {
                let end = t
                    .list_offset(&tp.topic, tp.partition, OffsetSpec::Latest)
                    .await
                    .ok()
                    .flatten();
                let lag = end.map_or("-".to_string(), |e| (e - o.offset).max(0).to_string());
                println!(
                    "  {tp}: committed {}  end {}  lag {lag}",
                    o.offset,
                    end.map_or("-".into(), |e| e.to_string())
                );
            }
        }
        GroupCmd::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
        GroupCmd::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime) {
                (true, _, _, _) => ResetTo::Earliest,
                (_, true, _, _) => ResetTo::Latest,
                (_, _, Some(o), _) => ResetTo::Offset(o),
                (_, _, _, Some(dt)) => ResetTo::Timestamp(parse_datetime(&dt)?),
                _ => bail!(
                    "say where to: --to-earliest, --to-latest, --to-offset N or --to-datetime T"
                ),
            };
            for (tp, o) in admin.reset_offsets(&group, &topic, to).await? {
                println!("{tp}: {o}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("0").expect("ms"), 0);
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z").expect("epoch"), 0);
        assert_eq!(
            parse_datetime("2000-03-01T00:00:00Z").expect("leap"),
            951_868_800_000
        );
        assert_eq!(
            parse_datetime("2026-11-25T10:00:00.5Z").expect("frac"),
            1_795_600_800_500
        );
        assert_eq!(
            parse_datetime("2026-11-25T11:00:00+01:00").expect("offset"),
            parse_datetime("2026-11-25T10:00:00Z").expect("utc")
        );
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2026-13-01T00:00:00Z").is_err());
    }
}
