//! Where "now" comes from. Everything that stamps or compares times (session
//! heartbeats, deletion markers, snapshot times, retention, `--at`) asks a
//! [`Clock`] handed to it, never the system directly, so tests can play a
//! host whose clock is wrong and plans can be run over years of simulated
//! time.
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The machine's clock moved by a fixed amount: a host whose clock is off.
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock(pub Duration);

impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z").unwrap().with_timezone(&Utc);
        let c = ManualClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(Duration::hours(25));
        assert_eq!(c.now(), t0 + Duration::hours(25));
        let skewed = SkewedClock(Duration::hours(-2));
        assert!(skewed.now() < SystemClock.now() - Duration::minutes(119));
    }
}
