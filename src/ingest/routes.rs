//! The producer request handlers. Each takes the whole request (its headers
//! are moved, not copied as the `HeaderMap` extractor would) and first calls
//! [`Ingest::arrive`], which refuses it while draining and stamps its arrival,
//! before its connection id is checked.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::admission::Results;
use super::{forward, parse, respond, Arrival, ConnectionId, Ingest};
use crate::batcher::BatchKey;
use crate::config::MAX_REQUEST_BYTES;
use crate::error::Error;

/// `POST /collection/{id}`: one message, answered with its own result.
pub async fn single(State(ingest): State<Ingest>, request: Request) -> Response {
    let (_work, arrival, connection_id, parts, body) = match door(&ingest, request).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let headers = &parts.headers;
    let query = parts.uri.query();
    if forward::goes_one_to_one(query, headers) {
        let query = query.map(str::to_owned);
        return forward::forward(&ingest, &arrival, &connection_id, query, headers, body).await;
    }
    let result = async {
        let mut received = ingest
            .receive(&arrival, headers, body, ingest.limits.max_bytes)
            .await?;
        let message = ingest.fits(parse::single(&received.body)?)?;
        ingest.charge(&mut received, 1)?;
        let key = BatchKey::new(connection_id.as_str(), headers);
        if ingest.wants_async(headers) {
            let accepted = ingest.fire(&arrival, &connection_id, key, received, vec![message]);
            return Ok(Answer::Accepted(accepted.await?));
        }
        let pending = ingest.enqueue(&arrival, key, received, vec![message], 1)?;
        Ok::<_, Error>(Answer::Waited(pending.wait_all().await))
    }
    .await;
    match result {
        Ok(Answer::Accepted(response)) => response,
        // One message in, one outcome out.
        Ok(Answer::Waited(Results { results, _answer })) => {
            let result = results.into_iter().next().unwrap_or(Err(Error::Draining));
            if let Err(e) = &result {
                ingest.outcomes.error(connection_id.as_str(), e);
            }
            respond::single(connection_id.as_str(), result)
        }
        Err(e) => ingest.refuse_for(&connection_id, e),
    }
}

/// `POST /collection/batch/{id}`: a client that batches already. Its messages
/// join inletd's batches; it gets one entry per message, in its own order.
pub async fn batch(State(ingest): State<Ingest>, request: Request) -> Response {
    let (_work, arrival, connection_id, parts, body) = match door(&ingest, request).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let headers = &parts.headers;
    let result = async {
        let mut received = ingest
            .receive(&arrival, headers, body, MAX_REQUEST_BYTES)
            .await?;
        // Charged for every entry before any per-entry structure is built.
        let count = parse::count_messages(&received.body)?;
        ingest.charge(&mut received, count)?;
        let checked = parse::batch(&received.body)?;
        let entries = checked.len();
        // `plan` keeps each entry's place (Ok: accepted) without holding body bytes.
        let mut good = Vec::with_capacity(entries);
        let plan: Vec<Result<(), Error>> = checked
            .into_iter()
            .map(|m| {
                good.push(ingest.fits(m?)?);
                Ok(())
            })
            .collect();
        let key = BatchKey::new(connection_id.as_str(), headers);
        if ingest.wants_async(headers) {
            // One 202 for the whole request: any bad entry refuses all of it.
            if let Some(e) = plan.into_iter().find_map(Result::err) {
                return Err(e);
            }
            return ingest
                .fire(&arrival, &connection_id, key, received, good)
                .await;
        }
        let Results { results, _answer } = ingest
            .enqueue(&arrival, key, received, good, entries)?
            .wait_all()
            .await;
        let mut outcomes = results.into_iter();
        let results = plan
            .into_iter()
            .map(|check| match check {
                // Accepted entries have an outcome each, in order.
                Ok(()) => outcomes.next().unwrap_or(Err(Error::Draining)),
                Err(e) => {
                    ingest.count_refused(&e);
                    Err(e)
                }
            })
            .collect::<Vec<_>>();
        ingest.outcomes.entries(connection_id.as_str(), &results);
        // The answer is built while its share of the bound is still held.
        Ok::<_, Error>(respond::batch(connection_id.as_str(), results))
    }
    .await;
    result.unwrap_or_else(|e| ingest.refuse_for(&connection_id, e))
}

/// What every producer route does first, in this order: [`Ingest::arrive`]
/// (503 while draining), then the connection id's check (400).
async fn door(
    ingest: &Ingest,
    request: Request,
) -> Result<(TaskTrackerToken, Arrival, ConnectionId, Parts, Body), Response> {
    let (work, arrival) = ingest.arrive().map_err(|e| ingest.refuse(e))?;
    let (mut parts, body) = request.into_parts();
    let connection_id = ConnectionId::from_request_parts(&mut parts, ingest).await?;
    Ok((work, arrival, connection_id, parts, body))
}

/// What the single route answers with.
enum Answer {
    /// 202: fire-and-forget.
    Accepted(Response),
    /// The message's own outcome.
    Waited(Results),
}

/// A known path with a method other than POST: a JSON 405.
pub async fn method_not_allowed(method: axum::http::Method) -> Response {
    Error::MethodNotAllowed(method).into_response()
}

/// Anything else: a JSON 404 naming the routes that exist.
pub async fn not_found(uri: Uri) -> Response {
    Error::NoRoute(uri.path().to_owned()).into_response()
}
