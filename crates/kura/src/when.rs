//! Points in time as people and runbooks write them, for `--at`,
//! `--start` and `--end`: `2025-10-05`, `2025-10-05 02:30`, RFC 3339,
//! the runbooks' `20251005-023000`, `yesterday`, `3d` (ago).
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// The forms accepted, for messages.
pub const FORMS: &str =
    "2025-10-05, 2025-10-05 02:30, 2025-10-05T02:30:00Z, 20251005-023000, today, yesterday, now, or 3d / 12h / 30m ago";

/// `s` as an instant, relative forms counted back from `now`. A day
/// alone means its end, or with `start_of_day` its first second.
pub fn parse(s: &str, now: DateTime<Local>, start_of_day: bool) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let day = |d: NaiveDate| -> Option<DateTime<Utc>> {
        let t = if start_of_day { d.and_hms_opt(0, 0, 0)? } else { d.and_hms_opt(23, 59, 59)? };
        local(t)
    };
    match s.to_ascii_lowercase().as_str() {
        "now" => return Some(now.with_timezone(&Utc)),
        "today" => return day(now.date_naive()),
        "yesterday" => return day(now.date_naive().pred_opt()?),
        _ => {}
    }
    // `3d`, `12h ago`: a unit is required (a bare number is a date).
    let ago = s.strip_suffix(" ago").unwrap_or(s);
    if ago.ends_with(|c: char| c.is_ascii_alphabetic()) {
        if let Ok(d) = kura_policy::parse_duration(ago) {
            return Some((now - chrono::Duration::from_std(d).ok()?).with_timezone(&Utc));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d", "%Y%m%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, f) {
            return day(d);
        }
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y%m%d-%H%M%S",
        "%Y%m%d-%H%M",
        "%Y%m%d_%H%M%S",
        "%Y%m%d_%H%M",
        "%Y%m%dT%H%M%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .and_then(local)
}

fn local(t: NaiveDateTime) -> Option<DateTime<Utc>> {
    Local.from_local_datetime(&t).earliest().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_runbooks_and_people_write() {
        let now = Local.with_ymd_and_hms(2025, 10, 6, 12, 0, 0).unwrap();
        let at = |y, mo, d, h, mi, s| Local.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().with_timezone(&Utc);
        let p = |s| parse(s, now, false);
        assert_eq!(p("20251005-023000"), Some(at(2025, 10, 5, 2, 30, 0)));
        assert_eq!(p("20251005-0230"), Some(at(2025, 10, 5, 2, 30, 0)));
        assert_eq!(p("20251005_023000"), Some(at(2025, 10, 5, 2, 30, 0)));
        assert_eq!(p("2025-10-05"), Some(at(2025, 10, 5, 23, 59, 59)));
        assert_eq!(parse("2025-10-05", now, true), Some(at(2025, 10, 5, 0, 0, 0)));
        assert_eq!(p("20251005"), Some(at(2025, 10, 5, 23, 59, 59)));
        assert_eq!(p("2025-10-05 02:30"), Some(at(2025, 10, 5, 2, 30, 0)));
        assert_eq!(p("2025-10-05T02:30:15"), Some(at(2025, 10, 5, 2, 30, 15)));
        assert_eq!(p("2025-10-05T02:30:00Z"), Some(Utc.with_ymd_and_hms(2025, 10, 5, 2, 30, 0).unwrap()));
        assert_eq!(
            p("2025-10-05T02:30:00+09:00"),
            Some(Utc.with_ymd_and_hms(2025, 10, 4, 17, 30, 0).unwrap())
        );
        assert_eq!(p("yesterday"), Some(at(2025, 10, 5, 23, 59, 59)));
        assert_eq!(p("today"), Some(at(2025, 10, 6, 23, 59, 59)));
        assert_eq!(p("3d"), Some(at(2025, 10, 3, 12, 0, 0)));
        assert_eq!(p("12h ago"), Some(at(2025, 10, 6, 0, 0, 0)));
        assert_eq!(p("now"), Some(now.with_timezone(&Utc)));
        assert_eq!(p("last tuesday"), None);
        assert_eq!(p("2025-13-01"), None);
    }
}
