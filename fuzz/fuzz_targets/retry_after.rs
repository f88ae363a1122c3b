//! The upstream's `Retry-After` (`upstream::retry::parse_retry_after`) for any
//! header value bytes, and the back-off that honours it.
//!
//! Properties: delta-seconds give exactly that many seconds; an HTTP date gives
//! at most its distance from now; anything else is ignored (`None`), never a
//! panic; a parsed value is always a floor of the retry delay.
#![no_main]

use std::time::{Duration, SystemTime};

use http::HeaderValue;
use inletd::upstream::retry::{parse_retry_after, RetryPolicy, MAX_RETRY_AFTER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return; // not a header value at all: the HTTP stack refuses it first
    };
    let parsed = parse_retry_after(&value);
    let text = value.to_str().ok().map(str::trim);
    // Delta-seconds: all digits, however many (too many for u64 is still "long").
    let digits = text.filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
    let seconds = digits.map(|t| t.parse::<u64>().unwrap_or(u64::MAX));
    let date = text.and_then(|t| httpdate::parse_http_date(t).ok());
    if let Some(got) = parsed {
        assert!(got <= MAX_RETRY_AFTER, "{got:?} is past the one-day clamp");
    }
    match (seconds, date) {
        (Some(secs), _) => assert_eq!(
            parsed,
            Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
        ),
        (None, Some(when)) => {
            let most = when
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(MAX_RETRY_AFTER);
            let got = parsed.expect("an HTTP date was ignored");
            // Read a moment after `parsed`, so the date is no farther now.
            assert!(got >= most, "{got:?} < {most:?}");
        }
        (None, None) => assert_eq!(parsed, None, "{text:?}"),
    }
    if let Some(floor) = parsed {
        let policy = RetryPolicy::new(2, Duration::from_millis(1), Duration::from_millis(4));
        let delay = policy.delay(0, Some(floor)).expect("a first retry exists");
        assert!(delay >= floor, "Retry-After is a floor");
    }
});
