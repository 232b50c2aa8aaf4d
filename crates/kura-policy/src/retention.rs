//! Which snapshots a retention policy keeps, as a pure function of their
//! times: no clock, no repository. The semantics and the reasons for them
//! are in docs/retention.md; in short:
//!
//! * Each rule counts *periods that have a snapshot*, newest first, and
//!   keeps the newest snapshot of each: `daily = 7` keeps the newest
//!   snapshot of each of the 7 most recent days that have one. A day with
//!   no backup does not use up a slot, so failed backups never make
//!   retention delete more.
//! * Periods are calendar periods in the caller's local time (the caller
//!   converts; a plan's `timezone`), and every rule has its own kind of
//!   period: ISO week 2026-W01 and January 2026 are different keys, never
//!   equal by accident.
//! * `within` keeps everything younger than the duration, measured from
//!   the newest snapshot, not from now: a host that stopped backing up keeps
//!   its history.
//! * The newest snapshot is always kept, whatever the rules say.
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike, Utc};

/// How many of each to keep; `None` keeps none by that rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<chrono::Duration>,
}

impl Keep {
    /// Whether any rule is set: a policy that keeps nothing but the newest
    /// is almost always a mistake.
    pub fn is_empty(&self) -> bool {
        *self == Keep::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Newest,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Newest => "newest",
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
            Rule::Within => "within",
        }
    }
}

/// Why a snapshot is kept: `daily 3/7` is the third of seven daily slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    pub rule: Rule,
    pub nth: u32,
    pub of: u32,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule {
            Rule::Newest | Rule::Within => f.write_str(self.rule.name()),
            r => write!(f, "{} {}/{}", r.name(), self.nth, self.of),
        }
    }
}

/// The calendar period a rule puts a snapshot in. One variant per rule, so
/// periods of different rules can never be equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hour(i32, u32, u32, u32),
    Day(i32, u32, u32),
    /// ISO 8601 week-numbering year and week: the days of 2026-W01 that
    /// fall in December 2025 belong to it, not to 2025's last week.
    Week(i32, u32),
    Month(i32, u32),
    Year(i32),
}

fn period(rule: Rule, t: NaiveDateTime) -> Option<Period> {
    Some(match rule {
        Rule::Hourly => Period::Hour(t.year(), t.month(), t.day(), t.hour()),
        Rule::Daily => Period::Day(t.year(), t.month(), t.day()),
        Rule::Weekly => {
            let w = t.iso_week();
            Period::Week(w.year(), w.week())
        }
        Rule::Monthly => Period::Month(t.year(), t.month()),
        Rule::Yearly => Period::Year(t.year()),
        _ => return None,
    })
}

/// For each snapshot (given by its time), whether it is kept and by which
/// rules, in the order given. `local` turns a time into the wall-clock time
/// the periods are counted in.
pub fn decide(
    times: &[DateTime<Utc>],
    keep: &Keep,
    local: &dyn Fn(DateTime<Utc>) -> NaiveDateTime,
) -> Vec<Vec<Reason>> {
    let mut order: Vec<usize> = (0..times.len()).collect();
    // Newest first; equal times in a stable order.
    order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); times.len()];
    let Some(&newest) = order.first() else { return reasons };
    reasons[newest].push(Reason { rule: Rule::Newest, nth: 1, of: 1 });
    if let Some(n) = keep.last {
        for (i, &s) in order.iter().take(n as usize).enumerate() {
            reasons[s].push(Reason { rule: Rule::Last, nth: i as u32 + 1, of: n });
        }
    }
    for (rule, count) in [
        (Rule::Hourly, keep.hourly),
        (Rule::Daily, keep.daily),
        (Rule::Weekly, keep.weekly),
        (Rule::Monthly, keep.monthly),
        (Rule::Yearly, keep.yearly),
    ] {
        let Some(n) = count else { continue };
        let mut last: Option<Period> = None;
        let mut used = 0;
        for &s in &order {
            if used == n {
                break;
            }
            let p = period(rule, local(times[s]));
            if p != last {
                used += 1;
                reasons[s].push(Reason { rule, nth: used, of: n });
                last = p;
            }
        }
    }
    if let Some(d) = keep.within {
        let from = times[newest];
        for &s in &order {
            if from - times[s] <= d {
                reasons[s].push(Reason { rule: Rule::Within, nth: 0, of: 0 });
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate, TimeZone};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn as_utc(t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc()
    }

    /// Europe/Berlin by its rule since 1996: +02:00 from the last Sunday of
    /// March 01:00 UTC to the last Sunday of October 01:00 UTC, else +01:00.
    fn berlin(t: DateTime<Utc>) -> NaiveDateTime {
        let last_sunday = |month: u32| {
            let mut d = NaiveDate::from_ymd_opt(t.year(), month, 31).unwrap();
            while d.weekday() != chrono::Weekday::Sun {
                d = d.pred_opt().unwrap();
            }
            Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).unwrap())
        };
        let summer = t >= last_sunday(3) && t < last_sunday(10);
        t.naive_utc() + Duration::hours(if summer { 2 } else { 1 })
    }

    /// America/New_York since 2007: -04:00 from the second Sunday of March
    /// 07:00 UTC to the first Sunday of November 06:00 UTC, else -05:00.
    fn new_york(t: DateTime<Utc>) -> NaiveDateTime {
        let nth_sunday = |month: u32, n: u32, hour: u32| {
            let mut d = NaiveDate::from_ymd_opt(t.year(), month, 1).unwrap();
            let mut seen = 0;
            loop {
                if d.weekday() == chrono::Weekday::Sun {
                    seen += 1;
                    if seen == n {
                        break;
                    }
                }
                d = d.succ_opt().unwrap();
            }
            Utc.from_utc_datetime(&d.and_hms_opt(hour, 0, 0).unwrap())
        };
        let summer = t >= nth_sunday(3, 2, 7) && t < nth_sunday(11, 1, 6);
        t.naive_utc() - Duration::hours(if summer { 4 } else { 5 })
    }

    fn kept(
        times: &[DateTime<Utc>],
        keep: &Keep,
        local: &dyn Fn(DateTime<Utc>) -> NaiveDateTime,
    ) -> Vec<DateTime<Utc>> {
        let r = decide(times, keep, local);
        let mut k: Vec<_> = times.iter().zip(&r).filter(|(_, r)| !r.is_empty()).map(|(t, _)| *t).collect();
        k.sort();
        k
    }

    /// A snapshot every day at `hh:mm` UTC from `from` for `days` days.
    fn daily_at(from: &str, days: i64, hh: u32, mm: u32) -> Vec<DateTime<Utc>> {
        let d0 = NaiveDate::parse_from_str(from, "%Y-%m-%d").unwrap();
        (0..days)
            .map(|i| Utc.from_utc_datetime(&(d0 + Duration::days(i)).and_hms_opt(hh, mm, 0).unwrap()))
            .collect()
    }

    #[test]
    fn the_runbooks_gfs_policy_over_three_years_keeps_exactly_its_slots() {
        let times = daily_at("2024-01-01", 3 * 366, 2, 0);
        let keep = Keep { daily: Some(7), weekly: Some(4), monthly: Some(12), ..Default::default() };
        let k = kept(&times, &keep, &as_utc);
        let newest = *times.last().unwrap();
        // 7 days, plus the weeks and months not already covered.
        let days: Vec<_> = k.iter().filter(|t| newest - **t < Duration::days(7)).collect();
        assert_eq!(days.len(), 7);
        assert!(k.len() <= 7 + 4 + 12 && k.len() >= 12, "{}", k.len());
        // Every kept monthly is the newest snapshot of its month: the last day.
        let r = decide(&times, &keep, &as_utc);
        for (t, reasons) in times.iter().zip(&r) {
            if reasons.iter().any(|r| r.rule == Rule::Monthly) && t.month() != newest.month() {
                assert_eq!((*t + Duration::days(1)).day(), 1, "{t} is its month's last day");
            }
        }
        assert!(k.iter().all(|t| newest - *t < Duration::days(366)), "nothing older than 12 months");
    }

    #[test]
    fn iso_week_1_and_53_are_weeks_not_months() {
        // 2026-W53 runs Mon 2026-12-28 to Sun 2027-01-03; 2027-W01 starts
        // Mon 2027-01-04. 2020 also had a week 53.
        let times = [
            utc("2026-12-27T10:00:00Z"),
            utc("2026-12-28T10:00:00Z"),
            utc("2027-01-03T10:00:00Z"),
            utc("2027-01-04T10:00:00Z"),
        ];
        let keep = Keep { weekly: Some(3), ..Default::default() };
        let r = decide(&times, &keep, &as_utc);
        let weekly = |i: usize| r[i].iter().find(|r| r.rule == Rule::Weekly).map(|r| r.nth);
        assert_eq!(weekly(3), Some(1), "2027-W01");
        assert_eq!(weekly(2), Some(2), "2026-W53, which holds Jan 3 2027");
        assert_eq!(weekly(1), None, "same week as Jan 3: an older copy");
        assert_eq!(weekly(0), Some(3), "2026-W52");
        // A month rule next to it counts January and December 2026 apart.
        let keep = Keep { monthly: Some(5), ..Default::default() };
        let r = decide(&times, &keep, &as_utc);
        let months: Vec<_> = r.iter().map(|r| r.iter().any(|r| r.rule == Rule::Monthly)).collect();
        assert_eq!(
            months,
            [false, true, false, true],
            "the newest of December (the 28th), the newest of January"
        );
    }

    #[test]
    fn month_ends_and_leap_days_fall_in_their_own_month() {
        let times = [
            utc("2024-02-28T23:00:00Z"),
            utc("2024-02-29T23:30:00Z"),
            utc("2024-03-01T00:10:00Z"),
            utc("2024-03-31T23:59:59Z"),
            utc("2024-04-01T00:00:00Z"),
        ];
        let keep = Keep { monthly: Some(12), daily: Some(1), ..Default::default() };
        let r = decide(&times, &keep, &as_utc);
        let monthly: Vec<_> = r.iter().map(|r| r.iter().any(|r| r.rule == Rule::Monthly)).collect();
        assert_eq!(
            monthly,
            [false, true, false, true, true],
            "Feb 29 closes February, Mar 31 23:59:59 closes March"
        );
    }

    #[test]
    fn dst_changes_in_two_time_zones_keep_one_per_local_day() {
        // Daily at 02:30 local around both changes, in Berlin (UTC+1/+2) and
        // New York (UTC-5/-4): on the spring day 02:30 does not exist and
        // cron runs it at 03:30 (or 01:30 UTC / 07:30 UTC), in autumn it
        // exists twice.
        for (local, hours) in
            [(&berlin as &dyn Fn(DateTime<Utc>) -> NaiveDateTime, [1, 0]), (&new_york, [7, 6])]
        {
            for (start, days) in [("2026-03-20", 20), ("2026-10-20", 20)] {
                let mut times = daily_at(start, days, hours[0], 30);
                times.extend(daily_at(start, days, hours[1], 30));
                let keep = Keep { daily: Some(10), ..Default::default() };
                let r = decide(&times, &keep, local);
                let mut days_kept: Vec<_> = times
                    .iter()
                    .zip(&r)
                    .filter(|(_, r)| !r.is_empty())
                    .map(|(t, _)| local(*t).date())
                    .collect();
                days_kept.sort();
                let n = days_kept.len();
                days_kept.dedup();
                assert_eq!(days_kept.len(), n, "one snapshot per local day: {days_kept:?}");
                assert_eq!(n, 10, "ten local days");
                let expected_last = times.iter().map(|t| local(*t).date()).max().unwrap();
                assert_eq!(*days_kept.last().unwrap(), expected_last);
            }
        }
    }

    #[test]
    fn a_missed_day_does_not_use_a_slot_and_two_a_day_keep_the_newest() {
        let mut times = daily_at("2026-11-01", 10, 2, 0);
        times.remove(5); // Nov 6 failed
        times.push(utc("2026-11-10T14:00:00Z")); // a second, manual, backup on the 10th
        let keep = Keep { daily: Some(7), ..Default::default() };
        let k = kept(&times, &keep, &as_utc);
        let days: Vec<u32> = k.iter().map(|t| t.day()).collect();
        assert_eq!(days, [3, 4, 5, 7, 8, 9, 10], "seven days that have a backup, reaching past the gap");
        assert_eq!(k.last().unwrap().hour(), 14, "the newest of the 10th");
    }

    #[test]
    fn the_newest_is_kept_by_any_policy_and_within_counts_from_it() {
        let times = daily_at("2026-01-01", 30, 2, 0);
        let r = decide(&times, &Keep::default(), &as_utc);
        assert_eq!(r.iter().filter(|r| !r.is_empty()).count(), 1);
        assert_eq!(r[29], [Reason { rule: Rule::Newest, nth: 1, of: 1 }]);
        // Backups stopped a year ago: within 7d still keeps the last week
        // of them.
        let keep = Keep { within: Some(Duration::days(7)), ..Default::default() };
        assert_eq!(kept(&times, &keep, &as_utc).len(), 8, "7 days back from the newest, both ends");
    }

    #[test]
    fn a_changed_schedule_keeps_the_newest_of_each_period_either_way() {
        // Hourly backups for a week, then once a day at 23:00.
        let mut times: Vec<_> =
            (0..24 * 7).map(|h| utc("2026-06-01T00:00:00Z") + Duration::hours(h)).collect();
        times.extend(daily_at("2026-06-08", 7, 23, 0));
        let keep = Keep { daily: Some(10), hourly: Some(3), ..Default::default() };
        let r = decide(&times, &keep, &as_utc);
        for (t, reasons) in times.iter().zip(&r) {
            if reasons.iter().any(|r| r.rule == Rule::Daily) && t.day() <= 7 {
                assert_eq!(t.hour(), 23, "the newest of an hourly day is its 23:00");
            }
        }
        let hourly: Vec<_> =
            times.iter().zip(&r).filter(|(_, r)| r.iter().any(|r| r.rule == Rule::Hourly)).collect();
        assert_eq!(hourly.len(), 3);
    }

    #[test]
    fn reasons_read_as_slots() {
        let times = daily_at("2026-01-01", 3, 2, 0);
        let keep = Keep { daily: Some(7), last: Some(2), ..Default::default() };
        let r = decide(&times, &keep, &as_utc);
        let text: Vec<String> = r[1].iter().map(ToString::to_string).collect();
        assert_eq!(text, ["last 2/2", "daily 2/7"]);
        assert_eq!(r[2][0].to_string(), "newest");
    }
}
