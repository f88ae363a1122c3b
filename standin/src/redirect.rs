//! The redirect target: a second listener that [`crate::Fault::Redirect`]'s
//! `Location` points to. It is not AEP: whatever arrives is recorded (with its
//! `Authorization`) and answered with a plausible success carrying decoy
//! `xactionId`s (`redirected-…`) that are never recorded as delivered, so a
//! client that follows the redirect and believes the answer can be caught.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use serde_json::json;

use crate::batch::parse_envelope;
use crate::state::{RecordedRequest, Shared};
use crate::wire::{json_response, now_ms};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(arrived).with_state(shared)
}

async fn arrived(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 8 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let batch = path.starts_with("/collection/batch/");
    let count = if batch {
        parse_envelope(&body).map_or(0, |m| m.len())
    } else {
        1
    };
    let decoy = |i: usize| format!("redirected-{}-{i}", shared.next_xaction_id());
    let (status, answer) = if batch {
        let responses: Vec<_> = (0..count)
            .map(|i| json!({ "xactionId": decoy(i) }))
            .collect();
        let answer = json!({
            "inletId": "redirect-target", "batchId": "redirected",
            "receivedTimeMs": now_ms(), "responses": responses,
        });
        (StatusCode::MULTI_STATUS, answer)
    } else {
        let answer = json!({
            "inletId": "redirect-target", "xactionId": decoy(0),
            "receivedTimeMs": now_ms(), "syncValidation": {"skipped": true},
        });
        (StatusCode::OK, answer)
    };
    shared.record_redirected(RecordedRequest {
        path,
        query: parts.uri.query().map(str::to_owned),
        headers: crate::wire::header_list(&parts.headers),
        body,
        status: status.as_u16(),
        message_count: count,
        version: format!("{:?}", parts.version),
    });
    json_response(status, &answer)
}
