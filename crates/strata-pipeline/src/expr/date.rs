//! `strftime` in UTC for the `date()` function, without a date library: the calendar arithmetic
//! is Howard Hinnant's `civil_from_days`.

use std::time::{SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// One instant broken down in UTC.
struct Civil {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
    weekday: u32, // 0 = Sunday
    yday: u32,    // 1..=366
    epoch_seconds: i64,
}

fn civil(now: SystemTime) -> Civil {
    let (secs, millis) = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_millis(),
        ),
        Err(e) => {
            let d = e.duration();
            let mut secs = 0i64.saturating_sub_unsigned(d.as_secs());
            let mut millis = d.subsec_millis();
            if millis > 0 {
                secs = secs.saturating_sub(1);
                millis = 1000 - millis;
            }
            (secs, millis)
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let jan1 = days_from_civil(year, 1, 1);
    Civil {
        year,
        month,
        day,
        hour: of_day / 3600,
        minute: of_day / 60 % 60,
        second: of_day % 60,
        millis,
        weekday: (days + 4).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
        yday: (days - jan1 + 1) as u32,
        epoch_seconds: secs,
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `now` in UTC. Supports the common conversions (`%Y %m %d %H %M %S %s %F %T` and
/// their relatives, names of days and months, `%L` milliseconds) and the `-` flag that drops
/// padding (`%-d`); an unknown conversion is an error rather than text passed through, so a
/// typo shows up at once.
pub(crate) fn strftime(format: &str, now: SystemTime) -> Result<String, String> {
    let t = civil(now);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |out: &mut String, n: i64, width: usize, pad: char| {
            let digits = n.unsigned_abs().to_string();
            if n < 0 {
                out.push('-');
            }
            if !unpadded {
                for _ in digits.len()..width {
                    out.push(pad);
                }
            }
            out.push_str(&digits);
        };
        let hour12 = match t.hour % 12 {
            0 => 12,
            h => h,
        };
        match spec {
            Some('Y') => num(&mut out, t.year, 4, '0'),
            Some('C') => num(&mut out, t.year.div_euclid(100), 2, '0'),
            Some('y') => num(&mut out, t.year.rem_euclid(100), 2, '0'),
            Some('m') => num(&mut out, t.month.into(), 2, '0'),
            Some('d') => num(&mut out, t.day.into(), 2, '0'),
            Some('e') => num(&mut out, t.day.into(), 2, ' '),
            Some('j') => num(&mut out, t.yday.into(), 3, '0'),
            Some('H') => num(&mut out, t.hour.into(), 2, '0'),
            Some('k') => num(&mut out, t.hour.into(), 2, ' '),
            Some('I') => num(&mut out, hour12.into(), 2, '0'),
            Some('l') => num(&mut out, hour12.into(), 2, ' '),
            Some('M') => num(&mut out, t.minute.into(), 2, '0'),
            Some('S') => num(&mut out, t.second.into(), 2, '0'),
            Some('L') => num(&mut out, t.millis.into(), 3, '0'),
            Some('s') => num(&mut out, t.epoch_seconds, 1, '0'),
            Some('u') => num(
                &mut out,
                if t.weekday == 0 { 7 } else { t.weekday.into() },
                1,
                '0',
            ),
            Some('w') => num(&mut out, t.weekday.into(), 1, '0'),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('P') => out.push_str(if t.hour < 12 { "am" } else { "pm" }),
            Some('A') => out.push_str(WEEKDAYS[t.weekday as usize % 7]),
            Some('a') => out.push_str(&WEEKDAYS[t.weekday as usize % 7][..3]),
            Some('B') => out.push_str(MONTHS[(t.month as usize + 11) % 12]),
            Some('b' | 'h') => out.push_str(&MONTHS[(t.month as usize + 11) % 12][..3]),
            Some('F') => {
                num(&mut out, t.year, 4, '0');
                out.push_str(&format!("-{:02}-{:02}", t.month, t.day));
            }
            Some('T') => out.push_str(&format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second)),
            Some('R') => out.push_str(&format!("{:02}:{:02}", t.hour, t.minute)),
            Some('D') => out.push_str(&format!(
                "{:02}/{:02}/{:02}",
                t.month,
                t.day,
                t.year.rem_euclid(100)
            )),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                let flag = if unpadded { "-" } else { "" };
                return Err(format!("unknown date format `%{flag}{other}`"));
            }
            None => return Err("date format ends with a lone `%`".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    // 2026-03-06T14:30:45.123Z, a Friday, the 65th day of the year.
    const T: u64 = 1_772_807_445;

    #[test]
    fn the_documented_formats() {
        let now = at(T, 123);
        assert_eq!(strftime("%Y-%m-%d", now).unwrap(), "2026-03-06");
        assert_eq!(
            strftime("%Y-%m-%dT%H:%M:%SZ", now).unwrap(),
            "2026-03-06T14:30:45Z"
        );
        assert_eq!(strftime("%s", now).unwrap(), T.to_string());
        assert_eq!(strftime("%Y%m%d%H%M%S", now).unwrap(), "20260306143045");
    }

    #[test]
    fn the_other_conversions() {
        let now = at(T, 123);
        let f = |s: &str| strftime(s, now).unwrap();
        assert_eq!(f("%F %T %R %D"), "2026-03-06 14:30:45 14:30 03/06/26");
        assert_eq!(f("%a %A %b %h %B"), "Fri Friday Mar Mar March");
        assert_eq!(f("%j %u %w %C %y"), "065 5 5 20 26");
        assert_eq!(f("%I %l %p %P %k"), "02  2 PM pm 14");
        assert_eq!(f("%L %Z %z %% %n%t"), "123 UTC +0000 % \n\t");
        assert_eq!(f("%-d/%-m %e"), "6/3  6");
        assert_eq!(f("plain"), "plain");
    }

    #[test]
    fn calendar_edges() {
        let f = |secs: u64, s: &str| strftime(s, at(secs, 0)).unwrap();
        assert_eq!(f(0, "%F %T %A %j"), "1970-01-01 00:00:00 Thursday 001");
        // 2024-02-29 (leap day) and 2024-12-31 (day 366).
        assert_eq!(f(1_709_164_800, "%F %j"), "2024-02-29 060");
        assert_eq!(f(1_735_603_200, "%F %j %u"), "2024-12-31 366 2");
        assert_eq!(f(946_684_800, "%F %a"), "2000-01-01 Sat");
        assert_eq!(f(43_200, "%I %p"), "12 PM");
        assert_eq!(f(0, "%I %p"), "12 AM");
    }

    #[test]
    fn before_the_epoch() {
        let now = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(
            strftime("%F %T %L %s", now).unwrap(),
            "1969-12-31 23:59:58 500 -2"
        );
    }

    #[test]
    fn unknown_conversions_are_errors() {
        let now = at(0, 0);
        assert_eq!(strftime("%Q", now).unwrap_err(), "unknown date format `%Q`");
        assert_eq!(
            strftime("%-Q", now).unwrap_err(),
            "unknown date format `%-Q`"
        );
        assert_eq!(
            strftime("100%", now).unwrap_err(),
            "date format ends with a lone `%`"
        );
    }
}
