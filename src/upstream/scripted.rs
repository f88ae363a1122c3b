//! Test-only: an upstream whose answers are a script, behind the [`Transport`]
//! seam, and messages whose outcomes the test can collect. It records every
//! request and checks, as it goes, that no message is sent again once the
//! upstream's answer settled it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Exchange, Silence, Transport};
use crate::batcher::{BatchKey, Message};
use crate::metrics::Metrics;
use crate::reply::{Outcome, Reply};

/// How one `responses` entry is written.
#[derive(Clone, Debug)]
pub enum EntryKind {
    /// `{"xactionId":…}`
    Ok,
    /// `{"statusCode":code,"message":…}`
    Code(Value),
    /// `{"xactionId":…,"statusCode":code}`
    CodeWithId(Value),
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Step {
    NotSent,
    ConnectionLost,
    DeadlinePassed,
    /// A whole-request status with an error body.
    Whole {
        status: u16,
        retry_after: Option<String>,
    },
    /// A status line, then a body that could not be read.
    Cut {
        status: u16,
    },
    /// A 207 whose body is not JSON.
    Garbage,
    /// A 207 with entries `kinds[i % len]`, and `misalign` entries added (+) or dropped (−).
    Entries {
        kinds: Vec<EntryKind>,
        misalign: i8,
        retry_after: Option<String>,
    },
}

/// What the scripted upstream saw and promised.
#[derive(Default)]
struct Log {
    /// Message bodies of each request, in order.
    requests: Vec<Vec<Bytes>>,
    /// Messages that must not be sent again.
    settled: HashSet<Bytes>,
    /// (message, xactionId) pairs the upstream gave in an aligned answer.
    confirmed: HashSet<(Bytes, String)>,
    /// Messages sent after they were settled.
    resent_after_settled: Vec<Bytes>,
}

pub struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    log: Mutex<Log>,
}

impl Scripted {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Scripted {
        Scripted {
            steps: Mutex::new(steps.into_iter().collect()),
            log: Mutex::default(),
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bodies of each request sent so far.
    pub fn requests(&self) -> Vec<Vec<Bytes>> {
        self.log().requests.clone()
    }

    pub fn resent_after_settled(&self) -> Vec<Bytes> {
        self.log().resent_after_settled.clone()
    }

    /// Whether the upstream gave `message` this `xaction_id` in an aligned answer.
    pub fn confirmed(&self, message: &Bytes, xaction_id: &str) -> bool {
        self.log()
            .confirmed
            .contains(&(message.clone(), xaction_id.to_owned()))
    }

    fn answer(&self, bodies: &[Bytes]) -> Exchange {
        let request_no = {
            let mut log = self.log();
            for body in bodies {
                if log.settled.contains(body) {
                    log.resent_after_settled.push(body.clone());
                }
            }
            log.requests.push(bodies.to_vec());
            log.requests.len()
        };
        let step = self
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Step::Entries {
                kinds: vec![EntryKind::Ok],
                misalign: 0,
                retry_after: None,
            });
        let mut log = self.log();
        let settle_all = |log: &mut Log| log.settled.extend(bodies.iter().cloned());
        match step {
            Step::NotSent => Exchange::NotSent {
                reason: "scripted: connection refused".into(),
            },
            Step::ConnectionLost => Exchange::Unanswered {
                why: Silence::ConnectionLost,
                reason: "scripted: connection reset".into(),
            },
            Step::DeadlinePassed => {
                settle_all(&mut log);
                Exchange::Unanswered {
                    why: Silence::DeadlinePassed,
                    reason: "scripted: no answer".into(),
                }
            }
            Step::Whole {
                status,
                retry_after,
            } => {
                if !matches!(status, 400 | 413 | 429 | 500..=504) {
                    settle_all(&mut log);
                }
                let body = json!({"statusCode": status, "message": "scripted"}).to_string();
                answered(status, retry_after, Ok(body.into()))
            }
            Step::Cut { status } => {
                settle_all(&mut log);
                answered(status, None, Err("scripted: cut".into()))
            }
            Step::Garbage => {
                settle_all(&mut log);
                answered(207, None, Ok(Bytes::from_static(b"{\"responses\":[{\"xa")))
            }
            Step::Entries {
                kinds,
                misalign,
                retry_after,
            } => {
                let mut entries = Vec::new();
                for (i, body) in bodies.iter().enumerate() {
                    let id = format!("x{request_no}-{i}");
                    let kind = kinds.get(i % kinds.len().max(1)).unwrap_or(&EntryKind::Ok);
                    let (entry, code) = match kind {
                        EntryKind::Ok => (json!({"xactionId": id}), None),
                        EntryKind::Code(code) => (
                            json!({"statusCode": code, "message": "scripted"}),
                            Some(code),
                        ),
                        EntryKind::CodeWithId(code) => {
                            (json!({"xactionId": id, "statusCode": code}), Some(code))
                        }
                    };
                    if misalign == 0 {
                        let code = code.map(whole_code);
                        if !matches!(code, Some(Some(429 | 500..=599))) {
                            log.settled.insert(body.clone());
                        }
                        // Success is an id with no failure code.
                        let has_id = entry.get("xactionId").is_some();
                        if has_id && matches!(code, None | Some(Some(200..=299))) {
                            log.confirmed.insert((body.clone(), id));
                        }
                    } else {
                        log.settled.insert(body.clone());
                    }
                    entries.push(entry);
                }
                if misalign > 0 {
                    entries.extend((0..misalign).map(|_| json!({"xactionId": "extra"})));
                } else {
                    entries.truncate(entries.len().saturating_sub(misalign.unsigned_abs().into()));
                }
                let body = json!({"batchId": "b", "responses": entries}).to_string();
                answered(207, retry_after, Ok(body.into()))
            }
        }
    }
}

/// A status code written as a whole number or a string holding one.
fn whole_code(code: &Value) -> Option<u64> {
    match code {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn answered(status: u16, retry_after: Option<String>, body: super::AnswerBody) -> Exchange {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(RETRY_AFTER, value);
    }
    Exchange::Answered {
        status,
        headers,
        body,
    }
}

impl Transport for Scripted {
    async fn send_batch(&self, _key: &BatchKey, messages: &[Message], _: Instant) -> Exchange {
        let bodies: Vec<Bytes> = messages.iter().map(|m| m.body.clone()).collect();
        // One yield, as a real exchange would: other parts run meanwhile.
        tokio::task::yield_now().await;
        self.answer(&bodies)
    }
}

/// `n` messages (`"m0"`, `"m1"`, …) holding permits of `bound`, whose callers
/// wait `patience`; and the receivers of their outcomes.
pub fn messages(
    n: usize,
    bound: &Arc<Semaphore>,
    metrics: &Arc<Metrics>,
    patience: Duration,
) -> (Vec<Message>, Vec<oneshot::Receiver<Outcome>>) {
    let now = Instant::now();
    let tracker = TaskTracker::new();
    (0..n)
        .map(|i| {
            let body = Bytes::from(format!("\"m{i}\""));
            let permit = bound
                .clone()
                .try_acquire_many_owned(body.len() as u32)
                .unwrap_or_else(|e| panic!("test bound too small: {e}"));
            let (reply, rx) = Reply::new(
                now,
                now + patience,
                body.len(),
                metrics.clone(),
                permit,
                tracker.token(),
            );
            (Message { body, reply }, rx)
        })
        .unzip()
}
