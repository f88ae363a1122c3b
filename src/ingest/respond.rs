//! Turning outcomes into the answers AEP itself would give: the single
//! endpoint's `200` shape, and a `207` with one entry per message.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Number;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::reply::{Delivery, Outcome, Receipt};

/// Waits for a message's outcome until `deadline` (then 504: it may still arrive).
pub async fn wait(rx: oneshot::Receiver<Outcome>, deadline: Instant) -> Result<Delivery, Error> {
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Outcome::Delivered(delivery))) => Ok(delivery),
        Ok(Ok(Outcome::Failed {
            status,
            message,
            retry_after,
        })) => Err(Error::Upstream {
            status,
            message,
            retry_after,
        }),
        // The reply handle always answers before it goes; this is only a safety net.
        Ok(Err(_)) => Err(Error::Upstream {
            status: 503,
            message: "inletd lost track of the message".into(),
            retry_after: None,
        }),
        Err(_) => Err(Error::Timeout),
    }
}

fn now_ms() -> Number {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Number::from(ms)
}

/// The single endpoint's answer: `200` as AEP gives it, or the error.
pub fn single(connection_id: &str, result: Result<Delivery, Error>) -> Response {
    match result {
        Ok(d) => {
            let inlet_id = d.receipt.inlet_id.as_deref().unwrap_or(connection_id);
            let body = match &d.receipt.received_time_ms {
                Some(ms) => single_answer(inlet_id, &d.xaction_id, ms),
                None => single_answer(inlet_id, &d.xaction_id, &now_ms()),
            };
            (
                StatusCode::OK,
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `{"inletId":..,"xactionId":..,"receivedTimeMs":..,"syncValidation":{"skipped":true}}`,
/// written straight into a buffer of the right size: this answer goes out once
/// per message, and a serializer round (a growing buffer, a struct per answer)
/// showed in the profile. The strings are escaped by serde_json.
fn single_answer(inlet_id: &str, xaction_id: &str, received_time_ms: &Number) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + inlet_id.len() + xaction_id.len());
    out.extend_from_slice(br#"{"inletId":"#);
    write_json(&mut out, inlet_id);
    out.extend_from_slice(br#","xactionId":"#);
    write_json(&mut out, xaction_id);
    out.extend_from_slice(br#","receivedTimeMs":"#);
    write_json(&mut out, received_time_ms);
    out.extend_from_slice(br#","syncValidation":{"skipped":true}}"#);
    out
}

/// Appends `value` as JSON (a string or a number: writing to a Vec cannot fail).
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        tracing::error!(%e, "a string or number could not be written as JSON");
        out.extend_from_slice(b"null");
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchAnswer {
    inlet_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<String>,
    received_time_ms: Number,
    responses: Entries,
}

/// The `responses` list, written straight from the results: no JSON tree
/// per entry (a `serde_json::Value` map costs ~700 bytes; the memory bound
/// counts only [`super::admission`]'s share per entry).
struct Entries(Vec<Result<Delivery, Error>>);

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Delivered {
        #[serde(rename = "xactionId")]
        xaction_id: &'a str,
    },
    Failed {
        #[serde(rename = "statusCode")]
        status_code: u16,
        message: std::borrow::Cow<'a, str>,
    },
}

impl Serialize for Entries {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| match r {
            Ok(d) => Entry::Delivered {
                xaction_id: &d.xaction_id,
            },
            Err(e) => Entry::Failed {
                status_code: e.status().as_u16(),
                message: e.message(),
            },
        }))
    }
}

/// The batch endpoint's answer: `207` with one entry per message in the
/// caller's order. When every message met the same 401 or 403, that status is
/// answered whole, as AEP does for a bad token.
pub fn batch(connection_id: &str, results: Vec<Result<Delivery, Error>>) -> Response {
    let whole = match results.first() {
        Some(Err(
            e @ Error::Upstream {
                status: 401 | 403, ..
            },
        )) => {
            let status = e.status();
            results
                .iter()
                .all(|r| matches!(r, Err(e) if e.status() == status))
        }
        _ => false,
    };
    if let (true, Some(Err(e))) = (whole, results.first()) {
        return (e.status(), axum::Json(e.body())).into_response();
    }
    let receipt = results
        .iter()
        .find_map(|r| r.as_ref().ok())
        .map(|d| Receipt::clone(&d.receipt))
        .unwrap_or_default();
    let inlet_id = receipt.inlet_id.unwrap_or_else(|| connection_id.to_owned());
    let batch_id = receipt.batch_id;
    let received_time_ms = receipt.received_time_ms.unwrap_or_else(now_ms);
    let responses = Entries(results);
    let answer = BatchAnswer {
        inlet_id,
        batch_id,
        received_time_ms,
        responses,
    };
    (StatusCode::MULTI_STATUS, axum::Json(answer)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_answer_is_the_aep_shape_with_escaped_strings() {
        let ms = Number::from(1_700_000_000_123_u64);
        let out = single_answer("in\"let", "x\\1\u{7}é", &ms);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "inletId": "in\"let",
                "xactionId": "x\\1\u{7}é",
                "receivedTimeMs": 1_700_000_000_123_u64,
                "syncValidation": {"skipped": true},
            })
        );
        let plain = single_answer("i", "x", &Number::from(5));
        assert_eq!(
            plain,
            br#"{"inletId":"i","xactionId":"x","receivedTimeMs":5,"syncValidation":{"skipped":true}}"#
        );
    }
}
