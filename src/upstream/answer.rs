//! Reading the upstream's answer to a batch and deciding what it means.
//!
//! [`classify`] turns a status and body into a [`Verdict`]. A 207 (or a 200
//! carrying the batch answer) is read **by position** and must line up: one
//! entry per message. Anything that does not line up is
//! [`Verdict::Untrusted`]: no message of that batch is reported delivered.

mod raw;

use serde::Deserialize;

use crate::reply::Receipt;
use raw::{Field, RawEntry};
use serde_json::Value;

/// What one `responses` entry says about its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Delivered {
        xaction_id: String,
    },
    /// 429 or 5xx: worth resending this message alone.
    Retry {
        status: u16,
        message: String,
    },
    /// Any other 4xx: final.
    Final {
        status: u16,
        message: String,
    },
    /// An entry that says neither success nor a usable failure: the message
    /// reached the upstream, its fate is unknown, and it is not resent.
    NotConfirmed {
        reason: String,
    },
}

/// A batch answer that lines up with the batch sent.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchAnswer {
    pub receipt: Receipt,
    pub entries: Vec<Entry>,
}

/// What to do with a whole batch after one upstream answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Per-message results, one per message in order.
    Answer(BatchAnswer),
    /// 429 / 500 / 502 / 503 / 504: resend the whole batch later.
    Retry { status: u16, message: String },
    /// 413: split the batch in halves.
    Split { message: String },
    /// 400: bisect to find the messages that cause it.
    Bisect { message: String },
    /// 401, 403 and other statuses: every message of the batch gets it.
    Final { status: u16, message: String },
    /// An answer that cannot be trusted (misaligned, not JSON, unexpected status).
    Untrusted { reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAnswer<'a> {
    inlet_id: Option<String>,
    batch_id: Option<String>,
    received_time_ms: Option<serde_json::Number>,
    /// Read field by field, borrowing from the body: no JSON tree per message.
    #[serde(borrow)]
    responses: Vec<RawEntry<'a>>,
}

/// Whether a status is worth retrying.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Classifies the upstream's answer to a batch of `sent` messages.
pub fn classify(status: u16, body: &[u8], sent: usize) -> Verdict {
    match status {
        200 | 207 => match read_batch_answer(body, sent) {
            Ok(answer) => Verdict::Answer(answer),
            Err(reason) => Verdict::Untrusted {
                reason: format!("upstream answered {status} but {reason}"),
            },
        },
        400 => Verdict::Bisect {
            message: error_message(status, body),
        },
        413 => Verdict::Split {
            message: error_message(status, body),
        },
        s if is_retryable(s) => Verdict::Retry {
            status: s,
            message: error_message(s, body),
        },
        s @ 401..=499 => Verdict::Final {
            status: s,
            message: error_message(s, body),
        },
        s => Verdict::Untrusted {
            reason: format!("upstream answered an unexpected status {s}"),
        },
    }
}

fn read_batch_answer(body: &[u8], sent: usize) -> Result<BatchAnswer, String> {
    // serde reads a struct from a JSON array of its fields too; the answer is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err("its body is not the batch answer (not a JSON object)".into());
    }
    let raw: RawAnswer = serde_json::from_slice(body)
        .map_err(|e| format!("its body is not the batch answer ({e})"))?;
    if raw.responses.len() != sent {
        return Err(format!(
            "its `responses` has {} entries for {sent} messages",
            raw.responses.len()
        ));
    }
    Ok(BatchAnswer {
        receipt: Receipt {
            inlet_id: raw.inlet_id,
            batch_id: raw.batch_id,
            received_time_ms: raw.received_time_ms,
        },
        entries: raw.responses.iter().map(read_entry).collect(),
    })
}

/// One entry. Only an unambiguous entry is a success: an id and no status, or
/// an id with a 2xx. A 4xx/5xx wins over an id. Anything else (a status that
/// is not a whole number, 0, 1xx, 3xx, ≥ 600, a 2xx or nothing without an id)
/// is not confirmed: never a success and never resent.
fn read_entry(entry: &RawEntry<'_>) -> Entry {
    let xaction_id = entry
        .xaction_id
        .as_ref()
        .and_then(Field::as_str)
        .filter(|s| !s.is_empty());
    let status = match &entry.status_code {
        None => None,
        Some(code) => match status_code(code) {
            Some(status) => Some(status),
            None => {
                return Entry::NotConfirmed {
                    reason: "the upstream's entry for this message has an unreadable statusCode"
                        .into(),
                }
            }
        },
    };
    let message = || {
        entry
            .message
            .as_ref()
            .and_then(Field::as_str)
            .map(|m| truncate(m).to_owned())
            .unwrap_or_else(|| "the upstream gave no message".to_owned())
    };
    match (status, xaction_id) {
        (Some(s @ (429 | 500..=599)), _) => Entry::Retry {
            status: s,
            message: message(),
        },
        (Some(s @ 400..=499), _) => Entry::Final {
            status: s,
            message: message(),
        },
        (None | Some(200..=299), Some(id)) => Entry::Delivered {
            xaction_id: id.to_owned(),
        },
        (None | Some(200..=299), None) => Entry::NotConfirmed {
            reason: "the upstream's entry for this message has no xactionId".into(),
        },
        (Some(s), _) => Entry::NotConfirmed {
            reason: format!("the upstream's entry for this message has statusCode {s}"),
        },
    }
}

/// A `statusCode` as a number or a string holding a whole number that fits an
/// HTTP status; `400.0`, `"abc"`, `-1` and huge numbers are not.
fn status_code(code: &Field<'_>) -> Option<u16> {
    match code {
        Field::Whole(n) => u16::try_from(*n).ok(),
        Field::Str(s) => s.trim().parse().ok(),
        Field::Other => None,
    }
}

/// The human part of an upstream error body, whatever its shape.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let text = parsed.as_ref().and_then(|v| {
        ["message", "title", "detail", "error_description", "error"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
    });
    match text {
        Some(t) => format!("upstream answered {status}: {}", truncate(t)),
        None => format!("upstream answered {status}"),
    }
}

/// At most 300 characters of an upstream text.
pub(super) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(300) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str, sent: usize) -> Verdict {
        classify(207, body.as_bytes(), sent)
    }

    #[test]
    fn full_success_lines_up_by_position() {
        let v = answer(
            r#"{"inletId":"i","batchId":"b","receivedTimeMs":1,"responses":[{"xactionId":"x1"},{"xactionId":"zz"}]}"#,
            2,
        );
        let Verdict::Answer(a) = v else {
            panic!("{v:?}")
        };
        assert_eq!(a.receipt.batch_id.as_deref(), Some("b"));
        assert_eq!(
            a.entries[0],
            Entry::Delivered {
                xaction_id: "x1".into()
            }
        );
        assert_eq!(
            a.entries[1],
            Entry::Delivered {
                xaction_id: "zz".into()
            },
            "id need not share the batch prefix"
        );
    }

    #[test]
    fn partial_failure_with_string_and_number_codes() {
        let v = answer(
            r#"{"responses":[{"xactionId":"x1"},{"statusCode":"400","message":"missing body"},{"statusCode":503,"message":"busy"},{"statusCode":429}]}"#,
            4,
        );
        let Verdict::Answer(a) = v else {
            panic!("{v:?}")
        };
        assert!(matches!(a.entries[0], Entry::Delivered { .. }));
        assert_eq!(
            a.entries[1],
            Entry::Final {
                status: 400,
                message: "missing body".into()
            }
        );
        assert_eq!(
            a.entries[2],
            Entry::Retry {
                status: 503,
                message: "busy".into()
            }
        );
        assert!(matches!(a.entries[3], Entry::Retry { status: 429, .. }));
    }

    #[test]
    fn misaligned_answers_are_untrusted() {
        for (body, sent) in [
            (r#"{"responses":[{"xactionId":"x1"}]}"#, 2),
            (
                r#"{"responses":[{"xactionId":"x1"},{"xactionId":"x2"},{"xactionId":"x3"}]}"#,
                2,
            ),
            ("<html>oops</html>", 1),
            (r#"{"ok":true}"#, 1),
            // The array form serde would accept for a struct (found by fuzzing).
            (r#"["i","b",1,[{"xactionId":"x1"}]]"#, 1),
            ("", 1),
        ] {
            assert!(
                matches!(answer(body, sent), Verdict::Untrusted { .. }),
                "{body}"
            );
        }
        assert!(matches!(
            classify(200, br#"{"ok":true}"#, 1),
            Verdict::Untrusted { .. }
        ));
        assert!(matches!(classify(302, b"", 1), Verdict::Untrusted { .. }));
    }

    #[test]
    fn entries_without_id_are_not_successes() {
        let Verdict::Answer(a) = answer(
            r#"{"responses":[{},{"xactionId":""},{"statusCode":200}]}"#,
            3,
        ) else {
            panic!()
        };
        assert!(a
            .entries
            .iter()
            .all(|e| matches!(e, Entry::NotConfirmed { .. })));
        // a failure code wins over an id
        let Verdict::Answer(a) = answer(r#"{"responses":[{"xactionId":"x","statusCode":400}]}"#, 1)
        else {
            panic!()
        };
        assert!(matches!(a.entries[0], Entry::Final { status: 400, .. }));
    }

    #[test]
    fn odd_status_codes_are_never_success_and_never_resent() {
        for code in [
            r#""abc""#,
            "400.0",
            "0",
            "100",
            r#""199""#,
            "307",
            "600",
            "-1",
            "70000",
            "18446744073709551616",
            "1e3",
            "null",
            "true",
            r#"{"a":1}"#,
        ] {
            let body = format!(r#"{{"responses":[{{"xactionId":"x","statusCode":{code}}}]}}"#);
            let Verdict::Answer(a) = answer(&body, 1) else {
                panic!("{body}")
            };
            assert!(
                matches!(a.entries[0], Entry::NotConfirmed { .. }),
                "{code}: {:?}",
                a.entries[0]
            );
        }
        let Verdict::Answer(a) = answer(
            r#"{"responses":[{"xactionId":"x","statusCode":200},{"xactionId":"y","statusCode":" 201 "},{"statusCode":"599"},{"statusCode":404},7]}"#,
            5,
        ) else {
            panic!()
        };
        assert!(matches!(a.entries[0], Entry::Delivered { .. }));
        assert!(matches!(a.entries[1], Entry::Delivered { .. }));
        assert!(matches!(a.entries[2], Entry::Retry { status: 599, .. }));
        assert!(matches!(a.entries[3], Entry::Final { status: 404, .. }));
        assert!(matches!(a.entries[4], Entry::NotConfirmed { .. }));
    }

    #[test]
    fn whole_request_statuses() {
        let msg = br#"{"statusCode":503,"message":"unavailable"}"#;
        assert_eq!(
            classify(503, msg, 3),
            Verdict::Retry {
                status: 503,
                message: "upstream answered 503: unavailable".into()
            }
        );
        assert!(matches!(classify(413, b"", 3), Verdict::Split { .. }));
        assert!(matches!(classify(400, b"{}", 3), Verdict::Bisect { .. }));
        assert!(matches!(
            classify(401, b"", 3),
            Verdict::Final { status: 401, .. }
        ));
        assert!(matches!(
            classify(403, b"", 3),
            Verdict::Final { status: 403, .. }
        ));
        assert!(matches!(
            classify(429, b"", 3),
            Verdict::Retry { status: 429, .. }
        ));
    }
}
