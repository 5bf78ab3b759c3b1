//! Fuzzes the RecordBatch decoder: `Batch::new` (framing, magic, CRC) and, for bytes it accepts,
//! `records_with_limit` (decompression under a 1 MiB bound, then record parsing).
//!
//! Random bytes rarely carry a valid CRC-32C, so when `Batch::new` refuses an input with a CRC
//! mismatch only, the target also decodes a copy with the CRC fixed: the fuzzer then reaches the
//! decompressors and the record parser instead of stopping at the checksum.
//!
//! The property is the absence of panics, aborts and out-of-memory: any `Err` is fine.

#![no_main]

#[path = "crc.rs"]
mod crc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use weir_storage::{Batch, BatchError};

/// The decompression bound the broker would use for a fetch-sized batch.
const MAX_UNCOMPRESSED: usize = 1 << 20;

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
        crc::fix_crc(&mut fixed);
        let _ = decode(&fixed);
    }
});
