//! Data representations of MQTT 5.0 §1.5 / 3.1.1 §1.5: integers, Variable Byte Integers,
//! strings and binary data, read from a packet body and written to a `Vec<u8>`.

use bytes::Bytes;

use super::error::DecodeError;
use super::types::{MqttString, PacketType};

/// The largest value a Variable Byte Integer holds (four bytes of seven bits).
pub const VARINT_MAX: u32 = 268_435_455;

/// Outcome of reading a Variable Byte Integer from the start of `buf`.
pub(crate) enum VarInt {
    /// The value and how many bytes it took.
    Value(u32, usize),
    /// `buf` ends before the last byte.
    Incomplete,
}

pub(crate) fn read_varint(buf: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(VarInt::Incomplete);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A longer encoding than needed ends in a 0x00 byte (e.g. 0x80 0x00 for 0).
            if i > 0 && byte == 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(VarInt::Value(value, i + 1));
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Bytes a Variable Byte Integer takes. `value` must be at most [`VARINT_MAX`].
pub(crate) const fn varint_len(value: usize) -> usize {
    if value < 128 {
        1
    } else if value < 16_384 {
        2
    } else if value < 2_097_152 {
        3
    } else {
        4
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Two-byte length then the bytes. Callers have checked `data.len() <= 65_535`.
pub(crate) fn put_binary(out: &mut Vec<u8>, data: &[u8]) {
    put_u16(out, u16::try_from(data.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(data);
}

/// A cursor over one packet's body. Every read is bounds-checked; running out of body is
/// [`DecodeError::Truncated`], since the whole body is present by the time it is parsed.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
    packet: PacketType,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes, packet: PacketType) -> Self {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
            packet,
        }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            packet: self.packet,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let buf: &'a [u8] = self.buf;
        let s = buf.get(self.pos..self.pos + n).ok_or(self.truncated())?;
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        match self.bytes(1)? {
            [b] => Ok(*b),
            _ => Err(self.truncated()),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        match self.bytes(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(self.truncated()),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match self.bytes(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(self.truncated()),
        }
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let buf: &'a [u8] = self.buf;
        let rest = buf.get(self.pos..self.end).unwrap_or_default();
        match read_varint(rest)? {
            VarInt::Value(v, len) => {
                self.pos += len;
                Ok(v)
            }
            VarInt::Incomplete => Err(self.truncated()),
        }
    }

    /// `n` bytes as a zero-copy slice of the packet buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    /// Binary Data: two-byte length, then the bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// Two-byte length, then the raw bytes, borrowed (for the protocol name).
    pub(crate) fn binary_ref(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// UTF-8 Encoded String.
    pub(crate) fn string(&mut self) -> Result<MqttString, DecodeError> {
        let packet = self.packet;
        let b = self.binary()?;
        MqttString::from_utf8(b).map_err(|error| DecodeError::InvalidString { packet, error })
    }

    /// Everything up to the end, zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..self.end);
        self.pos = self.end;
        b
    }

    /// Splits off the next `n` bytes as their own reader (a property block).
    pub(crate) fn split(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let sub = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
            packet: self.packet,
        };
        self.pos += n;
        Ok(sub)
    }

    /// Succeeds only if the body has been read to its end.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                count: self.remaining(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
        Ok(match read_varint(bytes)? {
            VarInt::Value(v, n) => Some((v, n)),
            VarInt::Incomplete => None,
        })
    }

    #[test]
    fn varint_boundaries_from_the_spec_table() {
        // MQTT 5.0 §1.5.5 Table 1-1: the smallest and largest value of each length.
        let table: [(u32, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (value, bytes) in table {
            assert_eq!(decode(bytes), Ok(Some((value, bytes.len()))), "{value}");
            let mut out = Vec::new();
            put_varint(&mut out, value as usize);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(varint_len(value as usize), bytes.len());
        }
    }

    #[test]
    fn varint_errors() {
        assert_eq!(
            decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(decode(&[0x80, 0x00]), Err(DecodeError::VarIntNotMinimal));
        assert_eq!(
            decode(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(decode(&[]), Ok(None));
        assert_eq!(decode(&[0x80]), Ok(None));
        assert_eq!(decode(&[0xFF, 0xFF, 0xFF]), Ok(None));
    }
}
