//! Byte-level encodings shared by the WAL and chunks: varints, quality codes, tagged values.
//!
//! A tagged value is one type byte and its payload: 0 null, 1 false, 2 true, 3 int (zigzag
//! varint), 4 float (8 bytes LE), 5 string (varint length + UTF-8), 6 u64 above i64::MAX (varint).

use std::sync::Arc;

use ironplant_core::{Quality, QualityLevel, QualityReason, Value};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed data: {0}")]
pub struct Malformed(pub &'static str);

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over bytes whose every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(Malformed("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(self.u64()? as i64)
    }

    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed("varint too long"))
    }

    /// A length that must fit in what is left, so a corrupt length can never make us allocate.
    pub fn len(&mut self) -> Result<usize, Malformed> {
        let n = usize::try_from(self.varint()?).map_err(|_| Malformed("length too large"))?;
        if n > self.buf.len() - self.pos.min(self.buf.len()) {
            return Err(Malformed("length past the end"));
        }
        Ok(n)
    }
}

pub fn quality_code(q: Quality) -> u8 {
    let level = match q.level {
        QualityLevel::Good => 0,
        QualityLevel::Uncertain => 1,
        QualityLevel::Bad => 2,
    };
    let reason = match q.reason {
        QualityReason::None => 0,
        QualityReason::CommFailure => 1,
        QualityReason::DeviceFailure => 2,
        QualityReason::OutOfRange => 3,
        QualityReason::ConfigError => 4,
        QualityReason::Stale => 5,
        QualityReason::NotConnected => 6,
    };
    (level << 5) | reason
}

pub fn quality_from_code(c: u8) -> Result<Quality, Malformed> {
    let level = match c >> 5 {
        0 => QualityLevel::Good,
        1 => QualityLevel::Uncertain,
        2 => QualityLevel::Bad,
        _ => return Err(Malformed("quality level")),
    };
    let reason = match c & 0x1F {
        0 => QualityReason::None,
        1 => QualityReason::CommFailure,
        2 => QualityReason::DeviceFailure,
        3 => QualityReason::OutOfRange,
        4 => QualityReason::ConfigError,
        5 => QualityReason::Stale,
        6 => QualityReason::NotConnected,
        _ => return Err(Malformed("quality reason")),
    };
    Ok(Quality { level, reason })
}

pub fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0),
        Value::Bool(false) => out.push(1),
        Value::Bool(true) => out.push(2),
        Value::Int(i) => {
            out.push(3);
            put_varint(out, zigzag(*i));
        }
        Value::U64(u) => {
            out.push(6);
            put_varint(out, *u);
        }
        Value::Float(f) => {
            out.push(4);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            out.push(5);
            put_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

pub fn get_value(r: &mut Reader<'_>) -> Result<Value, Malformed> {
    Ok(match r.u8()? {
        0 => Value::Null,
        1 => Value::Bool(false),
        2 => Value::Bool(true),
        3 => Value::Int(unzigzag(r.varint()?)),
        4 => Value::Float(f64::from_bits(r.u64()?)),
        5 => {
            let n = r.len()?;
            let s =
                std::str::from_utf8(r.bytes(n)?).map_err(|_| Malformed("string is not UTF-8"))?;
            Value::String(Arc::from(s))
        }
        // Only above i64::MAX (one form per number, as `Value::from_u64` builds it).
        6 => match r.varint()? {
            u if u > i64::MAX as u64 => Value::U64(u),
            _ => return Err(Malformed("u64 value within the i64 range")),
        },
        _ => return Err(Malformed("value type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_values_round_trip() {
        let mut buf = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut buf, v);
        }
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-5),
            Value::Int(i64::MIN),
            Value::U64(u64::MAX),
            Value::U64(1 << 63),
            Value::Float(-0.0),
            Value::String(Arc::from("héllo")),
        ];
        for v in &values {
            put_value(&mut buf, v);
        }
        let mut r = Reader::new(&buf);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint(), Ok(v));
        }
        for v in &values {
            assert_eq!(&get_value(&mut r).expect("value"), v);
        }
        assert!(r.is_empty());
        assert_eq!(unzigzag(zigzag(i64::MIN)), i64::MIN);
    }

    #[test]
    fn corrupt_lengths_never_allocate_or_panic() {
        let mut buf = vec![5];
        put_varint(&mut buf, u64::MAX / 2);
        assert!(get_value(&mut Reader::new(&buf)).is_err());
        assert!(Reader::new(&[0xFF; 11]).varint().is_err());
        assert!(quality_from_code(0xFF).is_err());
        for q in [
            Quality::GOOD,
            Quality::bad(QualityReason::CommFailure),
            Quality::uncertain(QualityReason::OutOfRange),
        ] {
            assert_eq!(quality_from_code(quality_code(q)), Ok(q));
        }
    }
}
