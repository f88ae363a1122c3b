//! The producer request handlers.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::{forward, parse, respond, Ingest, MAX_REQUEST_BYTES};
use crate::batcher::BatchKey;
use crate::error::Error;

/// `POST /collection/{id}`: one message, answered with its own result.
pub async fn single(
    State(ingest): State<Ingest>,
    Path(connection_id): Path<String>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = ingest.check_open() {
        return ingest.refuse(e);
    }
    if forward::goes_one_to_one(query.as_deref(), &headers) {
        return forward::forward(&ingest, &uri, &headers, body).await;
    }
    let result = async {
        let received = ingest
            .receive(&headers, body, ingest.limits.max_bytes)
            .await?;
        let message = ingest.fits(parse::single(&received.body)?)?;
        let key = BatchKey::new(&connection_id, &headers);
        let pending = ingest.enqueue(key, received, vec![message])?;
        Ok::<_, Error>(pending.wait_all().await)
    }
    .await;
    match result {
        // One message in, one outcome out.
        Ok(outcomes) => respond::single(
            &connection_id,
            outcomes.into_iter().next().unwrap_or(Err(Error::Draining)),
        ),
        Err(e) => ingest.refuse(e),
    }
}

/// `POST /collection/batch/{id}`: a client that batches already. Its messages
/// join inletd's batches; it gets one entry per message, in its own order.
pub async fn batch(
    State(ingest): State<Ingest>,
    Path(connection_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = ingest.check_open() {
        return ingest.refuse(e);
    }
    let result = async {
        let received = ingest.receive(&headers, body, MAX_REQUEST_BYTES).await?;
        let checked = parse::batch(&received.body)?;
        // `plan` keeps each entry's place (Ok: accepted) without holding body bytes.
        let mut good = Vec::with_capacity(checked.len());
        let plan: Vec<Result<(), Error>> = checked
            .into_iter()
            .map(|m| {
                good.push(ingest.fits(m?)?);
                Ok(())
            })
            .collect();
        let key = BatchKey::new(&connection_id, &headers);
        let mut outcomes = ingest
            .enqueue(key, received, good)?
            .wait_all()
            .await
            .into_iter();
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
            .collect();
        Ok::<_, Error>(results)
    }
    .await;
    match result {
        Ok(results) => respond::batch(&connection_id, results),
        Err(e) => ingest.refuse(e),
    }
}

/// A known path with a method other than POST: a JSON 405.
pub async fn method_not_allowed(method: axum::http::Method) -> Response {
    Error::MethodNotAllowed(method).into_response()
}

/// Anything else: a JSON 404 naming the routes that exist.
pub async fn not_found(uri: Uri) -> Response {
    Error::NoRoute(uri.path().to_owned()).into_response()
}
