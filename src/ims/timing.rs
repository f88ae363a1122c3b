//! The token provider's clocks: when a token is refreshed and stops being
//! handed out, how IMS failures are retried and cooled down, and how often an
//! upstream rejection may force a refresh. Defaults suit Adobe IMS.

use std::time::Duration;

/// A token is refreshed when this share of its lifetime has passed.
pub(super) const REFRESH_AT: f64 = 0.8;
/// A token is no longer handed out in the last tenth of its lifetime (at
/// most the last minute), so a request that takes it still arrives in time.
pub(super) const USABLE_MARGIN_SHARE: f64 = 0.1;
pub(super) const USABLE_MARGIN_MAX: Duration = Duration::from_secs(60);

/// The provider's clocks. The defaults suit Adobe IMS; tests shrink them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// The longest one request to IMS may take.
    pub attempt_timeout: Duration,
    /// Retries of an unavailable IMS within one fetch, with jittered
    /// exponential back-off between `retry_min` and `retry_max`.
    pub retries: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// After a fetch failed (retries included), the next one waits this long,
    /// doubling with each failure in a row up to `failure_cooldown_max`;
    /// callers without a usable token get the failure meanwhile.
    pub failure_cooldown_min: Duration,
    pub failure_cooldown_max: Duration,
    /// After IMS refused the credentials, the next fetch waits this long.
    pub refusal_cooldown: Duration,
    /// At most one refresh per this long because the upstream rejected a
    /// token (a 401): a token that keeps being refused causes no storm.
    pub reject_cooldown: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            attempt_timeout: Duration::from_secs(10),
            retries: 3,
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            failure_cooldown_min: Duration::from_secs(1),
            failure_cooldown_max: Duration::from_secs(60),
            refusal_cooldown: Duration::from_secs(60),
            reject_cooldown: Duration::from_secs(30),
        }
    }
}

/// `failure_cooldown_min` doubled per failure in a row, capped, with ±20 %
/// jitter so many inletd instances do not return to IMS in step.
pub(super) fn failure_cooldown(timing: &Timing, streak: u32) -> Duration {
    let doubled = timing
        .failure_cooldown_min
        .saturating_mul(1u32 << streak.saturating_sub(1).min(16));
    let capped = doubled.min(timing.failure_cooldown_max);
    capped.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_cool_downs_double_up_to_the_cap_with_jitter() {
        let timing = Timing::default();
        for (streak, base) in [(1, 1), (2, 2), (3, 4), (7, 60), (u32::MAX, 60)] {
            let wait = failure_cooldown(&timing, streak);
            let base = Duration::from_secs(base);
            assert!(
                wait >= base.mul_f64(0.8) && wait <= base.mul_f64(1.2),
                "{streak}: {wait:?}"
            );
        }
    }
}
