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
        let max = ingest.limits.max_bytes;
        let received = ingest.receive(&headers, body, max).await?;
        let message = parse::single(&received.body)?;
        if !ingest.limits.fits_alone(message.len()) {
            return Err(Error::TooLarge {
                len: message.len(),
                max,
            });
        }
        let mut admitted = ingest.admit(received, vec![message])?;
        let Some(one) = admitted.pop() else {
            return Err(Error::BadShape("no message"));
        };
        let key = BatchKey::new(&connection_id, &headers);
        ingest
            .batcher
            .submit(key, vec![one.message])
            .map_err(|_| Error::Draining)?;
        let deadline = tokio::time::Instant::now() + ingest.request_timeout;
        Ok::<_, Error>(respond::wait(one.outcome, deadline).await)
    }
    .await;
    match result {
        Ok(outcome) => respond::single(&connection_id, outcome),
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
        let max = ingest.limits.max_bytes;
        // `plan` keeps each entry's place (Ok: accepted) without holding body bytes.
        let mut good = Vec::with_capacity(checked.len());
        let plan: Vec<Result<(), Error>> = checked
            .into_iter()
            .map(|m| match m {
                Ok(m) if !ingest.limits.fits_alone(m.len()) => {
                    Err(Error::TooLarge { len: m.len(), max })
                }
                Ok(m) => {
                    good.push(m);
                    Ok(())
                }
                Err(e) => Err(e),
            })
            .collect();
        let admitted = ingest.admit(received, good)?;
        let (messages, mut waits): (Vec<_>, Vec<_>) =
            admitted.into_iter().map(|a| (a.message, a.outcome)).unzip();
        let key = BatchKey::new(&connection_id, &headers);
        ingest
            .batcher
            .submit(key, messages)
            .map_err(|_| Error::Draining)?;
        let deadline = tokio::time::Instant::now() + ingest.request_timeout;
        let mut results = Vec::with_capacity(plan.len());
        let mut waits = waits.drain(..);
        for check in plan {
            results.push(match check {
                Ok(_) => match waits.next() {
                    Some(rx) => respond::wait(rx, deadline).await,
                    None => Err(Error::Draining),
                },
                Err(e) => {
                    ingest.count_refused(&e);
                    Err(e)
                }
            });
        }
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
    let body = serde_json::json!({
        "statusCode": 405,
        "message": format!("{method} is not supported here: send messages with POST"),
    });
    let mut response =
        (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::ALLOW,
        axum::http::HeaderValue::from_static("POST"),
    );
    response
}

/// Anything else: a JSON 404 naming the routes that exist.
pub async fn not_found(uri: Uri) -> Response {
    let body = serde_json::json!({
        "statusCode": 404,
        "message": format!("no route for {}: inletd serves POST /collection/{{CONNECTION_ID}} and POST /collection/batch/{{CONNECTION_ID}}", uri.path()),
    });
    (axum::http::StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}
