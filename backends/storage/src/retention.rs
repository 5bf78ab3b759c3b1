//! The retention rule, shared by every backend so they cut at the same places for the same units.
//!
//! A backend describes its deletable units (segments, or batches) oldest first; [`retention_cut`]
//! says how many of them to delete. Kafka's rules: by time, a unit goes once its newest timestamp
//! is older than `now - retention.ms`; by size, the oldest units go while the log without them
//! still holds at least `retention.bytes`. Both stop at the first unit that must stay, so what is
//! deleted is always a prefix.

use crate::Retention;

/// One deletable unit of a log, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// The newest timestamp in the unit (ms).
    pub max_timestamp_ms: i64,
    /// Bytes the unit occupies.
    pub size_bytes: u64,
}

/// How many leading units `retention` deletes at `now_ms`, given the log's total size.
pub fn retention_cut(
    units: impl IntoIterator<Item = Unit>,
    total_bytes: u64,
    retention: Retention,
    now_ms: i64,
) -> usize {
    let mut remaining = total_bytes;
    let mut cut = 0;
    for u in units {
        let expired = retention
            .ms
            .is_some_and(|ms| u.max_timestamp_ms < now_ms.saturating_sub(ms));
        let oversize = retention
            .bytes
            .is_some_and(|max| remaining.saturating_sub(u.size_bytes) >= max);
        if !(expired || oversize) {
            break;
        }
        remaining = remaining.saturating_sub(u.size_bytes);
        cut += 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(ts: &[i64]) -> Vec<Unit> {
        ts.iter()
            .map(|&t| Unit {
                max_timestamp_ms: t,
                size_bytes: 100,
            })
            .collect()
    }

    #[test]
    fn by_time_stops_at_first_fresh_unit() {
        let r = Retention {
            ms: Some(50),
            bytes: None,
        };
        assert_eq!(retention_cut(units(&[10, 20, 90, 30]), 400, r, 100), 2);
        assert_eq!(retention_cut(units(&[60, 10]), 200, r, 100), 0);
    }

    #[test]
    fn by_size_keeps_at_least_the_limit() {
        let r = Retention {
            ms: None,
            bytes: Some(250),
        };
        // 400 -> 300 -> 200 would drop below 250, so one unit goes.
        assert_eq!(retention_cut(units(&[1, 2, 3, 4]), 400, r, 0), 1);
        let none = Retention::default();
        assert_eq!(retention_cut(units(&[1, 2]), 200, none, i64::MAX), 0);
    }
}
