//! Text key=value segments of Login and Text PDUs (RFC 7143 §6.1, §13):
//! parsing `key=value\0...` into ordered pairs, encoding pairs, and the value
//! grammars (numbers, booleans, lists, binary, the special values).
//!
//! Limits: key names are at most 63 bytes of `[A-Za-z0-9.+@_-]` (after an
//! optional `X#` extension prefix); values are at
//! most 255 bytes, except the large-binary values CHAP_C/CHAP_R whose binary
//! form may reach 1024 bytes (RFC 7143 §12.1.3). A key appears at most once per
//! segment.

/// Maximum length of a key name (RFC 7143 §6.1).
pub const MAX_KEY_LEN: usize = 63;
/// Maximum length of an ordinary value (RFC 7143 §6.1).
pub const MAX_VALUE_LEN: usize = 255;
/// Maximum binary length of a large-binary value such as CHAP_C (RFC 7143 §12.1.3).
pub const MAX_LARGE_BINARY_LEN: usize = 1024;
/// Maximum length of an iSCSI name (RFC 7143 §4.2.7.1).
pub const MAX_NAME_LEN: usize = 223;
/// The "Reject" special value.
pub const REJECT: &str = "Reject";
/// The "Irrelevant" special value.
pub const IRRELEVANT: &str = "Irrelevant";
/// The "NotUnderstood" special value.
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";

/// What can be wrong with a text segment or a value in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A pair has no '='.
    #[error("text pair without '='")]
    MissingEquals,
    /// A pair has an empty key.
    #[error("empty key")]
    EmptyKey,
    /// A key is longer than 63 bytes.
    #[error("key of {0} bytes exceeds 63")]
    KeyTooLong(usize),
    /// A key holds a character outside the RFC key alphabet.
    #[error("key {0:?} has an illegal character")]
    BadKeyChar(String),
    /// The segment is not UTF-8.
    #[error("text is not UTF-8")]
    NotUtf8,
    /// A value is longer than its key allows.
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong {
        /// The key.
        key: String,
        /// The value's length.
        len: usize,
        /// The limit for this key.
        max: usize,
    },
    /// A key appears twice in one negotiation.
    #[error("key {0} repeated")]
    DuplicateKey(String),
    /// A numeric value does not parse or overflows.
    #[error("invalid numerical value {0:?}")]
    BadNumber(String),
    /// A boolean value is neither Yes nor No.
    #[error("invalid boolean value {0:?}")]
    BadBool(String),
    /// A binary value has a bad encoding or length.
    #[error("invalid binary value")]
    BadBinary,
}

/// One key=value pair.
pub type Pair = (String, String);

/// Longest value string `key` may carry.
pub fn max_value_len(key: &str) -> usize {
    match key {
        // "0x" + two hex digits per byte; base64 is shorter.
        "CHAP_C" | "CHAP_R" => 2 + 2 * MAX_LARGE_BINARY_LEN,
        _ => MAX_VALUE_LEN,
    }
}

fn valid_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_')
}

/// Parses a text data segment into ordered pairs.
///
/// Empty entries (e.g. padding NULs) are skipped and a missing final NUL is
/// tolerated; a repeated key is an error.
pub fn parse_pairs(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    let mut pairs: Vec<Pair> = Vec::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let eq = item
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TextError::MissingEquals)?;
        let (k, v) = (&item[..eq], &item[eq + 1..]);
        if k.is_empty() {
            return Err(TextError::EmptyKey);
        }
        if k.len() > MAX_KEY_LEN {
            return Err(TextError::KeyTooLong(k.len()));
        }
        let key = std::str::from_utf8(k).map_err(|_| TextError::NotUtf8)?;
        // "X#" opens the names of IANA-registered extension keys (RFC 7143 §13.5.3).
        let body = k.strip_prefix(b"X#").unwrap_or(k);
        if body.is_empty() || !body.iter().all(|&c| valid_key_char(c)) {
            return Err(TextError::BadKeyChar(key.to_owned()));
        }
        let value = std::str::from_utf8(v).map_err(|_| TextError::NotUtf8)?;
        let max = max_value_len(key);
        if value.len() > max {
            return Err(TextError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
                max,
            });
        }
        if pairs.iter().any(|(pk, _)| pk == key) {
            return Err(TextError::DuplicateKey(key.to_owned()));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Alias of [`parse_pairs`].
pub fn parse(data: &[u8]) -> Result<Vec<Pair>, TextError> {
    parse_pairs(data)
}

/// Appends `key=value\0` to `out`.
pub fn push_pair(out: &mut Vec<u8>, key: &str, value: &str) {
    out.reserve(key.len() + value.len() + 2);
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.push(0);
}

/// The special values a responder may answer with (RFC 7143 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// "Reject": the offered value is not acceptable.
    Reject,
    /// "Irrelevant": the key does not matter in this context.
    Irrelevant,
    /// "NotUnderstood": the key is unknown.
    NotUnderstood,
}

impl Special {
    /// Recognises a special value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            REJECT => Some(Self::Reject),
            IRRELEVANT => Some(Self::Irrelevant),
            NOT_UNDERSTOOD => Some(Self::NotUnderstood),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => REJECT,
            Self::Irrelevant => IRRELEVANT,
            Self::NotUnderstood => NOT_UNDERSTOOD,
        }
    }
}

/// Parses a Yes/No boolean value.
pub fn parse_bool(value: &str) -> Result<bool, TextError> {
    match value {
        "Yes" => Ok(true),
        "No" => Ok(false),
        _ => Err(TextError::BadBool(value.to_owned())),
    }
}

/// Spells a boolean as Yes/No.
pub fn bool_str(v: bool) -> &'static str {
    if v {
        "Yes"
    } else {
        "No"
    }
}

/// Iterates the items of a list value `a,b,c`.
pub fn parse_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// Parses a numerical value: decimal, `0x` hex, or `0b` base64 (≤ 64 bits).
pub fn parse_number(value: &str) -> Result<u64, TextError> {
    let bad = || TextError::BadNumber(value.to_owned());
    if let Some(hex) = strip_prefix2(value, "0x") {
        if hex.is_empty() || hex.len() > 16 {
            return Err(bad());
        }
        return u64::from_str_radix(hex, 16).map_err(|_| bad());
    }
    if strip_prefix2(value, "0b").is_some() {
        let bytes = parse_binary(value).map_err(|_| bad())?;
        if bytes.len() > 8 {
            return Err(bad());
        }
        return Ok(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)));
    }
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse::<u64>().map_err(|_| bad())
}

/// Parses a numerical value that must lie in `min..=max`.
pub fn parse_number_in(value: &str, min: u64, max: u64) -> Result<u64, TextError> {
    let n = parse_number(value)?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(TextError::BadNumber(value.to_owned()))
    }
}

fn strip_prefix2<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..2)?;
    if head.eq_ignore_ascii_case(prefix) {
        value.get(2..)
    } else {
        None
    }
}

/// Decodes a binary value in `0x` hex or `0b` base64 form.
pub fn parse_binary(value: &str) -> Result<Vec<u8>, TextError> {
    if let Some(hex) = strip_prefix2(value, "0x") {
        return decode_hex(hex);
    }
    if let Some(b64) = strip_prefix2(value, "0b") {
        return decode_base64(b64);
    }
    Err(TextError::BadBinary)
}

fn hex_digit(c: u8) -> Result<u8, TextError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(TextError::BadBinary),
    }
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, TextError> {
    if hex.is_empty() {
        return Err(TextError::BadBinary);
    }
    let digits = hex.as_bytes();
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    // An odd count means an implied leading zero digit.
    let (head, rest) = digits.split_at(digits.len() % 2);
    if let Some(&c) = head.first() {
        out.push(hex_digit(c)?);
    }
    for pair in rest.chunks_exact(2) {
        out.push(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?);
    }
    Ok(out)
}

fn b64_digit(c: u8) -> Result<u32, TextError> {
    Ok(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return Err(TextError::BadBinary),
    }))
}

fn decode_base64(s: &str) -> Result<Vec<u8>, TextError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return Err(TextError::BadBinary);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(TextError::BadBinary);
        }
        let mut acc = 0u32;
        for &c in &quad[..4 - pad] {
            acc = acc << 6 | b64_digit(c)?;
        }
        acc <<= 6 * pad as u32;
        let decoded = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Ok(out)
}

/// Encodes bytes as an upper-case `0x` hex binary value.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_ordered_pairs() {
        let p = parse_pairs(b"InitiatorName=iqn.x\0SessionType=Normal\0Empty=\0").unwrap();
        assert_eq!(
            p,
            vec![
                ("InitiatorName".into(), "iqn.x".into()),
                ("SessionType".into(), "Normal".into()),
                ("Empty".into(), String::new()),
            ]
        );
        // Missing trailing NUL and extra padding NULs are tolerated.
        assert_eq!(parse_pairs(b"A=1").unwrap(), vec![("A".into(), "1".into())]);
        assert_eq!(parse_pairs(b"A=1\0\0\0").unwrap().len(), 1);
        assert_eq!(parse_pairs(b"").unwrap(), vec![]);
        // '=' in the value stays in the value.
        assert_eq!(parse_pairs(b"A=b=c\0").unwrap()[0].1, "b=c");
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_pairs(b"A\0"), Err(TextError::MissingEquals));
        assert_eq!(parse_pairs(b"=1\0"), Err(TextError::EmptyKey));
        let long_key = format!("{}=1", "K".repeat(64));
        assert_eq!(
            parse_pairs(long_key.as_bytes()),
            Err(TextError::KeyTooLong(64))
        );
        assert_eq!(parse_pairs(b"A=\xff\0"), Err(TextError::NotUtf8));
        assert!(matches!(
            parse_pairs(b"A B=1\0"),
            Err(TextError::BadKeyChar(_))
        ));
        assert!(matches!(
            parse_pairs(b"A#=1\0"),
            Err(TextError::BadKeyChar(_))
        ));
        assert_eq!(parse_pairs(b"X#ext=1\0").unwrap()[0].0, "X#ext");
        let long_val = format!("A={}", "v".repeat(256));
        assert!(matches!(
            parse_pairs(long_val.as_bytes()),
            Err(TextError::ValueTooLong { max: 255, .. })
        ));
        assert_eq!(
            parse_pairs(b"A=1\0B=2\0A=1\0"),
            Err(TextError::DuplicateKey("A".into()))
        );
    }

    #[test]
    fn chap_values_may_be_long() {
        let c = format!("CHAP_C={}", encode_hex(&[7u8; 1024]));
        assert_eq!(parse_pairs(c.as_bytes()).unwrap()[0].1.len(), 2050);
        let too_long = format!("CHAP_C=0x{}", "0".repeat(2050));
        assert!(matches!(
            parse_pairs(too_long.as_bytes()),
            Err(TextError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("8192").unwrap(), 8192);
        assert_eq!(parse_number("0x2000").unwrap(), 8192);
        assert_eq!(parse_number("0X2000").unwrap(), 8192);
        assert_eq!(parse_number("0bAAAgAA==").unwrap(), 0x2000);
        assert_eq!(parse_number("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "",
            "-1",
            "1e3",
            "0x",
            "0xg",
            "18446744073709551616",
            " 1",
            "0x10000000000000000",
        ] {
            assert!(parse_number(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_number_in("512", 512, 16_777_215).unwrap(), 512);
        assert!(parse_number_in("511", 512, 16_777_215).is_err());
    }

    #[test]
    fn booleans_lists_specials() {
        assert!(parse_bool("Yes").unwrap());
        assert!(!parse_bool("No").unwrap());
        assert!(parse_bool("yes").is_err());
        assert_eq!(bool_str(true), "Yes");
        assert_eq!(
            parse_list("CRC32C,None").collect::<Vec<_>>(),
            vec!["CRC32C", "None"]
        );
        assert_eq!(Special::parse("Reject"), Some(Special::Reject));
        assert_eq!(Special::parse("Irrelevant"), Some(Special::Irrelevant));
        assert_eq!(
            Special::parse("NotUnderstood").map(Special::as_str),
            Some(NOT_UNDERSTOOD)
        );
        assert_eq!(Special::parse("No"), None);
    }

    #[test]
    fn binary_values() {
        assert_eq!(parse_binary("0x0a0B").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(parse_binary("0xabc").unwrap(), vec![0x0a, 0xbc]);
        assert_eq!(parse_binary("0bAQID").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_binary("0bAQI=").unwrap(), vec![1, 2]);
        assert_eq!(parse_binary("0bAQ==").unwrap(), vec![1]);
        for bad in ["0x", "0xzz", "0b", "0bAQ=", "0bA===", "0bAQ==AQID", "12"] {
            assert!(parse_binary(bad).is_err(), "{bad}");
        }
        assert_eq!(encode_hex(&[0xde, 0xad]), "0xDEAD");
    }

    proptest! {
        #[test]
        fn pairs_round_trip(pairs in proptest::collection::btree_map("[A-Za-z0-9._@+-]{1,63}", "[ -~]{0,255}", 0..8)) {
            let mut buf = Vec::new();
            for (k, v) in &pairs {
                push_pair(&mut buf, k, v);
            }
            let got = parse_pairs(&buf).unwrap();
            let want: Vec<Pair> = pairs.into_iter().collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn hex_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(parse_binary(&encode_hex(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_pairs(&data);
        }
    }
}
