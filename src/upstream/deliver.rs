//! Walking one batch to the end: every message leaves with an outcome.
//!
//! A batch becomes a work list of [`Part`]s. Each round sends one part and
//! acts on the [`Verdict`]: answer each message from its own entry (resending
//! only the 429/5xx ones), retry the whole part after a back-off, split on 413,
//! bisect on 400, or fail the part. Nothing is resent after its entry came
//! back, and nothing is retried past the callers' deadline.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::answer::{classify, Entry, Verdict};
use super::{retry, Exchange, Upstream};
use crate::batcher::{Batch, BatchKey, Message};
use crate::reply::{Delivery, Outcome};

const TIMED_OUT: &str =
    "no confirmation from the upstream within request_timeout; the message may still be delivered";

/// A slice of the batch on its own road, with the retries it has used.
struct Part {
    messages: Vec<Message>,
    retries: u32,
    not_before: Option<Instant>,
}

impl Part {
    fn new(messages: Vec<Message>, retries: u32) -> Part {
        Part {
            messages,
            retries,
            not_before: None,
        }
    }

    /// The latest deadline of the callers still waiting on this part.
    fn deadline(&self) -> Option<Instant> {
        self.messages.iter().map(|m| m.reply.deadline()).max()
    }
}

impl Upstream {
    /// Delivers a batch; returns when every message has been answered.
    pub(super) async fn deliver(self: Arc<Self>, batch: Batch) {
        let Batch { key, messages, .. } = batch;
        let mut work = VecDeque::from([Part::new(messages, 0)]);
        while let Some(mut part) = work.pop_front() {
            if let Some(at) = part.not_before {
                tokio::time::sleep_until(at).await;
            }
            expire(&mut part.messages);
            let Some(deadline) = part.deadline() else {
                continue;
            };
            let messages = &part.messages;
            let exchange = self
                .exchange(|| self.batch_request(&key, messages), deadline)
                .await;
            self.act(&key, part, exchange, &mut work);
        }
    }

    fn act(&self, key: &BatchKey, part: Part, exchange: Exchange, work: &mut VecDeque<Part>) {
        let (verdict, retry_after) = match exchange {
            Exchange::Answered {
                status,
                headers,
                body,
            } => {
                let retry_after = headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(retry::parse_retry_after);
                (classify(status, &body, part.messages.len()), retry_after)
            }
            Exchange::Failed {
                timeout: true,
                reason,
                ..
            } => {
                tracing::warn!(?key, messages = part.messages.len(), %reason, "upstream timed out");
                return fail_all(part.messages, 504, TIMED_OUT);
            }
            Exchange::Failed {
                connect, reason, ..
            } => {
                let what = if connect {
                    "upstream unreachable"
                } else {
                    "upstream connection failed"
                };
                (
                    Verdict::Retry {
                        status: 502,
                        message: format!("{what}: {reason}"),
                    },
                    None,
                )
            }
        };
        match verdict {
            Verdict::Answer(answer) => {
                // Resent messages are grouped by their entry's status, so each
                // gets its own entry's status if the retries run out.
                let mut resend: BTreeMap<u16, (Vec<Message>, String)> = BTreeMap::new();
                let receipt = Arc::new(answer.receipt);
                for (message, entry) in part.messages.into_iter().zip(answer.entries) {
                    match entry {
                        Entry::Delivered { xaction_id } => {
                            message.reply.send(Outcome::Delivered(Delivery {
                                xaction_id,
                                receipt: receipt.clone(),
                            }))
                        }
                        Entry::Final {
                            status,
                            message: text,
                        } => message.reply.send(Outcome::failed(status, text)),
                        Entry::Retry {
                            status,
                            message: text,
                        } => {
                            let group = resend.entry(status).or_insert_with(|| (Vec::new(), text));
                            group.0.push(message);
                        }
                    }
                }
                for (status, (messages, text)) in resend {
                    let part = Part::new(messages, part.retries);
                    self.retry_later(key, part, (status, text, false), retry_after, work);
                }
            }
            Verdict::Retry { status, message } => {
                self.retry_later(key, part, (status, message, true), retry_after, work);
            }
            // One message left: it is the culprit.
            Verdict::Split { message } if part.messages.len() == 1 => {
                fail_all(part.messages, 413, &message)
            }
            Verdict::Bisect { message } if part.messages.len() == 1 => {
                fail_all(part.messages, 400, &message)
            }
            Verdict::Split { .. } | Verdict::Bisect { .. } => {
                let mut first = part.messages;
                let second = first.split_off(first.len() / 2);
                work.push_front(Part::new(second, part.retries));
                work.push_front(Part::new(first, part.retries));
            }
            Verdict::Final { status, message } => {
                tracing::warn!(
                    ?key,
                    status,
                    messages = part.messages.len(),
                    "upstream refused the batch"
                );
                fail_all(part.messages, status, &message);
            }
            Verdict::Untrusted { reason } => {
                tracing::error!(?key, messages = part.messages.len(), %reason, "upstream answer not trusted");
                let text = format!(
                    "{reason}; not confirmed, the message may or may not have been delivered"
                );
                fail_all(part.messages, 502, &text);
            }
        }
    }

    /// Schedules a resend after the back-off, or gives up with the last failure
    /// when the retries are used up or the wait would pass every caller's deadline.
    /// `failure` is (status, message, whether it was the whole request's).
    fn retry_later(
        &self,
        key: &BatchKey,
        mut part: Part,
        (status, message, whole): (u16, String, bool),
        retry_after: Option<Duration>,
        work: &mut VecDeque<Part>,
    ) {
        let delay = self.retry.delay(part.retries, retry_after);
        let deadline = part.deadline();
        match (delay, deadline) {
            (Some(delay), Some(deadline)) if Instant::now() + delay < deadline => {
                tracing::debug!(
                    ?key,
                    status,
                    messages = part.messages.len(),
                    ?delay,
                    "retrying"
                );
                self.metrics.upstream_retries.increment(1);
                part.retries += 1;
                part.not_before = Some(Instant::now() + delay);
                work.push_back(part);
            }
            _ => {
                tracing::warn!(?key, status, retries = part.retries, messages = part.messages.len(), %message, "giving up");
                // A whole-request 500 means the gateway failed us; an entry's own status is passed on.
                let status = if whole && status == 500 { 502 } else { status };
                let text = format!("{message} (after {} retries)", part.retries);
                fail_all(part.messages, status, &text);
            }
        }
    }
}

/// Answers the messages whose callers' deadline has passed.
fn expire(messages: &mut Vec<Message>) {
    let now = Instant::now();
    if messages.iter().all(|m| m.reply.deadline() > now) {
        return;
    }
    let (live, late): (Vec<_>, Vec<_>) = std::mem::take(messages)
        .into_iter()
        .partition(|m| m.reply.deadline() > now);
    *messages = live;
    fail_all(late, 504, TIMED_OUT);
}

fn fail_all(messages: Vec<Message>, status: u16, text: &str) {
    for m in messages {
        m.reply.send(Outcome::failed(status, text));
    }
}
