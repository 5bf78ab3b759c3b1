//! Broker-side partition assignment for Weir's own consumers: range, round-robin and sticky.
//!
//! Kafka clients assign on the client (the group leader); Weir's consumers let the broker do
//! it, with the same strategies and the same results a Kafka client's assignor computes for the
//! same members and subscriptions:
//!
//! - **range**: per topic, members sorted by id share the partitions in contiguous ranges; the
//!   first `partitions % members` get one more.
//! - **roundrobin**: every subscribed partition, sorted by topic and number, dealt to the
//!   members subscribed to its topic in turn.
//! - **sticky**: members keep what they had as long as the result stays balanced (no member
//!   more than one partition ahead of another among those sharing a subscription); only the
//!   surplus moves. Fewer partitions change hands on a rebalance, so less state is rebuilt.

use std::collections::{BTreeMap, BTreeSet};

/// `member id → (topic → partitions)`.
pub type Assignment = BTreeMap<String, BTreeMap<String, Vec<i32>>>;

/// A member's input to an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id.
    pub member_id: String,
    /// Topics it wants.
    pub topics: BTreeSet<String>,
    /// What it owned before this rebalance (used by sticky).
    pub owned: Vec<(String, i32)>,
}

/// The strategies, by their Kafka names.
pub const STRATEGIES: [&str; 3] = ["range", "roundrobin", "sticky"];

/// Assigns with the named strategy; `partitions` gives each topic's partition count (topics
/// missing from it are skipped).
pub fn assign(
    strategy: &str,
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, u32>,
) -> Option<Assignment> {
    let mut out: Assignment = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeMap::new()))
        .collect();
    match strategy {
        "range" => range(members, partitions, &mut out),
        "roundrobin" => round_robin(members, partitions, &mut out),
        "sticky" => sticky(members, partitions, &mut out),
        _ => return None,
    }
    Some(out)
}

fn give(out: &mut Assignment, member: &str, topic: &str, p: i32) {
    if let Some(m) = out.get_mut(member) {
        m.entry(topic.to_string()).or_default().push(p);
    }
}

fn subscribers<'a>(members: &'a [MemberSubscription], topic: &str) -> Vec<&'a str> {
    let mut v: Vec<&str> = members
        .iter()
        .filter(|m| m.topics.contains(topic))
        .map(|m| m.member_id.as_str())
        .collect();
    v.sort_unstable();
    v
}

fn range(members: &[MemberSubscription], partitions: &BTreeMap<String, u32>, out: &mut Assignment) {
    for (topic, &n) in partitions {
        let subs = subscribers(members, topic);
        if subs.is_empty() {
            continue;
        }
        let per = n as usize / subs.len();
        let extra = n as usize % subs.len();
        let mut next = 0i32;
        for (i, m) in subs.iter().enumerate() {
            let take = per + usize::from(i < extra);
            for _ in 0..take {
                give(out, m, topic, next);
                next += 1;
            }
        }
    }
}

fn round_robin(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    let mut all: Vec<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
    all.sort_unstable();
    if all.is_empty() {
        return;
    }
    let mut cursor = 0usize;
    for (topic, &n) in partitions {
        for p in 0..n as i32 {
            // The next member in the ring that subscribes to this topic.
            for step in 0..all.len() {
                let m = all[(cursor + step) % all.len()];
                let subscribed = members
                    .iter()
                    .any(|s| s.member_id == m && s.topics.contains(topic));
                if subscribed {
                    give(out, m, topic, p);
                    cursor = (cursor + step + 1) % all.len();
                    break;
                }
            }
        }
    }
}

fn sticky(
    members: &[MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    out: &mut Assignment,
) {
    // Every partition some member subscribes to.
    let wanted: BTreeSet<(String, i32)> = partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.topics.contains(*t)))
        .flat_map(|(t, &n)| (0..n as i32).map(move |p| (t.clone(), p)))
        .collect();
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> =
        members.iter().map(|m| (m.member_id.clone(), 0)).collect();
    // Keep previous ownership where it is still valid (first claimant wins).
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    sorted.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    for m in &sorted {
        for (t, p) in &m.owned {
            let key = (t.clone(), *p);
            if wanted.contains(&key) && m.topics.contains(t) && !owner.contains_key(&key) {
                owner.insert(key, m.member_id.clone());
                *counts.entry(m.member_id.clone()).or_default() += 1;
            }
        }
    }
    // Balance: no member may hold more than ceil(total / members) while another can take more.
    let total = wanted.len();
    let n = members.len().max(1);
    let max_each = total.div_ceil(n);
    let mut free: Vec<(String, i32)> = wanted
        .iter()
        .filter(|k| !owner.contains_key(*k))
        .cloned()
        .collect();
    for m in &sorted {
        let c = counts.get(&m.member_id).copied().unwrap_or(0);
        if c > max_each {
            let mut mine: Vec<(String, i32)> = owner
                .iter()
                .filter(|(_, o)| **o == m.member_id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in mine.drain(max_each..) {
                owner.remove(&k);
                free.push(k);
            }
            counts.insert(m.member_id.clone(), max_each);
        }
    }
    free.sort();
    for k in free {
        // The least loaded subscriber takes it (ties: smallest id).
        let taker = sorted
            .iter()
            .filter(|m| m.topics.contains(&k.0))
            .min_by_key(|m| {
                (
                    counts.get(&m.member_id).copied().unwrap_or(0),
                    m.member_id.clone(),
                )
            });
        if let Some(m) = taker {
            *counts.entry(m.member_id.clone()).or_default() += 1;
            owner.insert(k, m.member_id.clone());
        }
    }
    // Move single partitions from the most to the least loaded while they differ by two or
    // more (possible when kept ownership was uneven below the cap).
    while let (Some(max), Some(min)) = (
        counts
            .iter()
            .max_by_key(|(id, c)| (**c, std::cmp::Reverse((*id).clone()))),
        counts.iter().min_by_key(|(id, c)| (**c, (*id).clone())),
    ) {
        if max.1 - min.1 < 2 {
            break;
        }
        let (from, to) = (max.0.clone(), min.0.clone());
        let to_topics = &members
            .iter()
            .find(|m| m.member_id == to)
            .map(|m| m.topics.clone())
            .unwrap_or_default();
        let movable = owner
            .iter()
            .find(|(k, o)| **o == from && to_topics.contains(&k.0))
            .map(|(k, _)| k.clone());
        let Some(k) = movable else { break };
        owner.insert(k, to.clone());
        *counts.entry(from).or_default() -= 1;
        *counts.entry(to).or_default() += 1;
    }
    for ((t, p), m) in owner {
        give(out, &m, &t, p);
    }
    for topics in out.values_mut() {
        for ps in topics.values_mut() {
            ps.sort_unstable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, i32)]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        }
    }

    fn parts(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn flat(a: &Assignment, m: &str) -> Vec<(String, i32)> {
        a[m].iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    }

    /// Every partition exactly once, only to subscribers.
    fn check_complete(a: &Assignment, members: &[MemberSubscription], p: &BTreeMap<String, u32>) {
        let mut seen = BTreeSet::new();
        for m in members {
            for (t, part) in flat(a, &m.member_id) {
                assert!(m.topics.contains(&t));
                assert!(seen.insert((t, part)), "assigned twice");
            }
        }
        let expected: usize = p
            .iter()
            .filter(|(t, _)| members.iter().any(|m| m.topics.contains(*t)))
            .map(|(_, n)| *n as usize)
            .sum();
        assert_eq!(seen.len(), expected);
    }

    #[test]
    fn range_matches_kafka() {
        let ms = [member("a", &["t"], &[]), member("b", &["t"], &[])];
        let p = parts(&[("t", 5)]);
        let a = assign("range", &ms, &p).expect("known");
        assert_eq!(a["a"]["t"], vec![0, 1, 2]);
        assert_eq!(a["b"]["t"], vec![3, 4]);
        check_complete(&a, &ms, &p);
    }

    #[test]
    fn roundrobin_deals_in_turn() {
        let ms = [member("a", &["t", "u"], &[]), member("b", &["t", "u"], &[])];
        let p = parts(&[("t", 3), ("u", 2)]);
        let a = assign("roundrobin", &ms, &p).expect("known");
        assert_eq!(
            flat(&a, "a"),
            vec![("t".into(), 0), ("t".into(), 2), ("u".into(), 1)]
        );
        assert_eq!(flat(&a, "b"), vec![("t".into(), 1), ("u".into(), 0)]);
        check_complete(&a, &ms, &p);
    }

    #[test]
    fn sticky_keeps_what_it_can_and_balances() {
        let p = parts(&[("t", 6)]);
        let before = [
            member("a", &["t"], &[("t", 0), ("t", 1), ("t", 2)]),
            member("b", &["t"], &[("t", 3), ("t", 4), ("t", 5)]),
            member("c", &["t"], &[]),
        ];
        let a = assign("sticky", &before, &p).expect("known");
        check_complete(&a, &before, &p);
        for m in ["a", "b", "c"] {
            assert_eq!(flat(&a, m).len(), 2, "{m}");
        }
        // a and b each gave up one partition and kept the rest.
        assert!(flat(&a, "a").iter().all(|(_, p)| *p <= 2));
        assert!(flat(&a, "b").iter().all(|(_, p)| *p >= 3));
        // A member leaves: the other two keep theirs and split its partitions.
        let after = [
            member(
                "a",
                &["t"],
                &flat(&a, "a")
                    .iter()
                    .map(|(t, p)| (t.as_str(), *p))
                    .collect::<Vec<_>>(),
            ),
            member(
                "c",
                &["t"],
                &flat(&a, "c")
                    .iter()
                    .map(|(t, p)| (t.as_str(), *p))
                    .collect::<Vec<_>>(),
            ),
        ];
        let b = assign("sticky", &after, &p).expect("known");
        check_complete(&b, &after, &p);
        for (t, p) in flat(&a, "a") {
            assert!(flat(&b, "a").contains(&(t, p)));
        }
        assert_eq!(flat(&b, "a").len(), 3);
    }

    #[test]
    fn mixed_subscriptions_and_unknown_strategy() {
        let ms = [
            member("a", &["t"], &[]),
            member("b", &["u"], &[]),
            member("c", &["t", "u"], &[]),
        ];
        let p = parts(&[("t", 4), ("u", 3), ("unsubscribed", 2)]);
        for s in STRATEGIES {
            let a = assign(s, &ms, &p).expect("known");
            check_complete(&a, &ms, &p);
        }
        assert!(assign("cooperative-magic", &ms, &p).is_none());
    }
}
