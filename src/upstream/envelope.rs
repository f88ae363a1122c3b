//! The batch request body `{"messages":[M1,M2,...]}`, streamed from the
//! messages' own buffers instead of copied into one.
//!
//! Why: every batch in flight used to hold a second copy of its messages (up
//! to `max_batch_bytes` each, `max_in_flight` of them), which pushed a full
//! buffer past the memory bound. [`Envelope`] yields the messages' `Bytes` as
//! received (a reference count, no copy); only pieces smaller than
//! [`COPY_BELOW`] (the brackets, the commas, small messages) are gathered into
//! chunks of at most [`CHUNK`] bytes, so a batch of a thousand small messages
//! is not a thousand tiny writes. At most one such chunk per request exists at
//! a time. Its exact size hint makes hyper send a `Content-Length` (the
//! upstream is never sent a chunked body), and since an [`Envelope`] is cheap
//! to build, a resend builds a new one from the same messages.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use crate::batcher::{body_len, Message};

const OPEN: &[u8] = br#"{"messages":["#;
const COMMA: &[u8] = b",";
const CLOSE: &[u8] = b"]}";

/// Pieces at least this long are yielded as their own frame, never copied.
pub const COPY_BELOW: usize = 4 * 1024;

/// Largest chunk of gathered small pieces.
pub const CHUNK: usize = 64 * 1024;

/// A batch request body; see the module doc.
///
/// It is a sequence of pieces: `OPEN`, then each message with a `COMMA`
/// between two, then `CLOSE` (`OPEN`, `CLOSE` for no message).
#[derive(Debug)]
pub struct Envelope {
    messages: Vec<Bytes>,
    /// The next piece to yield.
    next: usize,
    /// Bytes not yet yielded.
    remaining: u64,
}

impl Envelope {
    pub fn new(messages: &[Message]) -> Envelope {
        let payload = messages.iter().map(|m| m.body.len()).sum();
        Envelope {
            remaining: body_len(messages.len(), payload) as u64,
            messages: messages.iter().map(|m| m.body.clone()).collect(),
            next: 0,
        }
    }

    fn pieces(&self) -> usize {
        (2 * self.messages.len() + 1).max(2)
    }

    /// Piece `k`'s bytes; odd pieces before the last are messages.
    fn piece(&self, k: usize) -> &[u8] {
        if k == 0 {
            OPEN
        } else if k + 1 == self.pieces() {
            CLOSE
        } else if k % 2 == 1 {
            &self.messages[k / 2]
        } else {
            COMMA
        }
    }

    /// The next frame's data: one large message as it is, or small pieces gathered.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let pieces = self.pieces();
        if self.next >= pieces {
            return None;
        }
        if self.piece(self.next).len() >= COPY_BELOW {
            // Only messages are that long, and `piece` says this is one.
            let whole = self.messages[self.next / 2].clone();
            self.next += 1;
            return Some(whole);
        }
        let capacity = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let mut chunk = BytesMut::with_capacity(capacity);
        while self.next < pieces {
            let piece = self.piece(self.next);
            if piece.len() >= COPY_BELOW || chunk.len() + piece.len() > CHUNK {
                break;
            }
            chunk.extend_from_slice(piece);
            self.next += 1;
        }
        Some(chunk.freeze())
    }
}

impl Body for Envelope {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = this.next_chunk();
        if let Some(chunk) = &chunk {
            this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.pieces()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use crate::metrics::Metrics;
    use crate::upstream::scripted;

    /// Messages with these bodies.
    fn batch(bodies: &[Bytes]) -> Vec<Message> {
        let bound = Arc::new(Semaphore::new(1 << 30));
        let metrics = Metrics::new(1 << 30);
        let patience = std::time::Duration::from_secs(1);
        let (mut messages, _outcomes) =
            scripted::messages(bodies.len(), &bound, &metrics, patience);
        for (m, body) in messages.iter_mut().zip(bodies) {
            m.body = body.clone();
        }
        messages
    }

    /// Every frame, checking the size hint against what is left at each step.
    fn frames(mut envelope: Envelope) -> Vec<Bytes> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut frames = Vec::new();
        let total = envelope.size_hint().exact().expect("exact size");
        let mut seen = 0;
        while let Poll::Ready(Some(frame)) = Pin::new(&mut envelope).poll_frame(&mut cx) {
            let data = frame.expect("infallible").into_data().expect("data frame");
            assert!(!data.is_empty(), "no empty frame");
            seen += data.len() as u64;
            assert_eq!(envelope.size_hint().exact(), Some(total - seen));
            frames.push(data);
        }
        assert!(envelope.is_end_stream());
        assert_eq!(seen, total, "the size hint was the body's length");
        frames
    }

    fn joined(frames: &[Bytes]) -> Vec<u8> {
        frames.concat()
    }

    #[test]
    fn an_empty_batch_is_an_empty_list() {
        let f = frames(Envelope::new(&[]));
        assert_eq!(joined(&f), br#"{"messages":[]}"#);
    }

    #[test]
    fn small_messages_are_gathered_with_their_commas() {
        let bodies = [Bytes::from_static(b"{}"), Bytes::from_static(br#"{"a":1}"#)];
        let f = frames(Envelope::new(&batch(&bodies)));
        assert_eq!(f.len(), 1);
        assert_eq!(joined(&f), br#"{"messages":[{},{"a":1}]}"#);
    }

    #[test]
    fn large_messages_travel_in_their_own_buffer() {
        let large = Bytes::from(format!(r#"{{"x":"{}"}}"#, "y".repeat(COPY_BELOW)));
        let bodies = [
            Bytes::from_static(b"{}"),
            large.clone(),
            large.clone(),
            Bytes::from_static(b"{}"),
        ];
        let f = frames(Envelope::new(&batch(&bodies)));
        let expected = format!(
            r#"{{"messages":[{{}},{large},{large},{{}}]}}"#,
            large = { std::str::from_utf8(&large).expect("utf-8") }
        );
        assert_eq!(joined(&f), expected.as_bytes());
        let shared = f.iter().filter(|c| c.as_ptr() == large.as_ptr()).count();
        assert_eq!(
            shared, 2,
            "both large messages were sent from their own bytes"
        );
    }

    #[test]
    fn many_small_messages_make_bounded_chunks() {
        let body = Bytes::from(format!(r#"{{"x":"{}"}}"#, "y".repeat(1000)));
        let bodies = vec![body.clone(); 500];
        let f = frames(Envelope::new(&batch(&bodies)));
        assert!(f.iter().all(|c| c.len() <= CHUNK));
        assert!(
            f.len() <= 500 * 1009 / (CHUNK - COPY_BELOW) + 1,
            "{}",
            f.len()
        );
        let text = std::str::from_utf8(&body).expect("utf-8");
        let expected = format!(r#"{{"messages":[{}]}}"#, vec![text; 500].join(","));
        assert_eq!(joined(&f), expected.as_bytes());
    }
}
