//! Bisecting a batch the upstream refused whole with a 400, to find the
//! messages that cause it so the innocent ones are delivered.
//!
//! A bisection sends its first half alone. If the upstream refuses that half
//! exactly as it refused the parent, the second half goes next; if that is
//! refused the same way too, the 400 does not depend on the messages and both
//! halves fail with it at once: a batch every message of which is refused
//! costs three requests instead of 2n−1. Any other answer releases the other
//! half to go on alone.

use super::answer::Verdict;
use super::deliver::{fail_all, halves, Courier, Part, Reading};
use super::Transport;
use crate::batcher::Message;
use crate::reply::Outcome;

/// A bisection in progress. Its first half goes alone; if the upstream refuses
/// it whole exactly as it refused the parent, the second half goes next, and if
/// that is refused the same way too, the refusal does not depend on the
/// messages: both halves fail with it at once instead of costing 2n−1 requests.
pub(super) struct Probe {
    /// The parent's whole-request 400 text.
    refusal: String,
    /// The half not in this part.
    pub other: Vec<Message>,
    stage: Stage,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// `other` has not been sent yet.
    FirstHalf,
    /// `other` was refused whole with `refusal`.
    SecondHalf,
}

impl<T: Transport> Courier<'_, T> {
    /// 400: one message alone is the culprit; more are bisected, first half first.
    pub(super) fn bisect(&self, part: Part, refusal: String) -> Vec<Part> {
        if part.messages.len() <= 1 {
            fail_all(part.messages, &Outcome::failed(400, refusal));
            return Vec::new();
        }
        let (first, second) = halves(part.messages);
        let mut next = Part::new(first, part.retries);
        next.probe = Some(Probe {
            refusal,
            other: second,
            stage: Stage::FirstHalf,
        });
        vec![next]
    }

    /// The next step of a bisection, given how its current half was answered.
    pub(super) fn follow_probe(&self, part: Part, probe: Probe, reading: Reading) -> Vec<Part> {
        let same = matches!(
            &reading,
            Reading::Verdict { verdict: Verdict::Bisect { message }, .. } if *message == probe.refusal
        );
        match (same, probe.stage) {
            (true, Stage::FirstHalf) => {
                let mut next = Part::new(probe.other, part.retries);
                next.probe = Some(Probe {
                    refusal: probe.refusal,
                    other: part.messages,
                    stage: Stage::SecondHalf,
                });
                vec![next]
            }
            (true, Stage::SecondHalf) => {
                tracing::warn!(
                    key = ?self.key,
                    messages = part.messages.len() + probe.other.len(),
                    "upstream refuses both halves alike; the 400 does not depend on the messages"
                );
                let outcome = Outcome::failed(400, probe.refusal);
                fail_all(part.messages, &outcome);
                fail_all(probe.other, &outcome);
                Vec::new()
            }
            (false, _) => {
                let mut parts = self.release(probe, part.retries);
                parts.extend(self.act(part, reading));
                parts
            }
        }
    }

    /// Lets a bisection's other half go on alone: an unsent half goes as it
    /// is; a half already refused whole is bisected itself.
    pub(super) fn release(&self, probe: Probe, retries: u32) -> Vec<Part> {
        if probe.other.is_empty() {
            return Vec::new();
        }
        let other = Part::new(probe.other, retries);
        match probe.stage {
            Stage::FirstHalf => vec![other],
            Stage::SecondHalf => self.bisect(other, probe.refusal),
        }
    }
}
