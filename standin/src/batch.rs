//! `POST /collection/batch/{id}`: read `{"messages":[...]}` without re-serialising
//! the messages, check each one, resolve directives, and build the 207
//! multi-status answer (one entry per message, by position), bent by the
//! `ShortResponses` / `LongResponses` faults.

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::faults::odd_entry;
use super::message::{check_message, ims_org_of, Check};
use super::state::{Delivered, Shared};
use crate::wire::{error_response, json_response, now_ms, Answer, Bend, Incoming};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// The messages of a batch body, each as its raw JSON text.
pub(super) fn parse_envelope(body: &[u8]) -> Result<Vec<&RawValue>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_owned())?;
    if !text.trim_start().starts_with('{') {
        return Err("body is not a JSON object".into());
    }
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|err| format!("body is not {{\"messages\":[...]}}: {err}"))?;
    if envelope.messages.is_empty() {
        return Err("messages is empty".into());
    }
    Ok(envelope.messages)
}

/// A status code as AEP sends it: usually a number, sometimes a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(super) enum Code {
    Number(u16),
    Text(String),
}

/// One entry of `responses`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(super) enum Entry {
    Delivered {
        #[serde(rename = "xactionId")]
        xaction_id: String,
    },
    Failed {
        #[serde(rename = "statusCode")]
        status_code: Code,
        message: String,
    },
    /// An entry bent by [`crate::Fault::OddCodes`].
    Odd(serde_json::Value),
}

#[derive(Serialize)]
struct MultiStatus<'a> {
    #[serde(rename = "inletId")]
    inlet_id: &'a str,
    #[serde(rename = "batchId")]
    batch_id: &'a str,
    #[serde(rename = "receivedTimeMs")]
    received_time_ms: u64,
    responses: &'a [Entry],
}

/// The 207 body.
pub(super) fn multi_status(
    inlet_id: &str,
    batch_id: &str,
    received_time_ms: u64,
    responses: &[Entry],
) -> Response {
    let body = MultiStatus {
        inlet_id,
        batch_id,
        received_time_ms,
        responses,
    };
    json_response(StatusCode::MULTI_STATUS, &body)
}

/// Each message's entry. `commit` counts directive sightings and is false when
/// the answer will not reach the client in a usable form.
pub(super) fn resolve(
    shared: &Shared,
    connection_id: &str,
    raws: &[&str],
    checks: &[Check],
    commit: bool,
) -> Vec<Entry> {
    let directed = checks
        .iter()
        .zip(raws)
        .filter_map(|(check, raw)| match check {
            Check::Valid(Some(d)) if d.status.is_some() => Some((*raw, d.times)),
            _ => None,
        });
    let mut fails = shared.directive_fails(directed, commit).into_iter();
    let org = shared.config.ims_org.as_deref();
    checks
        .iter()
        .zip(raws)
        .map(|(check, raw)| match check {
            Check::Invalid(reason) => Entry::Failed {
                status_code: Code::Number(400),
                message: failure_text(connection_id, raw, org, reason),
            },
            Check::Valid(Some(d)) if d.status.is_some() && fails.next() == Some(true) => {
                let status = d.status.unwrap_or(400);
                let reason = format!("aep-standin directive: status {status}");
                Entry::Failed {
                    status_code: if d.as_string {
                        Code::Text(status.to_string())
                    } else {
                        Code::Number(status)
                    },
                    message: failure_text(connection_id, raw, org, &reason),
                }
            }
            Check::Valid(_) => Entry::Delivered {
                xaction_id: shared.next_xaction_id(),
            },
        })
        .collect()
}

/// A per-message failure worded as AEP words it:
/// `inletId: [<connection id>] imsOrgId: [<org>] <reason>`, the org being the
/// message's own `header.imsOrgId`, else the configured one, else empty.
pub(super) fn failure_text(
    connection_id: &str,
    raw: &str,
    org: Option<&str>,
    reason: &str,
) -> String {
    let given = ims_org_of(raw);
    let org = given.as_deref().or(org).unwrap_or("");
    format!("inletId: [{connection_id}] imsOrgId: [{org}] {reason}")
}

pub(super) fn answer(shared: &Shared, incoming: Incoming) -> Answer {
    let messages = match parse_envelope(&incoming.body) {
        Ok(messages) => messages,
        Err(reason) => {
            return Answer {
                response: error_response(StatusCode::BAD_REQUEST, &reason),
                message_count: 0,
            }
        }
    };
    let count = messages.len();
    let raws: Vec<&str> = messages.iter().map(|m| m.get()).collect();
    let org = shared.config.ims_org.as_deref();
    let checks: Vec<Check> = raws.iter().map(|raw| check_message(raw, org)).collect();
    if let Some(index) = checks.iter().position(Check::is_poison) {
        return Answer {
            response: error_response(
                StatusCode::BAD_REQUEST,
                &format!("message {index} is rejected (aep-standin poison directive)"),
            ),
            message_count: count,
        };
    }

    let short = incoming.bend == Bend::ShortResponses;
    let odd = incoming.bend == Bend::OddCodes;
    let mut entries = resolve(
        shared,
        &incoming.connection_id,
        &raws,
        &checks,
        !short && !odd,
    );
    if short {
        entries.pop();
    } else if odd {
        // Nothing delivered: no entry says plainly that it was.
        for (i, entry) in entries.iter_mut().enumerate() {
            *entry = Entry::Odd(odd_entry(i, shared.next_xaction_id()));
        }
    } else {
        deliver(shared, &incoming, &raws, &entries);
        if incoming.bend == Bend::LongResponses {
            entries.push(Entry::Delivered {
                xaction_id: shared.next_xaction_id(),
            });
        }
    }
    let received = now_ms();
    let batch_id = shared.next_batch_id(received);
    Answer {
        response: multi_status(&incoming.connection_id, &batch_id, received, &entries),
        message_count: count,
    }
}

fn deliver(shared: &Shared, incoming: &Incoming, raws: &[&str], entries: &[Entry]) {
    let delivered = raws
        .iter()
        .zip(entries)
        .filter_map(|(raw, entry)| match entry {
            Entry::Delivered { xaction_id } => Some((raw, xaction_id)),
            Entry::Failed { .. } | Entry::Odd(_) => None,
        });
    if shared.config.record {
        let records: Vec<Delivered> = delivered
            .map(|(raw, xaction_id)| Delivered {
                connection_id: incoming.connection_id.clone(),
                xaction_id: xaction_id.clone(),
                message: (*raw).to_owned(),
                authorization: incoming.authorization.clone(),
            })
            .collect();
        shared.deliver(records.len(), records);
    } else {
        shared.deliver(delivered.count(), Vec::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StandInConfig;

    fn entries_json(entries: &[Entry]) -> serde_json::Value {
        serde_json::to_value(entries).expect("serializable")
    }

    #[test]
    fn envelope_keeps_messages_as_received() {
        let body = br#"{"messages":[ {"header":{},"body":{"a" : 1}} ,{"x":[1, 2]}]}"#;
        let raws: Vec<&str> = parse_envelope(body)
            .expect("valid envelope")
            .iter()
            .map(|m| m.get())
            .collect();
        assert_eq!(
            raws,
            [r#"{"header":{},"body":{"a" : 1}}"#, r#"{"x":[1, 2]}"#]
        );
    }

    #[test]
    fn envelope_rejects_other_shapes() {
        for body in [
            &b"not json"[..],
            br#"[{"messages":[]}]"#,
            br#"{"messages":{}}"#,
            br#"{"message":[{}]}"#,
            br#"{"messages":[]}"#,
            b"{\"messages\":[\xff]}",
        ] {
            assert!(
                parse_envelope(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn entries_follow_messages_by_position() {
        let shared = Shared::new(StandInConfig::default());
        let raws = [
            r#"{"header":{},"body":{}}"#,
            r#"{"body":{}}"#,
            r#"{"header":{},"body":{"standin":{"status":503,"times":1,"as_string":true}}}"#,
            r#"{"header":{},"body":{"standin":{"status":429}}}"#,
        ];
        let checks: Vec<Check> = raws.iter().map(|r| check_message(r, None)).collect();
        let first = entries_json(&resolve(&shared, "c", &raws, &checks, true));
        assert!(first[0]["xactionId"].is_string());
        assert_eq!(first[1]["statusCode"], 400);
        assert_eq!(first[2]["statusCode"], "503");
        assert_eq!(first[3]["statusCode"], 429);
        assert!(first[1].get("xactionId").is_none());

        // The `times: 1` message now succeeds; the one without `times` keeps failing.
        let second = entries_json(&resolve(&shared, "c", &raws, &checks, true));
        assert!(second[2]["xactionId"].is_string());
        assert_eq!(second[3]["statusCode"], 429);
        assert_ne!(first[0]["xactionId"], second[0]["xactionId"]);
    }

    #[test]
    fn dry_runs_do_not_use_up_directives() {
        let shared = Shared::new(StandInConfig::default());
        let raw = r#"{"header":{},"body":{"standin":{"status":500,"times":2}}}"#;
        let raws = [raw, raw, raw];
        let checks: Vec<Check> = raws.iter().map(|r| check_message(r, None)).collect();
        let dry = entries_json(&resolve(&shared, "c", &raws, &checks, false));
        assert_eq!(dry[0]["statusCode"], 500);
        assert_eq!(dry[1]["statusCode"], 500);
        assert!(dry[2]["xactionId"].is_string());
        let real = entries_json(&resolve(&shared, "c", &raws, &checks, true));
        assert_eq!(real[0]["statusCode"], 500);
        assert_eq!(real[1]["statusCode"], 500);
        assert!(real[2]["xactionId"].is_string());
        let after = entries_json(&resolve(&shared, "c", &raws[..1], &checks[..1], true));
        assert!(after[0]["xactionId"].is_string());
    }

    #[tokio::test]
    async fn multi_status_has_the_aep_shape() {
        let entries = [
            Entry::Delivered {
                xaction_id: "x-1".into(),
            },
            Entry::Failed {
                status_code: Code::Number(400),
                message: "bad".into(),
            },
        ];
        let response = multi_status("inlet", "b-1", 42, &entries);
        assert_eq!(response.status(), StatusCode::MULTI_STATUS);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            value,
            serde_json::json!({
                "inletId": "inlet", "batchId": "b-1", "receivedTimeMs": 42,
                "responses": [{"xactionId": "x-1"}, {"statusCode": 400, "message": "bad"}]
            })
        );
    }
}
