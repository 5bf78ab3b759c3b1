//! RecordBatches written by real Kafka clients decode, and re-encode the way those clients wrote
//! them.
//!
//! The fixtures are Produce request frames recorded from real clients (librdkafka 2.16,
//! kafka-python 3, aiokafka, kafkajs), copied from the shared Kafka corpus as
//! `<client>__Produce-v<version>-<n>.bin`: each frame starts at the request header's `api_key`
//! and holds one or more RecordBatches, uncompressed or with each codec. This test does not parse
//! the Produce request: it finds the batches by trying every position, which is safe because a
//! batch must carry a valid CRC-32C of its contents to be accepted.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use weir_storage::{Batch, BatchBuilder, Compression, LogRecord};

/// Every fixture and the codec its batches use, as recorded in the corpus index.
const FIXTURES: [(&str, Compression); 12] = [
    ("aiokafka__Produce-v7-1.bin", Compression::None),
    ("kafka-python-3__Produce-v9-1.bin", Compression::None),
    ("kafka-python-3__Produce-v9-2.bin", Compression::Gzip),
    ("kafka-python-3__Produce-v9-3.bin", Compression::Snappy),
    ("kafka-python-3__Produce-v9-4.bin", Compression::Lz4),
    ("kafka-python-3__Produce-v9-5.bin", Compression::Zstd),
    ("kafkajs__Produce-v7-1.bin", Compression::None),
    ("librdkafka-2.16__Produce-v10-1.bin", Compression::None),
    ("librdkafka-2.16__Produce-v10-2.bin", Compression::Gzip),
    ("librdkafka-2.16__Produce-v10-3.bin", Compression::Snappy),
    ("librdkafka-2.16__Produce-v10-4.bin", Compression::Lz4),
    ("librdkafka-2.16__Produce-v10-5.bin", Compression::Zstd),
];

/// Bytes of the batch header outside the CRC that a broker rewrites: the base offset (0..8) and
/// the partition leader epoch (12..16).
const BROKER_OWNED: [std::ops::Range<usize>; 2] = [0..8, 12..16];

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every RecordBatch inside `frame`, with its position: the positions where the announced length
/// fits in the frame and [`Batch::new`] accepts the bytes (magic 2 and a matching CRC-32C).
fn find_batches(frame: &[u8]) -> Vec<(usize, Batch)> {
    let mut found = Vec::new();
    let mut p = 0;
    while p < frame.len() {
        let rest = &frame[p..];
        let batch = Batch::peek_len(rest)
            .ok()
            .filter(|&len| len <= rest.len())
            .and_then(|len| Batch::new(Bytes::copy_from_slice(&rest[..len])).ok());
        match batch {
            Some(batch) => {
                p += batch.len();
                found.push((p - batch.len(), batch));
            }
            None => p += 1,
        }
    }
    found
}

/// `bytes` with the broker-owned header fields zeroed.
fn without_broker_fields(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for range in BROKER_OWNED {
        out[range].fill(0);
    }
    out
}

/// The first position where two byte strings differ, for failure messages.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Builds a batch from `records` the way a producer with `original`'s identity would.
fn rebuild(original: &Batch, codec: Compression, records: &[LogRecord]) -> Batch {
    let mut builder = BatchBuilder::new(codec)
        .producer(
            original.producer_id(),
            original.producer_epoch(),
            original.base_sequence(),
        )
        .transactional(original.is_transactional());
    for r in records {
        builder.push(r.record.clone());
    }
    builder.build(original.base_offset()).expect("rebuild")
}

#[test]
fn every_produce_fixture_holds_batches_that_decode_and_rebuild() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.contains("__Produce-v"))
        .collect();
    let listed: BTreeSet<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(on_disk, listed, "fixtures on disk and in FIXTURES differ");

    let mut codecs_seen = BTreeSet::new();
    let mut batches_seen = 0;
    for (name, codec) in FIXTURES {
        let frame = fixture(name);
        let batches = find_batches(&frame);
        assert!(!batches.is_empty(), "{name}: no RecordBatch found");
        let records: usize = batches.iter().map(|(_, b)| b.record_count() as usize).sum();
        println!(
            "{name}: {} batch(es), {records} records, {codec:?}",
            batches.len()
        );
        for (at, batch) in &batches {
            let ctx = format!("{name} batch at byte {at}");
            batches_seen += 1;
            assert_eq!(batch.compression(), Ok(codec), "{ctx}");
            codecs_seen.insert(format!("{codec:?}"));
            batch.validate_for_append().expect(&ctx);

            let records = batch.records().unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(records.len(), batch.record_count() as usize, "{ctx}");
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            let expected: Vec<i64> = (0..records.len() as i64)
                .map(|i| batch.base_offset() + i)
                .collect();
            assert_eq!(offsets, expected, "{ctx}: offsets");
            // The bound the fuzz target and the allocation test use is enough for real batches
            // (librdkafka's zstd frames declare a 2 MiB window for a few hundred bytes).
            let bounded = batch
                .records_with_limit(1 << 20)
                .unwrap_or_else(|e| panic!("{ctx} with a 1 MiB bound: {e}"));
            assert_eq!(bounded, records, "{ctx}");

            let rebuilt = rebuild(batch, codec, &records);
            assert_eq!(
                rebuilt.records().expect("rebuilt batch decodes"),
                records,
                "{ctx}: rebuilt records"
            );
            assert_eq!(
                rebuilt.attributes(),
                batch.attributes(),
                "{ctx}: attributes"
            );
            assert_eq!(rebuilt.first_timestamp(), batch.first_timestamp(), "{ctx}");
            assert_eq!(rebuilt.max_timestamp(), batch.max_timestamp(), "{ctx}");
            assert_eq!(
                rebuilt.last_offset_delta(),
                batch.last_offset_delta(),
                "{ctx}"
            );
            if codec == Compression::None {
                let (a, b) = (
                    without_broker_fields(batch.as_bytes()),
                    without_broker_fields(rebuilt.as_bytes()),
                );
                assert!(
                    a == b,
                    "{ctx}: rebuilt bytes differ from the client's, first at byte {:?}",
                    first_difference(&a, &b)
                );
            }
        }
    }
    let all: BTreeSet<String> = Compression::ALL.iter().map(|c| format!("{c:?}")).collect();
    assert_eq!(codecs_seen, all, "codecs covered by the fixtures");
    assert!(batches_seen >= FIXTURES.len());
}

/// The position scan finds nothing in bytes that only look like a batch: the CRC decides.
#[test]
fn the_scan_needs_a_valid_crc() {
    let (name, _) = FIXTURES[0];
    let mut frame = fixture(name);
    let found = find_batches(&frame);
    assert!(!found.is_empty());
    for (at, batch) in &found {
        // Flip the last byte of each batch: inside the CRC, so the batch is no longer found.
        frame[at + batch.len() - 1] ^= 0x01;
    }
    assert!(find_batches(&frame).is_empty());
}
