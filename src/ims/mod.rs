//! Credentials held by inletd: Adobe IMS OAuth server-to-server
//! access tokens, fetched, cached and refreshed for the producers that send
//! no `Authorization` of their own.
//!
//! - [`config`]: [`ImsConfig`], its validation, and where the secret may come
//!   from ([`resolve_secret`]); the secret never prints.
//! - [`fetch`]: one token request (`POST {ims_token_url}`, form-encoded) and
//!   the reading of IMS's answer, behind the [`TokenSource`] seam.
//! - [`provider`]: the [`TokenProvider`]: single-flight, cached, refreshed at
//!   80 % of the lifetime, invalidated once per upstream 401, failures cooled down.
//! - [`timing`]: the [`Timing`] of refreshes, retries and cool-downs.
//! - [`token`]: the [`Token`], the [`TokenError`] and the fetch counters.
//!
//! This module knows nothing of batches or producers. How the daemon uses it:
//!
//! 1. At start (`crate::config::ims` built the [`ImsConfig`]),
//!    `Upstream::new` builds the provider ([`TokenProvider::for_ims`]) and the
//!    app runs [`TokenProvider::run`] as a supervised task: it fetches at once
//!    and keeps a token fresh, and `/readyz` follows
//!    [`TokenProvider::has_token`]. Start-up never waits for IMS.
//! 2. Per managed upstream request, at send time (never when buffering),
//!    `Upstream::exchange_for`: [`TokenProvider::token`], then
//!    [`TokenProvider::headers`]. An error becomes the producers' answer (its
//!    text says why; `Refused` maps to 401/403, the others to 503) and
//!    nothing goes upstream.
//! 3. On an upstream 401: [`TokenProvider::invalidate`] with the token sent,
//!    then `token()` again: a different token ([`Token::same_as`]) is resent
//!    once; the same token back means a refresh is not allowed yet, so the
//!    producers get the 401.
//! 4. Metrics (`crate::metrics`, at each scrape): [`TokenProvider::stats`]
//!    (fetches by [`FetchResult`]), [`TokenProvider::seconds_until_expiry`],
//!    and [`TokenProvider::last_failure`] for the alert while refreshing fails.
//!
//! Tests of the provider over HTTP use the AEP stand-in's token endpoint
//! (`endpoint`, `http_tests`).

pub mod config;
pub mod fetch;
pub mod provider;
pub mod timing;
pub mod token;

#[cfg(test)]
mod endpoint;
#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod provider_tests;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

pub use config::{not_allowed_here, resolve_secret, secret_shown, ImsConfig, ImsConfigError};
pub use config::{SecretError, DEFAULT_TOKEN_URL, SECRET_ENV, SECRET_FILE_KEY};
pub use fetch::{ims_client, HttpSource, TokenSource};
pub use provider::TokenProvider;
pub use timing::Timing;
pub use token::{FetchResult, Grant, Stats, Token, TokenError};

/// The org header sent with a managed request.
pub const ORG_HEADER: &str = "x-gw-ims-org-id";
/// The API key header (the client id) sent with a managed request.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The fixed part of a managed request's headers, checked once.
#[derive(Clone, Debug)]
pub struct ManagedHeaders {
    org_id: HeaderValue,
    api_key: HeaderValue,
}

impl ManagedHeaders {
    /// The headers for `config`'s org and client id.
    pub fn new(config: &ImsConfig) -> Result<ManagedHeaders, ImsConfigError> {
        let value = |key: &'static str, text: &str| {
            HeaderValue::from_str(text).map_err(|e| ImsConfigError {
                key,
                reason: e.to_string(),
            })
        };
        Ok(ManagedHeaders {
            org_id: value("ims_org_id", &config.org_id)?,
            api_key: value("ims_client_id", &config.client_id)?,
        })
    }

    /// `Authorization: Bearer <token>` (marked sensitive),
    /// `x-gw-ims-org-id: {ims_org_id}` and `x-api-key: {ims_client_id}`.
    pub fn for_token(&self, token: &Token) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(AUTHORIZATION, token.authorization().clone());
        headers.insert(HeaderName::from_static(ORG_HEADER), self.org_id.clone());
        headers.insert(
            HeaderName::from_static(API_KEY_HEADER),
            self.api_key.clone(),
        );
        headers
    }
}

impl TokenProvider {
    /// A provider asking `config.token_url` for tokens over its own client
    /// ([`ims_client`]).
    pub fn for_ims(config: &ImsConfig, timing: Timing) -> Result<TokenProvider, ProviderError> {
        let headers = ManagedHeaders::new(config)?;
        let client = ims_client(timing.attempt_timeout)?;
        Ok(TokenProvider::new(
            HttpSource::new(config, client),
            headers,
            timing,
        ))
    }
}

/// Why a provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Config(#[from] ImsConfigError),
    #[error("cannot build the IMS client: {0}")]
    Client(#[from] reqwest::Error),
}
