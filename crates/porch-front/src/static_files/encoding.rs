//! Choosing a precompressed sibling (`NAME.br`, `NAME.gz`) by `Accept-Encoding`.

use http::{header, HeaderMap};

use super::conditional::header_values;

/// A precompressed sibling's coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    pub(super) fn suffix(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        }
    }
    pub(super) fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The codings `Accept-Encoding` accepts (q > 0), best first, `br` first on a tie. An
/// absent header accepts none of them (identity only); `*` stands for codings not named.
pub fn accepted_encodings(headers: &HeaderMap) -> [Option<Encoding>; 2] {
    let (mut br, mut gzip, mut star) = (None::<u16>, None::<u16>, None::<u16>);
    for value in header_values(headers, header::ACCEPT_ENCODING) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let mut q = 1000;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_qvalue(v.trim()).unwrap_or(0);
                    }
                }
            }
            let slot = if coding.eq_ignore_ascii_case("br") {
                &mut br
            } else if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if coding == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
        }
    }
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    match (br > 0, gzip > 0) {
        (true, true) if gzip > br => [Some(Encoding::Gzip), Some(Encoding::Br)],
        (true, true) => [Some(Encoding::Br), Some(Encoding::Gzip)],
        (true, false) => [Some(Encoding::Br), None],
        (false, true) => [Some(Encoding::Gzip), None],
        (false, false) => [None, None],
    }
}

/// A q-value in thousandths: `0`, `0.5`, `1`, `1.000`.
fn parse_qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    for (i, d) in frac.bytes().enumerate() {
        thousandths += u16::from(d - b'0') * [100, 10, 1][i];
    }
    (thousandths <= 1000).then_some(thousandths)
}

#[cfg(test)]
mod tests {
    use super::super::headers;
    use super::*;

    #[test]
    fn accept_encoding_choice() {
        use Encoding::*;
        let pick = |v: &str| accepted_encodings(&headers(&[("accept-encoding", v)]));
        assert_eq!(accepted_encodings(&HeaderMap::new()), [None, None]);
        assert_eq!(pick("gzip, deflate, br, zstd"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick("gzip"), [Some(Gzip), None]);
        assert_eq!(pick("x-gzip"), [Some(Gzip), None]);
        assert_eq!(pick("BR"), [Some(Br), None]);
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), [Some(Gzip), Some(Br)]);
        assert_eq!(pick("br;q=0, gzip"), [Some(Gzip), None]);
        assert_eq!(pick("br; q=0.000, gzip;q=0.001"), [Some(Gzip), None]);
        assert_eq!(pick("*"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick("*;q=0.5, gzip"), [Some(Gzip), Some(Br)]);
        assert_eq!(pick("*;q=0"), [None, None]);
        assert_eq!(pick("identity"), [None, None]);
        assert_eq!(pick("br;q=2"), [None, None]);
        assert_eq!(pick("gzip;q=1.0, br;q=1"), [Some(Br), Some(Gzip)]);
        assert_eq!(pick(""), [None, None]);
        let two = headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br;q=0.1")]);
        assert_eq!(accepted_encodings(&two), [Some(Gzip), Some(Br)]);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.1234"), None);
        assert_eq!(parse_qvalue("-1"), None);
    }
}
