//! Decoding untrusted bytes as a RecordBatch never panics and never allocates more than a fixed
//! bound, whatever lengths, counts or window sizes the bytes claim.
//!
//! Each input goes through `Batch::new` and `records_with_limit(LIMIT)` while a peak-tracking
//! global allocator ([`peak_alloc`]) records the largest number of live heap bytes above what
//! was live before the call. The inputs: arbitrary bytes; a valid header (length and CRC right)
//! over arbitrary payloads, with and without a codec's magic; and valid batches of every codec
//! (built here, and the real clients' batches of the corpus fixtures) with random byte flips,
//! truncations and appended junk, the length and CRC then recomputed so that decoding gets past
//! the CRC check into the decompressor and the record parser.
//!
//! # The bound
//!
//! For an input of `n` bytes, the extra live bytes stay under
//!
//! ```text
//! PER_RECORD_BYTE * D  +  (compressed ? 2 * (LIMIT + 1) + CODEC_CONSTANT : 0)  +  SLACK
//! ```
//!
//! - `D` is the size of the bytes records are parsed from: `n` for an uncompressed batch (decoding
//!   slices the input, it does not copy it), `LIMIT + 1` at most for a compressed one.
//! - `PER_RECORD_BYTE`: the record decoder grows its `Vec<LogRecord>` as records decode (it starts
//!   at no more than 1024 entries, never at the header's count), and each record takes at least
//!   7 bytes; growth by doubling briefly holds the old and the new buffer, so at most
//!   `3 * size_of::<LogRecord>() / 7` bytes per byte. A record's header vector likewise, at 2
//!   bytes per header (`3 * size_of::<Header>() / 2`), plus the header key strings.
//! - `2 * (LIMIT + 1)`: the decompressed output never grows past `LIMIT + 1` bytes; growing it by
//!   doubling briefly holds the old and the new buffer.
//! - `CODEC_CONSTANT` (13 MiB): a codec's own state, at most lz4's buffers for 4 MiB linked
//!   blocks (4 MiB + 8 MiB + 64 KiB) or zstd's context plus its 8 MiB window (see
//!   `src/compression.rs`). libzstd allocates with C's `malloc`, out of the counting allocator's
//!   sight: for zstd this test checks the Rust side, and the outcome of a frame that declares a
//!   window over the bound (it must be refused); the unit tests of `compression.rs` check the
//!   window limit itself.
//! - `SLACK` (256 KiB): small allocations (error messages, shared `Bytes` headers).
//!
//! When decoding stops in the decompressor (a corrupt payload, or one over the limit), no record
//! is parsed, and the tighter `2 * (LIMIT + 1) + CODEC_CONSTANT + SLACK` applies.
//!
//! For the `LIMIT` of 1 MiB used here that is about `130 n + 256 KiB` uncompressed and about
//! 150 MiB compressed: most of it is the record vectors a 1 MiB payload of 7-byte records may justify,
//! not the decompressor.
//!
//! Everything runs in one `#[test]` so that no other test thread allocates while a decode is
//! measured. Proptest's seed is printed; set `PROPTEST_RNG_SEED` to replay a run and
//! `PROPTEST_CASES` to change the number of cases per input family.

use std::io::Write;
use std::mem::size_of;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use peak_alloc::PeakAlloc;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use weir_storage::{Batch, BatchBuilder, BatchError, Compression, Header, LogRecord, Record};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// The decompression bound every decode here uses, as the fuzz target does.
const LIMIT: usize = 1 << 20;
const MIB: usize = 1 << 20;
/// A codec's own state, beyond its output: see the module docs.
const CODEC_CONSTANT: usize = 13 * MIB;
/// Small allocations that are not proportional to anything.
const SLACK: usize = 256 * 1024;

const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;

/// Heap bytes the record decoder may allocate per byte it parses records from.
fn per_record_byte() -> usize {
    (3 * size_of::<LogRecord>()).div_ceil(7) + (3 * size_of::<Header>()).div_ceil(2) + 1
}

/// The bound for a decode that went as far as it went.
fn bound(input_len: usize, compressed: bool, outcome: &Outcome) -> usize {
    let decompressor = if compressed {
        2 * (LIMIT + 1) + CODEC_CONSTANT
    } else {
        0
    };
    if matches!(outcome, Outcome::DecompressFailed) {
        return decompressor + SLACK;
    }
    let parsed = if compressed { LIMIT + 1 } else { input_len };
    per_record_byte() * parsed + decompressor + SLACK
}

/// How far a decode got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `Batch::new` refused the bytes.
    Invalid,
    /// The payload did not decompress, or exceeded the limit.
    DecompressFailed,
    TooLarge,
    /// Decompressed (or uncompressed), and the records failed to parse.
    RecordsFailed,
    /// Records decoded.
    Decoded,
}

struct Measured {
    outcome: Outcome,
    compressed: bool,
    peak: usize,
}

/// Decodes `bytes` as one batch, measuring the peak of extra live heap bytes.
fn decode_measured(bytes: &[u8]) -> Measured {
    let buf = Bytes::copy_from_slice(bytes);
    let before = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let result = Batch::new(buf).map(|batch| {
        let codec = batch.compression();
        (codec, batch.records_with_limit(LIMIT))
    });
    let peak = ALLOC.peak_usage().saturating_sub(before);
    let (outcome, compressed) = match &result {
        Err(_) => (Outcome::Invalid, false),
        Ok((codec, records)) => {
            let compressed = !matches!(codec, Ok(Compression::None) | Err(_));
            let outcome = match records {
                Ok(_) => Outcome::Decoded,
                Err(BatchError::DecompressedTooLarge { .. }) => Outcome::TooLarge,
                Err(BatchError::Decompress { .. }) => Outcome::DecompressFailed,
                Err(_) => Outcome::RecordsFailed,
            };
            (outcome, compressed)
        }
    };
    drop(result);
    Measured {
        outcome,
        compressed,
        peak,
    }
}

/// Decodes `bytes` and checks the peak against the bound.
fn check(bytes: &[u8]) -> Result<Measured, String> {
    let m = decode_measured(bytes);
    let outcome_for_bound = if m.outcome == Outcome::TooLarge {
        Outcome::DecompressFailed
    } else {
        m.outcome
    };
    let allowed = bound(bytes.len(), m.compressed, &outcome_for_bound);
    if m.peak > allowed {
        return Err(format!(
            "decoding {} bytes ({:?}, compressed: {}) peaked at {} extra heap bytes, bound {}",
            bytes.len(),
            m.outcome,
            m.compressed,
            m.peak,
            allowed
        ));
    }
    Ok(m)
}

/// A batch header (valid length, magic and CRC) over `payload`.
fn raw_batch(
    attributes: i16,
    last_offset_delta: i32,
    record_count: i32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // batch length, fixed below
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&attributes.to_be_bytes());
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&record_count.to_be_bytes());
    out.extend_from_slice(payload);
    fix_length_and_crc(&mut out);
    out
}

/// Rewrites the batch length and CRC so that `Batch::new` accepts the bytes whatever was changed.
fn fix_length_and_crc(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let length = (bytes.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Valid batches of every codec: built here in a few shapes, and the real clients' batches.
fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let shapes: Vec<Vec<Record>> = vec![
        vec![
            Record::new(1_700_000_000_000, "v").with_key("k"),
            Record {
                timestamp_ms: 1_700_000_000_001,
                key: None,
                value: None,
                headers: vec![
                    Header::new("h", "1"),
                    Header::new("h", "2"),
                    Header {
                        key: String::new(),
                        value: None,
                    },
                ],
            },
        ],
        (0..300)
            .map(|i| {
                Record::new(
                    1_700_000_000_000 + i,
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i as usize % 50)),
                )
                .with_key(format!("key-{}", i % 7))
                .with_header("trace", format!("{i:08x}"))
            })
            .collect(),
        vec![Record::new(1, vec![7u8; 200_000])],
    ];
    for codec in Compression::ALL {
        for records in &shapes {
            let mut builder = BatchBuilder::new(codec);
            for r in records {
                builder.push(r.clone());
            }
            seeds.push(builder.build(0).expect("build").as_bytes().to_vec());
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("__Produce-v"))
        .collect();
    names.sort();
    for path in names {
        let frame = std::fs::read(&path).expect("fixture");
        let mut p = 0;
        while p < frame.len() {
            let rest = &frame[p..];
            match Batch::peek_len(rest)
                .ok()
                .filter(|&len| len <= rest.len())
                .and_then(|len| Batch::new(Bytes::copy_from_slice(&rest[..len])).ok())
            {
                Some(batch) => {
                    p += batch.len();
                    seeds.push(batch.as_bytes().to_vec());
                }
                None => p += 1,
            }
        }
    }
    seeds
}

/// Inputs built by hand to claim large sizes, each with the outcome it must have.
fn adversarial() -> Vec<(&'static str, Vec<u8>, Outcome)> {
    let mut cases = Vec::new();
    let zeros = vec![0u8; 10 * MIB];

    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut builder = BatchBuilder::new(codec);
        builder.push(Record::new(0, zeros.clone()));
        let bomb = builder.build(0).expect("bomb").as_bytes().to_vec();
        cases.push(("10 MiB bomb", bomb, Outcome::TooLarge));
    }

    // A raw snappy block whose preamble claims 1 GiB.
    let claim = [0x80, 0x80, 0x80, 0x80, 0x04, 0, 0, 0];
    cases.push((
        "snappy claiming 1 GiB",
        raw_batch(Compression::Snappy as i16, 0, 1, &claim),
        Outcome::TooLarge,
    ));

    // A zstd frame declaring a 128 MiB window (libzstd's default limit) for a few bytes: refused
    // before the window exists. libzstd allocates with C's malloc, which the counting allocator
    // does not see, so the outcome is what shows the bound held.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
        .expect("window log");
    enc.write_all(&[0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])
        .expect("write");
    let greedy = enc.finish().expect("finish");
    cases.push((
        "zstd declaring a 128 MiB window",
        raw_batch(Compression::Zstd as i16, 0, 1, &greedy),
        Outcome::DecompressFailed,
    ));

    // lz4 with 4 MiB linked blocks: lz4_flex's largest buffers, for one tiny record.
    let mut one = BatchBuilder::new(Compression::None);
    one.push(Record::new(0, "x"));
    let one = one.build(0).expect("one");
    let records = &one.as_bytes()[HEADER_LEN..];
    let info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .block_mode(lz4_flex::frame::BlockMode::Linked);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(records).expect("lz4");
    let lz4 = enc.finish().expect("lz4");
    cases.push((
        "lz4 with 4 MiB linked blocks",
        raw_batch(Compression::Lz4 as i16, 0, 1, &lz4),
        Outcome::Decoded,
    ));

    // LIMIT bytes of zeros with the largest record count that passes the 7-bytes-per-record
    // check: the record vector is sized before the first record fails to parse.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&zeros[..LIMIT]).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let count = (LIMIT / 7) as i32;
    cases.push((
        "largest record count a 1 MiB payload allows",
        raw_batch(Compression::Gzip as i16, count - 1, count, &gz),
        Outcome::RecordsFailed,
    ));

    // The same for an uncompressed batch, which parses from the input itself.
    let count = (MIB / 7) as i32;
    cases.push((
        "largest record count a 1 MiB uncompressed payload allows",
        raw_batch(Compression::None as i16, count - 1, count, &zeros[..MIB]),
        Outcome::RecordsFailed,
    ));
    cases
}

/// A mutation of a seed batch.
#[derive(Debug, Clone)]
struct Mutation {
    seed: Index,
    flips: Vec<(Index, u8)>,
    cut: Option<Index>,
    junk: Vec<u8>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), 1u8..=255), 0..8),
        prop::option::weighted(0.2, any::<Index>()),
        prop_oneof![
            8 => Just(Vec::new()),
            1 => prop::collection::vec(any::<u8>(), 1..64),
        ],
    )
        .prop_map(|(seed, flips, cut, junk)| Mutation {
            seed,
            flips,
            cut,
            junk,
        })
}

fn apply(seeds: &[Vec<u8>], m: &Mutation) -> Vec<u8> {
    let mut bytes = m.seed.get(seeds).clone();
    for (at, xor) in &m.flips {
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
    }
    if let Some(cut) = m.cut {
        let keep = HEADER_LEN + cut.index(bytes.len() - HEADER_LEN + 1);
        bytes.truncate(keep);
    }
    bytes.extend_from_slice(&m.junk);
    fix_length_and_crc(&mut bytes);
    bytes
}

/// A valid header over an arbitrary payload, often opening with a codec's magic.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop_oneof![
        Just(Vec::new()),
        Just(vec![0x1f, 0x8b, 8, 0]),
        Just(vec![
            0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1
        ]),
        Just(vec![0x04, 0x22, 0x4d, 0x18, 0x60, 0x70, 0x73]),
        Just(vec![0x04, 0x22, 0x4d, 0x18, 0x40, 0x70, 0xdf]),
        Just(vec![0x28, 0xb5, 0x2f, 0xfd]),
    ];
    (
        any::<i16>(),
        prop_oneof![0..64i32, any::<i32>()],
        prop_oneof![0..64i32, any::<i32>()],
        magic,
        prop::collection::vec(any::<u8>(), 0..1024),
    )
        .prop_map(|(attributes, last_delta, count, magic, body)| {
            raw_batch(attributes, last_delta, count, &[magic, body].concat())
        })
}

fn runner(default_cases: u32, seed: u64) -> TestRunner {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    config.rng_seed = RngSeed::Fixed(seed);
    config.failure_persistence = None;
    TestRunner::new(config)
}

#[test]
fn decoding_never_panics_nor_over_allocates() {
    let per = per_record_byte();
    assert!(
        per <= 160,
        "records got bigger: {per} heap bytes per parsed byte"
    );

    for (what, bytes, expected) in adversarial() {
        let m = check(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        println!(
            "{what}: {:?}, peak {} KiB of extra heap",
            m.outcome,
            m.peak / 1024
        );
        assert_eq!(m.outcome, expected, "{what}");
    }

    let seed = match Config::default().rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    println!("decode_alloc: seed {seed} (replay with PROPTEST_RNG_SEED={seed})");

    let as_case = |r: Result<Measured, String>| r.map(|_| ()).map_err(TestCaseError::fail);

    runner(512, seed)
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            as_case(check(&bytes))
        })
        .unwrap_or_else(|e| panic!("arbitrary bytes (seed {seed}): {e}"));

    runner(512, seed)
        .run(&framed_garbage(), |bytes| as_case(check(&bytes)))
        .unwrap_or_else(|e| panic!("valid header, arbitrary payload (seed {seed}): {e}"));

    let seeds = seeds();
    for s in &seeds {
        let m = check(s).expect("seed within bound");
        assert_eq!(m.outcome, Outcome::Decoded, "seeds are valid batches");
    }
    // How far the mutated batches got, to show that they reach the decompressors and the record
    // parser rather than stopping at the header.
    let reached = std::cell::RefCell::new(std::collections::BTreeMap::new());
    runner(1024, seed)
        .run(&mutation(), |m| {
            let m = check(&apply(&seeds, &m)).map_err(TestCaseError::fail)?;
            *reached
                .borrow_mut()
                .entry(format!("{:?}", m.outcome))
                .or_insert(0) += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("mutated batches (seed {seed}): {e}"));
    println!("mutated batches reached: {:?}", reached.borrow());
}
