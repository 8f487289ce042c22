//! Byte-level encodings shared by the WAL and chunks: varints, quality codes, tagged values.
//!
//! A tagged value is one type byte and its payload: 0 null, 1 false, 2 true, 3 int (zigzag
//! varint), 4 float (8 bytes LE), 5 string (varint length + UTF-8), 6 u64 above i64::MAX (varint),
//! 7 array, 8 DataSet:
//! ```text
//! array:   element kind u8 (0 bool, 1 int, 2 u64, 3 float, 4 string) | count varint |
//!          elements: bool u8 0/1, int zigzag varint, u64 varint, float 8 bytes LE,
//!          string varint length + UTF-8
//! DataSet: columns varint | (name: varint length + UTF-8, type u8: 0 bool 1 int 2 float 3 string)*
//!          | rows varint | rows × columns cells, each a tagged *scalar* value (0..=6)
//! ```
//! Every count is checked against the bytes left (an element takes at least one byte) and
//! against `ironplant_core::MAX_ELEMENTS` before anything is allocated; cells cannot nest.

use std::sync::Arc;

use ironplant_core::{
    Array, DataSet, Elements, Quality, QualityLevel, QualityReason, ScalarType, Value, MAX_ELEMENTS,
};

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

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
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

    /// A count of items of at least one byte each: within what is left and within
    /// [`MAX_ELEMENTS`], so a corrupt count can never make us allocate.
    pub fn count(&mut self) -> Result<usize, Malformed> {
        let n = self.len()?;
        if n > MAX_ELEMENTS {
            return Err(Malformed("more elements than an array or DataSet may hold"));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<Arc<str>, Malformed> {
        let n = self.len()?;
        let s =
            std::str::from_utf8(self.bytes(n)?).map_err(|_| Malformed("string is not UTF-8"))?;
        Ok(Arc::from(s))
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
        QualityReason::CalculationFailed => 7,
        QualityReason::InsufficientData => 8,
        QualityReason::SequenceGap => 9,
        QualityReason::Implausible => 10,
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
        7 => QualityReason::CalculationFailed,
        8 => QualityReason::InsufficientData,
        9 => QualityReason::SequenceGap,
        10 => QualityReason::Implausible,
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
            put_str(out, s);
        }
        Value::Array(a) => {
            out.push(7);
            put_array(out, a);
        }
        Value::DataSet(d) => {
            out.push(8);
            put_varint(out, d.columns().len() as u64);
            for (name, t) in d.columns().iter().zip(d.types()) {
                put_str(out, name);
                out.push(scalar_code(*t));
            }
            put_varint(out, d.rows().len() as u64);
            for cell in d.rows().iter().flat_map(|r| r.iter()) {
                put_value(out, cell);
            }
        }
    }
}

/// An upper bound of the bytes [`put_value`] writes for `v` (cheap: no encoding).
pub fn encoded_len_bound(v: &Value) -> usize {
    // A varint takes at most 10 bytes.
    match v {
        Value::String(s) => 11 + s.len(),
        Value::Array(a) => {
            12 + match a.elements() {
                Elements::Bool(v) => v.len(),
                Elements::Int(v) => 10 * v.len(),
                Elements::U64(v) => 10 * v.len(),
                Elements::Float(v) => 8 * v.len(),
                Elements::String(v) => v.iter().map(|s| 10 + s.len()).sum(),
            }
        }
        Value::DataSet(d) => {
            21 + d.columns().iter().map(|c| 11 + c.len()).sum::<usize>()
                + d.rows()
                    .iter()
                    .flat_map(|r| r.iter())
                    .map(encoded_len_bound)
                    .sum::<usize>()
        }
        _ => 11,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn scalar_code(t: ScalarType) -> u8 {
    match t {
        ScalarType::Bool => 0,
        ScalarType::Int => 1,
        ScalarType::Float => 2,
        ScalarType::String => 3,
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    match a.elements() {
        Elements::Bool(v) => {
            out.push(0);
            put_varint(out, v.len() as u64);
            out.extend(v.iter().map(|b| u8::from(*b)));
        }
        Elements::Int(v) => {
            out.push(1);
            put_varint(out, v.len() as u64);
            for i in v {
                put_varint(out, zigzag(*i));
            }
        }
        Elements::U64(v) => {
            out.push(2);
            put_varint(out, v.len() as u64);
            for u in v {
                put_varint(out, *u);
            }
        }
        Elements::Float(v) => {
            out.push(3);
            put_varint(out, v.len() as u64);
            for f in v {
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
        Elements::String(v) => {
            out.push(4);
            put_varint(out, v.len() as u64);
            for s in v {
                put_str(out, s);
            }
        }
    }
}

fn get_array(r: &mut Reader<'_>) -> Result<Array, Malformed> {
    let kind = r.u8()?;
    let n = r.count()?;
    let built = match kind {
        0 => Array::from_bools(
            (0..n)
                .map(|_| match r.u8()? {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(Malformed("array boolean is not 0 or 1")),
                })
                .collect::<Result<_, _>>()?,
        ),
        1 => Array::from_ints(
            (0..n)
                .map(|_| r.varint().map(unzigzag))
                .collect::<Result<_, _>>()?,
        ),
        2 => {
            let v: Vec<u64> = (0..n).map(|_| r.varint()).collect::<Result<_, _>>()?;
            // One form: a u64 array only when some element needs it.
            if v.iter().all(|u| i64::try_from(*u).is_ok()) {
                return Err(Malformed("u64 array within the i64 range"));
            }
            Array::from_u64s(v)
        }
        3 => Array::from_floats(
            (0..n)
                .map(|_| r.u64().map(f64::from_bits))
                .collect::<Result<_, _>>()?,
        ),
        4 => Array::from_strings((0..n).map(|_| r.str()).collect::<Result<_, _>>()?),
        _ => return Err(Malformed("array element kind")),
    };
    built.map_err(|_| Malformed("array over the size limits"))
}

fn get_dataset(r: &mut Reader<'_>) -> Result<DataSet, Malformed> {
    let ncols = r.count()?;
    let mut columns = Vec::with_capacity(ncols);
    let mut types = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        columns.push(r.str()?);
        types.push(match r.u8()? {
            0 => ScalarType::Bool,
            1 => ScalarType::Int,
            2 => ScalarType::Float,
            3 => ScalarType::String,
            _ => return Err(Malformed("DataSet column type")),
        });
    }
    let nrows = r.count()?;
    let cells = nrows
        .checked_mul(ncols)
        .filter(|c| *c <= MAX_ELEMENTS)
        .ok_or(Malformed("more cells than a DataSet may hold"))?;
    if cells > r.remaining() {
        return Err(Malformed("DataSet cells past the end"));
    }
    let mut rows = Vec::with_capacity(nrows);
    for _ in 0..nrows {
        let mut row = Vec::with_capacity(ncols);
        for _ in 0..ncols {
            // Checked before decoding, so corrupt bytes cannot nest DataSets to any depth.
            if matches!(r.buf.get(r.pos), Some(7 | 8)) {
                return Err(Malformed("a DataSet cell holds an array or DataSet"));
            }
            row.push(get_value(r)?);
        }
        rows.push(row);
    }
    DataSet::new(columns, types, rows).map_err(|_| Malformed("DataSet shape or size"))
}

pub fn get_value(r: &mut Reader<'_>) -> Result<Value, Malformed> {
    Ok(match r.u8()? {
        0 => Value::Null,
        1 => Value::Bool(false),
        2 => Value::Bool(true),
        3 => Value::Int(unzigzag(r.varint()?)),
        4 => Value::Float(f64::from_bits(r.u64()?)),
        5 => Value::String(r.str()?),
        // Only above i64::MAX (one form per number, as `Value::from_u64` builds it).
        6 => match r.varint()? {
            u if u > i64::MAX as u64 => Value::U64(u),
            _ => return Err(Malformed("u64 value within the i64 range")),
        },
        7 => Value::array(get_array(r)?),
        8 => Value::dataset(get_dataset(r)?),
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

    fn composite_values() -> Vec<Value> {
        let floats = Array::from_floats(vec![1.5, -0.0, f64::NAN, 1e300]).expect("small");
        let ds = DataSet::new(
            vec!["n".into(), "name".into(), "ok".into(), "x".into()],
            vec![
                ScalarType::Int,
                ScalarType::String,
                ScalarType::Bool,
                ScalarType::Float,
            ],
            vec![
                vec![
                    Value::Int(-5),
                    Value::String("a".into()),
                    Value::Bool(true),
                    Value::Float(0.25),
                ],
                vec![Value::U64(u64::MAX), Value::Null, Value::Null, Value::Null],
            ],
        )
        .expect("valid");
        vec![
            Value::array(floats),
            Value::array(Array::from_bools(vec![true, false, true]).expect("small")),
            Value::array(Array::from_ints(vec![i64::MIN, 0, 7]).expect("small")),
            Value::array(Array::from_u64s(vec![1, u64::MAX]).expect("small")),
            Value::array(Array::from_strings(vec!["héllo".into(), "".into()]).expect("small")),
            Value::array(Array::from_strings(vec![]).expect("small")),
            Value::dataset(ds),
            Value::dataset(DataSet::new(vec![], vec![], vec![]).expect("empty")),
        ]
    }

    #[test]
    fn arrays_and_datasets_round_trip_exactly() {
        let values = composite_values();
        let mut buf = Vec::new();
        for v in &values {
            put_value(&mut buf, v);
        }
        let mut r = Reader::new(&buf);
        for v in &values {
            let back = get_value(&mut r).expect("decodes");
            // NaN != NaN: compare the bytes they encode to.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            put_value(&mut a, v);
            put_value(&mut b, &back);
            assert_eq!(a, b, "{v}");
            assert_eq!(back.value_type(), v.value_type());
            assert!(a.len() <= encoded_len_bound(v), "{v}: {} bytes", a.len());
        }
        assert!(r.is_empty());
        // Every truncation of every value is an error, never a panic.
        for v in &values {
            let mut one = Vec::new();
            put_value(&mut one, v);
            for cut in 0..one.len() {
                assert!(
                    get_value(&mut Reader::new(&one[..cut])).is_err(),
                    "{v} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn corrupt_composites_are_refused_before_allocating() {
        // An array claiming 2^40 floats in 3 bytes.
        let mut buf = vec![7, 3];
        put_varint(&mut buf, 1 << 40);
        buf.extend_from_slice(&[0, 0, 0]);
        assert!(get_value(&mut Reader::new(&buf)).is_err());
        // More elements than the limit, with the bytes present.
        let mut buf = vec![7, 0];
        put_varint(&mut buf, MAX_ELEMENTS as u64 + 1);
        buf.extend(std::iter::repeat_n(0u8, MAX_ELEMENTS + 1));
        assert_eq!(
            get_value(&mut Reader::new(&buf)),
            Err(Malformed("more elements than an array or DataSet may hold"))
        );
        // A u64 array whose elements all fit i64 has another (the int) form.
        let buf = vec![7, 2, 1, 5];
        assert!(get_value(&mut Reader::new(&buf)).is_err());
        // A boolean element that is neither 0 nor 1.
        assert!(get_value(&mut Reader::new(&[7, 0, 1, 2])).is_err());
        // A DataSet cell that is itself a DataSet (would nest without bound).
        let buf = vec![8, 1, 1, b'a', 1, 1, 8, 0, 0];
        assert_eq!(
            get_value(&mut Reader::new(&buf)),
            Err(Malformed("a DataSet cell holds an array or DataSet"))
        );
        // A cell of the wrong type for its column.
        let buf = vec![8, 1, 1, b'a', 1, 1, 5, 1, b'x'];
        assert!(get_value(&mut Reader::new(&buf)).is_err());
        // 2^20 rows × 2^20 columns claimed in a few bytes.
        let mut buf = vec![8];
        put_varint(&mut buf, 2);
        buf.extend_from_slice(&[1, b'a', 1, 1, b'b', 1]);
        put_varint(&mut buf, 1 << 20);
        assert!(get_value(&mut Reader::new(&buf)).is_err());
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
            Quality::uncertain(QualityReason::Implausible),
        ] {
            assert_eq!(quality_from_code(quality_code(q)), Ok(q));
        }
    }
}
