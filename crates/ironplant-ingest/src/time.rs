//! RFC 3339 timestamps as devices and our exports write them, parsed without a date library:
//! `2026-12-07T10:00:00Z`, `2026-12-07T10:00:00.123+01:00`, and (for devices that send local
//! time, such as Tasmota) without an offset, which the caller resolves.

use ironplant_core::Timestamp;

/// A parsed date-time: microseconds since the epoch as if the text were UTC, and the offset
/// from UTC in seconds the text carried (`None`: it had none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub naive_micros: i64,
    pub offset_secs: Option<i32>,
}

impl DateTime {
    /// The instant, using `assume_offset` when the text had no offset; `None` if neither.
    pub fn resolve(self, assume_offset: Option<i32>) -> Option<Timestamp> {
        let off = self.offset_secs.or(assume_offset)?;
        Some(Timestamp(self.naive_micros - i64::from(off) * 1_000_000))
    }
}

/// Parses `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction][Z|z|±HH:MM]`. Fractions beyond microseconds
/// are cut (not rounded); a leap second (`:60`) is refused.
pub fn parse_rfc3339(text: &str) -> Option<DateTime> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = b.get(r)?;
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let year = num(0..4)?;
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let min = num(14..16)?;
    let sec = num(17..19)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        None => None,
        Some(b'Z' | b'z') if i + 1 == b.len() => Some(0),
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let s = (h * 3600 + m * 60) as i32;
            Some(if sign == b'-' { -s } else { s })
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    Some(DateTime {
        naive_micros: secs * 1_000_000 + micros,
        offset_secs,
    })
}

/// Parses a UTC offset `+HH:MM`, `-HH:MM` or `Z` into seconds.
pub fn parse_offset(text: &str) -> Option<i32> {
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let b = text.as_bytes();
    if b.len() != 6 || !matches!(b[0], b'+' | b'-') || b[3] != b':' {
        return None;
    }
    let h: i32 = text.get(1..3)?.parse().ok()?;
    let m: i32 = text.get(4..6)?.parse().ok()?;
    if !(0..=23).contains(&h)
        || !(0..=59).contains(&m)
        || !text[1..3].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let s = h * 3600 + m * 60;
    Some(if b[0] == b'-' { -s } else { s })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<Timestamp> {
        parse_rfc3339(s)?.resolve(None)
    }

    #[test]
    fn agrees_with_our_own_rendering() {
        for micros in [
            0i64,
            1_000_000_000_123_456,
            1_796_637_600_000_000,
            951_782_400_000_001, // 2000-02-29
        ] {
            let t = Timestamp(micros);
            assert_eq!(ts(&t.to_rfc3339()), Some(t), "{t}");
        }
    }

    #[test]
    fn offsets_fractions_and_local_time() {
        assert_eq!(ts("2026-12-07T11:00:00+01:00"), ts("2026-12-07T10:00:00Z"));
        assert_eq!(
            ts("2026-12-07T10:00:00.5Z").map(|t| t.0 % 1_000_000),
            Some(500_000)
        );
        assert_eq!(
            ts("2026-12-07T10:00:00.123456789Z").map(|t| t.0 % 1_000_000),
            Some(123_456)
        );
        let local = parse_rfc3339("2026-12-07T10:00:00").expect("parses");
        assert_eq!(local.offset_secs, None);
        assert_eq!(local.resolve(None), None, "no offset and none assumed");
        assert_eq!(local.resolve(Some(3600)), ts("2026-12-07T09:00:00Z"));
        assert_eq!(parse_offset("-05:30"), Some(-(5 * 3600 + 30 * 60)));
        assert_eq!(parse_offset("+1:00"), None);
    }

    #[test]
    fn refuses_what_is_not_a_date() {
        for bad in [
            "",
            "2026-12-07",
            "2026-13-07T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-12-07T24:00:00Z",
            "2026-12-07T10:00:60Z",
            "2026-12-07T10:00:00.Z",
            "2026-12-07T10:00:00+0100",
            "2026-12-07T10:00:00Zjunk",
            "yesterday at ten o'clock",
            "２０２６-12-07T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
