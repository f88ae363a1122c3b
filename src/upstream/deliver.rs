//! Walking one batch to the end: every message leaves with an outcome.
//!
//! A batch becomes [`Part`]s that travel **concurrently** (the in-flight limit
//! lives in the transport), so a part sleeping on `Retry-After` holds up no
//! other. Each exchange is read once ([`read`]) and then one decision is made
//! per function: answer each message from its own entry ([`Courier::fan_out`]),
//! retry or give up ([`Courier::retry_or_give_up`]), split on 413
//! ([`Courier::split`]), bisect on 400 (in [`super::bisect`]), or fail.
//! Nothing is resent after its entry came back or after an answer arrived
//! that could not be read, and nothing is retried past the callers' deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::answer::{classify, BatchAnswer, Entry, Verdict};
use super::bisect::Probe;
use super::patience::{expire, partition, Patience};
use super::{retry, Exchange, RetryPolicy, Silence, Transport, Upstream};
use crate::batcher::{Batch, BatchKey, Message};
use crate::metrics::Metrics;
use crate::reply::{Delivery, Outcome};

/// A slice of the batch on its own road, with the retries it has used.
pub(super) struct Part {
    pub messages: Vec<Message>,
    pub retries: u32,
    pub not_before: Option<Instant>,
    /// Set while this part is one half of a bisection (see [`Probe`]).
    pub probe: Option<Probe>,
}

impl Part {
    pub fn new(messages: Vec<Message>, retries: u32) -> Part {
        Part {
            messages,
            retries,
            not_before: None,
            probe: None,
        }
    }

    /// The latest deadline of the messages in this part (a waiting caller's,
    /// or a spooled message's age limit).
    pub fn deadline(&self) -> Option<Instant> {
        self.messages.iter().map(|m| m.reply.deadline()).max()
    }
}

/// A failure that may be retried, and whose it was.
pub(super) struct Failure {
    pub status: u16,
    pub message: String,
    /// The whole request's status, not one entry's.
    pub whole: bool,
}

/// One exchange, read: what the upstream said, or that time ran out.
pub(super) enum Reading {
    Verdict {
        verdict: Verdict,
        retry_after: Option<Duration>,
    },
    TimedOut {
        reason: String,
    },
    /// Nothing was sent: no IMS token could be had (`status` is what the
    /// producers get, the message says why; see [`Courier::no_token`]).
    NoToken {
        status: u16,
        message: String,
    },
}

/// What an exchange for `sent` messages means. A request that was never sent or
/// lost its connection is retried; an answer whose body could not be
/// read reached the upstream and is not confirmed (3xx included: no redirects).
fn read(exchange: Exchange, sent: usize) -> Reading {
    let retry = |status, message| Reading::Verdict {
        verdict: Verdict::Retry { status, message },
        retry_after: None,
    };
    match exchange {
        Exchange::NotSent { reason } => retry(502, format!("upstream unreachable: {reason}")),
        Exchange::NoToken { status, message } => Reading::NoToken { status, message },
        Exchange::Unanswered {
            why: Silence::ConnectionLost,
            reason,
        } => retry(502, format!("upstream connection failed: {reason}")),
        Exchange::Unanswered {
            why: Silence::DeadlinePassed,
            reason,
        } => Reading::TimedOut { reason },
        Exchange::Answered {
            status,
            headers,
            body,
        } => Reading::Verdict {
            verdict: match body {
                Ok(body) => classify(status, &body, sent),
                Err(reason) => Verdict::Untrusted {
                    reason: format!("upstream answered {status} but {reason}"),
                },
            },
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(retry::parse_retry_after),
        },
    }
}

/// The delivery logic for one batch, over any [`Transport`].
pub(super) struct Courier<'a, T> {
    pub transport: &'a T,
    pub retry: &'a RetryPolicy,
    pub metrics: &'a Metrics,
    pub key: &'a BatchKey,
    pub patience: &'a Patience,
}

impl Upstream {
    /// Delivers a batch; returns when every message has been answered.
    pub(super) async fn deliver(self: Arc<Self>, batch: Batch) {
        let Batch {
            key,
            messages,
            in_flight,
            ..
        } = batch;
        let courier = Courier {
            transport: &*self,
            retry: &self.retry,
            metrics: &self.metrics,
            key: &key,
            patience: &self.patience,
        };
        courier.deliver(messages).await;
        // The batcher paces this key by its batches in flight: the ticket goes
        // back only now, when every message of the batch has its answer.
        drop(in_flight);
    }
}

impl<T: Transport> Courier<'_, T> {
    /// Runs every part until none is left; follow-up parts start as soon as
    /// the part that made them ends.
    pub async fn deliver(&self, messages: Vec<Message>) {
        let mut running = FuturesUnordered::new();
        running.push(self.run(Part::new(messages, 0)));
        while let Some(next) = running.next().await {
            for part in next {
                running.push(self.run(part));
            }
        }
    }

    /// Sends one part (after its back-off) and returns the parts it leaves.
    async fn run(&self, mut part: Part) -> Vec<Part> {
        if let Some(at) = part.not_before {
            if !self.back_off(&part, at).await {
                return Vec::new();
            }
        }
        expire(&mut part.messages);
        if let Some(probe) = &mut part.probe {
            expire(&mut probe.other);
        }
        let Some(deadline) = part.deadline() else {
            let retries = part.retries;
            return part
                .probe
                .map_or_else(Vec::new, |p| self.release(p, retries));
        };
        let deadline = self.exchange_deadline(&part, deadline);
        let exchange = self
            .transport
            .send_batch(self.key, &part.messages, deadline)
            .await;
        let reading = read(exchange, part.messages.len());
        match part.probe.take() {
            Some(probe) => self.follow_probe(part, probe, reading),
            None => self.act(part, reading),
        }
    }

    /// Acts on a reading of the whole part.
    pub(super) fn act(&self, part: Part, reading: Reading) -> Vec<Part> {
        let n = part.messages.len();
        let key = self.key;
        let (verdict, retry_after) = match reading {
            Reading::TimedOut { reason } => {
                tracing::warn!(?key, messages = n, %reason, "upstream timed out");
                return self.unconfirmed(part, &Outcome::timed_out(), &reason);
            }
            Reading::NoToken { status, message } => return self.no_token(part, status, message),
            Reading::Verdict {
                verdict,
                retry_after,
            } => (verdict, retry_after),
        };
        match verdict {
            Verdict::Answer(answer) => self.fan_out(part, answer, retry_after),
            Verdict::Retry { status, message } => {
                let failure = Failure {
                    status,
                    message,
                    whole: true,
                };
                self.retry_or_give_up(part, failure, retry_after)
            }
            Verdict::Split { message } => self.split(part, message),
            Verdict::Bisect { message } => self.bisect(part, message),
            Verdict::Final { status, message } => {
                tracing::warn!(?key, status, messages = n, "upstream refused the batch");
                fail_all(part.messages, &Outcome::failed(status, message));
                Vec::new()
            }
            Verdict::Untrusted { reason } => {
                // The reason may quote the upstream's body: not at warn.
                tracing::warn!(?key, messages = n, "upstream answer not trusted");
                tracing::debug!(?key, reason = %super::answer::truncate(&reason), "untrusted answer");
                self.unconfirmed(part, &Outcome::not_confirmed(&reason), &reason)
            }
        }
    }
}

impl<T: Transport> Courier<'_, T> {
    /// Answers each message from its own entry; the 429/5xx ones go again,
    /// grouped by status so each gets its own entry's status if retries run out.
    fn fan_out(&self, part: Part, answer: BatchAnswer, retry_after: Option<Duration>) -> Vec<Part> {
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
                Entry::NotConfirmed { reason } if message.reply.is_spooled() => {
                    // At least once: a spooled message goes again, counted.
                    self.metrics.spool.resent_unconfirmed.increment(1);
                    let group = resend.entry(502).or_insert_with(|| (Vec::new(), reason));
                    group.0.push(message);
                }
                Entry::NotConfirmed { reason } => {
                    message.reply.send(Outcome::not_confirmed(reason))
                }
                Entry::Retry {
                    status,
                    message: text,
                } => {
                    let group = resend.entry(status).or_insert_with(|| (Vec::new(), text));
                    group.0.push(message);
                }
            }
        }
        resend
            .into_iter()
            .flat_map(|(status, (messages, message))| {
                let failure = Failure {
                    status,
                    message,
                    whole: false,
                };
                self.retry_or_give_up(Part::new(messages, part.retries), failure, retry_after)
            })
            .collect()
    }

    /// The part again after its back-off: its spooled messages on their own
    /// road (see [`super::patience`]), the waiting producers' ones unless the
    /// retries are used up or the wait would pass every caller's deadline.
    fn retry_or_give_up(
        &self,
        part: Part,
        failure: Failure,
        retry_after: Option<Duration>,
    ) -> Vec<Part> {
        let (spooled, waiting) = partition(part.messages);
        if spooled.is_empty() {
            let part = Part::new(waiting, part.retries);
            return self
                .retry_waiting(part, failure, retry_after)
                .into_iter()
                .collect();
        }
        let mut next = Vec::new();
        if !waiting.is_empty() {
            let again = Failure {
                message: failure.message.clone(),
                ..failure
            };
            let part = Part::new(waiting, part.retries);
            next.extend(self.retry_waiting(part, again, retry_after));
        }
        next.extend(self.retry_spooled(Part::new(spooled, part.retries), failure, retry_after));
        next
    }

    /// The waiting producers' part again after its back-off, or `None` once it
    /// was failed because the retries are used up or the wait would pass
    /// every caller's deadline.
    fn retry_waiting(
        &self,
        mut part: Part,
        failure: Failure,
        retry_after: Option<Duration>,
    ) -> Option<Part> {
        let now = Instant::now();
        let remaining = part
            .deadline()
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        if remaining.is_zero() {
            // The callers stopped waiting (they got 504 themselves): say the same.
            fail_all(part.messages, &Outcome::timed_out());
            return None;
        }
        // Clamped before any arithmetic: an absurd Retry-After only means "not in time".
        let floor = retry_after.map(|after| after.min(remaining));
        let resend_at = self
            .retry
            .delay(part.retries, floor)
            .filter(|delay| *delay < remaining)
            .and_then(|delay| now.checked_add(delay));
        let Some(at) = resend_at else {
            self.give_up(part, failure, retry_after);
            return None;
        };
        tracing::debug!(key = ?self.key, status = failure.status, messages = part.messages.len(), "retrying");
        self.metrics.upstream_retries.increment(1);
        part.retries += 1;
        part.not_before = Some(at);
        Some(part)
    }

    /// Fails a part whose retryable failure is final now. A final 429 tells
    /// the producer when to come back: the upstream's hint, or inletd's own.
    fn give_up(&self, part: Part, failure: Failure, retry_after: Option<Duration>) {
        let Failure {
            status,
            message,
            whole,
        } = failure;
        tracing::warn!(key = ?self.key, status, retries = part.retries, messages = part.messages.len(), "giving up");
        tracing::debug!(key = ?self.key, message = %super::answer::truncate(&message), "last failure");
        // A whole-request 500 means the gateway failed us; an entry's own status is passed on.
        let status = if whole && status == 500 { 502 } else { status };
        let hint = (status == 429).then(|| retry::hint(retry_after, self.retry));
        let outcome = Outcome::failed(
            status,
            format!("{message} (after {} retries)", part.retries),
        )
        .with_retry_after(hint);
        fail_all(part.messages, &outcome);
    }

    /// 413: the halves go on their own (one message alone is too large).
    fn split(&self, part: Part, message: String) -> Vec<Part> {
        if part.messages.len() <= 1 {
            fail_all(part.messages, &Outcome::failed(413, message));
            return Vec::new();
        }
        let (first, second) = halves(part.messages);
        vec![
            Part::new(first, part.retries),
            Part::new(second, part.retries),
        ]
    }
}

pub(super) fn halves(mut first: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
    let second = first.split_off(first.len() / 2);
    (first, second)
}

pub(super) fn fail_all(messages: Vec<Message>, outcome: &Outcome) {
    for m in messages {
        m.reply.send(outcome.clone());
    }
}
