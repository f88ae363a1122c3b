//! One token request to IMS: the [`TokenSource`] seam the provider fetches
//! through, and [`HttpSource`], the real one: `POST {ims_token_url}` with the
//! form-encoded client credentials, its answer read and checked (a token fit
//! for a header, a sane `expires_in`), and every failure classified as
//! refused, unavailable or unusable without ever quoting the secret.

use std::time::Duration;

use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::config::ImsConfig;
use super::token::{Grant, TokenError};

/// The longest token lifetime believed: Adobe's are about 24 h, so anything
/// past 30 days is a broken answer, not a token to keep for a month.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The largest answer read from IMS; a token answer is well under 10 kB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How much of IMS's own error text is kept for the operator.
const MAX_ERROR_CHARS: usize = 200;

/// Where the provider gets tokens from: IMS over HTTP ([`HttpSource`]), or a
/// scripted source in tests. One call is one request, no retries.
pub trait TokenSource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<'_, Result<Grant, TokenError>>;
}

/// The HTTP client for IMS: it never follows a redirect (a 307 or 308 would
/// resend the secret to wherever it points; a redirect is reported as a wrong
/// `ims_token_url` instead), and it gives up connecting after `connect_timeout`.
pub fn ims_client(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .user_agent(concat!("inletd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Asks IMS for tokens with the client credentials.
pub struct HttpSource {
    client: reqwest::Client,
    url: reqwest::Url,
    client_id: String,
    secret: SecretString,
    scope: String,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.url.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source for `config`'s credentials over `client`, normally
    /// [`ims_client`] (the provider bounds each request by its own timeout).
    pub fn new(config: &ImsConfig, client: reqwest::Client) -> HttpSource {
        HttpSource {
            client,
            url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            secret: config.client_secret.clone(),
            scope: config.scope(),
        }
    }

    async fn request(&self) -> Result<Grant, TokenError> {
        // `form` URL-encodes every value: a secret with `&`, `=` or `+` stays whole.
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose_secret()),
            ("scope", self.scope.as_str()),
        ];
        let mut response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(describe(&e)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    return Err(TokenError::BadAnswer(format!(
                        "HTTP {status} with an answer over {MAX_ANSWER_BYTES} bytes"
                    )))
                }
                Ok(None) => break,
                Err(e) => return Err(TokenError::Unavailable(describe(&e))),
            }
        }
        classify(status, &body, self.secret.expose_secret())
    }
}

impl TokenSource for HttpSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Grant, TokenError>> {
        Box::pin(self.request())
    }
}

/// A transport error with its causes (reqwest's own text is only "error
/// sending request"); the token URL carries no credentials, so it may show.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sorts IMS's answer: a token, a refusal of the credentials, a failure
/// worth retrying, or something unusable.
pub(super) fn classify(status: u16, body: &[u8], secret: &str) -> Result<Grant, TokenError> {
    match status {
        200..=299 => parse_grant(body),
        400 | 401 | 403 => Err(TokenError::Refused {
            status,
            error: refusal_reason(body, secret),
        }),
        408 | 429 | 500..=599 => Err(TokenError::Unavailable(format!("HTTP {status}"))),
        _ => Err(TokenError::BadAnswer(format!(
            "HTTP {status}; check ims_token_url"
        ))),
    }
}

#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
}

fn parse_grant(body: &[u8]) -> Result<Grant, TokenError> {
    // serde's message could quote a value from the answer: only its category is kept.
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        TokenError::BadAnswer(format!(
            "not a JSON token answer ({:?} error)",
            e.classify()
        ))
    })?;
    let bad = |why: &str| TokenError::BadAnswer(why.to_owned());
    let token = answer.access_token.ok_or_else(|| bad("no access_token"))?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the access_token is empty or not printable ASCII"));
    }
    if let Some(kind) = answer.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(bad("token_type is not bearer"));
        }
    }
    let expires_in = lifetime(answer.expires_in.as_ref())?;
    Ok(Grant {
        access_token: token.into(),
        expires_in,
    })
}

/// `expires_in` in seconds, a number (or a string of digits, as some OAuth
/// servers send), from 1 s to [`MAX_LIFETIME`]; 0, negative, huge, fractional
/// nonsense and NaN are refused without any arithmetic that could overflow.
pub(super) fn lifetime(value: Option<&serde_json::Value>) -> Result<Duration, TokenError> {
    let seconds = match value {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok().map(|s| s as f64),
        _ => None,
    };
    match seconds {
        Some(s) if s.is_finite() && s >= 1.0 && s <= MAX_LIFETIME.as_secs_f64() => {
            Ok(Duration::from_secs_f64(s.floor()))
        }
        _ => Err(TokenError::BadAnswer(format!(
            "expires_in is missing or not between 1 and {} seconds",
            MAX_LIFETIME.as_secs()
        ))),
    }
}

/// IMS's `error` (and `error_description`) from a refusal, cut short, kept
/// to printable text and with the secret removed should IMS ever echo it.
fn refusal_reason(body: &[u8], secret: &str) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<String>,
        error_description: Option<String>,
    }
    let text = match serde_json::from_slice::<Refusal>(body) {
        Ok(Refusal {
            error: Some(code),
            error_description: Some(description),
        }) => format!("{code}: {description}"),
        Ok(Refusal {
            error: Some(code), ..
        }) => code,
        _ => "no error code given".to_owned(),
    };
    let text = if secret.is_empty() {
        text
    } else {
        text.replace(secret, "[REDACTED]")
    };
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_token_answer_is_read() {
        let body = br#"{"access_token":"eyJ.a-b_c","token_type":"bearer","expires_in":86399}"#;
        let grant = classify(200, body, "s").unwrap();
        assert_eq!(grant.access_token.expose_secret(), "eyJ.a-b_c");
        assert_eq!(grant.expires_in, Duration::from_secs(86399));
        assert!(!format!("{grant:?}").contains("eyJ"));
    }

    #[test]
    fn absurd_lifetimes_are_refused_without_overflow() {
        for bad in [
            json!(0),
            json!(-5),
            json!(-0.5),
            json!(0.4),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(MAX_LIFETIME.as_secs() + 1),
            json!("soon"),
            json!("-3"),
            json!(null),
            json!([1]),
        ] {
            let error = lifetime(Some(&bad)).unwrap_err();
            assert!(matches!(error, TokenError::BadAnswer(_)), "{bad}: {error}");
        }
        assert!(lifetime(None).is_err());
        assert_eq!(lifetime(Some(&json!(1))).unwrap(), Duration::from_secs(1));
        assert_eq!(
            lifetime(Some(&json!("60"))).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            lifetime(Some(&json!(90.7))).unwrap(),
            Duration::from_secs(90)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_expires_in_is_either_refused_or_a_sane_lifetime(
            number in proptest::num::f64::ANY,
            integer in proptest::num::i64::ANY,
            text in "[ 0-9a-z.-]{0,25}",
        ) {
            for value in [json!(number), json!(integer), json!(text)] {
                if let Ok(lifetime) = lifetime(Some(&value)) {
                    proptest::prop_assert!(lifetime >= Duration::from_secs(1), "{value}");
                    proptest::prop_assert!(lifetime <= MAX_LIFETIME, "{value}");
                }
            }
        }
    }

    #[test]
    fn unusable_answers_say_why_without_quoting_the_token() {
        let cases: [&[u8]; 6] = [
            b"not json at all",
            br#"{"token_type":"bearer","expires_in":10}"#,
            br#"{"access_token":"","expires_in":10}"#,
            br#"{"access_token":"has space","expires_in":10}"#,
            br#"{"access_token":"tok","token_type":"mac","expires_in":10}"#,
            br#"{"access_token":"tok","expires_in":0}"#,
        ];
        for body in cases {
            let error = classify(200, body, "s").unwrap_err();
            assert!(matches!(error, TokenError::BadAnswer(_)), "{error}");
            assert!(!error.to_string().contains("tok\""), "{error}");
            assert!(!error.to_string().contains("has space"), "{error}");
        }
    }

    #[test]
    fn refusals_retryable_failures_and_wrong_urls_are_told_apart() {
        let secret = "p&ss=word";
        let body =
            format!(r#"{{"error":"invalid_client","error_description":"bad secret {secret}\n"}}"#);
        let refused = classify(401, body.as_bytes(), secret).unwrap_err();
        assert_eq!(
            refused,
            TokenError::Refused {
                status: 401,
                error: "invalid_client: bad secret [REDACTED] ".into()
            }
        );
        assert!(refused.to_string().contains("invalid_client"), "{refused}");
        assert!(!refused.to_string().contains(secret), "{refused}");
        let no_code = classify(400, b"<html>", secret).unwrap_err();
        assert!(no_code.to_string().contains("no error code"), "{no_code}");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(5_000));
        match classify(400, long.as_bytes(), secret) {
            Err(TokenError::Refused { error, .. }) => assert_eq!(error.len(), MAX_ERROR_CHARS),
            other => panic!("{other:?}"),
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(classify(status, b"", secret).unwrap_err().is_transient());
        }
        for status in [302, 404, 405] {
            let error = classify(status, b"", secret).unwrap_err();
            assert!(matches!(error, TokenError::BadAnswer(_)), "{error}");
            assert!(error.to_string().contains("ims_token_url"), "{error}");
        }
    }
}
