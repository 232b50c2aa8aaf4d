//! The wall clock a plan's schedule and retention are read on: a named
//! zone of the system's tz database (`timezone = "Asia/Tokyo"`), or the
//! machine's own. Read from /usr/share/zoneinfo (tz-rs), so no table is
//! compiled in and the zone follows the system's tzdata updates.
//!
//! Local times that do not exist (skipped by a DST change) are taken as
//! the first instant after the gap; those that exist twice, as the first of
//! the two. A daily slot inside either therefore fires exactly once.
use std::sync::Arc;

use chrono::{DateTime, Duration, Local, NaiveDateTime, TimeZone, Utc};

#[derive(Clone, Debug, Default)]
pub enum Zone {
    /// The machine's zone (TZ, else /etc/localtime).
    #[default]
    Machine,
    Named {
        name: String,
        tz: Arc<tz::TimeZone>,
    },
}

impl PartialEq for Zone {
    fn eq(&self, other: &Zone) -> bool {
        self.name() == other.name()
    }
}

impl Zone {
    /// A zone of the tz database by name (`Europe/Berlin`, `UTC`).
    pub fn named(name: &str) -> Result<Zone, String> {
        let plain = !name.is_empty()
            && !name.starts_with('/')
            && name.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
        if !plain {
            return Err(format!("{name:?} is not a time zone name like \"Asia/Tokyo\""));
        }
        let tz = tz::TimeZone::from_posix_tz(name).map_err(|_| {
            format!("unknown time zone {name:?} (names are those under /usr/share/zoneinfo, like \"Asia/Tokyo\"; the tzdata package has them)")
        })?;
        Ok(Zone::Named { name: name.to_string(), tz: Arc::new(tz) })
    }

    /// Its name; `None` for the machine's.
    pub fn name(&self) -> Option<&str> {
        match self {
            Zone::Machine => None,
            Zone::Named { name, .. } => Some(name),
        }
    }

    /// The wall-clock time at instant `t`.
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Machine => t.with_timezone(&Local).naive_local(),
            Zone::Named { tz, .. } => t.naive_utc() + Duration::seconds(i64::from(offset(tz, t.timestamp()))),
        }
    }

    /// The instant wall-clock time `t` names (see the module's rule for
    /// gaps and folds).
    pub fn instant(&self, t: NaiveDateTime) -> DateTime<Utc> {
        // A gap is at most a few hours: stepping by half hours leaves it.
        let mut t = t;
        for _ in 0..8 {
            if let Some(x) = self.exact(t) {
                return x;
            }
            t += Duration::minutes(30);
        }
        t.and_utc()
    }

    /// The earliest instant whose wall-clock time is `t`, if any.
    fn exact(&self, t: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Machine => Local.from_local_datetime(&t).earliest().map(|x| x.with_timezone(&Utc)),
            Zone::Named { tz, .. } => {
                let as_utc = t.and_utc().timestamp();
                // The offsets in force around it: one of them is t's.
                let mut found: Option<i64> = None;
                for probe in [as_utc - 86_400, as_utc, as_utc + 86_400] {
                    let o = i64::from(offset(tz, probe));
                    let u = as_utc - o;
                    if i64::from(offset(tz, u)) == o {
                        found = Some(found.map_or(u, |f| f.min(u)));
                    }
                }
                found.and_then(|u| DateTime::from_timestamp(u, t.and_utc().timestamp_subsec_nanos()))
            }
        }
    }
}

fn offset(tz: &tz::TimeZone, unix: i64) -> i32 {
    tz.find_local_time_type(unix).map_or(0, |t| t.ut_offset())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        at(s).and_utc()
    }

    /// The instants a plan's schedule fires at over `[from, to)`, in `zone`.
    fn slots(s: &Schedule, zone: &Zone, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(zone.local(t)).map(|l| zone.instant(l)) {
            if next >= to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    #[test]
    fn named_zones_convert_both_ways() {
        let tokyo = Zone::named("Asia/Tokyo").unwrap();
        assert_eq!(tokyo.local(utc("2026-12-02 17:00")), at("2026-12-03 02:00"));
        assert_eq!(tokyo.instant(at("2026-12-03 02:00")), utc("2026-12-02 17:00"));
        let ny = Zone::named("America/New_York").unwrap();
        assert_eq!(ny.instant(at("2026-07-01 02:00")), utc("2026-07-01 06:00"), "EDT");
        assert_eq!(ny.instant(at("2026-12-01 02:00")), utc("2026-12-01 07:00"), "EST");
        for bad in ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Asia/Tokyo; rm"] {
            assert!(Zone::named(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_daily_slot_fires_once_on_both_dst_changes_in_two_zones() {
        let daily_0230 = Schedule::parse("30 2 * * *").unwrap();
        // New York: 2026-03-08 02:00 → 03:00 (02:30 does not exist),
        // 2026-11-01 02:00 → 01:00 (01:30 happens twice).
        let ny = Zone::named("America/New_York").unwrap();
        let march = slots(&daily_0230, &ny, utc("2026-03-06 12:00"), utc("2026-03-10 12:00"));
        assert_eq!(
            march,
            [
                utc("2026-03-07 07:30"),
                utc("2026-03-08 07:00"),
                utc("2026-03-09 06:30"),
                utc("2026-03-10 06:30")
            ],
            "the skipped 02:30 fires at 03:00 EDT, once"
        );
        let daily_0130 = Schedule::parse("30 1 * * *").unwrap();
        let november = slots(&daily_0130, &ny, utc("2026-10-31 12:00"), utc("2026-11-02 12:00"));
        assert_eq!(november, [utc("2026-11-01 05:30"), utc("2026-11-02 06:30")], "01:30 twice, fired once");
        // Berlin changes on other dates (2026-03-29, 2026-10-25), at 02:00/03:00.
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let spring = slots(&daily_0230, &berlin, utc("2026-03-28 12:00"), utc("2026-03-30 12:00"));
        assert_eq!(spring, [utc("2026-03-29 01:00"), utc("2026-03-30 00:30")]);
        let autumn = slots(&daily_0230, &berlin, utc("2026-10-24 12:00"), utc("2026-10-26 12:00"));
        assert_eq!(autumn, [utc("2026-10-25 00:30"), utc("2026-10-26 01:30")], "the first 02:30 of two");
    }

    #[test]
    fn retention_counts_days_on_the_plans_wall_clock() {
        use crate::retention::{decide, Keep};
        // 23:00 and 01:00 in Tokyo: two Tokyo days, one UTC day.
        let times = [utc("2026-12-02 16:00"), utc("2026-12-02 14:00")];
        let keep = Keep { daily: Some(7), ..Keep::default() };
        let tokyo = Zone::named("Asia/Tokyo").unwrap();
        let utc_zone = Zone::named("UTC").unwrap();
        let kept = |z: &Zone| decide(&times, &keep, &|t| z.local(t)).iter().filter(|r| !r.is_empty()).count();
        assert_eq!(kept(&tokyo), 2);
        assert_eq!(kept(&utc_zone), 1, "one UTC day: the newest only");
    }
}
