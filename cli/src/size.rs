//! Byte sizes as people write them (`1GiB`, `512MiB`, `4096`, `1.5TiB`) and
//! as tables show them.

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Nothing, or no digits before the unit.
    #[error("{0:?} is not a size (try 1GiB, 512MiB or a number of bytes)")]
    Malformed(String),
    /// An unknown unit.
    #[error("unknown unit {unit:?} in {input:?} (B, KiB, MiB, GiB, TiB, PiB; KB, MB... are powers of 1000)")]
    Unit {
        /// The unit.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A fraction that is not a whole number of bytes.
    #[error("{0:?} is not a whole number of bytes")]
    Fraction(String),
    /// More than 2^64 - 1 bytes.
    #[error("{0:?} is too large")]
    Overflow(String),
}

const KIB: u64 = 1 << 10;

fn multiplier(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => KIB.pow(2),
        "g" | "gib" => KIB.pow(3),
        "t" | "tib" => KIB.pow(4),
        "p" | "pib" => KIB.pow(5),
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "pb" => 1000u64.pow(5),
        _ => return None,
    })
}

/// Parses a size: a number (with an optional fraction) and an optional unit.
/// Single letters (`K`, `M`, `G`...) and `KiB`, `MiB`... are powers of 1024;
/// `KB`, `MB`... powers of 1000.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number = number.replace('_', "");
    let unit = unit.trim();
    let malformed = || SizeError::Malformed(input.to_owned());
    let overflow = || SizeError::Overflow(input.to_owned());
    let mult = multiplier(unit).ok_or_else(|| SizeError::Unit {
        unit: unit.to_owned(),
        input: input.to_owned(),
    })?;
    let (whole, frac) = number.split_once('.').unwrap_or((&number, ""));
    if whole.is_empty() || frac.contains('.') {
        return Err(malformed());
    }
    let whole: u64 = whole.parse().map_err(|_| overflow())?;
    let mut bytes = whole.checked_mul(mult).ok_or_else(overflow)?;
    let frac = frac.trim_end_matches('0');
    if !frac.is_empty() {
        let digits = u32::try_from(frac.len()).map_err(|_| malformed())?;
        let scale = 10u128.checked_pow(digits).ok_or_else(malformed)?;
        let numer: u128 = frac.parse().map_err(|_| malformed())?;
        let part = numer * u128::from(mult);
        if !part.is_multiple_of(scale) {
            return Err(SizeError::Fraction(input.to_owned()));
        }
        let part = u64::try_from(part / scale).map_err(|_| overflow())?;
        bytes = bytes.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(bytes)
}

/// A size for people: the largest binary unit it reaches, exact when it
/// is (`1 GiB`), else to one decimal (`1.5 GiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= KIB.pow(u32::try_from(unit + 1).unwrap_or(0)) {
        unit += 1;
    }
    let div = KIB.pow(u32::try_from(unit).unwrap_or(0));
    if bytes.is_multiple_of(div) {
        format!("{} {}", bytes / div, UNITS[unit])
    } else {
        // Display only: the rounding of an f64 is fine here.
        #[allow(clippy::cast_precision_loss)]
        let value = bytes as f64 / div as f64;
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        for (input, bytes) in [
            ("4096", 4096),
            ("512B", 512),
            ("1GiB", 1 << 30),
            ("1 GiB", 1 << 30),
            ("512MiB", 512 << 20),
            ("512mib", 512 << 20),
            ("2G", 2 << 30),
            ("1T", 1 << 40),
            ("1.5GiB", 3 << 29),
            ("0.5KiB", 512),
            ("1.50GiB", 3 << 29),
            ("1GB", 1_000_000_000),
            ("10MB", 10_000_000),
            ("1_000", 1000),
            (" 8KiB ", 8192),
        ] {
            assert_eq!(parse_size(input), Ok(bytes), "{input}");
        }
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(matches!(parse_size(""), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("GiB"), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("1.2.3G"), Err(SizeError::Malformed(_))));
        assert!(matches!(parse_size("1XB"), Err(SizeError::Unit { .. })));
        assert!(matches!(
            parse_size("-1G"),
            Err(SizeError::Malformed(_)) | Err(SizeError::Unit { .. })
        ));
        assert!(matches!(parse_size("1.3B"), Err(SizeError::Fraction(_))));
        assert!(matches!(
            parse_size("16384PiB"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(4096), "4 KiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
        assert_eq!(format_size(1_000_000_000), "953.7 MiB");
        assert_eq!(format_size(u64::MAX), "16384.0 PiB");
        for bytes in [512u64, 1 << 20, 3 << 29, 5 << 40] {
            let shown = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&shown), Ok(bytes));
        }
    }
}
