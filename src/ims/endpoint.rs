//! The provider's tests' token endpoint: the AEP stand-in's IMS token
//! endpoint (`aep_standin`, `POST /ims/token/v3`) on 127.0.0.1, with one
//! valid client, behind the few calls these tests make.

use aep_standin::{StandIn, StandInConfig, StandInHandle, StandInIms, TokenRequest};
use tokio_util::sync::CancellationToken;

/// A running stand-in serving the token endpoint; it stops when dropped.
pub(super) struct TokenEndpoint {
    url: String,
    handle: StandInHandle,
    stop: CancellationToken,
}

impl TokenEndpoint {
    /// Serves on 127.0.0.1 (port 0), accepting `client_id` with `client_secret`.
    pub async fn start(client_id: &str, client_secret: &str) -> TokenEndpoint {
        let config = StandInConfig {
            ims: Some(StandInIms {
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                ..StandInIms::default()
            }),
            ..StandInConfig::default()
        };
        let standin = StandIn::bind("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let url = format!("http://{}{}", standin.local_addr(), aep_standin::TOKEN_PATH);
        let handle = standin.handle();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(standin.run(async move { stopped.cancelled().await }));
        TokenEndpoint { url, handle, stop }
    }

    /// The `ims_token_url` to give inletd.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The next `n` requests get a 503.
    pub fn fail_next(&self, n: usize) {
        self.handle.ims().fail_next(n, 503);
    }

    /// The `expires_in` given with each token from now on (any JSON value).
    pub fn set_expires_in(&self, value: serde_json::Value) {
        self.handle.ims().set_expires_in(value);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<TokenRequest> {
        self.handle.ims().seen()
    }

    pub fn requests(&self) -> usize {
        self.handle.ims().requests()
    }

    /// The tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        self.handle.ims().issued()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
