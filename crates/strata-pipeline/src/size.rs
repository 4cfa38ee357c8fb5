/// Parses a size: `500MB`, `20GB`, `1.5GiB`, `4096` (bytes). `KB`, `MB`, `GB`, `TB` are powers
/// of 1000 (as disks are sold, and as `df -H` prints them); `KiB`, `MiB`, `GiB`, `TiB` (and
/// `K`, `M`, `G`, `T`) powers of 1024. Units are case-insensitive; a space may separate them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let invalid = |why: &str| format!("invalid size `{trimmed}`: {why}");
    if number.is_empty() {
        return Err(invalid("expected a number, as in `500MB` or `20GB`"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| invalid("expected a number, as in `500MB` or `20GB`"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0f64.powi(4),
        other => {
            return Err(invalid(&format!(
                "unknown unit `{other}` (use B, KB, MB, GB, TB, or KiB, MiB, GiB, TiB)"
            )));
        }
    };
    let bytes = (value * factor).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid("too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("20GB"), Ok(20_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 gb"), Ok(2_000_000_000));
        assert_eq!(parse_size("10k"), Ok(10_240));
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for bad in [
            "",
            "GB",
            "12 parsecs",
            "1.2.3GB",
            "-5MB",
            "99999999999999999999TB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
