//! A stand-in for Adobe IMS's token endpoint, for tests on 127.0.0.1: one
//! valid client (any other id or secret is `invalid_client`), a chosen token
//! lifetime, failures on demand (the next n requests answer 503), and a
//! record of every request's form fields and raw body. It is meant to move to
//! the AEP stand-in's crate, which can then require the tokens it issued.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

/// The path Adobe serves the v3 token endpoint under.
pub(super) const TOKEN_PATH: &str = "/ims/token/v3";

/// One request the endpoint received.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub content_type: Option<String>,
    pub raw_body: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Shared {
    client_id: String,
    client_secret: String,
    expires_in: serde_json::Value,
    fail_next: usize,
    seen: Vec<Seen>,
    issued: Vec<String>,
}

/// A running token endpoint; it stops when the test's runtime ends.
#[derive(Clone)]
pub(super) struct TokenEndpoint {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl TokenEndpoint {
    /// Serves on 127.0.0.1 (port 0), accepting `client_id` with `client_secret`.
    pub async fn start(client_id: &str, client_secret: &str) -> TokenEndpoint {
        let shared = Arc::new(Mutex::new(Shared {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            expires_in: json!(86_399),
            ..Shared::default()
        }));
        let app = Router::new()
            .route(TOKEN_PATH, post(issue))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TokenEndpoint { addr, shared }
    }

    /// The `ims_token_url` to give inletd.
    pub fn url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }

    /// The next `n` requests get a 503.
    pub fn fail_next(&self, n: usize) {
        self.shared().fail_next = n;
    }

    /// The `expires_in` given with each token from now on (any JSON value,
    /// so tests can send absurd ones).
    pub fn set_expires_in(&self, value: serde_json::Value) {
        self.shared().expires_in = value;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared().seen.clone()
    }

    pub fn requests(&self) -> usize {
        self.shared().seen.len()
    }

    /// The tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.shared().issued.clone()
    }
}

async fn issue(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let mut shared = shared.lock().unwrap();
    shared.seen.push(Seen {
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        raw_body: body,
        fields: fields.clone(),
    });
    if shared.fail_next > 0 {
        shared.fail_next -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "IMS is down").into_response();
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
    if field("client_id") != Some(shared.client_id.as_str())
        || field("client_secret") != Some(shared.client_secret.as_str())
    {
        let error = json!({
            "error": "invalid_client",
            "error_description": "invalid client_secret parameter",
        });
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    }
    let token = format!("ims-token-{}", shared.issued.len() + 1);
    shared.issued.push(token.clone());
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": shared.expires_in,
    }))
    .into_response()
}
