//! Delivery without a producer deadline, for spooled messages: nobody waits
//! for them, so a part of spooled messages is retried with capped back-off
//! until delivered or `spool_max_age` (not `max_retries` times), and one
//! exchange is bounded by `request_timeout` alone. That holds when no IMS
//! token can be had too: nothing was sent, and the message is not at fault.
//!
//! The rule "never resend after an unanswered send" is relaxed for them only:
//! a spooled message is promised at least once, so one sent without a usable
//! answer (a timeout, an answer that cannot be read, an entry that does not
//! line up) is resent and counted (`inletd_spool_resent_unconfirmed_total`);
//! it may arrive twice. Nothing is resent after its own entry came back.
//! Waiting producers' messages in the same part keep every rule of
//! [`super::deliver`]. Once draining, a spooled part is not sent again: it is
//! dropped, which leaves it on disk for the next start.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deliver::{fail_all, Courier, Failure, Part};
use super::Transport;
use crate::batcher::Message;
use crate::reply::Outcome;

/// What delivery without a deadline needs to know.
#[derive(Clone, Debug)]
pub struct Patience {
    /// Longest one exchange of only spooled messages may take (`request_timeout`).
    pub attempt: Duration,
    /// Cancelled when shutdown begins: spooled parts are then not resent.
    pub draining: CancellationToken,
}

impl Patience {
    pub fn new(attempt: Duration, draining: CancellationToken) -> Patience {
        Patience { attempt, draining }
    }
}

/// `(spooled, waiting)`, each in its original order.
pub(super) fn partition(messages: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
    messages.into_iter().partition(|m| m.reply.is_spooled())
}

impl<T: Transport> Courier<'_, T> {
    /// When an exchange for `part` must end: the latest waiting producer's
    /// deadline, or for spooled messages alone one `request_timeout` (never
    /// past their age limit).
    pub(super) fn exchange_deadline(&self, part: &Part, latest: Instant) -> Instant {
        let waiting = part
            .messages
            .iter()
            .filter(|m| !m.reply.is_spooled())
            .map(|m| m.reply.deadline())
            .max();
        waiting.unwrap_or_else(|| {
            let attempt = Instant::now()
                .checked_add(self.patience.attempt)
                .unwrap_or(latest);
            attempt.min(latest)
        })
    }

    /// Waits out a part's back-off. `false`: shutdown began meanwhile and the
    /// part (all spooled: waiting producers never share a retried part with
    /// them) is left to the spool.
    pub(super) async fn back_off(&self, part: &Part, at: Instant) -> bool {
        if !part.messages.iter().all(|m| m.reply.is_spooled()) {
            tokio::time::sleep_until(at).await;
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => !self.patience.draining.is_cancelled(),
            _ = self.patience.draining.cancelled() => false,
        }
    }

    /// A send without a usable answer: waiting producers get `outcome` (and
    /// their messages are never resent); spooled messages go again.
    pub(super) fn unconfirmed(&self, part: Part, outcome: &Outcome, reason: &str) -> Vec<Part> {
        let (spooled, waiting) = partition(part.messages);
        fail_all(waiting, outcome);
        if spooled.is_empty() {
            return Vec::new();
        }
        self.metrics
            .spool
            .resent_unconfirmed
            .increment(spooled.len() as u64);
        let failure = Failure {
            status: outcome.status(),
            message: reason.to_owned(),
            whole: true,
        };
        self.retry_spooled(Part::new(spooled, part.retries), failure, None)
            .into_iter()
            .collect()
    }

    /// No IMS token could be had, so nothing was sent. The waiting producers
    /// are told why at once (the token provider already retried IMS, and
    /// keeps trying on its own). Spooled messages are not at fault: they wait
    /// like after a retryable failure (capped back-off, `spool_max_age`), so
    /// an IMS outage or a secret being fixed dead-letters nothing.
    pub(super) fn no_token(&self, part: Part, status: u16, message: String) -> Vec<Part> {
        let (spooled, waiting) = partition(part.messages);
        if !waiting.is_empty() {
            tracing::warn!(key = ?self.key, status, messages = waiting.len(), "no IMS token: the producers are told why");
            let outcome = Outcome::Failed {
                status,
                message: message.clone(),
                retry_after: super::exchange::no_token_retry_after(status),
            };
            fail_all(waiting, &outcome);
        }
        if spooled.is_empty() {
            return Vec::new();
        }
        let failure = Failure {
            status,
            message,
            whole: true,
        };
        self.retry_spooled(Part::new(spooled, part.retries), failure, None)
            .into_iter()
            .collect()
    }

    /// Spooled messages after a retryable failure: again after a capped
    /// back-off, for as long as their age allows. `None` once shutdown began
    /// (they stay on disk) or their age limit passed (they are dead-lettered).
    pub(super) fn retry_spooled(
        &self,
        mut part: Part,
        failure: Failure,
        retry_after: Option<Duration>,
    ) -> Option<Part> {
        if self.patience.draining.is_cancelled() {
            tracing::debug!(key = ?self.key, messages = part.messages.len(), "shutting down: spooled messages left for the next start");
            return None;
        }
        let now = Instant::now();
        let deadline = part.deadline()?;
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            tracing::warn!(key = ?self.key, status = failure.status, messages = part.messages.len(), "spooled messages reached spool_max_age");
            fail_all(part.messages, &Outcome::expired());
            return None;
        }
        let delay = self
            .retry
            .capped_delay(part.retries, retry_after.map(|after| after.min(remaining)));
        // At the age limit the part runs once more, to be expired (dead-lettered) there.
        let at = now.checked_add(delay).unwrap_or(deadline).min(deadline);
        tracing::debug!(key = ?self.key, status = failure.status, messages = part.messages.len(), "retrying spooled messages");
        self.metrics.upstream_retries.increment(1);
        part.retries = part.retries.saturating_add(1);
        part.not_before = Some(at);
        Some(part)
    }
}

/// Answers the messages whose deadline has passed: the callers' (504), or
/// a spooled message's age limit (dead-lettered).
pub(super) fn expire(messages: &mut Vec<Message>) {
    let now = Instant::now();
    if messages.iter().all(|m| m.reply.deadline() > now) {
        return;
    }
    let (live, late): (Vec<_>, Vec<_>) = std::mem::take(messages)
        .into_iter()
        .partition(|m| m.reply.deadline() > now);
    *messages = live;
    for m in late {
        let outcome = if m.reply.is_spooled() {
            Outcome::expired()
        } else {
            Outcome::timed_out()
        };
        m.reply.send(outcome);
    }
}
