use std::time::Duration;

/// Parses a duration the way CI files write them: `90` (seconds), `30s`, `10m`, `1h30m`, `7d`,
/// `500ms`, `1w`, and RWX's long forms: `1 day`, `2 hours`, `30 minutes`, `1 hr`, `2 weeks`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let rest_text = compact.as_str();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = rest_text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number at `{rest}`"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let too_large = || format!("invalid duration `{text}`: number too large");
        let secs = |per: u64| {
            n.checked_mul(per)
                .map(Duration::from_secs)
                .ok_or_else(too_large)
        };
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(n),
            "m" | "min" | "mins" | "minute" | "minutes" => secs(60)?,
            "h" | "hr" | "hrs" | "hour" | "hours" => secs(3600)?,
            "d" | "day" | "days" => secs(86400)?,
            // RWX's own packages write `ttl: 1w`.
            "w" | "wk" | "wks" | "week" | "weeks" => secs(7 * 86400)?,
            "" => return Err(format!("invalid duration `{text}`: missing unit after {n}")),
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h, d or w)"
                ));
            }
        };
        total = total.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks() {
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(
            parse_duration("2 weeks"),
            Ok(Duration::from_secs(14 * 86400))
        );
    }

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1 day"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("2 hours"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1 hr 30 min"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn parses_rwx_ttl_forms() {
        for (text, secs) in [
            ("1 min", 60),
            ("1 minute", 60),
            ("2 mins", 120),
            ("30 minutes", 1800),
            ("1 hr", 3600),
            ("1 hour", 3600),
            ("2 hrs", 7200),
            ("2 hours", 7200),
            ("1 day", 86400),
            ("7 days", 7 * 86400),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("m").is_err());
    }
}
