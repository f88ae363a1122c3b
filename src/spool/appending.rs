//! [`Appending`]: one queued append as a future that can be polled by
//! `&mut`, dropped mid-way by one task and finished by another (the producer
//! handler hands its appends to a task when the producer hangs up).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::sync::oneshot;

use super::{Appended, SpoolError};

type Answer = oneshot::Receiver<Result<Appended, SpoolError>>;

/// One append of [`Spool::append_all`]: resolves once the sync covering it
/// returned (or it failed). Polled again after that it gives the same answer,
/// so a caller may poll it by `&mut`, be cancelled, and leave it to another
/// task to finish.
#[derive(Debug)]
pub struct Appending(Waiting);

#[derive(Debug)]
enum Waiting {
    Queued(Answer),
    Done(Result<Appended, SpoolError>),
}

impl Appending {
    pub(crate) fn new(queued: Result<Answer, SpoolError>) -> Appending {
        Appending(match queued {
            Ok(rx) => Waiting::Queued(rx),
            Err(e) => Waiting::Done(Err(e)),
        })
    }
}

impl Future for Appending {
    type Output = Result<Appended, SpoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Waiting::Queued(rx) = &mut self.0 {
            let answer = ready!(Pin::new(rx).poll(cx));
            self.0 = Waiting::Done(answer.unwrap_or(Err(SpoolError::Closed)));
        }
        match &self.0 {
            Waiting::Done(answer) => Poll::Ready(answer.clone()),
            // Just replaced above.
            Waiting::Queued(_) => Poll::Pending,
        }
    }
}
