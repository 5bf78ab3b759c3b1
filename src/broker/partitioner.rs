//! Which partition a record goes to.
//!
//! Keyed records: `murmur2(key) & 0x7fffffff % partitions`, bit for bit what Kafka's Java client
//! computes (`Utils.murmur2` and `toPositive`), so a key lands on the same partition whichever
//! client produced it. Keyless records: a sticky partition that moves on (round robin) each time
//! a batch for it is sent, Kafka's sticky partitioner without its load-based weighting.

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `partitions` (which must be positive).
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as u32 % partitions.max(1)) as i32
}

/// The sticky choice for keyless records: the same partition until [`Sticky::next_batch`].
#[derive(Debug, Default)]
pub struct Sticky {
    current: AtomicU32,
}

impl Sticky {
    /// A sticky partitioner starting at `seed % partitions`.
    pub fn new(seed: u32) -> Self {
        Sticky {
            current: AtomicU32::new(seed),
        }
    }

    /// The partition keyless records go to now.
    pub fn current(&self, partitions: u32) -> i32 {
        (self.current.load(Ordering::Relaxed) % partitions.max(1)) as i32
    }

    /// Moves on after a batch was sent; returns the partition that batch used.
    pub fn next_batch(&self, partitions: u32) -> i32 {
        (self.current.fetch_add(1, Ordering::Relaxed) % partitions.max(1)) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn keys_spread_and_stay() {
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        let p = partition_for_key(b"user-42", 12);
        assert!((0..12).contains(&p));
        assert_eq!(partition_for_key(b"user-42", 12), p);
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[partition_for_key(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn sticky_moves_per_batch() {
        let s = Sticky::new(0);
        assert_eq!(s.current(3), 0);
        assert_eq!(s.next_batch(3), 0);
        assert_eq!(s.current(3), 1);
        s.next_batch(3);
        s.next_batch(3);
        assert_eq!(s.current(3), 0);
    }
}
