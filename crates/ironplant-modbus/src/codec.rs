//! Conversion between Modbus registers and typed values, with word/byte order and scaling.

use ironplant_core::config::{ByteOrder, ModbusDataType, ModbusPoint, WordOrder};
use ironplant_core::{Array, ScalarType, Value, ValueType};

/// Why a value cannot be encoded into a point's registers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("value {value} does not fit a {data_type:?} register after scaling (raw {raw})")]
    OutOfRange {
        value: String,
        data_type: ModbusDataType,
        raw: f64,
    },
    #[error("a {expected} value is needed, got {got}")]
    WrongType { expected: &'static str, got: String },
    #[error("value {value} is not a whole number, which an unscaled {data_type:?} register needs")]
    NotIntegral {
        value: String,
        data_type: ModbusDataType,
    },
}

/// Puts `words` (most significant first) into wire order.
fn to_wire(mut words: Vec<u16>, wo: WordOrder, bo: ByteOrder) -> Vec<u16> {
    if wo == WordOrder::LittleEndian {
        words.reverse();
    }
    if bo == ByteOrder::LittleEndian {
        for w in &mut words {
            *w = w.swap_bytes();
        }
    }
    words
}

/// Reassembles the raw big-endian integer from wire-order registers.
fn from_wire(regs: &[u16], wo: WordOrder, bo: ByteOrder) -> u64 {
    let mut acc = 0u64;
    let n = regs.len();
    for i in 0..n {
        let w = if wo == WordOrder::LittleEndian {
            regs[n - 1 - i]
        } else {
            regs[i]
        };
        let w = if bo == ByteOrder::LittleEndian {
            w.swap_bytes()
        } else {
            w
        };
        acc = (acc << 16) | u64::from(w);
    }
    acc
}

/// Decodes a register point. `regs` holds exactly `point.len()` registers (the caller slices).
/// A point with `count > 1` is an array of `count` values of its type, each decoded (word and
/// byte order, scale, offset) as a scalar point would be.
pub fn decode_registers(point: &ModbusPoint, regs: &[u16]) -> Value {
    if point.count <= 1 {
        return decode_one(point, regs);
    }
    let per = usize::from(point.data_type.registers());
    let values: Vec<Value> = regs
        .chunks_exact(per)
        .take(usize::from(point.count))
        .map(|r| decode_one(point, r))
        .collect();
    let element =
        values
            .first()
            .and_then(Value::value_type)
            .map_or(ScalarType::Float, |t| match t {
                ValueType::Bool => ScalarType::Bool,
                ValueType::Int => ScalarType::Int,
                _ => ScalarType::Float,
            });
    // One decoder for every element, so they share a type; a count within one request (≤ 125)
    // is far below the core's element limit.
    match Array::from_values(&values, element) {
        Ok(Some(a)) => Value::array(a),
        _ => Value::Null,
    }
}

fn decode_one(point: &ModbusPoint, regs: &[u16]) -> Value {
    use ModbusDataType::*;
    if let (Bool, Some(bit)) = (point.data_type, point.bit) {
        return Value::Bool(regs.first().is_some_and(|r| r & (1 << bit) != 0));
    }
    let raw = from_wire(regs, point.word_order, point.byte_order);
    let scaled = point.scale != 1.0 || point.offset != 0.0;
    let (as_int, as_float): (Option<i64>, f64) = match point.data_type {
        Bool => return Value::Bool(raw != 0),
        // Exact over the whole range: `U64` above i64::MAX, `Int` below.
        U64 if !scaled => return Value::from_u64(raw),
        U16 => (Some(raw as u16 as i64), f64::from(raw as u16)),
        I16 => (Some(raw as u16 as i16 as i64), f64::from(raw as u16 as i16)),
        U32 => (Some(raw as u32 as i64), f64::from(raw as u32)),
        I32 => (Some(raw as u32 as i32 as i64), f64::from(raw as u32 as i32)),
        U64 => (None, raw as f64),
        I64 => (Some(raw as i64), raw as i64 as f64),
        F32 => (None, f32_as_f64(f32::from_bits(raw as u32))),
        F64 => (None, f64::from_bits(raw)),
    };
    match as_int {
        Some(i) if !scaled => Value::Int(i),
        _ => Value::Float(apply_scale(as_float, point.scale) + point.offset),
    }
}

/// `raw × scale`, but for scales like 0.1 or 0.01 divides by 10 or 100 instead, so that raw 3989
/// with scale 0.1 reads 398.9 and not 398.90000000000003 (0.1 has no exact binary form).
fn apply_scale(raw: f64, scale: f64) -> f64 {
    let inverse = 1.0 / scale;
    if inverse.abs() >= 1.0 && (inverse - inverse.round()).abs() < 1e-9 {
        raw / inverse.round()
    } else {
        raw * scale
    }
}

/// Widens an f32 to the f64 with the same shortest decimal form (123.456f32 becomes 123.456, not
/// 123.45600128173828): the device meant the f32's decimal value, and every consumer downstream
/// (JSON, historian, alarm limits) should see that. No heap allocation.
fn f32_as_f64(x: f32) -> f64 {
    struct Buf {
        bytes: [u8; 32],
        len: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let end = self.len + s.len();
            self.bytes
                .get_mut(self.len..end)
                .ok_or(std::fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 32],
        len: 0,
    };
    // `{:e}` prints the shortest digits that round-trip, with an exponent: at most ~15 bytes.
    if std::fmt::write(&mut buf, format_args!("{x:e}")).is_err() {
        return f64::from(x);
    }
    std::str::from_utf8(&buf.bytes[..buf.len])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::from(x))
}

/// Encodes an engineering value into wire-order registers for `point` (inverse of
/// [`decode_registers`]; integers are rounded to the nearest raw step).
pub fn encode_registers(point: &ModbusPoint, value: &Value) -> Result<Vec<u16>, EncodeError> {
    use ModbusDataType::*;
    let wrong = |expected| EncodeError::WrongType {
        expected,
        got: value.to_string(),
    };
    if point.data_type == Bool {
        return match value {
            Value::Bool(b) => Ok(vec![u16::from(*b)]),
            _ => Err(wrong("bool")),
        };
    }
    let eng = match value {
        Value::Int(i) => *i as f64,
        Value::U64(u) => *u as f64,
        Value::Float(f) => *f,
        _ => return Err(wrong("numeric")),
    };
    let raw = (eng - point.offset) / point.scale;
    let out_of_range = || EncodeError::OutOfRange {
        value: value.to_string(),
        data_type: point.data_type,
        raw,
    };
    let scaled = point.scale != 1.0 || point.offset != 0.0;
    // Unscaled integers take an exact path, so 64-bit values keep every bit.
    let int_raw = |lo: i128, hi: i128| -> Result<i128, EncodeError> {
        let r = match value {
            Value::Int(i) if !scaled => i128::from(*i),
            Value::U64(u) if !scaled => i128::from(*u),
            // Rounding 1.5 into an unscaled integer register would write a value nobody asked
            // for; with a scale, rounding to the nearest raw step is what scaling means.
            Value::Float(f) if !scaled && f.is_finite() && f.fract() != 0.0 => {
                return Err(EncodeError::NotIntegral {
                    value: value.to_string(),
                    data_type: point.data_type,
                })
            }
            _ if raw.is_finite() => raw.round() as i128,
            _ => return Err(out_of_range()),
        };
        if (lo..=hi).contains(&r) {
            Ok(r)
        } else {
            Err(out_of_range())
        }
    };
    let words: Vec<u16> = match point.data_type {
        Bool => unreachable!("handled above"),
        U16 => vec![int_raw(0, u16::MAX.into())? as u16],
        I16 => vec![int_raw(i16::MIN.into(), i16::MAX.into())? as i16 as u16],
        U32 => split(int_raw(0, u32::MAX.into())? as u64, 2),
        I32 => split(
            int_raw(i32::MIN.into(), i32::MAX.into())? as i32 as u32 as u64,
            2,
        ),
        U64 => split(int_raw(0, u64::MAX.into())? as u64, 4),
        I64 => split(int_raw(i64::MIN.into(), i64::MAX.into())? as i64 as u64, 4),
        F32 => {
            if raw.is_finite() && raw.abs() > f64::from(f32::MAX) {
                return Err(out_of_range());
            }
            split(u64::from((raw as f32).to_bits()), 2)
        }
        F64 => split(raw.to_bits(), 4),
    };
    Ok(to_wire(words, point.word_order, point.byte_order))
}

/// Splits the low `n` words of `v`, most significant first.
fn split(v: u64, n: usize) -> Vec<u16> {
    (0..n).rev().map(|i| (v >> (16 * i)) as u16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironplant_core::config::ModbusTable;

    fn point(data_type: ModbusDataType, wo: WordOrder, bo: ByteOrder) -> ModbusPoint {
        ModbusPoint {
            unit_id: 1,
            table: ModbusTable::Holding,
            address: 0,
            data_type,
            word_order: wo,
            byte_order: bo,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            count: 1,
        }
    }

    #[test]
    fn float32_in_both_word_orders_matches_known_vectors() {
        // 123.456f32 = 0x42F6E979
        let be = point(
            ModbusDataType::F32,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        let le = point(
            ModbusDataType::F32,
            WordOrder::LittleEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(
            decode_registers(&be, &[0x42F6, 0xE979]),
            Value::Float(123.456)
        );
        assert_eq!(
            decode_registers(&le, &[0xE979, 0x42F6]),
            Value::Float(123.456)
        );
        assert_eq!(
            encode_registers(&le, &Value::Float(123.456)),
            Ok(vec![0xE979, 0x42F6])
        );
        let bswap = point(
            ModbusDataType::F32,
            WordOrder::BigEndian,
            ByteOrder::LittleEndian,
        );
        assert_eq!(
            decode_registers(&bswap, &[0xF642, 0x79E9]),
            Value::Float(123.456)
        );
    }

    #[test]
    fn integers_signed_and_wide() {
        let i16p = point(
            ModbusDataType::I16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(decode_registers(&i16p, &[0xFFFE]), Value::Int(-2));
        let u32p = point(
            ModbusDataType::U32,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(
            decode_registers(&u32p, &[0x0001, 0x0002]),
            Value::Int(65538)
        );
        let i64p = point(
            ModbusDataType::I64,
            WordOrder::LittleEndian,
            ByteOrder::BigEndian,
        );
        let words = encode_registers(&i64p, &Value::Int(-1_234_567_890_123)).expect("fits");
        assert_eq!(
            decode_registers(&i64p, &words),
            Value::Int(-1_234_567_890_123)
        );
        let u64p = point(
            ModbusDataType::U64,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(
            decode_registers(&u64p, &[0, 0, 0x0001, 0x0000]),
            Value::Int(65536)
        );
    }

    /// u64 registers above i64::MAX are exact, an `int` (never a float that rounds u64::MAX up
    /// to 2^64), and write back bit for bit.
    #[test]
    fn u64_keeps_every_bit_over_its_whole_range() {
        let p = point(
            ModbusDataType::U64,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        let max = decode_registers(&p, &[0xFFFF; 4]);
        assert_eq!(max, Value::U64(u64::MAX));
        assert_eq!(max.value_type(), Some(ValueType::Int));
        assert_eq!(max.to_string(), "18446744073709551615");
        assert_eq!(
            decode_registers(&p, &[0x8000, 0, 0, 0]),
            Value::U64(1 << 63)
        );
        assert_eq!(
            decode_registers(&p, &[0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Value::Int(i64::MAX)
        );
        for v in [Value::U64(u64::MAX), Value::U64((1 << 63) + 1)] {
            let words = encode_registers(&p, &v).expect("fits");
            assert_eq!(decode_registers(&p, &words), v);
        }
        assert_eq!(
            encode_registers(&p, &Value::U64(u64::MAX)).expect("fits"),
            vec![0xFFFF; 4]
        );
        // Little-endian word order reaches the same value.
        let cdab = point(
            ModbusDataType::U64,
            WordOrder::LittleEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(
            decode_registers(&cdab, &[0, 0, 0, 0x8000]),
            Value::U64(1 << 63)
        );
        // Scaled, it is a float by configuration (`value_type` float).
        let mut scaled = p.clone();
        scaled.scale = 0.001;
        assert!(
            matches!(decode_registers(&scaled, &[0xFFFF; 4]), Value::Float(x) if (x - u64::MAX as f64 / 1000.0).abs() < 4.0),
            "{:?}",
            decode_registers(&scaled, &[0xFFFF; 4])
        );
    }

    #[test]
    fn scaling_applies_both_ways() {
        let mut p = point(
            ModbusDataType::I16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        p.scale = 0.1;
        p.offset = -50.0;
        assert_eq!(decode_registers(&p, &[700]), Value::Float(20.0));
        assert_eq!(encode_registers(&p, &Value::Float(20.0)), Ok(vec![700]));
        assert!(matches!(
            encode_registers(&p, &Value::Float(1e9)),
            Err(EncodeError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_registers(&p, &Value::Bool(true)),
            Err(EncodeError::WrongType { .. })
        ));
    }

    #[test]
    fn f32_widens_to_its_shortest_decimal() {
        for x in [
            0.1f32,
            400.18646,
            -98.765,
            1e-40,
            f32::MAX,
            f32::MIN_POSITIVE,
            0.0,
            -0.0,
        ] {
            let wide = f32_as_f64(x);
            assert_eq!(wide as f32, x, "round-trips to the same f32");
            assert_eq!(wide.to_string(), x.to_string(), "same decimal form");
        }
        assert!(f32_as_f64(f32::NAN).is_nan());
        assert_eq!(f32_as_f64(f32::INFINITY), f64::INFINITY);
        let mut p = point(
            ModbusDataType::U16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        p.scale = 0.1;
        assert_eq!(decode_registers(&p, &[3989]), Value::Float(398.9));
        p.scale = 0.25;
        assert_eq!(decode_registers(&p, &[3]), Value::Float(0.75));
        p.scale = 2.5;
        assert_eq!(decode_registers(&p, &[3]), Value::Float(7.5));
    }

    #[test]
    fn a_count_reads_an_array_of_values() {
        let mut p = point(
            ModbusDataType::I16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        p.count = 3;
        assert_eq!(p.len(), 3);
        assert_eq!(
            decode_registers(&p, &[0xFFFE, 7, 0x8000]),
            Value::array(Array::from_ints(vec![-2, 7, -32768]).expect("small"))
        );
        // Each element in its word order; f32s widen like scalars.
        let mut f = point(
            ModbusDataType::F32,
            WordOrder::LittleEndian,
            ByteOrder::BigEndian,
        );
        f.count = 2;
        assert_eq!(f.len(), 4);
        let v = decode_registers(&f, &[0xE979, 0x42F6, 0x0000, 0x3FC0]);
        assert_eq!(
            v,
            Value::array(Array::from_floats(vec![123.456, 1.5]).expect("small"))
        );
        assert_eq!(v.value_type(), Some(ValueType::Array(ScalarType::Float)));
        // Scaled integers are floats; u64 above i64::MAX stays exact.
        let mut s = point(
            ModbusDataType::U16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        s.count = 2;
        s.scale = 0.1;
        assert_eq!(
            decode_registers(&s, &[3989, 10]),
            Value::array(Array::from_floats(vec![398.9, 1.0]).expect("small"))
        );
        let mut u = point(
            ModbusDataType::U64,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        u.count = 2;
        assert_eq!(
            decode_registers(&u, &[0, 0, 0, 5, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF]),
            Value::array(Array::from_u64s(vec![5, u64::MAX]).expect("small"))
        );
    }

    #[test]
    fn bits_in_registers() {
        let mut p = point(
            ModbusDataType::Bool,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        p.bit = Some(3);
        assert_eq!(decode_registers(&p, &[0b1000]), Value::Bool(true));
        assert_eq!(decode_registers(&p, &[0b0100]), Value::Bool(false));
    }

    #[test]
    fn u16_range_is_enforced() {
        let p = point(
            ModbusDataType::U16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(encode_registers(&p, &Value::Int(65535)), Ok(vec![65535]));
        assert!(encode_registers(&p, &Value::Int(65536)).is_err());
        assert!(encode_registers(&p, &Value::Int(-1)).is_err());
    }

    #[test]
    fn unscaled_integer_registers_refuse_fractions() {
        let p = point(
            ModbusDataType::I16,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert_eq!(encode_registers(&p, &Value::Float(-2.0)), Ok(vec![0xFFFE]));
        let err = encode_registers(&p, &Value::Float(1.5)).expect_err("a fraction");
        assert_eq!(
            err.to_string(),
            "value 1.5 is not a whole number, which an unscaled I16 register needs"
        );
        // Floats and scaled integers take any number (scaled ones round to the raw step).
        let f = point(
            ModbusDataType::F32,
            WordOrder::BigEndian,
            ByteOrder::BigEndian,
        );
        assert!(encode_registers(&f, &Value::Float(1.5)).is_ok());
        let mut scaled = p.clone();
        scaled.scale = 0.1;
        assert_eq!(encode_registers(&scaled, &Value::Float(1.54)), Ok(vec![15]));
    }
}
