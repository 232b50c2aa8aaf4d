//! Cron schedules (`0 2 * * *`, `0 3 * * SUN`, `0 4 1 * *`): parsed
//! strictly, with a message naming the field, and asked for the next time
//! they fire after a given local time. Five fields: minute, hour, day of
//! month, month, day of week; each `*`, a number, a range `a-b`, a list
//! `a,b`, a step `*/n` or `a-b/n`; months and days may be named (`JAN`,
//! `SUN`); day of week 0 and 7 are Sunday. As in cron, when both day of
//! month and day of week are restricted, a day matching either fires. A
//! sixth field in front gives seconds (`*/5 * * * * *`), for schedules
//! finer than a minute under `kura serve` (and its tests); cron and systemd
//! timers printed by `kura schedule` keep their minute granularity.
use chrono::{Datelike, Duration, NaiveDateTime, Timelike};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// Seconds of a matching minute it fires at (second 0 for five fields).
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day of month and day of week were each given (not `*`).
    days_restricted: bool,
    weekdays_restricted: bool,
}

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field's allowed values as a bit set.
fn field(text: &str, name: &str, lo: u32, hi: u32, names: &[&str], names_from: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + names_from);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!("{name}: {s:?} is not a number{}", if names.is_empty() { "" } else { " or a name" })
        })?;
        if v < lo || v > hi {
            return Err(format!("{name}: {v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: step {s:?} must be a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if a > b {
            return Err(format!("{name}: range {a}-{b} runs backwards"));
        }
        for v in (a..=b).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest) = match fields.as_slice() {
            [sec, rest @ ..] if fields.len() == 6 => (Some(*sec), rest),
            all => (None, all),
        };
        let [min, hour, dom, mon, dow] = rest else {
            return Err(format!(
                "{text:?} has {} fields; a schedule has five: minute hour day-of-month month day-of-week (e.g. \"0 2 * * *\")",
                fields.len()
            ));
        };
        let seconds = match sec {
            Some(s) => field(s, "second", 0, 59, &[], 0)?,
            None => 1,
        };
        let mut weekdays = field(dow, "day of week", 0, 7, &WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Schedule {
            text: text.to_string(),
            seconds,
            minutes: field(min, "minute", 0, 59, &[], 0)?,
            hours: field(hour, "hour", 0, 23, &[], 0)? as u32,
            days: field(dom, "day of month", 1, 31, &[], 0)? as u32,
            months: field(mon, "month", 1, 12, &MONTHS, 1)? as u16,
            weekdays: weekdays as u8,
            days_restricted: *dom != "*",
            weekdays_restricted: *dow != "*",
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, t: NaiveDateTime) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// Whether the schedule fires at this minute.
    pub fn fires_at(&self, t: NaiveDateTime) -> bool {
        self.months & (1 << t.month()) != 0
            && self.day_matches(t)
            && self.hours & (1 << t.hour()) != 0
            && self.minutes & (1 << t.minute()) != 0
    }

    /// The first moment after `t` at which the schedule fires, within the
    /// next five years (`None`: never, such as `0 0 31 2 *`).
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let minute = t.with_second(0)?.with_nanosecond(0)?;
        if self.fires_at(minute) {
            if let Some(s) = (t.second() + 1..60).find(|s| self.seconds & (1 << s) != 0) {
                return minute.with_second(s);
            }
        }
        let m = self.next_minute_after(minute)?;
        m.with_second(self.seconds.trailing_zeros())
    }

    /// Whether the schedule has a seconds field (finer than cron).
    pub fn has_seconds(&self) -> bool {
        self.seconds != 1
    }

    fn next_minute_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut m = t + Duration::minutes(1);
        let end = t + Duration::days(5 * 366);
        while m < end {
            if self.months & (1 << m.month()) == 0 || !self.day_matches(m) {
                // On to the next day's first minute.
                m = m.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hours & (1 << m.hour()) == 0 {
                m = m.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << m.minute()) != 0 {
                return Some(m);
            }
            m += Duration::minutes(1);
        }
        None
    }
}

/// The values of a bit set from `lo` to `hi`, as systemd lists them
/// (`*` for all, else `02,14`).
fn list(bits: u64, lo: u32, hi: u32, width: usize) -> String {
    let values: Vec<u32> = (lo..=hi).filter(|v| bits & (1 << v) != 0).collect();
    if values.len() as u32 == hi - lo + 1 {
        return "*".into();
    }
    values.iter().map(|v| format!("{v:0width$}")).collect::<Vec<_>>().join(",")
}

impl Schedule {
    /// The same schedule as systemd `OnCalendar=` expressions. Cron fires
    /// on a day matching *either* a restricted day of month or a
    /// restricted day of week, which one systemd expression cannot say:
    /// that case gives two.
    pub fn on_calendar(&self) -> Vec<String> {
        const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        let weekdays = {
            let days: Vec<&str> =
                (0..7).filter(|d| self.weekdays & (1 << d) != 0).map(|d| NAMES[d]).collect();
            if days.len() == 7 {
                String::new()
            } else {
                format!("{} ", days.join(","))
            }
        };
        let time = format!(
            "{}:{}:{}",
            list(self.hours as u64, 0, 23, 2),
            list(self.minutes, 0, 59, 2),
            list(self.seconds, 0, 59, 2)
        );
        let months = list(self.months as u64, 1, 12, 2);
        let days = list(self.days as u64, 1, 31, 2);
        if self.days_restricted && self.weekdays_restricted {
            vec![format!("{weekdays}*-{months}-* {time}"), format!("*-{months}-{days} {time}")]
        } else {
            vec![format!("{weekdays}*-{months}-{days} {time}")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn the_runbooks_schedules_fire_when_they_say() {
        let daily = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(daily.next_after(at("2026-12-02 01:59")), Some(at("2026-12-02 02:00")));
        assert_eq!(daily.next_after(at("2026-12-02 02:00")), Some(at("2026-12-03 02:00")));
        let weekly = Schedule::parse("0 3 * * SUN").unwrap();
        assert_eq!(
            weekly.next_after(at("2026-12-02 12:00")),
            Some(at("2026-12-06 03:00")),
            "Wednesday to Sunday"
        );
        let monthly = Schedule::parse("0 4 1 * *").unwrap();
        assert_eq!(
            monthly.next_after(at("2026-12-01 04:00")),
            Some(at("2027-01-01 04:00")),
            "over the year end"
        );
        assert_eq!(
            Schedule::parse("0 0 29 2 *").unwrap().next_after(at("2026-03-01 00:00")),
            Some(at("2028-02-29 00:00"))
        );
        assert_eq!(Schedule::parse("0 0 31 2 *").unwrap().next_after(at("2026-03-01 00:00")), None, "never");
    }

    #[test]
    fn a_sixth_field_in_front_gives_seconds() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        let every5 = Schedule::parse("*/5 * * * * *").unwrap();
        assert!(every5.has_seconds());
        assert_eq!(every5.next_after(t("2026-12-02 10:00:03")), Some(t("2026-12-02 10:00:05")));
        assert_eq!(every5.next_after(t("2026-12-02 10:00:57")), Some(t("2026-12-02 10:01:00")));
        let at30 = Schedule::parse("30 0 2 * * *").unwrap();
        assert_eq!(at30.next_after(t("2026-12-02 02:00:30")), Some(t("2026-12-03 02:00:30")));
        assert_eq!(at30.on_calendar(), ["*-*-* 02:00:30"]);
        // Five fields fire at second 0, also from inside a matching minute.
        let daily = Schedule::parse("0 2 * * *").unwrap();
        assert!(!daily.has_seconds());
        assert_eq!(daily.next_after(t("2026-12-02 02:00:00")), Some(t("2026-12-03 02:00:00")));
        assert_eq!(daily.next_after(t("2026-12-02 01:59:59")), Some(t("2026-12-02 02:00:00")));
        assert!(Schedule::parse("60 * * * * *").unwrap_err().contains("second: 60 is outside 0-59"));
    }

    #[test]
    fn lists_ranges_steps_names_and_sunday_as_seven() {
        let s = Schedule::parse("*/15 8-18/2 * JAN-MAR,DEC 1-5").unwrap();
        assert!(s.fires_at(at("2026-12-02 08:45")));
        assert!(!s.fires_at(at("2026-12-02 09:00")), "odd hour");
        assert!(!s.fires_at(at("2026-12-06 08:00")), "Sunday");
        assert!(!s.fires_at(at("2026-06-02 08:00")), "June");
        assert_eq!(
            Schedule::parse("0 3 * * 7").unwrap(),
            Schedule { text: "0 3 * * 7".into(), ..Schedule::parse("0 3 * * 0").unwrap() }
        );
        // Day of month and day of week both given: either fires (cron).
        let either = Schedule::parse("0 0 1 * MON").unwrap();
        assert!(either.fires_at(at("2026-12-01 00:00")) && either.fires_at(at("2026-12-07 00:00")));
    }

    #[test]
    fn systemd_calendar_expressions_say_the_same() {
        let cal = |s: &str| Schedule::parse(s).unwrap().on_calendar();
        assert_eq!(cal("0 2 * * *"), ["*-*-* 02:00:00"]);
        assert_eq!(cal("0 3 * * SUN"), ["Sun *-*-* 03:00:00"]);
        assert_eq!(cal("0 4 1 * *"), ["*-*-01 04:00:00"]);
        assert_eq!(cal("*/30 9-11 * JAN,JUL MON-FRI"), ["Mon,Tue,Wed,Thu,Fri *-01,07-* 09,10,11:00,30:00"]);
        assert_eq!(cal("0 0 1 * MON"), ["Mon *-*-* 00:00:00", "*-*-01 00:00:00"], "cron's either-day rule");
    }

    #[test]
    fn mistakes_name_their_field() {
        for (text, says) in [
            ("0 2 * *", "has 4 fields"),
            ("60 2 * * *", "minute: 60 is outside 0-59"),
            ("0 24 * * *", "hour: 24 is outside 0-23"),
            ("0 2 0 * *", "day of month: 0 is outside 1-31"),
            ("0 2 * 13 *", "month: 13 is outside 1-12"),
            ("0 2 * * SUNDAY", "day of week: \"SUNDAY\" is not a number or a name"),
            ("0 5-2 * * *", "hour: range 5-2 runs backwards"),
            ("*/0 2 * * *", "minute: step \"0\" must be a positive number"),
        ] {
            let err = Schedule::parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
