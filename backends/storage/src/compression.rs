//! Compression codecs of the Kafka RecordBatch: gzip, snappy, lz4 and zstd, byte-compatible with
//! what Apache Kafka's Java client and librdkafka write and read.
//!
//! A compressed batch holds its records section compressed as one payload. The framing of each
//! codec, as written by [`compress`] and accepted by [`decompress`]:
//!
//! - gzip: RFC 1952 members (flate2). Several concatenated members are read as one stream, as
//!   zlib and Java's `GZIPInputStream` do.
//! - snappy: the xerial snappy-java stream that Kafka's Java client writes: the 8-byte magic
//!   `82 'S' 'N' 'A' 'P' 'P' 'Y' 00`, an i32 BE version (1) and an i32 BE minimum compatible
//!   version (1), then blocks `[i32 BE compressed length][raw snappy block]`, each holding at most
//!   32 KiB of input. The reader also takes a plain raw snappy buffer without that framing (some
//!   clients send one) and a magic header repeated inside the stream (concatenated xerial streams).
//! - lz4: the LZ4 frame format (lz4_flex), 64 KiB independent blocks without checksums when
//!   writing, as Java and librdkafka do. The reader takes any block size, linked or independent
//!   blocks, block and content checksums, a content size, several frames and skippable frames. It
//!   rejects the legacy lz4 format, which no Kafka client writes.
//! - zstd: zstd frames (libzstd) at level 3, Kafka's default. The reader takes several frames and
//!   skippable frames, and rejects the pre-1.0 legacy formats.
//!
//! An empty payload decodes to nothing for every codec; the record count check of the batch
//! decides whether that is acceptable.
//!
//! # The allocation bound
//!
//! The payload is untrusted, so decompression allocates by what it has produced and never by what
//! the input claims: the output buffer starts small, doubles as it fills, and never grows past
//! `max_out + 1` bytes (one byte over the bound is how an overflow is detected, and reported as
//! [`BatchError::DecompressedTooLarge`]). Every codec's internal state stays under a constant:
//!
//! - gzip: the inflate state and its 32 KiB window, about 50 KiB.
//! - snappy: nothing; each block's claimed length ([`snap::raw::decompress_len`]) is checked against
//!   what remains of `max_out`, and against the largest expansion snappy can encode (22 times the
//!   block), before the output grows to hold it.
//! - lz4: lz4_flex allocates its block buffers from the frame header: at most 4 MiB for the
//!   compressed block and 8 MiB + 64 KiB of output window for 4 MiB linked blocks, so about
//!   12 MiB in the worst case (128 KiB for the 64 KiB blocks Kafka clients use). A content size
//!   in the header larger than `max_out` is rejected before anything is allocated.
//! - zstd: the decompression context (about 100 KiB, plus a 128 KiB block buffer) and a window of
//!   `2^window_log_max` bytes at most, where `window_log_max` is `ceil(log2(max_out))` clamped to
//!   `[23, 27]`: a frame that declares a larger window is refused by libzstd before it allocates.
//!   The floor of 23 (8 MiB) is there because streaming compressors (Java's zstd-jni, librdkafka)
//!   do not know the content size and declare the window of their level (21 at level 3, 23 at
//!   level 19) even for a 1 KiB batch; refusing those would break interoperability whenever
//!   `max_out` is small. A frame content size larger than `max_out` is rejected up front.
//!
//! So one call allocates at most `max_out + 1` bytes of output plus about 12 MiB.
//!
//! Nothing here panics on any input: every slice access is checked, and lengths from the input are
//! added with overflow checks.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{self, Read, Write};
use std::ops::RangeInclusive;

use crate::batch::Compression;
use crate::error::BatchError;

/// The magic that opens a xerial snappy-java stream.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version and minimum compatible version.
const XERIAL_HEADER_LEN: usize = 16;
/// The stream version snappy-java writes (and the minimum version it needs to read it).
const XERIAL_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block: snappy-java's default block size, which Kafka uses.
const XERIAL_BLOCK_LEN: usize = 32 * 1024;
/// Upper bound on what one snappy block can expand to, per input byte: the densest element is a
/// 3-byte copy of 64 bytes (21.3 bytes per byte). A claim above it is corrupt, not just large.
const SNAPPY_MAX_EXPANSION: usize = 22;

const LZ4_MAGIC: u32 = 0x184D_2204;
const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
const LZ4_SKIPPABLE_MAGIC: RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;
const LZ4_FLG_CONTENT_SIZE: u8 = 0x08;
const LZ4_FLG_DICT_ID: u8 = 0x01;
const LZ4_FLG_BLOCK_CHECKSUM: u8 = 0x10;
const LZ4_FLG_CONTENT_CHECKSUM: u8 = 0x04;
/// A block size word with this bit set announces a block stored uncompressed.
const LZ4_BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Skippable zstd frames have a magic `0x184D2A5?`, the same family as lz4's.
const ZSTD_SKIPPABLE_MAGIC: RangeInclusive<u32> = 0x184D_2A50..=0x184D_2A5F;
/// Kafka's default zstd level (`compression.zstd.level`).
const ZSTD_LEVEL: i32 = 3;
/// Smallest `window_log_max`: 8 MiB, the window streaming compressors declare up to level 19.
const ZSTD_WINDOW_LOG_FLOOR: u32 = 23;
/// Largest `window_log_max`: 128 MiB, libzstd's own default limit.
const ZSTD_WINDOW_LOG_CEIL: u32 = 27;

/// First size of a growing output buffer.
const OUTPUT_START_LEN: usize = 8 * 1024;

/// Compresses `data` with `codec` in the framing Kafka's Java client writes.
///
/// # Errors
/// [`BatchError::Compress`] when the codec fails (in practice only on allocation-sized inputs that
/// snappy cannot describe, more than 4 GiB).
pub(crate) fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let fail = |detail: String| BatchError::Compress { codec, detail };
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let out = Vec::with_capacity(data.len() / 2 + 64);
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            encoder.write_all(data).map_err(|e| fail(e.to_string()))?;
            encoder.finish().map_err(|e| fail(e.to_string()))
        }
        Compression::Snappy => xerial_compress(data).map_err(fail),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let out = Vec::with_capacity(data.len() / 2 + 64);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(data).map_err(|e| fail(e.to_string()))?;
            encoder.finish().map_err(|e| fail(e.to_string()))
        }
        Compression::Zstd => {
            zstd::bulk::compress(data, ZSTD_LEVEL).map_err(|e| fail(e.to_string()))
        }
    }
}

/// Decompresses `data`, failing with `DecompressedTooLarge` rather than produce more than `max_out`
/// bytes. See the module documentation for the framings accepted and the allocation bound.
///
/// # Errors
/// [`BatchError::Decompress`] when `data` is not valid for `codec`, and
/// [`BatchError::DecompressedTooLarge`] when it would expand to more than `max_out` bytes.
pub(crate) fn decompress(
    codec: Compression,
    data: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, BatchError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let sink = Sink::new(codec, max_out);
    match codec {
        Compression::None => {
            if data.len() > max_out {
                return Err(sink.too_large());
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => {
            let mut out = Vec::new();
            sink.read_from(
                &mut out,
                flate2::bufread::MultiGzDecoder::new(data),
                max_out,
            )?;
            Ok(out)
        }
        Compression::Snappy => snappy_decompress(&sink, data),
        Compression::Lz4 => lz4_decompress(&sink, data),
        Compression::Zstd => zstd_decompress(&sink, data),
    }
}

/// The codec and bound of one decompression: grows output buffers within the bound and builds
/// the errors.
struct Sink {
    codec: Compression,
    max_out: usize,
}

impl Sink {
    fn new(codec: Compression, max_out: usize) -> Self {
        Sink { codec, max_out }
    }

    fn too_large(&self) -> BatchError {
        BatchError::DecompressedTooLarge {
            codec: self.codec,
            max: self.max_out,
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> BatchError {
        BatchError::Decompress {
            codec: self.codec,
            detail: detail.into(),
        }
    }

    /// The largest capacity an output buffer may reach: one byte past the bound, so that an
    /// overflow shows as a full buffer.
    fn limit(&self) -> usize {
        self.max_out.saturating_add(1)
    }

    /// Grows the capacity of `out` to at least `needed` (at most [`Sink::limit`]), doubling so
    /// that the number of copies stays logarithmic, without ever passing the limit.
    fn reserve(&self, out: &mut Vec<u8>, needed: usize) {
        if out.capacity() >= needed {
            return;
        }
        let target = out
            .capacity()
            .saturating_mul(2)
            .max(OUTPUT_START_LEN)
            .min(self.limit())
            .max(needed);
        out.reserve_exact(target.saturating_sub(out.len()));
    }

    /// Appends everything `reader` produces to `out`, until `out` would hold more than `max_out`
    /// bytes in total. Memory beyond the output is the reader's own.
    fn read_from<R: Read>(
        &self,
        out: &mut Vec<u8>,
        mut reader: R,
        budget: usize,
    ) -> Result<(), BatchError> {
        // `out` holds `filled` bytes of output, then zeroes that the reader may overwrite: the
        // zeroing happens once per growth, not once per read.
        let start = out.len();
        let end_max = start.saturating_add(budget).saturating_add(1);
        let mut filled = start;
        loop {
            if filled == out.len() {
                if filled >= end_max {
                    return Err(self.too_large());
                }
                self.reserve(out, filled.saturating_add(1).min(end_max));
                let len = out.capacity().min(end_max);
                out.resize(len, 0);
            }
            let Some(spare) = out.get_mut(filled..) else {
                return Err(self.corrupt("output buffer accounting is off"));
            };
            let room = spare.len();
            match reader.read(spare) {
                Ok(0) => break,
                Ok(n) => filled = filled.saturating_add(n.min(room)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    out.truncate(filled);
                    return Err(self.corrupt(e.to_string()));
                }
            }
        }
        out.truncate(filled);
        if filled - start > budget {
            return Err(self.too_large());
        }
        Ok(())
    }
}

/// Reads a little-endian u32 at `at`, if the bytes are there.
fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Reads a big-endian u32 at `at`, if the bytes are there.
fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// `data` in xerial snappy-java framing, blocks of [`XERIAL_BLOCK_LEN`] input bytes.
fn xerial_compress(data: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = data.len().div_ceil(XERIAL_BLOCK_LEN);
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 4 * blocks + 64);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    let mut scratch = vec![0u8; snap::raw::max_compress_len(XERIAL_BLOCK_LEN.min(data.len()))];
    for chunk in data.chunks(XERIAL_BLOCK_LEN) {
        let n = encoder
            .compress(chunk, &mut scratch)
            .map_err(|e| e.to_string())?;
        let block = scratch
            .get(..n)
            .ok_or_else(|| format!("snappy reported {n} bytes for a smaller buffer"))?;
        let len = u32::try_from(n).map_err(|_| format!("snappy block of {n} bytes"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(block);
    }
    Ok(out)
}

fn snappy_decompress(sink: &Sink, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let mut decoder = snap::raw::Decoder::new();
    if !data.starts_with(&XERIAL_MAGIC) {
        snappy_block(sink, &mut decoder, data, &mut out)?;
        return Ok(out);
    }
    let mut pos = 0usize;
    while let Some(rest) = data.get(pos..).filter(|rest| !rest.is_empty()) {
        if rest.starts_with(&XERIAL_MAGIC) {
            // The stream header, or the header of a concatenated stream, as snappy-java allows.
            if rest.len() < XERIAL_HEADER_LEN {
                return Err(sink.corrupt("truncated xerial snappy header"));
            }
            pos = pos.saturating_add(XERIAL_HEADER_LEN);
            continue;
        }
        let len = be_u32(rest, 0).ok_or_else(|| sink.corrupt("truncated xerial block length"))?;
        let block = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(4..len.checked_add(4)?))
            .ok_or_else(|| {
                sink.corrupt(format!(
                    "xerial block of {len} bytes runs past the end ({} bytes left)",
                    rest.len().saturating_sub(4)
                ))
            })?;
        snappy_block(sink, &mut decoder, block, &mut out)?;
        pos = pos.saturating_add(4).saturating_add(block.len());
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, checking its claimed length before growing `out`.
fn snappy_block(
    sink: &Sink,
    decoder: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), BatchError> {
    let claimed = snap::raw::decompress_len(block).map_err(|e| sink.corrupt(e.to_string()))?;
    let start = out.len();
    if claimed > sink.max_out.saturating_sub(start) {
        return Err(sink.too_large());
    }
    if claimed > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(sink.corrupt(format!(
            "snappy block of {} bytes claims {claimed} bytes, more than it can encode",
            block.len()
        )));
    }
    let end = start.saturating_add(claimed);
    sink.reserve(out, end);
    out.resize(end, 0);
    let Some(dst) = out.get_mut(start..) else {
        return Err(sink.corrupt("output buffer accounting is off"));
    };
    let n = decoder
        .decompress(block, dst)
        .map_err(|e| sink.corrupt(e.to_string()))?;
    out.truncate(start.saturating_add(n));
    Ok(())
}

/// Where one lz4 frame ends, and the content size its header declares: a walk over the block
/// headers that decompresses nothing.
fn lz4_frame_extent(frame: &[u8]) -> Result<(usize, Option<u64>), String> {
    let truncated = || "truncated lz4 frame".to_string();
    let flg = *frame.get(4).ok_or_else(truncated)?;
    let mut pos = 6usize; // magic, FLG, BD
    let mut content_size = None;
    if flg & LZ4_FLG_CONTENT_SIZE != 0 {
        let bytes = frame.get(pos..pos + 8).ok_or_else(truncated)?;
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| truncated())?;
        content_size = Some(u64::from_le_bytes(bytes));
        pos += 8;
    }
    if flg & LZ4_FLG_DICT_ID != 0 {
        pos += 4;
    }
    pos += 1; // header checksum
    let block_checksum = if flg & LZ4_FLG_BLOCK_CHECKSUM != 0 {
        4
    } else {
        0
    };
    loop {
        let word = le_u32(frame, pos).ok_or_else(truncated)?;
        pos += 4;
        if word == 0 {
            break; // end mark
        }
        let size = usize::try_from(word & !LZ4_BLOCK_UNCOMPRESSED).map_err(|_| truncated())?;
        pos = pos
            .checked_add(size)
            .and_then(|p| p.checked_add(block_checksum))
            .filter(|&p| p <= frame.len())
            .ok_or_else(truncated)?;
    }
    if flg & LZ4_FLG_CONTENT_CHECKSUM != 0 {
        pos += 4;
    }
    if pos > frame.len() {
        return Err(truncated());
    }
    Ok((pos, content_size))
}

fn lz4_decompress(sink: &Sink, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let magic = le_u32(rest, 0).ok_or_else(|| sink.corrupt("truncated lz4 frame magic"))?;
        if LZ4_SKIPPABLE_MAGIC.contains(&magic) {
            let skip = le_u32(rest, 4)
                .and_then(|size| usize::try_from(size).ok())
                .and_then(|size| size.checked_add(8))
                .ok_or_else(|| sink.corrupt("truncated skippable lz4 frame"))?;
            rest = rest
                .get(skip..)
                .ok_or_else(|| sink.corrupt("truncated skippable lz4 frame"))?;
            continue;
        }
        if magic == LZ4_LEGACY_MAGIC {
            return Err(sink.corrupt("legacy lz4 format (no Kafka client writes it)"));
        }
        if magic != LZ4_MAGIC {
            return Err(sink.corrupt(format!("not an lz4 frame (magic {magic:#010x})")));
        }
        let (len, content_size) = lz4_frame_extent(rest).map_err(|e| sink.corrupt(e))?;
        let budget = sink.max_out.saturating_sub(out.len());
        if content_size.is_some_and(|size| size > budget as u64) {
            return Err(sink.too_large());
        }
        let (frame, tail) = (rest.get(..len), rest.get(len..));
        let (Some(frame), Some(tail)) = (frame, tail) else {
            return Err(sink.corrupt("truncated lz4 frame"));
        };
        // One decoder per frame: lz4_flex sizes its buffers by the first frame it sees.
        sink.read_from(&mut out, lz4_flex::frame::FrameDecoder::new(frame), budget)?;
        rest = tail;
    }
    Ok(out)
}

/// `ceil(log2(n))`, 0 for 0 and 1.
fn ceil_log2(n: usize) -> u32 {
    match n {
        0 | 1 => 0,
        n => usize::BITS - (n - 1).leading_zeros(),
    }
}

/// The largest zstd window, as a power of two, that decoding with bound `max_out` accepts.
fn zstd_window_log_max(max_out: usize) -> u32 {
    ceil_log2(max_out).clamp(ZSTD_WINDOW_LOG_FLOOR, ZSTD_WINDOW_LOG_CEIL)
}

fn zstd_decompress(sink: &Sink, data: &[u8]) -> Result<Vec<u8>, BatchError> {
    use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

    let fail = |e: io::Error| sink.corrupt(e.to_string());
    let mut decoder = Decoder::new().map_err(fail)?;
    decoder
        .set_parameter(DParameter::WindowLogMax(zstd_window_log_max(sink.max_out)))
        .map_err(fail)?;
    let limit = sink.limit();
    let mut out = Vec::new();
    let mut input = InBuffer::around(data);
    let mut at_frame_start = true;
    loop {
        if at_frame_start {
            let rest = data.get(input.pos()..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let magic =
                le_u32(rest, 0).ok_or_else(|| sink.corrupt("truncated zstd frame magic"))?;
            if magic == ZSTD_MAGIC {
                let budget = sink.max_out.saturating_sub(out.len());
                if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(rest) {
                    if size > budget as u64 {
                        return Err(sink.too_large());
                    }
                }
            } else if !ZSTD_SKIPPABLE_MAGIC.contains(&magic) {
                // Legacy (pre-1.0) frames would bypass the window limit: refuse them.
                return Err(sink.corrupt(format!("not a zstd frame (magic {magic:#010x})")));
            }
            at_frame_start = false;
        }
        if out.len() == out.capacity() {
            if out.len() >= limit {
                return Err(sink.too_large());
            }
            let needed = out.len().saturating_add(1);
            sink.reserve(&mut out, needed);
        }
        let (in_before, out_before) = (input.pos(), out.len());
        let hint = {
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            decoder.run(&mut input, &mut output).map_err(fail)?
        };
        if hint == 0 {
            at_frame_start = true; // the frame is complete and flushed
            continue;
        }
        let progressed = input.pos() != in_before || out.len() != out_before;
        if out.len() < out.capacity() && (input.pos() >= data.len() || !progressed) {
            return Err(sink.corrupt("truncated zstd frame"));
        }
    }
    if out.len() > sink.max_out {
        return Err(sink.too_large());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const MIB: usize = 1 << 20;

    /// Deterministic, compressible but not trivial: words from a small vocabulary picked by an
    /// xorshift generator, with some raw noise.
    fn sample(len: usize, seed: u64) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"kafka ",
            b"weir ",
            b"record ",
            b"batch ",
            b"{\"id\":",
            b"}, ",
            b"offset ",
            b"\x00\x01",
        ];
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(5) {
                out.extend_from_slice(&state.to_le_bytes()[..3]);
            } else {
                out.extend_from_slice(words[(state >> 32) as usize % words.len()]);
            }
        }
        out.truncate(len);
        out
    }

    fn is_too_large(r: &Result<Vec<u8>, BatchError>) -> bool {
        matches!(r, Err(BatchError::DecompressedTooLarge { .. }))
    }

    #[test]
    fn round_trip_every_codec() {
        for codec in Compression::ALL {
            for (len, seed) in [
                (0, 1),
                (1, 2),
                (100, 3),
                (XERIAL_BLOCK_LEN, 4),
                (100_000, 5),
                (MIB, 6),
            ] {
                let data = sample(len, seed);
                let packed = compress(codec, &data).expect("compress");
                if codec != Compression::None && len >= 100_000 {
                    assert!(packed.len() < data.len(), "{codec:?} did not compress");
                }
                let back = decompress(codec, &packed, len).expect("decompress");
                assert!(back == data, "{codec:?} round trip of {len} bytes");
                let back = decompress(codec, &packed, 64 * MIB).expect("decompress");
                assert!(back == data, "{codec:?} round trip of {len} bytes");
            }
        }
    }

    #[test]
    fn the_bound_is_exact() {
        for codec in Compression::ALL {
            let data = sample(70_000, 7);
            let packed = compress(codec, &data).expect("compress");
            assert_eq!(decompress(codec, &packed, data.len()).expect("fits"), data);
            let r = decompress(codec, &packed, data.len() - 1);
            assert!(is_too_large(&r), "{codec:?}: {r:?}");
            assert!(is_too_large(&decompress(codec, &packed, 0)), "{codec:?}");
        }
    }

    #[test]
    fn snappy_writes_xerial_framing_in_32k_blocks() {
        let data = sample(100_000, 8);
        let packed = compress(Compression::Snappy, &data).expect("compress");
        assert_eq!(packed[..8], XERIAL_MAGIC);
        assert_eq!(packed[8..12], [0, 0, 0, 1], "version");
        assert_eq!(packed[12..16], [0, 0, 0, 1], "minimum compatible version");
        let mut pos = 16;
        let mut decoded = Vec::new();
        while pos < packed.len() {
            let len = u32::from_be_bytes(packed[pos..pos + 4].try_into().unwrap()) as usize;
            let block = &packed[pos + 4..pos + 4 + len];
            let raw = snap::raw::Decoder::new()
                .decompress_vec(block)
                .expect("raw block");
            assert!(raw.len() <= XERIAL_BLOCK_LEN);
            decoded.extend_from_slice(&raw);
            pos += 4 + len;
        }
        assert_eq!(pos, packed.len());
        assert_eq!(decoded, data);
        assert_eq!(data.len().div_ceil(XERIAL_BLOCK_LEN), 4);
    }

    #[test]
    fn snappy_reads_raw_and_concatenated_streams() {
        let data = sample(50_000, 9);
        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("raw");
        assert_eq!(
            decompress(Compression::Snappy, &raw, MIB).expect("raw"),
            data
        );

        let mut twice = compress(Compression::Snappy, &data).expect("compress");
        twice.extend_from_slice(&compress(Compression::Snappy, &data).expect("compress"));
        let back = decompress(Compression::Snappy, &twice, MIB).expect("concatenated");
        assert_eq!(back, [data.clone(), data].concat());
    }

    #[test]
    fn snappy_claims_are_checked_before_allocating() {
        // A raw block whose preamble claims 1 GiB: refused as too large without growing anything.
        let mut claim = Vec::new();
        let mut n: u64 = 1 << 30;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.push(n as u8);
        claim.extend_from_slice(&[0; 8]);
        assert!(is_too_large(&decompress(Compression::Snappy, &claim, MIB)));
        // Within the bound but more than the block can encode: corrupt.
        assert!(matches!(
            decompress(Compression::Snappy, &claim, 2 << 30),
            Err(BatchError::Decompress { .. })
        ));
        let mut framed = compress(Compression::Snappy, b"").expect("header");
        framed.extend_from_slice(&(claim.len() as u32).to_be_bytes());
        framed.extend_from_slice(&claim);
        assert!(is_too_large(&decompress(Compression::Snappy, &framed, MIB)));
    }

    #[test]
    fn bombs_stop_at_the_bound() {
        let zeros = vec![0u8; 10 * MIB];
        for codec in CODECS {
            let packed = compress(codec, &zeros).expect("compress");
            assert!(packed.len() < MIB, "{codec:?}: {} bytes", packed.len());
            let r = decompress(codec, &packed, MIB);
            assert!(is_too_large(&r), "{codec:?}: {:?}", r.map(|v| v.len()));
        }
        // Without a declared content size, the streaming paths have to stop on their own.
        let raw = snap::raw::Encoder::new().compress_vec(&zeros).expect("raw");
        assert!(is_too_large(&decompress(Compression::Snappy, &raw, MIB)));

        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&zeros).unwrap();
        let lz4 = lz4.finish().unwrap();
        assert!(lz4[4] & LZ4_FLG_CONTENT_SIZE == 0);
        assert!(is_too_large(&decompress(Compression::Lz4, &lz4, MIB)));

        let mut info = lz4_flex::frame::FrameInfo::new();
        info.content_size = Some(zeros.len() as u64);
        let mut lz4 = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        lz4.write_all(&zeros).unwrap();
        let lz4 = lz4.finish().unwrap();
        assert!(lz4[4] & LZ4_FLG_CONTENT_SIZE != 0);
        assert!(is_too_large(&decompress(Compression::Lz4, &lz4, MIB)));

        let zstd = zstd::stream::encode_all(&zeros[..], 3).unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&zstd),
            Ok(None)
        ));
        assert!(is_too_large(&decompress(Compression::Zstd, &zstd, MIB)));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(is_too_large(&decompress(Compression::Gzip, &gz, MIB)));
    }

    #[test]
    fn lz4_reads_every_frame_flavour() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        let data = sample(300_000, 10);
        let mut all = Vec::new();
        for block_size in [BlockSize::Max64KB, BlockSize::Max256KB, BlockSize::Max4MB] {
            for block_mode in [BlockMode::Independent, BlockMode::Linked] {
                for checksums in [false, true] {
                    let mut info = FrameInfo::new()
                        .block_size(block_size)
                        .block_mode(block_mode)
                        .block_checksums(checksums)
                        .content_checksum(checksums);
                    if checksums {
                        info.content_size = Some(data.len() as u64);
                    }
                    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
                    enc.write_all(&data).unwrap();
                    let frame = enc.finish().unwrap();
                    let back = decompress(Compression::Lz4, &frame, MIB).expect("frame");
                    assert!(back == data, "{block_size:?} {block_mode:?} {checksums}");
                    all.extend_from_slice(&frame);
                }
            }
        }
        // Concatenated frames with shrinking block sizes, and a skippable frame among them.
        all.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        all.extend_from_slice(&compress(Compression::Lz4, &data).unwrap());
        let back = decompress(Compression::Lz4, &all, 64 * MIB).expect("concatenated");
        assert_eq!(back.len(), 13 * data.len());
        assert!(back.chunks(data.len()).all(|c| c == data));
    }

    #[test]
    fn lz4_writes_what_kafka_clients_write() {
        let frame = compress(Compression::Lz4, b"hello").unwrap();
        assert_eq!(frame[..4], LZ4_MAGIC.to_le_bytes());
        assert_eq!(
            frame[4], 0x60,
            "FLG: version 1, independent blocks, no checksums"
        );
        assert_eq!(frame[5], 0x40, "BD: 64 KiB blocks");
    }

    #[test]
    fn lz4_refuses_legacy_and_truncated_frames() {
        let mut legacy = LZ4_LEGACY_MAGIC.to_le_bytes().to_vec();
        legacy.extend_from_slice(&[5, 0, 0, 0, 0x50, b'h', b'e', b'l', b'l', b'o']);
        assert!(decompress(Compression::Lz4, &legacy, MIB).is_err());
        // A frame cut at a block boundary would read as a shorter stream: the end mark is required.
        let frame = compress(Compression::Lz4, &sample(200_000, 11)).unwrap();
        for cut in 1..frame.len() {
            assert!(
                decompress(Compression::Lz4, &frame[..cut], MIB).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn zstd_window_is_bounded_but_streaming_producers_are_read() {
        assert_eq!(zstd_window_log_max(0), 23);
        assert_eq!(zstd_window_log_max(MIB), 23);
        assert_eq!(zstd_window_log_max(64 * MIB), 26);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);

        // What librdkafka and zstd-jni write: a streamed frame, no content size, window 2^21.
        let data = sample(2_000, 12);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(&data).unwrap();
        let streamed = enc.finish().unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        assert_eq!(
            decompress(Compression::Zstd, &streamed, 4096).unwrap(),
            data
        );

        // Frames declaring a window larger than the bound allows for 2 KB of data are refused
        // (libzstd's own default limit, 2^27, would let the first two through).
        let declaring = |window_log: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(window_log))
                .unwrap();
            enc.write_all(&data).unwrap();
            enc.finish().unwrap()
        };
        for window_log in [24, 27] {
            let greedy = declaring(window_log);
            let r = decompress(Compression::Zstd, &greedy, MIB);
            assert!(
                matches!(&r, Err(BatchError::Decompress { detail, .. }) if detail.contains("memory")),
                "window 2^{window_log}: {:?}",
                r.map(|v| v.len())
            );
            let fits = 1 << window_log;
            assert_eq!(decompress(Compression::Zstd, &greedy, fits).unwrap(), data);
        }
        let greedy = declaring(30);
        assert!(decompress(Compression::Zstd, &greedy, usize::MAX).is_err());
    }

    #[test]
    fn zstd_reads_several_frames_and_refuses_legacy_ones() {
        let data = sample(10_000, 13);
        let mut two = compress(Compression::Zstd, &data).unwrap();
        two.extend_from_slice(&[0x5F, 0x2A, 0x4D, 0x18, 2, 0, 0, 0, 9, 9]);
        two.extend_from_slice(&compress(Compression::Zstd, &data).unwrap());
        assert_eq!(
            decompress(Compression::Zstd, &two, MIB).unwrap(),
            [data.clone(), data.clone()].concat()
        );
        // Exactly at the bound across frames, and one byte short of it.
        assert!(decompress(Compression::Zstd, &two, 2 * data.len()).is_ok());
        assert!(is_too_large(&decompress(
            Compression::Zstd,
            &two,
            2 * data.len() - 1
        )));

        let mut legacy = compress(Compression::Zstd, &data).unwrap();
        legacy[..4].copy_from_slice(&0xFD2F_B527u32.to_le_bytes());
        assert!(decompress(Compression::Zstd, &legacy, MIB).is_err());
    }

    #[test]
    fn gzip_reads_concatenated_members() {
        let a = sample(5_000, 14);
        let b = sample(7_000, 15);
        let mut both = compress(Compression::Gzip, &a).unwrap();
        both.extend_from_slice(&compress(Compression::Gzip, &b).unwrap());
        assert_eq!(
            decompress(Compression::Gzip, &both, MIB).unwrap(),
            [a, b].concat()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut garbage: Vec<Vec<u8>> = vec![
            vec![0],
            vec![0xff; 7],
            b"definitely not compressed".to_vec(),
            sample(3_000, 16),
            XERIAL_MAGIC.to_vec(),
            [
                &XERIAL_MAGIC[..],
                &[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
            [
                &LZ4_MAGIC.to_le_bytes()[..],
                &[0x60, 0x40, 0x00, 0xff, 0xff, 0xff, 0x7f],
            ]
            .concat(),
            [&ZSTD_MAGIC.to_le_bytes()[..], &[0xff; 12]].concat(),
            vec![0x1f, 0x8b, 8, 0xff, 0, 0, 0, 0, 0, 0xff, 1, 2, 3],
        ];
        for codec in CODECS {
            let valid = compress(codec, &sample(20_000, 17)).unwrap();
            garbage.push(valid[..valid.len() / 2].to_vec());
            let mut flipped = valid.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0x5a;
            }
            garbage.push(flipped);
        }
        for codec in CODECS {
            for g in &garbage {
                let r = decompress(codec, g, MIB);
                if let Ok(out) = &r {
                    // Raw snappy has no magic: a few bytes can be a valid tiny block.
                    assert!(
                        codec == Compression::Snappy && out.len() <= 22 * g.len(),
                        "{codec:?}"
                    );
                }
            }
            for g in &garbage[1..3] {
                assert!(decompress(codec, g, MIB).is_err(), "{codec:?} {g:?}");
            }
            // A lone zero byte is raw snappy for "nothing"; every other codec refuses it.
            let zero = decompress(codec, &garbage[0], MIB);
            if codec == Compression::Snappy {
                assert_eq!(zero, Ok(Vec::new()));
            } else {
                assert!(zero.is_err(), "{codec:?}");
            }
        }
    }

    #[test]
    fn truncation_is_an_error_for_framed_codecs() {
        let data = sample(40_000, 18);
        for codec in CODECS {
            let packed = compress(codec, &data).unwrap();
            for cut in (1..packed.len()).step_by(3) {
                match decompress(codec, &packed[..cut], MIB) {
                    Err(_) => {}
                    // xerial blocks are self-contained: a cut between two of them reads a prefix.
                    Ok(out) => assert!(
                        codec == Compression::Snappy && data.starts_with(&out),
                        "{codec:?} cut at {cut}"
                    ),
                }
            }
        }
    }
}
