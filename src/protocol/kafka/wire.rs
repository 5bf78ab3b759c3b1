//! Kafka's wire primitives: a bounds-checked [`Reader`] over a frame, a chunked [`Writer`], and
//! the [`Wire`] trait that says how one field type is read and written.
//!
//! ```text
//! Bytes (one frame) ─► Reader ─► ints, varints, strings, Bytes slices, arrays ─► typed values
//! typed values ─► Writer ─► BytesMut for small fields, own chunks for big payloads ─► Encoded
//! ```
//!
//! Invariants:
//! - **Nothing is allocated from an unchecked length.** A string or byte length must be at most
//!   the remaining bytes; an array count at most the remaining bytes divided by the smallest
//!   encoding of one element (at least 1 byte), so `Vec::with_capacity` only ever sees a count
//!   the input can back.
//! - **Byte fields are zero-copy both ways.** Decoding returns a [`Bytes`] slice of the input
//!   frame; encoding a payload of [`ZERO_COPY_MIN_BYTES`] or more appends it as a chunk of its
//!   own, so a Fetch response with megabytes of record batches goes out by vectored I/O without
//!   a copy.
//! - Flexible versions use the compact forms (unsigned varint lengths, plus one) and tagged
//!   fields; the [`Ctx`] passed down says which.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{KafkaCodecError, Result};

/// A UUID on the wire: 16 bytes, big-endian as Kafka writes them.
pub type Uuid = [u8; 16];

/// Byte payloads at least this large are appended to the output as their own chunk, not copied.
pub const ZERO_COPY_MIN_BYTES: usize = 1024;

/// How a field is encoded in the message version at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The message version.
    pub version: i16,
    /// Whether the version is flexible: compact lengths and tagged fields.
    pub flexible: bool,
    /// Whether this field may be null in this version.
    pub nullable: bool,
}

impl Ctx {
    /// The context of a message body in `version`, flexible from `flexible_from`.
    pub fn new(version: i16, flexible_from: i16) -> Self {
        Ctx {
            version,
            flexible: version >= flexible_from,
            nullable: false,
        }
    }

    /// The same version with a field's nullability.
    pub fn with_nullable(self, nullable: bool) -> Self {
        Ctx { nullable, ..self }
    }
}

/// Reads Kafka primitives off the front of one frame, checking every length against what remains.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not read yet, consuming the reader.
    pub fn into_rest(self) -> Bytes {
        self.buf
    }

    /// Takes the next `n` bytes as a slice of the input (no copy).
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`] when fewer remain.
    pub fn take(&mut self, n: usize) -> Result<Bytes> {
        if n > self.buf.len() {
            return Err(KafkaCodecError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            });
        }
        Ok(self.buf.split_to(n))
    }

    fn need(&self, n: usize) -> Result<()> {
        if n > self.buf.len() {
            Err(KafkaCodecError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            })
        } else {
            Ok(())
        }
    }

    /// Reads an `int8`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn i8(&mut self) -> Result<i8> {
        self.need(1)?;
        Ok(self.buf.get_i8())
    }

    /// Reads a big-endian `int16`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn i16(&mut self) -> Result<i16> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    /// Reads a big-endian `int32`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn i32(&mut self) -> Result<i32> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    /// Reads a big-endian `int64`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn i64(&mut self) -> Result<i64> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    /// Reads a big-endian `uint16`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    /// Reads a big-endian `uint32`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// Reads a big-endian IEEE 754 `float64`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn f64(&mut self) -> Result<f64> {
        self.need(8)?;
        Ok(self.buf.get_f64())
    }

    /// Reads a `bool`: any non-zero byte is true, as in Kafka.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.i8()? != 0)
    }

    /// Reads a `uuid`.
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`].
    pub fn uuid(&mut self) -> Result<Uuid> {
        self.need(16)?;
        let mut out = [0u8; 16];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    /// Reads an unsigned varint of at most 5 bytes (a `u32`).
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`], or [`KafkaCodecError::InvalidVarint`] for more than 5
    /// bytes or a value above `u32::MAX`.
    pub fn uvarint(&mut self) -> Result<u32> {
        let v = self.uvarlong_max(5)?;
        u32::try_from(v).map_err(|_| KafkaCodecError::InvalidVarint)
    }

    /// Reads an unsigned varint of at most 10 bytes (a `u64`).
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`] or [`KafkaCodecError::InvalidVarint`].
    pub fn uvarlong(&mut self) -> Result<u64> {
        self.uvarlong_max(10)
    }

    fn uvarlong_max(&mut self, max_bytes: u32) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..max_bytes {
            let b = self.i8()? as u8;
            let low = u64::from(b & 0x7f);
            let shift = 7 * i;
            // The tenth byte of a u64 may only carry the top bit.
            if shift == 63 && low > 1 {
                return Err(KafkaCodecError::InvalidVarint);
            }
            value |= low << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(KafkaCodecError::InvalidVarint)
    }

    /// Reads a signed zigzag varint (an `i32`).
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`] or [`KafkaCodecError::InvalidVarint`].
    pub fn varint(&mut self) -> Result<i32> {
        let v = self.uvarint()?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// Reads a signed zigzag varlong (an `i64`).
    ///
    /// # Errors
    /// [`KafkaCodecError::Truncated`] or [`KafkaCodecError::InvalidVarint`].
    pub fn varlong(&mut self) -> Result<i64> {
        let v = self.uvarlong()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A length read from the wire, checked against the remaining bytes; `None` for null.
    fn checked_len(&mut self, len: i64, per_item: usize) -> Result<Option<usize>> {
        if len == -1 {
            return Ok(None);
        }
        let len = u64::try_from(len).map_err(|_| KafkaCodecError::InvalidLength(len))?;
        let remaining = self.buf.len();
        let fits = usize::try_from(len)
            .ok()
            .filter(|&n| n <= remaining / per_item.max(1));
        match fits {
            Some(n) => Ok(Some(n)),
            None => Err(KafkaCodecError::LengthTooLarge {
                length: len,
                remaining,
            }),
        }
    }

    /// Reads a length or count prefix: `int16` (strings) or `int32` (bytes, arrays), or in
    /// compact form an unsigned varint holding length + 1. `None` means null. The result is at
    /// most `remaining / per_item`.
    fn len_prefix(&mut self, compact: bool, wide: bool, per_item: usize) -> Result<Option<usize>> {
        let raw = if compact {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        self.checked_len(raw, per_item)
    }

    fn utf8(bytes: Bytes) -> Result<String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| KafkaCodecError::InvalidUtf8)
    }

    /// Reads a nullable string (`int16` length, or compact).
    ///
    /// # Errors
    /// Truncation, a length beyond the input, or invalid UTF-8.
    pub fn nullable_string(&mut self, compact: bool) -> Result<Option<String>> {
        match self.len_prefix(compact, false, 1)? {
            None => Ok(None),
            Some(n) => Ok(Some(Self::utf8(self.take(n)?)?)),
        }
    }

    /// Reads a non-nullable string.
    ///
    /// # Errors
    /// As [`Reader::nullable_string`], and [`KafkaCodecError::UnexpectedNull`] for a null.
    pub fn string(&mut self, ctx: Ctx) -> Result<String> {
        self.nullable_string(ctx.flexible)?
            .ok_or(KafkaCodecError::UnexpectedNull {
                field: "",
                version: ctx.version,
            })
    }

    /// Reads nullable bytes (`int32` length, or compact) as a slice of the input.
    ///
    /// # Errors
    /// Truncation or a length beyond the input.
    pub fn nullable_bytes(&mut self, compact: bool) -> Result<Option<Bytes>> {
        match self.len_prefix(compact, true, 1)? {
            None => Ok(None),
            Some(n) => Ok(Some(self.take(n)?)),
        }
    }

    /// Reads an array count (`int32`, or compact); `None` for null. The count is at most the
    /// remaining bytes divided by `min_item_bytes` (taken as at least 1).
    ///
    /// # Errors
    /// Truncation, [`KafkaCodecError::LengthTooLarge`] or a negative count other than -1.
    pub fn array_len(&mut self, compact: bool, min_item_bytes: usize) -> Result<Option<usize>> {
        self.len_prefix(compact, true, min_item_bytes)
    }

    /// Reads a tagged-field section, handing each field's tag and bytes to `on_field`; fields it
    /// does not know it ignores, so unknown tags are skipped (bounded by the remaining bytes).
    ///
    /// # Errors
    /// Truncation, a field size beyond the input, or what `on_field` returns.
    pub fn tagged_fields(
        &mut self,
        mut on_field: impl FnMut(u32, &mut Reader) -> Result<()>,
    ) -> Result<()> {
        let count = self.uvarint()?;
        // No allocation per field: each one consumes at least two bytes, or the read fails.
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            let mut field = Reader::new(self.take(size)?);
            on_field(tag, &mut field)?;
        }
        Ok(())
    }
}

/// Collects an encoding as chunks: small fields are written into a buffer, large byte payloads
/// are appended as chunks of their own (no copy). [`Writer::finish`] gives the [`Encoded`] result.
#[derive(Debug, Default)]
pub struct Writer {
    chunks: Vec<Bytes>,
    buf: BytesMut,
    len: usize,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes an `int8`.
    pub fn i8(&mut self, v: i8) {
        self.buf.put_i8(v);
        self.len += 1;
    }

    /// Writes an `int16`.
    pub fn i16(&mut self, v: i16) {
        self.buf.put_i16(v);
        self.len += 2;
    }

    /// Writes an `int32`.
    pub fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
        self.len += 4;
    }

    /// Writes an `int64`.
    pub fn i64(&mut self, v: i64) {
        self.buf.put_i64(v);
        self.len += 8;
    }

    /// Writes a `uint16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
        self.len += 2;
    }

    /// Writes a `uint32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
        self.len += 4;
    }

    /// Writes a `float64`.
    pub fn f64(&mut self, v: f64) {
        self.buf.put_f64(v);
        self.len += 8;
    }

    /// Writes a `bool` as 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.i8(i8::from(v));
    }

    /// Writes a `uuid`.
    pub fn uuid(&mut self, v: &Uuid) {
        self.buf.put_slice(v);
        self.len += 16;
    }

    /// Writes an unsigned varint.
    pub fn uvarint(&mut self, v: u32) {
        self.uvarlong(u64::from(v));
    }

    /// Writes an unsigned varlong.
    pub fn uvarlong(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.put_u8((v as u8 & 0x7f) | 0x80);
            self.len += 1;
            v >>= 7;
        }
        self.buf.put_u8(v as u8);
        self.len += 1;
    }

    /// Writes a signed zigzag varint.
    pub fn varint(&mut self, v: i32) {
        self.uvarint(((v << 1) ^ (v >> 31)) as u32);
    }

    /// Writes a signed zigzag varlong.
    pub fn varlong(&mut self, v: i64) {
        self.uvarlong(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Writes raw bytes: copied when small, appended as a chunk of their own when at least
    /// [`ZERO_COPY_MIN_BYTES`].
    pub fn raw(&mut self, b: &Bytes) {
        if b.len() >= ZERO_COPY_MIN_BYTES {
            self.flush();
            self.chunks.push(b.clone());
        } else {
            self.buf.put_slice(b);
        }
        self.len += b.len();
    }

    fn raw_slice(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
        self.len += b.len();
    }

    /// Writes a length prefix for `len` items, or null: `int16`/`int32`, or compact.
    fn len_prefix(&mut self, compact: bool, wide: bool, len: Option<usize>) -> Result<()> {
        if compact {
            match len {
                None => self.uvarint(0),
                Some(n) => {
                    let n = u32::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_add(1))
                        .filter(|&n| n <= i32::MAX as u32)
                        .ok_or(KafkaCodecError::TooLong { length: n })?;
                    self.uvarint(n);
                }
            }
        } else if wide {
            let n = match len {
                None => -1,
                Some(n) => i32::try_from(n).map_err(|_| KafkaCodecError::TooLong { length: n })?,
            };
            self.i32(n);
        } else {
            let n = match len {
                None => -1,
                Some(n) => i16::try_from(n).map_err(|_| KafkaCodecError::TooLong { length: n })?,
            };
            self.i16(n);
        }
        Ok(())
    }

    /// Writes a nullable string.
    ///
    /// # Errors
    /// [`KafkaCodecError::TooLong`] above 32767 bytes.
    pub fn nullable_string(&mut self, compact: bool, v: Option<&str>) -> Result<()> {
        self.len_prefix(compact, false, v.map(str::len))?;
        if let Some(s) = v {
            self.raw_slice(s.as_bytes());
        }
        Ok(())
    }

    /// Writes nullable bytes; large payloads are not copied (see [`Writer::raw`]).
    ///
    /// # Errors
    /// [`KafkaCodecError::TooLong`] above `i32::MAX` bytes.
    pub fn nullable_bytes(&mut self, compact: bool, v: Option<&Bytes>) -> Result<()> {
        self.len_prefix(compact, true, v.map(Bytes::len))?;
        if let Some(b) = v {
            self.raw(b);
        }
        Ok(())
    }

    /// Writes an array count, or null.
    ///
    /// # Errors
    /// [`KafkaCodecError::TooLong`] above `i32::MAX` elements.
    pub fn array_len(&mut self, compact: bool, len: Option<usize>) -> Result<()> {
        self.len_prefix(compact, true, len)
    }

    /// Appends everything another writer collected (chunks stay chunks).
    pub fn append(&mut self, other: Writer) {
        let Encoded { chunks, len } = other.finish();
        for c in chunks {
            if c.len() >= ZERO_COPY_MIN_BYTES {
                self.flush();
                self.chunks.push(c);
            } else {
                self.buf.put_slice(&c);
            }
        }
        self.len += len;
    }

    fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
    }

    /// The output so far, as chunks.
    pub fn finish(mut self) -> Encoded {
        self.flush();
        Encoded {
            chunks: self.chunks,
            len: self.len,
        }
    }
}

/// An encoded message (or frame body) as a list of chunks to write in order, e.g. with
/// vectored I/O. Large byte payloads are chunks of their own, shared with the value encoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Encoded {
    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The chunks, in order.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// The 4-byte big-endian length prefix of a frame carrying these bytes.
    ///
    /// # Errors
    /// [`KafkaCodecError::TooLong`] above `i32::MAX` bytes.
    pub fn length_prefix(&self) -> Result<[u8; 4]> {
        let n =
            i32::try_from(self.len).map_err(|_| KafkaCodecError::TooLong { length: self.len })?;
        Ok(n.to_be_bytes())
    }

    /// The chunks of a whole frame: the length prefix, then these bytes.
    ///
    /// # Errors
    /// As [`Encoded::length_prefix`].
    pub fn into_frame_chunks(self) -> Result<Vec<Bytes>> {
        let prefix = self.length_prefix()?;
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        out.push(Bytes::copy_from_slice(&prefix));
        out.extend(self.chunks);
        Ok(out)
    }

    /// All bytes in one vector (a copy; for tests and small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }

    /// All bytes as one [`Bytes`]: no copy when there is a single chunk.
    pub fn freeze(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.chunks) {
            Ok([one]) => one,
            Err(chunks) => {
                let mut out = BytesMut::with_capacity(self.len);
                for c in chunks {
                    out.put_slice(&c);
                }
                out.freeze()
            }
        }
    }
}

/// How one field type goes on the wire, and a sample value of it for tests.
///
/// Implemented for the primitive types, strings, bytes, arrays (`Vec<T>`), their nullable forms
/// (`Option<…>`), and every message struct of this codec.
pub trait Wire: Sized {
    /// The smallest encoding of a value in `ctx`, used to bound array counts read from the wire.
    fn min_size(ctx: Ctx) -> usize;

    /// Reads a value.
    ///
    /// # Errors
    /// Any decoding error of the primitives involved.
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self>;

    /// Writes a value.
    ///
    /// # Errors
    /// A null where `ctx` allows none, or a value too long for its length prefix.
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()>;

    /// A deterministic sample value for `seed`, valid in `ctx` (null only where allowed):
    /// consecutive seeds give different values. For tests of the codec and of its users.
    fn example(seed: u32, ctx: Ctx) -> Self;
}

macro_rules! fixed_wire {
    ($ty:ty, $size:expr, $read:ident, $write:ident, $example:expr) => {
        impl Wire for $ty {
            fn min_size(_: Ctx) -> usize {
                $size
            }
            fn read(r: &mut Reader, _: Ctx) -> Result<Self> {
                r.$read()
            }
            fn write(&self, w: &mut Writer, _: Ctx) -> Result<()> {
                w.$write(*self);
                Ok(())
            }
            fn example(seed: u32, _: Ctx) -> Self {
                let f: fn(u32) -> $ty = $example;
                f(seed)
            }
        }
    };
}

fixed_wire!(i8, 1, i8, i8, |s| (s % 100) as i8 + 1);
fixed_wire!(i16, 2, i16, i16, |s| (s % 10_000) as i16 + 1);
fixed_wire!(i32, 4, i32, i32, |s| (s % 1_000_000) as i32 + 1);
fixed_wire!(i64, 8, i64, i64, |s| i64::from(s) * 1_000_003 + 1);
fixed_wire!(u16, 2, u16, u16, |s| (s % 10_000) as u16 + 1);
fixed_wire!(u32, 4, u32, u32, |s| s % 1_000_000 + 1);
fixed_wire!(f64, 8, f64, f64, |s| f64::from(s % 1_000) + 0.5);
fixed_wire!(bool, 1, bool, bool, |s| s.is_multiple_of(2));

impl Wire for Uuid {
    fn min_size(_: Ctx) -> usize {
        16
    }
    fn read(r: &mut Reader, _: Ctx) -> Result<Self> {
        r.uuid()
    }
    fn write(&self, w: &mut Writer, _: Ctx) -> Result<()> {
        w.uuid(self);
        Ok(())
    }
    fn example(seed: u32, _: Ctx) -> Self {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = (seed as u8).wrapping_add(i as u8).wrapping_mul(7) | 1;
        }
        out
    }
}

fn null_error(ctx: Ctx) -> KafkaCodecError {
    KafkaCodecError::NullNotAllowed {
        field: "",
        version: ctx.version,
    }
}

fn unexpected_null(ctx: Ctx) -> KafkaCodecError {
    KafkaCodecError::UnexpectedNull {
        field: "",
        version: ctx.version,
    }
}

/// Whether a sample of a nullable field is null: a third of the seeds, where allowed.
fn example_null(seed: u32, ctx: Ctx) -> bool {
    ctx.nullable && seed.is_multiple_of(3)
}

impl Wire for String {
    fn min_size(ctx: Ctx) -> usize {
        if ctx.flexible {
            1
        } else {
            2
        }
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        r.string(ctx)
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        w.nullable_string(ctx.flexible, Some(self))
    }
    fn example(seed: u32, _: Ctx) -> Self {
        format!("s{seed}")
    }
}

impl Wire for Option<String> {
    fn min_size(ctx: Ctx) -> usize {
        String::min_size(ctx)
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        let v = r.nullable_string(ctx.flexible)?;
        if v.is_none() && !ctx.nullable {
            return Err(unexpected_null(ctx));
        }
        Ok(v)
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        if self.is_none() && !ctx.nullable {
            return Err(null_error(ctx));
        }
        w.nullable_string(ctx.flexible, self.as_deref())
    }
    fn example(seed: u32, ctx: Ctx) -> Self {
        (!example_null(seed, ctx)).then(|| String::example(seed, ctx))
    }
}

impl Wire for Bytes {
    fn min_size(ctx: Ctx) -> usize {
        if ctx.flexible {
            1
        } else {
            4
        }
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        r.nullable_bytes(ctx.flexible)?
            .ok_or_else(|| unexpected_null(ctx))
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        w.nullable_bytes(ctx.flexible, Some(self))
    }
    fn example(seed: u32, _: Ctx) -> Self {
        // Every fourth sample is large enough to travel as a chunk of its own.
        let len = if seed % 4 == 1 {
            ZERO_COPY_MIN_BYTES + 100
        } else {
            (seed % 7) as usize + 1
        };
        (0..len).map(|i| (seed as usize + i) as u8).collect()
    }
}

impl Wire for Option<Bytes> {
    fn min_size(ctx: Ctx) -> usize {
        Bytes::min_size(ctx)
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        let v = r.nullable_bytes(ctx.flexible)?;
        if v.is_none() && !ctx.nullable {
            return Err(unexpected_null(ctx));
        }
        Ok(v)
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        if self.is_none() && !ctx.nullable {
            return Err(null_error(ctx));
        }
        w.nullable_bytes(ctx.flexible, self.as_ref())
    }
    fn example(seed: u32, ctx: Ctx) -> Self {
        (!example_null(seed, ctx)).then(|| Bytes::example(seed, ctx))
    }
}

/// A record set sent as several buffers: on the wire one (nullable) bytes field holding their
/// concatenation, written without copying any buffer of [`ZERO_COPY_MIN_BYTES`] or more (a
/// fetch answer made of several stored batches goes out as those batches). Decoding gives one
/// buffer, a slice of the frame. Equality compares the bytes, not how they are split.
#[derive(Debug, Clone, Default)]
pub struct RecordSet(Vec<Bytes>);

impl RecordSet {
    /// The record set made of `chunks`, in order.
    pub fn new(chunks: Vec<Bytes>) -> Self {
        RecordSet(chunks)
    }

    /// The buffers, in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.0
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as one buffer (copied unless there is at most one chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.0.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len());
                for c in many {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }
}

impl From<Bytes> for RecordSet {
    fn from(b: Bytes) -> Self {
        RecordSet(vec![b])
    }
}

impl PartialEq for RecordSet {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .0
                .iter()
                .flat_map(|c| c.iter())
                .eq(other.0.iter().flat_map(|c| c.iter()))
    }
}

impl Wire for Option<RecordSet> {
    fn min_size(ctx: Ctx) -> usize {
        Bytes::min_size(ctx)
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        Ok(Option::<Bytes>::read(r, ctx)?.map(RecordSet::from))
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        match self {
            None => Option::<Bytes>::None.write(w, ctx),
            Some(set) => {
                w.len_prefix(ctx.flexible, true, Some(set.len()))?;
                for c in &set.0 {
                    w.raw(c);
                }
                Ok(())
            }
        }
    }
    fn example(seed: u32, ctx: Ctx) -> Self {
        // Two buffers for odd seeds: the split must not show on the wire.
        Option::<Bytes>::example(seed, ctx).map(|b| {
            if seed % 2 == 1 && b.len() > 1 {
                RecordSet(vec![b.slice(..1), b.slice(1..)])
            } else {
                RecordSet(vec![b])
            }
        })
    }
}

/// A nullable struct (`Option<S>` of a `kafka_struct!`): an int8 marker, negative for null
/// (Kafka writes -1) and 1 before the struct's fields. `kafka_struct!` implements
/// [`Wire`] for `Option<S>` of every struct it generates through these.
pub fn read_nullable_struct<T: Wire>(r: &mut Reader, ctx: Ctx) -> Result<Option<T>> {
    if r.i8()? < 0 {
        if !ctx.nullable {
            return Err(unexpected_null(ctx));
        }
        return Ok(None);
    }
    T::read(r, ctx.with_nullable(false)).map(Some)
}

/// Writes a nullable struct; see [`read_nullable_struct`].
pub fn write_nullable_struct<T: Wire>(v: &Option<T>, w: &mut Writer, ctx: Ctx) -> Result<()> {
    match v {
        None if !ctx.nullable => Err(null_error(ctx)),
        None => {
            w.i8(-1);
            Ok(())
        }
        Some(s) => {
            w.i8(1);
            s.write(w, ctx.with_nullable(false))
        }
    }
}

/// A sample nullable struct: null for a third of the seeds, where allowed.
pub fn example_nullable_struct<T: Wire>(seed: u32, ctx: Ctx) -> Option<T> {
    (!example_null(seed, ctx)).then(|| T::example(seed, ctx.with_nullable(false)))
}

/// Reads `n` elements whose count was already checked against the input.
fn read_elements<T: Wire>(r: &mut Reader, n: usize, ctx: Ctx) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(T::read(r, ctx)?);
    }
    Ok(out)
}

fn write_elements<T: Wire>(items: &[T], w: &mut Writer, ctx: Ctx) -> Result<()> {
    for item in items {
        item.write(w, ctx)?;
    }
    Ok(())
}

fn example_elements<T: Wire>(seed: u32, ctx: Ctx) -> Vec<T> {
    let base = seed.wrapping_mul(3);
    vec![
        T::example(base.wrapping_add(1), ctx),
        T::example(base.wrapping_add(2), ctx),
    ]
}

impl<T: Wire> Wire for Vec<T> {
    fn min_size(ctx: Ctx) -> usize {
        if ctx.flexible {
            1
        } else {
            4
        }
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        let item = ctx.with_nullable(false);
        match r.array_len(ctx.flexible, T::min_size(item))? {
            None => Err(unexpected_null(ctx)),
            Some(n) => read_elements(r, n, item),
        }
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        w.array_len(ctx.flexible, Some(self.len()))?;
        write_elements(self, w, ctx.with_nullable(false))
    }
    fn example(seed: u32, ctx: Ctx) -> Self {
        example_elements(seed, ctx.with_nullable(false))
    }
}

impl<T: Wire> Wire for Option<Vec<T>> {
    fn min_size(ctx: Ctx) -> usize {
        Vec::<T>::min_size(ctx)
    }
    fn read(r: &mut Reader, ctx: Ctx) -> Result<Self> {
        let item = ctx.with_nullable(false);
        match r.array_len(ctx.flexible, T::min_size(item))? {
            None if ctx.nullable => Ok(None),
            None => Err(unexpected_null(ctx)),
            Some(n) => read_elements(r, n, item).map(Some),
        }
    }
    fn write(&self, w: &mut Writer, ctx: Ctx) -> Result<()> {
        match self {
            None if !ctx.nullable => Err(null_error(ctx)),
            None => w.array_len(ctx.flexible, None),
            Some(items) => {
                w.array_len(ctx.flexible, Some(items.len()))?;
                write_elements(items, w, ctx.with_nullable(false))
            }
        }
    }
    fn example(seed: u32, ctx: Ctx) -> Self {
        (!example_null(seed, ctx)).then(|| example_elements(seed, ctx.with_nullable(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader {
        Reader::new(Bytes::copy_from_slice(bytes))
    }

    fn written(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        f(&mut w);
        let len = w.len();
        let out = w.finish().to_vec();
        assert_eq!(out.len(), len, "tracked length matches the bytes");
        out
    }

    #[test]
    fn varint_edge_values_round_trip() {
        for v in [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN] {
            let bytes = written(|w| w.varint(v));
            assert_eq!(reader(&bytes).varint(), Ok(v), "{v}");
        }
        for v in [0, 1, -1, i64::MAX, i64::MIN, 1 << 35] {
            let bytes = written(|w| w.varlong(v));
            assert_eq!(reader(&bytes).varlong(), Ok(v), "{v}");
        }
        for v in [0, 127, 128, 16_383, 16_384, u32::MAX] {
            let bytes = written(|w| w.uvarint(v));
            assert_eq!(reader(&bytes).uvarint(), Ok(v), "{v}");
        }
        assert_eq!(written(|w| w.uvarint(300)), vec![0xac, 0x02]);
        assert_eq!(written(|w| w.varint(-1)), vec![0x01]);
        assert_eq!(written(|w| w.varint(1)), vec![0x02]);
        assert_eq!(
            written(|w| w.uvarint(u32::MAX)),
            vec![0xff, 0xff, 0xff, 0xff, 0x0f]
        );
        assert_eq!(written(|w| w.uvarlong(u64::MAX)).len(), 10);
    }

    #[test]
    fn overlong_or_truncated_varints_are_refused() {
        assert_eq!(
            reader(&[0xff, 0xff, 0xff, 0xff, 0x1f]).uvarint(),
            Err(KafkaCodecError::InvalidVarint),
            "above u32::MAX"
        );
        assert_eq!(
            reader(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).uvarint(),
            Err(KafkaCodecError::InvalidVarint),
            "six bytes"
        );
        assert_eq!(
            reader(&[0xff; 9].iter().copied().chain([0x02]).collect::<Vec<_>>()).uvarlong(),
            Err(KafkaCodecError::InvalidVarint),
            "tenth byte above the top bit"
        );
        assert_eq!(
            reader(&[0x80]).uvarint(),
            Err(KafkaCodecError::Truncated {
                needed: 1,
                remaining: 0
            })
        );
    }

    #[test]
    fn fixed_width_and_truncation() {
        let bytes = written(|w| {
            w.i8(-2);
            w.i16(-3);
            w.i32(-4);
            w.i64(-5);
            w.u16(6);
            w.u32(7);
            w.f64(1.5);
            w.bool(true);
            w.uuid(&[9; 16]);
        });
        let mut r = reader(&bytes);
        assert_eq!(r.i8(), Ok(-2));
        assert_eq!(r.i16(), Ok(-3));
        assert_eq!(r.i32(), Ok(-4));
        assert_eq!(r.i64(), Ok(-5));
        assert_eq!(r.u16(), Ok(6));
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.f64(), Ok(1.5));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.uuid(), Ok([9; 16]));
        assert_eq!(r.remaining(), 0);
        assert_eq!(
            reader(&[0, 0, 0]).i32(),
            Err(KafkaCodecError::Truncated {
                needed: 4,
                remaining: 3
            })
        );
    }

    #[test]
    fn strings_in_all_forms() {
        let classic = Ctx::new(0, 9);
        let flexible = Ctx::new(9, 9);
        // Classic: int16 length; null is -1.
        assert_eq!(
            written(|w| w.nullable_string(false, Some("ab")).expect("fits")),
            vec![0, 2, b'a', b'b']
        );
        assert_eq!(
            written(|w| w.nullable_string(false, None).expect("fits")),
            vec![0xff, 0xff]
        );
        // Compact: length + 1 as an unsigned varint; null is 0.
        assert_eq!(
            written(|w| w.nullable_string(true, Some("ab")).expect("fits")),
            vec![3, b'a', b'b']
        );
        assert_eq!(
            written(|w| w.nullable_string(true, None).expect("fits")),
            vec![0]
        );
        assert_eq!(reader(&[3, b'a', b'b']).string(flexible), Ok("ab".into()));
        assert_eq!(reader(&[0]).nullable_string(true), Ok(None));
        assert_eq!(reader(&[0xff, 0xff]).nullable_string(false), Ok(None));
        assert!(matches!(
            reader(&[0xff, 0xff]).string(classic),
            Err(KafkaCodecError::UnexpectedNull { .. })
        ));
        assert_eq!(
            reader(&[0xff, 0xfe]).nullable_string(false),
            Err(KafkaCodecError::InvalidLength(-2))
        );
        assert_eq!(
            reader(&[0, 2, 0xc3, 0x28]).nullable_string(false),
            Err(KafkaCodecError::InvalidUtf8)
        );
        assert!(
            written(|w| assert!(w.nullable_string(false, Some(&"x".repeat(40_000))).is_err()))
                .len()
                <= 2
        );
    }

    #[test]
    fn lengths_beyond_the_input_are_refused_before_allocating() {
        assert_eq!(
            reader(&[0x7f, 0xff, b'a']).nullable_string(false),
            Err(KafkaCodecError::LengthTooLarge {
                length: 32_767,
                remaining: 1
            })
        );
        assert_eq!(
            reader(&[0x7f, 0xff, 0xff, 0xff]).nullable_bytes(false),
            Err(KafkaCodecError::LengthTooLarge {
                length: i32::MAX as u64,
                remaining: 0
            })
        );
        // Eight remaining bytes hold at most two int32 elements.
        let mut r = reader(&[0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(
            r.array_len(false, 4),
            Err(KafkaCodecError::LengthTooLarge {
                length: 3,
                remaining: 8
            })
        );
        let mut r = reader(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(Vec::<i32>::read(&mut r, Ctx::new(0, 9)), Ok(vec![1, 2]));
        // A compact count of u32::MAX - 1 elements in an empty input.
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            r.array_len(true, 1),
            Err(KafkaCodecError::LengthTooLarge { .. })
        ));
    }

    #[test]
    fn nullable_arrays_and_bytes() {
        let ctx = Ctx::new(1, 9).with_nullable(true);
        let none: Option<Vec<i32>> = None;
        let bytes = written(|w| none.write(w, ctx).expect("nullable"));
        assert_eq!(bytes, vec![0xff, 0xff, 0xff, 0xff]);
        assert_eq!(Option::<Vec<i32>>::read(&mut reader(&bytes), ctx), Ok(None));
        let strict = ctx.with_nullable(false);
        assert!(matches!(
            none.write(&mut Writer::new(), strict),
            Err(KafkaCodecError::NullNotAllowed { .. })
        ));
        assert!(matches!(
            Option::<Vec<i32>>::read(&mut reader(&bytes), strict),
            Err(KafkaCodecError::UnexpectedNull { .. })
        ));
        let flex = Ctx::new(9, 9).with_nullable(true);
        let b: Option<Bytes> = Some(Bytes::from_static(b"xyz"));
        let bytes = written(|w| b.write(w, flex).expect("fits"));
        assert_eq!(bytes, vec![4, b'x', b'y', b'z']);
        assert_eq!(Option::<Bytes>::read(&mut reader(&bytes), flex), Ok(b));
        assert_eq!(Option::<Bytes>::read(&mut reader(&[0]), flex), Ok(None));
    }

    #[test]
    fn decoded_bytes_share_the_input() {
        let input = Bytes::from(vec![0, 0, 0, 3, 7, 8, 9]);
        let mut r = Reader::new(input.clone());
        let got = r.nullable_bytes(false).expect("valid").expect("not null");
        assert_eq!(&got[..], &[7, 8, 9]);
        assert_eq!(
            got.as_ptr(),
            input.as_ptr().wrapping_add(4),
            "a slice, not a copy"
        );
    }

    #[test]
    fn large_payloads_become_their_own_chunk() {
        let big = Bytes::from(vec![5u8; ZERO_COPY_MIN_BYTES]);
        let mut w = Writer::new();
        w.i32(1);
        w.nullable_bytes(false, Some(&big)).expect("fits");
        w.i16(2);
        let enc = w.finish();
        assert_eq!(enc.len(), 4 + 4 + big.len() + 2);
        assert_eq!(enc.chunks().len(), 3);
        let chunk = enc.chunks().get(1).expect("payload chunk");
        assert_eq!(chunk.as_ptr(), big.as_ptr(), "shared, not copied");
        assert_eq!(enc.length_prefix(), Ok((enc.len() as i32).to_be_bytes()));
        let frame = enc.clone().into_frame_chunks().expect("fits");
        assert_eq!(frame.len(), 4);
        assert_eq!(enc.clone().freeze().len(), enc.len());
        // Small payloads are copied into the surrounding buffer.
        let mut w = Writer::new();
        w.nullable_bytes(true, Some(&Bytes::from_static(b"ab")))
            .expect("fits");
        assert_eq!(w.finish().chunks().len(), 1);
    }

    #[test]
    fn a_record_set_of_several_buffers_goes_out_uncopied_and_reads_back_as_one() {
        let a = Bytes::from(vec![1u8; ZERO_COPY_MIN_BYTES]);
        let b = Bytes::from(vec![2u8; ZERO_COPY_MIN_BYTES + 3]);
        let small = Bytes::from_static(b"xyz");
        let set = Some(RecordSet::new(vec![a.clone(), small.clone(), b.clone()]));
        for flexible in [false, true] {
            let ctx = Ctx::new(if flexible { 12 } else { 4 }, 12).with_nullable(true);
            let mut w = Writer::new();
            set.write(&mut w, ctx).expect("fits");
            let enc = w.finish();
            let shared = |x: &Bytes| enc.chunks().iter().any(|c| c.as_ptr() == x.as_ptr());
            assert!(
                shared(&a) && shared(&b),
                "large buffers are chunks of their own"
            );
            let total = a.len() + small.len() + b.len();
            let mut r = Reader::new(enc.freeze());
            let back = Option::<RecordSet>::read(&mut r, ctx).expect("reads");
            assert_eq!(back, set, "the same bytes");
            let back = back.expect("not null");
            assert_eq!((back.chunks().len(), back.len()), (1, total));
            assert_eq!(back.to_bytes().get(..ZERO_COPY_MIN_BYTES), Some(&a[..]));
        }
    }

    #[test]
    fn tagged_fields_are_bounded_and_skippable() {
        // Two fields: tag 0 (2 bytes), tag 5 (1 byte).
        let mut r = reader(&[2, 0, 2, 0xaa, 0xbb, 5, 1, 0xcc, 0x42]);
        let mut seen = Vec::new();
        r.tagged_fields(|tag, f| {
            seen.push((tag, f.remaining()));
            Ok(())
        })
        .expect("valid");
        assert_eq!(seen, vec![(0, 2), (5, 1)]);
        assert_eq!(r.remaining(), 1);
        // A field claiming more bytes than remain.
        let mut r = reader(&[1, 0, 100, 0]);
        assert!(r.tagged_fields(|_, _| Ok(())).is_err());
        // A huge field count with nothing behind it fails at once.
        let mut r = reader(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(r.tagged_fields(|_, _| Ok(())).is_err());
    }
}
