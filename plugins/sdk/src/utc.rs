//! Moments in UTC as calendar fields, for stage outputs, image names and
//! reports. (A plugin only ever needs UTC, so this avoids pulling a date
//! library with time-zone data into every component.)
//!
//! ```
//! use capstan_plugin::utc::Utc;
//!
//! let at = Utc::from_unix(1_795_653_984);
//! assert_eq!(at.rfc3339(), "2026-11-26T00:46:24Z");
//! assert_eq!(at.compact(), "20261126T004624Z");
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Utc {
    /// Year (proleptic Gregorian).
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
}

impl Utc {
    /// The moment `secs` seconds after 1970-01-01T00:00:00Z.
    pub fn from_unix(secs: u64) -> Utc {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rest = (secs % 86_400) as u32;
        Utc {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest % 3600 / 60,
            second: rest % 60,
        }
    }

    /// `at` in UTC (times before 1970 count as the epoch).
    pub fn from_system_time(at: SystemTime) -> Utc {
        Utc::from_unix(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Now, from the host's clock.
    pub fn now() -> Utc {
        Utc::from_system_time(SystemTime::now())
    }

    /// RFC 3339: `2026-11-26T10:15:00Z`.
    pub fn rfc3339(&self) -> String {
        let Utc {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }

    /// Compact, for names: `20261126T101500Z`.
    pub fn compact(&self) -> String {
        let Utc {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}Z")
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_edges() {
        assert_eq!(Utc::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc::from_unix(951_782_400).compact(), "20000229T000000Z");
        assert_eq!(
            Utc::from_unix(4_102_444_799).rfc3339(),
            "2099-12-31T23:59:59Z"
        );
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
