//! Fuzzes compaction over stored batches, whose records come from clients: the input is cut into
//! consecutive RecordBatches (`Batch::frame_len`; each CRC is fixed up so that the fuzzer gets
//! past the checksum), every batch goes through a `KeyMap` (the first pass) and then through
//! `KeyMap::clean` (the second).
//!
//! Properties: no panic, abort or out-of-memory; and what `clean` returns keeps the contract the
//! backends rely on: a rewritten batch is valid, covers the same offsets (base offset and last
//! offset delta), keeps the producer and codec, and holds a subset of the original records, in
//! order, byte for byte the same keys, values and timestamps; a batch rewritten with all its
//! records carries a delete horizon it did not have.

#![no_main]

#[path = "crc.rs"]
mod crc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_storage::compaction::{Cleaned, CompactionStats, KeyMap, TombstoneClock};
use weir_storage::Batch;


fn batches(data: &[u8]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && out.len() < 64 {
        let Ok(len) = Batch::frame_len(rest) else {
            break;
        };
        let mut fixed = rest[..len].to_vec();
        crc::fix_crc(&mut fixed);
        if let Ok(b) = Batch::new(Bytes::from(fixed)) {
            out.push(b);
        }
        rest = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, data)) = data.split_first() else {
        return;
    };
    let batches = batches(data);
    let mut map = KeyMap::new(usize::from(knobs & 0x3f) + 1);
    let mut taken = 0;
    for b in &batches {
        if !map.add(b) {
            break;
        }
        taken += 1;
    }
    let tombstones = TombstoneClock {
        now_ms: if knobs & 0x80 != 0 { i64::MAX } else { 0 },
        delete_retention_ms: if knobs & 0x40 != 0 { i64::MAX } else { 0 },
        markers_below: if knobs & 0x20 != 0 { i64::MAX } else { 0 },
    };
    let mut stats = CompactionStats::default();
    for b in &batches[..taken] {
        let Ok(cleaned) = map.clean(b, tombstones, &mut stats) else {
            continue;
        };
        if let Cleaned::Rewritten(r) = cleaned {
            let again = Batch::new(r.as_bytes().clone()).expect("a rewritten batch is valid");
            assert_eq!(again.base_offset(), b.base_offset());
            assert_eq!(again.last_offset_delta(), b.last_offset_delta());
            assert_eq!(
                (again.producer_id(), again.producer_epoch(), again.base_sequence()),
                (b.producer_id(), b.producer_epoch(), b.base_sequence())
            );
            assert_eq!(again.compression(), b.compression());
            assert!(again.record_count() <= b.record_count());
            if again.record_count() == b.record_count() {
                assert!(b.delete_horizon_ms().is_none() && again.delete_horizon_ms().is_some());
            }
            let before = b.records().expect("clean decoded it");
            let after = again.records().expect("a rewritten batch decodes");
            // A subsequence of the original records (offsets, keys, values and headers).
            let mut it = before.iter();
            for r in &after {
                let same = |o: &&weir_storage::LogRecord| {
                    let fields = |x: &weir_storage::LogRecord| {
                        let rec = &x.record;
                        (x.offset, rec.timestamp_ms, rec.key.clone(), rec.value.clone())
                    };
                    fields(o) == fields(r) && o.record.headers == r.record.headers
                };
                assert!(it.find(same).is_some(), "a subset of the records, in order");
            }
        }
    }
});
