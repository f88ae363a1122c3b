//! The upstream's answer to a batch (`upstream::answer::classify`) for any
//! status, body and number of messages sent.
//!
//! Properties: per-message results come only from a 200/207 and
//! line up exactly with `sent`; a message is delivered only when its own entry
//! carries that non-empty `xactionId` and no failure status; every failure
//! status is a real 4xx/5xx, retried only when it is 429 or 5xx.
#![no_main]

use arbitrary::Arbitrary;
use inletd::upstream::answer::{classify, is_retryable, Entry, Verdict};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    status: u16,
    /// Small counts reach the "lines up" path far more often than any `usize`.
    sent: u8,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let sent = usize::from(input.sent);
    let verdict = classify(input.status, input.body, sent);
    match &verdict {
        Verdict::Answer(answer) => {
            assert!(matches!(input.status, 200 | 207), "{verdict:?}");
            assert_eq!(answer.entries.len(), sent, "one entry per message sent");
            // The answer is read leniently: unknown fields are skipped without a
            // `Value`'s limits (128 levels, valid escapes everywhere). The entries
            // themselves are `Value`s, so the whole body reads as one when those
            // fields are tame; then each entry is checked against its own raw text.
            let body: Option<Value> = serde_json::from_slice(input.body).ok();
            assert!(
                matches!(body, Some(Value::Object(_)) | None),
                "an answer that is not a JSON object was trusted"
            );
            let responses = body.as_ref().and_then(|body| body.get("responses"));
            let raws = responses.and_then(Value::as_array);
            if let Some(raws) = raws {
                assert_eq!(raws.len(), sent, "the entries are the body's own");
            }
            for (i, entry) in answer.entries.iter().enumerate() {
                let raw = raws.map(|r| &r[i]);
                match entry {
                    Entry::Delivered { xaction_id } => {
                        assert!(!xaction_id.is_empty(), "delivered without an id");
                        if let Some(raw) = raw {
                            assert_eq!(raw["xactionId"].as_str(), Some(xaction_id.as_str()));
                        }
                    }
                    Entry::Retry { status, .. } => {
                        assert!((400..600).contains(status), "{entry:?}");
                        assert!(is_retryable(*status) || *status >= 500, "{entry:?}");
                    }
                    Entry::Final { status, .. } => {
                        assert!((400..500).contains(status), "{entry:?}");
                        assert!(!is_retryable(*status), "{entry:?}");
                    }
                    // Neither a success nor a usable failure: never resent, never 200.
                    Entry::NotConfirmed { reason } => assert!(!reason.is_empty()),
                }
            }
        }
        Verdict::Retry { status, .. } => {
            assert_eq!(*status, input.status);
            assert!(is_retryable(*status));
        }
        Verdict::Split { .. } => assert_eq!(input.status, 413),
        Verdict::Bisect { .. } => assert_eq!(input.status, 400),
        Verdict::Final { status, .. } => {
            assert_eq!(*status, input.status);
            assert!((401..=499).contains(status) && !is_retryable(*status));
        }
        Verdict::Untrusted { reason } => assert!(!reason.is_empty()),
    }
});
