//! The provider against a real HTTP token endpoint on 127.0.0.1 (see
//! [`super::endpoint`], the AEP stand-in's): what goes over the wire and how IMS's answers are
//! taken. Real time, but short back-offs; nothing asserts speed.

use std::time::Duration;

use serde_json::json;

use super::endpoint::TokenEndpoint;
use super::*;

const CLIENT: &str = "client-1";
/// Every character that breaks a form body written by hand.
const SECRET: &str = "p8e-a&b=c+d e%f?g#h";

fn fast() -> Timing {
    Timing {
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..Timing::default()
    }
}

fn provider_for(endpoint: &TokenEndpoint, secret: &str, timing: Timing) -> TokenProvider {
    let config = ImsConfig::new(
        CLIENT,
        secret.into(),
        "ORG@AdobeOrg",
        "openid, AdobeID,read_organizations",
        Some(&endpoint.url()),
    )
    .unwrap();
    TokenProvider::for_ims(&config, timing).unwrap()
}

#[tokio::test]
async fn a_crowd_gets_one_token_from_one_properly_encoded_request() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    let provider = provider_for(&endpoint, SECRET, fast());
    let crowd: Vec<_> = (0..100)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.token().await })
        })
        .collect();
    for caller in crowd {
        let token = caller.await.unwrap().unwrap();
        assert_eq!(token.authorization(), "Bearer standin-ims-token-1");
    }
    let seen = endpoint.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let field = |name: &str| {
        let found = request.fields.iter().filter(|(key, _)| key == name);
        found.map(|(_, value)| value.as_str()).collect::<Vec<_>>()
    };
    assert_eq!(field("grant_type"), ["client_credentials"]);
    assert_eq!(field("client_id"), [CLIENT]);
    assert_eq!(field("client_secret"), [SECRET]);
    assert_eq!(field("scope"), ["openid,AdobeID,read_organizations"]);
    assert_eq!(request.fields.len(), 4, "{:?}", request.fields);
    // Encoded, not pasted: the raw body holds no `&`, `=` or `+` of the secret.
    assert!(!request.raw_body.contains(SECRET), "{}", request.raw_body);
    assert!(
        request
            .raw_body
            .contains("client_secret=p8e-a%26b%3Dc%2Bd+e%25f%3Fg%23h"),
        "{}",
        request.raw_body
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_a_clear_message_and_no_secret() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    let wrong = "wrong&secret";
    let provider = provider_for(&endpoint, wrong, fast());
    let error = provider.token().await.unwrap_err();
    assert_eq!(
        error,
        TokenError::Refused {
            status: 401,
            error: "invalid_client: invalid client_secret parameter".into()
        }
    );
    let message = error.to_string();
    assert!(message.contains("could not be obtained"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    assert!(!message.contains(wrong) && !format!("{error:?}").contains(wrong));
    assert!(!format!("{provider:?}").contains(wrong));
    // Asked once; the refusal is remembered rather than retried.
    assert!(provider.token().await.is_err());
    assert_eq!(endpoint.requests(), 1);
    assert!(!provider.has_token());
}

#[tokio::test]
async fn ims_down_at_start_then_recovering_gives_a_token() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    endpoint.fail_next(2);
    let provider = provider_for(&endpoint, SECRET, fast());
    let token = provider.token().await.unwrap();
    assert_eq!(token.generation(), 1);
    assert_eq!(endpoint.requests(), 3);
    assert_eq!(provider.stats().fetches(FetchResult::Unavailable), 2);
    assert_eq!(provider.stats().fetches(FetchResult::Ok), 1);
}

#[tokio::test]
async fn an_ims_still_down_after_the_retries_is_reported_as_unavailable() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    endpoint.fail_next(100);
    let provider = provider_for(&endpoint, SECRET, fast());
    let error = provider.token().await.unwrap_err();
    assert!(
        error.to_string().contains("IMS is unavailable (HTTP 503)"),
        "{error}"
    );
    assert_eq!(endpoint.requests(), 4);
}

#[tokio::test]
async fn a_closed_port_is_unavailable_not_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = ImsConfig::new(
        CLIENT,
        SECRET.into(),
        "ORG@AdobeOrg",
        "openid",
        Some(&format!("http://{addr}/ims/token/v3")),
    )
    .unwrap();
    let provider = TokenProvider::for_ims(&config, fast()).unwrap();
    let error = provider.token().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("cannot connect"), "{error}");
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_secret_goes_nowhere_else() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    let target = endpoint.url();
    let redirect = axum::Router::new().route(
        "/ims/token/v3",
        axum::routing::post(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirect).await });
    let config = ImsConfig::new(
        CLIENT,
        SECRET.into(),
        "ORG@AdobeOrg",
        "openid",
        Some(&format!("http://{addr}/ims/token/v3")),
    )
    .unwrap();
    let provider = TokenProvider::for_ims(&config, fast()).unwrap();
    let error = provider.token().await.unwrap_err();
    assert!(
        error.to_string().contains("HTTP 307; check ims_token_url"),
        "{error}"
    );
    assert_eq!(
        endpoint.requests(),
        0,
        "the secret was resent to the redirect's target"
    );
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_for_many_and_not_again_soon() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    let provider = provider_for(&endpoint, SECRET, fast());
    let first = provider.token().await.unwrap();
    let crowd: Vec<_> = (0..20)
        .map(|_| {
            let (provider, first) = (provider.clone(), first.clone());
            tokio::spawn(async move {
                provider.invalidate(&first);
                provider.token().await
            })
        })
        .collect();
    for caller in crowd {
        let token = caller.await.unwrap().unwrap();
        assert_eq!(token.authorization(), "Bearer standin-ims-token-2");
    }
    // The new token is refused as well: no refresh until the cool-down has passed.
    for _ in 0..50 {
        let token = provider.token().await.unwrap();
        provider.invalidate(&token);
        assert!(provider.token().await.unwrap().same_as(&token));
    }
    assert_eq!(endpoint.requests(), 2);
    assert_eq!(
        endpoint.issued(),
        ["standin-ims-token-1", "standin-ims-token-2"]
    );
}

#[tokio::test]
async fn an_absurd_lifetime_from_ims_is_refused() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    endpoint.set_expires_in(json!(-1));
    let hour = Duration::from_secs(3600);
    let timing = Timing {
        failure_cooldown_min: hour,
        failure_cooldown_max: hour,
        ..fast()
    };
    let provider = provider_for(&endpoint, SECRET, timing);
    let error = provider.token().await.unwrap_err();
    assert!(error.to_string().contains("expires_in"), "{error}");
    assert!(!error.to_string().contains("ims-token"), "{error}");
    endpoint.set_expires_in(json!(1e30));
    assert!(provider.token().await.is_err());
    assert_eq!(endpoint.requests(), 1, "the failure is cooled down");
}

#[tokio::test]
async fn no_public_type_or_error_prints_the_secret_or_a_token() {
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    let config = ImsConfig::new(
        CLIENT,
        SECRET.into(),
        "ORG@AdobeOrg",
        "openid",
        Some(&endpoint.url()),
    )
    .unwrap();
    let source = HttpSource::new(&config, ims_client(Duration::from_secs(1)).unwrap());
    let provider = provider_for(&endpoint, SECRET, fast());
    let token = provider.token().await.unwrap();
    let headers = provider.headers(&token);
    let refused = provider_for(&endpoint, "wrong", fast());
    let error = refused.token().await.unwrap_err();
    let shown = [
        format!("{config:?}"),
        format!("{source:?}"),
        format!("{provider:?}"),
        format!("{refused:?}"),
        format!("{token:?}"),
        format!("{headers:?}"),
        format!("{:?}", ManagedHeaders::new(&config).unwrap()),
        format!("{:?}", provider.stats()),
        format!("{error:?} {error}"),
        format!("{:?}", not_allowed_here("the TOML file")),
    ];
    for text in shown {
        assert!(!text.contains("p8e-"), "secret in {text}");
        assert!(!text.contains("ims-token-"), "token in {text}");
    }
}

/// Collects every log line written while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_at_trace_level_carry_neither_the_secret_nor_a_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runs on one thread, the endpoint and the client's tasks included.
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!("capture started");
    let endpoint = TokenEndpoint::start(CLIENT, SECRET).await;
    endpoint.fail_next(1);
    let provider = provider_for(&endpoint, SECRET, fast());
    let token = provider.token().await.unwrap();
    provider.invalidate(&token);
    provider.token().await.unwrap();
    let refused = provider_for(&endpoint, "p8e-wrong", fast());
    refused.token().await.unwrap_err();
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    // tracing caches each line's interest process-wide, so while other tests
    // run in parallel a line of ours may go uncaptured: the marker proves the
    // capture works, and everything captured (hyper's and reqwest's trace
    // lines included) must be clean.
    assert!(logs.contains("capture started"), "{logs}");
    assert!(logs.contains("127.0.0.1"), "{logs}");
    assert!(!logs.contains("p8e-"), "{logs}");
    assert!(!logs.contains("ims-token-"), "{logs}");
}
