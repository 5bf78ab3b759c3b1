//! Fuzzes the RecordBatch decoder: `Batch::new` (framing, magic, CRC) and, for bytes it accepts,
//! `records_with_limit` (decompression under a 1 MiB bound, then record parsing).
//!
//! Random bytes rarely carry a valid CRC-32C, so when `Batch::new` refuses an input with a CRC
//! mismatch only, the target also decodes a copy with the CRC fixed: the fuzzer then reaches the
//! decompressors and the record parser instead of stopping at the checksum.
//!
//! The property is the absence of panics, aborts and out-of-memory: any `Err` is fine.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_storage::{Batch, BatchError};

/// The decompression bound the broker would use for a fetch-sized batch.
const MAX_UNCOMPRESSED: usize = 1 << 20;
/// Where the CRC sits, and where the bytes it covers start.
const CRC_OFFSET: usize = 17;
const CRC_START: usize = 21;

fn decode(data: &[u8]) -> Result<usize, BatchError> {
    let batch = Batch::new(Bytes::copy_from_slice(data))?;
    // The header accessors must not panic either.
    let _ = (
        batch.base_offset(),
        batch.next_offset(),
        batch.timestamp_type(),
        batch.is_control(),
        batch.validate_for_append(),
    );
    Ok(batch.records_with_limit(MAX_UNCOMPRESSED)?.len())
}

fuzz_target!(|data: &[u8]| {
    if let Err(BatchError::CrcMismatch { .. }) = decode(data) {
        let mut fixed = data.to_vec();
        let crc = crc32c(&fixed[CRC_START..]);
        fixed[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
        let _ = decode(&fixed);
    }
});

/// CRC-32C (Castagnoli), bitwise: the fuzz target needs no speed and no extra dependency.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
