//! Strict percent-decoding of a request path, shared by routing and static lookup: a `%`
//! not followed by two hex digits, or an encoded NUL, is malformed (400), never passed on
//! as it is (the `percent-encoding` crate passes bad escapes through, which suits the
//! worker's PATH_INFO but not a front deciding what a path names).

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    BadEscape,
    Nul,
}

/// The bytes `s` stands for; borrowed when it has no escape.
pub fn decode(s: &str) -> Result<Cow<'_, [u8]>, Malformed> {
    if !s.contains('%') {
        return Ok(Cow::Borrowed(s.as_bytes()));
    }
    fn hex(b: Option<&u8>) -> Result<u8, Malformed> {
        match b {
            Some(b @ b'0'..=b'9') => Ok(b - b'0'),
            Some(b @ b'a'..=b'f') => Ok(b - b'a' + 10),
            Some(b @ b'A'..=b'F') => Ok(b - b'A' + 10),
            _ => Err(Malformed::BadEscape),
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = (hex(b.get(i + 1))? << 4) | hex(b.get(i + 2))?;
            if v == 0 {
                return Err(Malformed::Nul);
            }
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_bad_ones_are_refused() {
        assert!(matches!(decode("/a/b"), Ok(Cow::Borrowed(b"/a/b"))));
        assert_eq!(
            decode("/caf%C3%A9%2f").unwrap().as_ref(),
            "/café/".as_bytes()
        );
        for bad in ["%", "%2", "%zz", "a%g0"] {
            assert_eq!(decode(bad), Err(Malformed::BadEscape), "{bad}");
        }
        assert_eq!(decode("a%00b"), Err(Malformed::Nul));
    }
}
