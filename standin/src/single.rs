//! `POST /collection/{id}`: one message per request, as producers send today.
//! Valid messages get `200` with an `xactionId`; `?syncValidation=true` reports
//! `{"status":"pass"}` instead of `{"skipped":true}`; raw data (`x-adobe-flow-id`
//! header or query parameter) is accepted whatever its shape.

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;

use super::batch::{resolve, Code, Entry};
use super::message::{check_message, Check};
use super::state::{Delivered, Shared};
use crate::wire::{json_response, now_ms, query_param, Answer, Bend, ErrorBody, Incoming};

const FLOW_ID: &str = "x-adobe-flow-id";

pub(super) fn answer(shared: &Shared, incoming: Incoming) -> Answer {
    let query = incoming.query.as_deref();
    let raw_data = incoming.headers.contains_key(FLOW_ID) || query_param(query, FLOW_ID).is_some();
    let sync = query_param(query, "syncValidation").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let short = incoming.bend == Bend::ShortResponses;

    if raw_data {
        let text = String::from_utf8_lossy(&incoming.body).into_owned();
        return accept(shared, &incoming, text, sync, short);
    }
    let Ok(text) = std::str::from_utf8(&incoming.body) else {
        return reject(
            StatusCode::BAD_REQUEST,
            Code::Number(400),
            "body is not UTF-8",
        );
    };
    let check = check_message(text, shared.config.ims_org.as_deref());
    if check.is_poison() {
        return reject(
            StatusCode::BAD_REQUEST,
            Code::Number(400),
            "message is rejected (aep-standin poison directive)",
        );
    }
    let entry = resolve(
        shared,
        &incoming.connection_id,
        &[text],
        std::slice::from_ref(&check),
        !short,
    );
    match (check, entry.into_iter().next()) {
        (Check::Valid(_), Some(Entry::Delivered { .. })) => {
            accept(shared, &incoming, text.to_owned(), sync, short)
        }
        (
            _,
            Some(Entry::Failed {
                status_code,
                message,
            }),
        ) => {
            let status = match &status_code {
                Code::Number(n) => *n,
                Code::Text(s) => s.parse().unwrap_or(400),
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            reject(status, status_code, &message)
        }
        _ => reject(
            StatusCode::BAD_REQUEST,
            Code::Number(400),
            "message is invalid",
        ),
    }
}

/// 200 with a fresh `xactionId`, recorded as delivered; under `ShortResponses`
/// the `xactionId` is missing and nothing is recorded.
fn accept(
    shared: &Shared,
    incoming: &Incoming,
    message: String,
    sync: bool,
    short: bool,
) -> Answer {
    let xaction_id = (!short).then(|| shared.next_xaction_id());
    if let Some(xaction_id) = &xaction_id {
        let records = if shared.config.record {
            vec![Delivered {
                connection_id: incoming.connection_id.clone(),
                xaction_id: xaction_id.clone(),
                message,
                authorization: incoming.authorization.clone(),
            }]
        } else {
            Vec::new()
        };
        shared.deliver(1, records);
    }
    let body = SingleAnswer {
        inlet_id: &incoming.connection_id,
        xaction_id: xaction_id.as_deref(),
        received_time_ms: now_ms(),
        sync_validation: if sync {
            json!({ "status": "pass" })
        } else {
            json!({ "skipped": true })
        },
    };
    Answer {
        response: json_response(StatusCode::OK, &body),
        message_count: 1,
    }
}

#[derive(Serialize)]
struct SingleAnswer<'a> {
    #[serde(rename = "inletId")]
    inlet_id: &'a str,
    #[serde(rename = "xactionId", skip_serializing_if = "Option::is_none")]
    xaction_id: Option<&'a str>,
    #[serde(rename = "receivedTimeMs")]
    received_time_ms: u64,
    #[serde(rename = "syncValidation")]
    sync_validation: serde_json::Value,
}

fn reject(status: StatusCode, status_code: Code, message: &str) -> Answer {
    let body = ErrorBody {
        status_code,
        message,
    };
    Answer {
        response: json_response(status, &body),
        message_count: 1,
    }
}
