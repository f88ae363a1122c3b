//! When to resend: exponential back-off with full jitter (the schedule comes
//! from `backon`), and the upstream's `Retry-After`.

use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use backon::{BackoffBuilder, ExponentialBuilder};

/// The longest `Retry-After` inletd passes on to a producer: beyond a day a
/// value is an upstream bug, not advice.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The retry schedule shared by every batch.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    schedule: ExponentialBuilder,
    /// The largest delay of the schedule: inletd's own estimate of "later".
    max: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32, initial: Duration, max: Duration) -> RetryPolicy {
        let schedule = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_max_times(max_retries as usize);
        RetryPolicy { schedule, max }
    }

    /// The delay before retry number `retry` of spooled messages, which have
    /// no retry limit (only `spool_max_age`): the same full-jitter schedule,
    /// its ceiling capped at `retry_max_backoff` for ever after.
    pub fn capped_delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        // Past 32 doublings every ceiling is the cap; no need to walk further.
        let ceiling = self
            .schedule
            .without_max_times()
            .build()
            .nth(retry.min(32) as usize)
            .unwrap_or(self.max);
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        retry_after.map_or(jittered, |floor| floor.max(jittered))
    }

    /// The delay before retry number `retry` (0 for the first), or `None` when
    /// the retries are used up. Full jitter: uniform in `[0, ceiling)`, where the
    /// ceiling doubles per retry; a `Retry-After` from the upstream is a floor.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let ceiling = self.schedule.build().nth(retry as usize)?;
        let jittered = ceiling.mul_f64(rand::random::<f64>());
        Some(retry_after.map_or(jittered, |floor| floor.max(jittered)))
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`];
/// garbage and negative numbers are no hint at all.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let after = if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        // All digits but too long for u64 is still "very long".
        Duration::from_secs(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let when = httpdate::parse_http_date(text).ok()?;
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` for a producer whose message ran out of retries on 429:
/// the upstream's hint, or else the longest back-off; never zero.
pub fn hint(upstream: Option<Duration>, policy: &RetryPolicy) -> Duration {
    upstream
        .unwrap_or(policy.max)
        .clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_and_stop_after_max_retries() {
        let p = RetryPolicy::new(3, Duration::from_millis(100), Duration::from_millis(250));
        for _ in 0..200 {
            assert!(p.delay(0, None).unwrap() < Duration::from_millis(100));
            assert!(p.delay(1, None).unwrap() < Duration::from_millis(200));
            assert!(
                p.delay(2, None).unwrap() < Duration::from_millis(250),
                "capped"
            );
        }
        assert_eq!(p.delay(3, None), None);
    }

    #[test]
    fn spooled_delays_never_run_out_and_stay_under_the_cap() {
        let p = RetryPolicy::new(2, Duration::from_millis(100), Duration::from_millis(250));
        for retry in [0, 1, 2, 3, 50, u32::MAX] {
            let d = p.capped_delay(retry, None);
            assert!(d < Duration::from_millis(250), "{retry}: {d:?}");
        }
        assert_eq!(
            p.capped_delay(9, Some(Duration::from_secs(3))),
            Duration::from_secs(3),
            "Retry-After is a floor"
        );
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let p = RetryPolicy::new(1, Duration::from_millis(1000), Duration::from_secs(1));
        let samples: Vec<_> = (0..500).map(|_| p.delay(0, None).unwrap()).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(250)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(750)));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(10));
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("3")),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }

    #[test]
    fn absurd_retry_after_values_are_clamped_or_ignored() {
        let parse = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s));
        assert_eq!(parse("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("99999999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse("-5"), None);
        assert_eq!(parse("1.5"), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("Thu, 32 Foo 2020"), None);
        // The policy takes any floor without overflow.
        let p = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(10));
        assert_eq!(p.delay(0, Some(Duration::MAX)), Some(Duration::MAX));
    }

    #[test]
    fn the_final_429_hint_is_the_upstreams_or_the_longest_back_off() {
        let p = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_secs(5));
        assert_eq!(
            hint(Some(Duration::from_secs(7)), &p),
            Duration::from_secs(7)
        );
        assert_eq!(hint(None, &p), Duration::from_secs(5));
        assert_eq!(hint(Some(Duration::ZERO), &p), Duration::from_secs(1));
        assert_eq!(hint(Some(Duration::MAX), &p), MAX_RETRY_AFTER);
    }
}
