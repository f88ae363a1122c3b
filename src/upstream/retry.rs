//! When to resend: exponential back-off with full jitter (the schedule comes
//! from `backon`), and the upstream's `Retry-After`.

use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use backon::{BackoffBuilder, ExponentialBuilder};

/// The retry schedule shared by every batch.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    schedule: ExponentialBuilder,
}

impl RetryPolicy {
    pub fn new(max_retries: u32, initial: Duration, max: Duration) -> RetryPolicy {
        let schedule = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_max_times(max_retries as usize);
        RetryPolicy { schedule }
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

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
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
}
