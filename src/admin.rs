//! The admin listener: `/metrics` (Prometheus text), `/healthz` (200 while the
//! process serves and its supervised tasks live; 503 with a JSON body naming
//! the dead task otherwise) and `/readyz` (200 while accepting work; 503 while
//! draining, and while inletd holds IMS credentials but no usable token).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::ims::TokenProvider;
use crate::metrics::Metrics;
use crate::supervise::Liveness;

#[derive(Clone)]
struct Admin {
    metrics: Arc<Metrics>,
    draining: CancellationToken,
    liveness: Liveness,
    ims: Option<TokenProvider>,
}

pub fn router(
    metrics: Arc<Metrics>,
    draining: CancellationToken,
    liveness: Liveness,
    ims: Option<TokenProvider>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready))
        .with_state(Admin {
            metrics,
            draining,
            liveness,
            ims,
        })
}

/// Liveness: a draining inletd stays healthy (nothing should restart it
/// mid-drain); one whose batcher or dispatch task died is not.
async fn healthz(State(admin): State<Admin>) -> Response {
    let dead = admin.liveness.dead();
    if dead.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let body = serde_json::json!({ "status": "unhealthy", "dead": dead });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

/// Readiness. Without a token, managed producers would only get errors, so
/// a load balancer should send them elsewhere; producers with their own
/// `Authorization` are served meanwhile all the same.
async fn ready(State(admin): State<Admin>) -> Response {
    if admin.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if let Some(ims) = admin.ims.as_ref().filter(|ims| !ims.has_token()) {
        let reason = match ims.last_failure() {
            Some(error) => error.to_string(),
            None => "no IMS access token yet: the first fetch is under way".to_owned(),
        };
        let body = serde_json::json!({ "status": "not ready", "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn healthz_of(liveness: Liveness) -> (StatusCode, String) {
        let router = router(
            Metrics::new(1 << 20),
            CancellationToken::new(),
            liveness,
            None,
        );
        let request = Request::get("/healthz").body(Body::empty()).unwrap();
        let answer = router.oneshot(request).await.unwrap();
        let status = answer.status();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn healthz_fails_naming_the_task_that_died() {
        let liveness = Liveness::default();
        assert_eq!(healthz_of(liveness.clone()).await.0, StatusCode::OK);
        liveness
            .spawn("batcher", CancellationToken::new(), async {
                panic!("boom")
            })
            .await
            .unwrap();
        let (status, body) = healthz_of(liveness).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], "unhealthy");
        assert_eq!(body["dead"][0]["task"], "batcher");
        assert_eq!(body["dead"][0]["reason"], "panicked: boom");
    }
}
