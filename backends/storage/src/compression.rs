//! Compression codecs of the Kafka RecordBatch: gzip, snappy (xerial framing, as Java writes it;
//! raw snappy accepted too), lz4 (frame format) and zstd.
//!
//! PLACEHOLDER: implemented by a helper. API fixed:
//! `compress(codec, &[u8]) -> Result<Vec<u8>, BatchError>` and
//! `decompress(codec, &[u8], max_out) -> Result<Vec<u8>, BatchError>`.

use crate::batch::Compression;
use crate::error::BatchError;

/// Compresses `data` with `codec` in the framing Kafka's Java client writes.
pub(crate) fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let _ = (codec, data);
    Err(BatchError::Compress {
        codec,
        detail: "not yet".into(),
    })
}

/// Decompresses `data`, failing with `DecompressedTooLarge` rather than produce more than `max_out`.
pub(crate) fn decompress(
    codec: Compression,
    data: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, BatchError> {
    let _ = (codec, data, max_out);
    Err(BatchError::Decompress {
        codec,
        detail: "not yet".into(),
    })
}
