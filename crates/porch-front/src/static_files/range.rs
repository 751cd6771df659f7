//! The `Range` header: one byte range, or the whole representation.

/// What a `Range` header asks of a representation `len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Not a single byte range porch understands (another unit, several ranges, bad
    /// syntax): answer with the whole representation.
    Ignore,
    /// Starts at or past the end (or a zero-length suffix): 416.
    Unsatisfiable,
    /// First and last byte, inclusive, both within the representation.
    Single(u64, u64),
}

pub fn parse_range(value: &str, len: u64) -> ByteRange {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return ByteRange::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Ignore;
    }
    let mut ranges = spec.split(',').map(str::trim).filter(|r| !r.is_empty());
    let (Some(range), None) = (ranges.next(), ranges.next()) else {
        return ByteRange::Ignore;
    };
    let Some((first, last)) = range.split_once('-') else {
        return ByteRange::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    // Digits only (no sign, no spaces inside); too large to fit saturates.
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    if first.is_empty() {
        let Some(suffix) = number(last) else {
            return ByteRange::Ignore;
        };
        if suffix == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Single(len.saturating_sub(suffix), len - 1);
    }
    let Some(first) = number(first) else {
        return ByteRange::Ignore;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(l) if l >= first => l,
            _ => return ByteRange::Ignore,
        }
    };
    if first >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Single(first, last.min(len - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Single(0, 99));
        assert_eq!(parse_range("bytes=500-", 1000), Single(500, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Single(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Single(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Single(990, 999));
        assert_eq!(parse_range("Bytes = 1-1 ", 1000), Single(1, 1));
        assert_eq!(parse_range("bytes=0-0,", 1000), Single(0, 0));
        assert_eq!(parse_range("bytes=999-", 1000), Single(999, 999));
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 1000),
            Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=0-99999999999999999999", 10),
            Single(0, 9)
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-2000", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1",
            "items=0-1",
            "bytes",
            "",
            "bytes=0x1-2",
        ] {
            assert_eq!(parse_range(ignored, 1000), Ignore, "{ignored}");
        }
    }
}
