//! The IMS token provider's metrics, read from the provider at each scrape
//! (so they need no hook in the provider): fetches by result, seconds until
//! the current token expires, and whether refreshing is failing. Registered
//! up front like every family (all 0 where inletd holds no IMS credentials),
//! so dashboards and alerts find them on every instance.

use metrics::{counter, gauge, Unit};

use crate::ims::{FetchResult, TokenProvider};

pub const IMS_TOKEN_FETCHES: &str = "inletd_ims_token_fetches_total";
pub const IMS_TOKEN_EXPIRY: &str = "inletd_ims_token_expiry_seconds";
pub const IMS_TOKEN_REFRESH_FAILING: &str = "inletd_ims_token_refresh_failing";

/// Describes and registers the families at 0 (call under the owning recorder, once).
pub(super) fn register() {
    metrics::describe_counter!(
        IMS_TOKEN_FETCHES,
        "Token requests to Adobe IMS, by result (ok, refused, unavailable, bad_answer)."
    );
    metrics::describe_gauge!(
        IMS_TOKEN_EXPIRY,
        Unit::Seconds,
        "Seconds until the current IMS access token expires; 0 without one."
    );
    metrics::describe_gauge!(
        IMS_TOKEN_REFRESH_FAILING,
        "1 while the last IMS token fetch failed and none has succeeded since, else 0."
    );
    for result in FetchResult::ALL {
        counter!(IMS_TOKEN_FETCHES, "result" => result.as_str()).absolute(0);
    }
    gauge!(IMS_TOKEN_EXPIRY).set(0.0);
    gauge!(IMS_TOKEN_REFRESH_FAILING).set(0.0);
}

/// Sets every series from `provider`'s state now (call under the owning recorder).
pub(super) fn collect(provider: &TokenProvider) {
    let stats = provider.stats();
    for result in FetchResult::ALL {
        counter!(IMS_TOKEN_FETCHES, "result" => result.as_str()).absolute(stats.fetches(result));
    }
    gauge!(IMS_TOKEN_EXPIRY).set(provider.seconds_until_expiry().unwrap_or(0.0));
    let failing = provider.last_failure().is_some();
    gauge!(IMS_TOKEN_REFRESH_FAILING).set(if failing { 1.0 } else { 0.0 });
}
