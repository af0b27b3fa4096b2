//! Canonical binary encoding.
//!
//! One value has exactly one byte string, so hashes and signatures over encoded values are
//! well defined on every node. The rules (see `docs/FORMATS.md`):
//! - integers are fixed width, big-endian;
//! - variable-length byte strings and lists carry a `u32` big-endian length or count, and every
//!   such field has a documented maximum that the decoder enforces before allocating;
//! - booleans are `0` or `1`, enum tags are one byte, and anything else is rejected;
//! - every top-level object starts with a one-byte format version;
//! - decoding a top-level object must consume every byte ([`Decode::from_bytes`]).

use alloc::string::String;
use alloc::vec::Vec;

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ran out before the value was complete (a truncated message or file).
    #[error("input ended early while reading {what}")]
    UnexpectedEnd {
        /// The field being read when the input ended.
        what: &'static str,
    },
    /// A top-level value decoded, but bytes were left over ([`Decode::from_bytes`]).
    #[error("{count} trailing bytes after the value")]
    TrailingBytes {
        /// How many bytes were left after the value.
        count: usize,
    },
    /// The format version byte is not the one this build reads.
    #[error("unknown {what} format version {found} (this build reads version {supported})")]
    UnknownVersion {
        /// The object whose version was read.
        what: &'static str,
        /// The version byte in the input.
        found: u8,
        /// The only version this build decodes.
        supported: u8,
    },
    /// An enum or option tag byte names no known variant.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// The enum or option being read.
        what: &'static str,
        /// The tag byte in the input.
        tag: u8,
    },
    /// A length or count prefix is over the field's documented limit (checked before
    /// allocating).
    #[error("{what} is {len} long, over the limit of {max}")]
    TooLong {
        /// The field whose length was read.
        what: &'static str,
        /// The length or count in the input (bytes or items, as the field counts).
        len: usize,
        /// The field's limit, in the same unit.
        max: usize,
    },
    /// The bytes are well formed but not a valid value: a boolean other than 0 or 1, bad UTF-8,
    /// a set out of order or with duplicates, a name outside its alphabet, a count out of range.
    #[error("invalid {what}")]
    Invalid {
        /// The field or value that was refused.
        what: &'static str,
    },
}

/// Appends canonical encodings to a byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `n` bytes, for callers that know the encoded size.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// The bytes written so far, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// A `u8`, as one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// A boolean, as `0x00` or `0x01`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// A `u16`, 2 bytes big-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `u32`, 4 bytes big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `u64`, 8 bytes big-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Fixed-size bytes, written without a length.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Variable-size bytes with a `u32` length prefix. Callers keep `v` within the field's
    /// documented limit; the decoder rejects anything longer.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.len(v.len());
        self.raw(v)
    }

    /// A UTF-8 string with a `u32` byte-length prefix, as [`Writer::bytes`].
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    /// A length or element count.
    pub fn len(&mut self, n: usize) -> &mut Self {
        // Every length we write is bounded by a limit far below u32::MAX; saturating keeps an
        // out-of-contract value from wrapping into a small, valid-looking length.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Any [`Encode`] value, in its own encoding.
    pub fn put<T: Encode + ?Sized>(&mut self, v: &T) -> &mut Self {
        v.encode(self);
        self
    }

    /// A list: `u32` count, then each item. Callers that encode a set pass it sorted and unique.
    pub fn list<T: Encode>(&mut self, items: &[T]) -> &mut Self {
        self.len(items.len());
        for it in items {
            it.encode(self);
        }
        self
    }

    /// An option: `0x00` for none, or `0x01` then the value.
    pub fn option<T: Encode>(&mut self, v: &Option<T>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).put(x),
        }
    }
}

/// Reads canonical encodings from a byte slice, never panicking and never allocating more than
/// the input could describe.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Position in the input, for callers that hash a sub-range of what they read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Checks that every byte was read ([`DecodeError::TrailingBytes`] otherwise).
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }

    /// The next `n` raw bytes; `what` names the field in the error if fewer are left.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::UnexpectedEnd { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next `N` raw bytes as an array (keys, hashes, signatures).
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// A boolean; any byte other than `0x00` or `0x01` is [`DecodeError::Invalid`].
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what }),
        }
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A length or count, checked against `max` before anything is read or allocated.
    pub fn len(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    /// Variable-size bytes: a `u32` length of at most `max`, then the bytes, borrowed from the
    /// input.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.len(max, what)?;
        self.take(len, what)
    }

    /// As [`Reader::bytes`], copied into a `Vec`.
    pub fn byte_vec(&mut self, max: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        Ok(self.bytes(max, what)?.to_vec())
    }

    /// A string: at most `max` bytes of valid UTF-8 behind a `u32` length.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(max, what)?;
        core::str::from_utf8(b)
            .map(String::from)
            .map_err(|_| DecodeError::Invalid { what })
    }

    /// Any [`Decode`] value, in its own encoding.
    pub fn get<T: Decode>(&mut self) -> Result<T, DecodeError> {
        T::decode(self)
    }

    /// A list of at most `max` items. The allocation is capped by the bytes left, so a hostile
    /// count cannot reserve more memory than the input is long.
    pub fn list<T: Decode>(
        &mut self,
        max: usize,
        what: &'static str,
    ) -> Result<Vec<T>, DecodeError> {
        let n = self.len(max, what)?;
        let mut out = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }

    /// An option: `0x00` (none) or `0x01` then the value; any other tag is
    /// [`DecodeError::UnknownTag`].
    pub fn option<T: Decode>(&mut self, what: &'static str) -> Result<Option<T>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(self)?)),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }

    /// Reads and checks a format version byte.
    pub fn version(&mut self, supported: u8, what: &'static str) -> Result<(), DecodeError> {
        let found = self.u8(what)?;
        if found != supported {
            return Err(DecodeError::UnknownVersion {
                what,
                found,
                supported,
            });
        }
        Ok(())
    }
}

/// A value with a canonical encoding.
pub trait Encode {
    /// Appends the canonical encoding of `self` to `w`.
    fn encode(&self, w: &mut Writer);

    /// The canonical encoding of `self` as a new byte string.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A value that can be read back from its canonical encoding.
pub trait Decode: Sized {
    /// Reads one value from `r`, leaving the rest of the input unread.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a whole byte string, rejecting trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl Encode for [u8; 32] {
    fn encode(&self, w: &mut Writer) {
        w.raw(self);
    }
}

impl Decode for [u8; 32] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.array("32-byte value")
    }
}

impl Encode for u64 {
    fn encode(&self, w: &mut Writer) {
        w.u64(*self);
    }
}

impl Decode for u64 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u64("u64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_bytes() {
        assert_eq!(
            u64::from_bytes(&[0, 0, 0, 0, 0, 0, 0, 1, 9]),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }

    #[test]
    fn rejects_oversized_length_before_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::new(w.as_slice());
        assert!(matches!(
            r.bytes(16, "field"),
            Err(DecodeError::TooLong { len, max: 16, .. }) if len == u32::MAX as usize
        ));
    }

    #[test]
    fn rejects_non_canonical_bool() {
        assert_eq!(
            Reader::new(&[2]).bool("flag"),
            Err(DecodeError::Invalid { what: "flag" })
        );
    }

    #[test]
    fn hostile_list_count_is_bounded_by_input() {
        let mut w = Writer::new();
        w.u32(1000);
        let mut r = Reader::new(w.as_slice());
        assert!(matches!(
            r.list::<u64>(1000, "items"),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }
}
