//! What the batch fuzz targets share: CRC-32C, to fix up the checksum of a fuzzed batch so
//! that the fuzzer gets past it to the parts behind.

/// Where a RecordBatch's CRC sits, and where the bytes it covers start.
pub const CRC_OFFSET: usize = 17;
/// See [`CRC_OFFSET`].
pub const CRC_START: usize = 21;

/// CRC-32C (Castagnoli), bitwise: the fuzz targets need no speed and no extra dependency.
pub fn crc32c(bytes: &[u8]) -> u32 {
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

/// `batch` with its CRC set to what its bytes need (left alone when too short to have one).
pub fn fix_crc(batch: &mut [u8]) {
    if batch.len() > CRC_START {
        let crc = crc32c(&batch[CRC_START..]);
        batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
    }
}
