//! Binance's kline intervals (`1s` ... `1M`) and the calendar behind them: every bucket is UTC,
//! weeks start on Monday, months on the first. Pure arithmetic on Unix milliseconds.

use super::BinanceError;
use actix_web::http::StatusCode;

const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// 1970-01-05, the first Monday after the epoch: weeks are counted from it.
const FIRST_MONDAY: u64 = 4 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Buckets of a fixed length (ms) counted from `origin`.
    Fixed { length: u64, origin: u64 },
    /// Calendar months.
    Month,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval, BinanceError> {
        let fixed = |length| Ok(Interval::Fixed { length, origin: 0 });
        match s {
            "1s" => fixed(SECOND),
            "1m" => fixed(MINUTE),
            "3m" => fixed(3 * MINUTE),
            "5m" => fixed(5 * MINUTE),
            "15m" => fixed(15 * MINUTE),
            "30m" => fixed(30 * MINUTE),
            "1h" => fixed(HOUR),
            "2h" => fixed(2 * HOUR),
            "4h" => fixed(4 * HOUR),
            "6h" => fixed(6 * HOUR),
            "8h" => fixed(8 * HOUR),
            "12h" => fixed(12 * HOUR),
            "1d" => fixed(DAY),
            "3d" => fixed(3 * DAY),
            "1w" => Ok(Interval::Fixed { length: 7 * DAY, origin: FIRST_MONDAY }),
            "1M" => Ok(Interval::Month),
            "" => Err(BinanceError::mandatory("interval")),
            _ => Err(BinanceError::new(StatusCode::BAD_REQUEST, -1120, "Invalid interval.")),
        }
    }

    /// The start of the bucket holding `t`.
    pub fn open_time(self, t: u64) -> u64 {
        match self {
            Interval::Fixed { length, origin } if t >= origin => origin + (t - origin) / length * length,
            Interval::Fixed { origin, .. } => origin,
            Interval::Month => {
                let (y, m, _) = civil_from_days(t / DAY);
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// The start of the bucket after the one that starts at `open`.
    pub fn next(self, open: u64) -> u64 {
        match self {
            Interval::Fixed { length, .. } => open + length,
            Interval::Month => {
                let (y, m, _) = civil_from_days(open / DAY);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY
            }
        }
    }

    /// The store's buckets to read this interval from: its own, or days for months (merged).
    pub fn store_buckets(self) -> tandem_store::Buckets {
        match self {
            Interval::Fixed { length, origin } => tandem_store::Buckets { origin, interval: length },
            Interval::Month => tandem_store::Buckets { origin: 0, interval: DAY },
        }
    }
}

/// Days since 1970-01-01 as (year, month, day), proleptic Gregorian (H. Hinnant's algorithm;
/// no calendar crate is a dependency, and this is the one date computation the API needs).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// (year, month, day) as days since 1970-01-01; years from 1970 on.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-02-29T13:45:10.123Z
    const LEAP_DAY: u64 = 1_709_214_310_123;

    #[test]
    fn fixed_buckets_are_aligned_to_the_epoch() {
        let m = Interval::parse("1m").unwrap();
        assert_eq!(m.open_time(LEAP_DAY), 1_709_214_300_000);
        assert_eq!(m.next(1_709_214_300_000), 1_709_214_360_000);
        assert_eq!(Interval::parse("1d").unwrap().open_time(LEAP_DAY), 1_709_164_800_000);
    }

    #[test]
    fn weeks_start_on_monday() {
        // Monday 2024-02-26.
        assert_eq!(Interval::parse("1w").unwrap().open_time(LEAP_DAY), 1_708_905_600_000);
        assert_eq!(Interval::parse("1w").unwrap().open_time(1_708_905_600_000), 1_708_905_600_000);
    }

    #[test]
    fn months_follow_the_calendar() {
        let month = Interval::parse("1M").unwrap();
        assert_eq!(month.open_time(LEAP_DAY), 1_706_745_600_000); // 2024-02-01
        assert_eq!(month.next(1_706_745_600_000), 1_709_251_200_000); // 2024-03-01
        assert_eq!(month.next(1_733_011_200_000), 1_735_689_600_000); // 2024-12-01 -> 2025-01-01
        for days in [0, 59, 365, 10_957, 19_782, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn unknown_intervals_are_binance_errors() {
        assert_eq!(Interval::parse("2m").unwrap_err().code, -1120);
        assert_eq!(Interval::parse("1M").unwrap(), Interval::Month);
        assert_eq!(Interval::parse("").unwrap_err().code, -1102);
    }
}
