//! A stand-in for Adobe IMS's token endpoint, `POST /ims/token/v3`, so
//! inletd's own credentials can be tried offline and tested: one valid client
//! (any other id or secret is `invalid_client`), a chosen token lifetime,
//! failures on demand (the next n requests answer 5xx), a record of every
//! request's form fields, and the tokens it issued, which ingestion can be
//! made to require ([`StandInIms::require_token`]): a missing, unknown,
//! revoked or expired token is answered 401 in AEP's error shape.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::wire::error_response;

/// The path Adobe serves the v3 token endpoint under.
pub const TOKEN_PATH: &str = "/ims/token/v3";

/// The token endpoint's settings (see [`crate::StandInConfig::ims`]).
#[derive(Clone, Debug)]
pub struct StandInIms {
    /// The one client id accepted.
    pub client_id: String,
    /// Its secret (a fake's, compared as sent).
    pub client_secret: String,
    /// The `expires_in` of each token; short ones let refreshes be watched.
    pub expires_in: Duration,
    /// Ingestion requests need `Authorization: Bearer <a token issued here,
    /// not expired, not revoked>`; otherwise 401.
    pub require_token: bool,
}

impl Default for StandInIms {
    fn default() -> Self {
        StandInIms {
            client_id: "standin-client".into(),
            client_secret: "standin-secret".into(),
            expires_in: Duration::from_secs(86_399),
            require_token: false,
        }
    }
}

/// One request the token endpoint received.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub content_type: Option<String>,
    pub raw_body: String,
    pub fields: Vec<(String, String)>,
}

/// What the token endpoint remembers and the faults waiting for it.
#[derive(Default)]
pub(crate) struct Issuer {
    inner: Mutex<IssuerState>,
}

#[derive(Default)]
struct IssuerState {
    /// Overrides the configured lifetime (any JSON, so tests can send absurd ones).
    expires_in: Option<serde_json::Value>,
    /// The next n token requests are answered with this status.
    fail_next: usize,
    fail_status: u16,
    seen: Vec<TokenRequest>,
    /// Tokens issued, oldest first, with when each expires.
    issued: Vec<(String, Option<Instant>)>,
    /// Tokens issued before this index are refused by ingestion.
    revoked_before: usize,
    /// Ingestion refuses every token (a credential the upstream no longer takes).
    reject_all: bool,
}

impl Issuer {
    fn lock(&self) -> MutexGuard<'_, IssuerState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one token request.
    pub fn issue(&self, config: Option<&StandInIms>, headers: &HeaderMap, body: &str) -> Response {
        let Some(config) = config else {
            return error_response(
                StatusCode::NOT_FOUND,
                "aep-standin: no IMS token endpoint (start it with --ims-client-id)",
            );
        };
        let fields: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap_or_default();
        let mut state = self.lock();
        state.seen.push(TokenRequest {
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            raw_body: body.to_owned(),
            fields: fields.clone(),
        });
        if state.fail_next > 0 {
            state.fail_next -= 1;
            let status =
                StatusCode::from_u16(state.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (status, "IMS is down (aep-standin fault)").into_response();
        }
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        if field("grant_type") != Some("client_credentials") {
            let error = json!({"error": "unsupported_grant_type"});
            return (StatusCode::BAD_REQUEST, Json(error)).into_response();
        }
        if field("client_id") != Some(config.client_id.as_str())
            || field("client_secret") != Some(config.client_secret.as_str())
        {
            let error = json!({
                "error": "invalid_client",
                "error_description": "invalid client_secret parameter",
            });
            return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
        }
        let expires_in = state
            .expires_in
            .clone()
            .unwrap_or_else(|| json!(config.expires_in.as_secs()));
        let lifetime = expires_in.as_f64().filter(|s| s.is_finite() && *s >= 0.0);
        let expires_at =
            lifetime.and_then(|s| Instant::now().checked_add(Duration::from_secs_f64(s.min(1e9))));
        let token = format!("standin-ims-token-{}", state.issued.len() + 1);
        state.issued.push((token.clone(), expires_at));
        Json(json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": expires_in,
        }))
        .into_response()
    }

    /// `None` when `headers` carry a token issued here and still good;
    /// otherwise the 401 answer, in AEP's error shape.
    pub fn check(&self, headers: &HeaderMap) -> Option<Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let state = self.lock();
        let refusal = |why: &str| Some(error_response(StatusCode::UNAUTHORIZED, why));
        let Some(token) = token else {
            return refusal("missing or malformed Authorization header (Bearer token expected)");
        };
        let Some(index) = state.issued.iter().position(|(t, _)| t == token) else {
            return refusal("Oauth token is not valid");
        };
        if state.reject_all || index < state.revoked_before {
            return refusal("Oauth token is not valid");
        }
        match state.issued[index].1 {
            Some(at) if Instant::now() < at => None,
            _ => refusal("Oauth token is expired"),
        }
    }
}

/// The outside view of the token endpoint, from [`crate::StandInHandle::ims`].
pub struct ImsHandle<'a>(pub(crate) &'a Issuer);

impl ImsHandle<'_> {
    /// The next `n` token requests are answered `status` (e.g. 503).
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut state = self.0.lock();
        state.fail_next = n;
        state.fail_status = status;
    }

    /// The `expires_in` of each token from now on (any JSON value).
    pub fn set_expires_in(&self, value: serde_json::Value) {
        self.0.lock().expires_in = Some(value);
    }

    /// Every token issued so far stops being accepted by ingestion (tokens
    /// issued later are accepted).
    pub fn revoke_issued(&self) {
        let mut state = self.0.lock();
        state.revoked_before = state.issued.len();
    }

    /// Ingestion refuses every token, however fresh (or accepts them again).
    pub fn reject_all(&self, reject: bool) {
        self.0.lock().reject_all = reject;
    }

    /// Token requests so far, whatever their answer.
    pub fn requests(&self) -> usize {
        self.0.lock().seen.len()
    }

    /// Every token request so far.
    pub fn seen(&self) -> Vec<TokenRequest> {
        self.0.lock().seen.clone()
    }

    /// The tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.0
            .lock()
            .issued
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// `POST /standin/ims` control body: every field optional.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    /// Answer the next n token requests with `fail_status` (default 503).
    fail_next: Option<usize>,
    fail_status: Option<u16>,
    /// Seconds of each token's lifetime from now on.
    expires_in: Option<u64>,
    /// Revoke every token issued so far.
    #[serde(default)]
    revoke: bool,
    /// Refuse every token at ingestion (true) or stop doing so (false).
    reject_all: Option<bool>,
}

impl Control {
    pub fn apply(self, ims: &ImsHandle<'_>) {
        if let Some(n) = self.fail_next {
            ims.fail_next(n, self.fail_status.unwrap_or(503));
        }
        if let Some(seconds) = self.expires_in {
            ims.set_expires_in(json!(seconds));
        }
        if self.revoke {
            ims.revoke_issued();
        }
        if let Some(reject) = self.reject_all {
            ims.reject_all(reject);
        }
    }
}
