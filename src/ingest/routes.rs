//! The producer request handlers. Each takes the whole request (its headers
//! are moved, not copied as the `HeaderMap` extractor would) and first calls
//! [`Ingest::arrive`], which refuses it while draining and stamps its arrival,
//! before its connection id is checked.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::admission::Results;
use super::{forward, parse, respond, Arrival, ConnectionId, Ingest};
use crate::batcher::BatchKey;
use crate::config::MAX_REQUEST_BYTES;
use crate::error::Error;

/// The producer routes, matched by hand rather than by axum's router: its
/// path parameters cost ~1.5k instructions a message (`bench/profile.sh`:
/// decoding into an extensions map, then deserialising them). Same answers:
/// `/collection/batch/{id}` and `/collection/{id}` (`{id}` one non-empty raw
/// segment; `/collection/batch` is a single's id), 405 for another method on
/// them, a JSON 404 for any other path.
pub async fn dispatch(State(ingest): State<Ingest>, request: Request) -> Response {
    let Some((batch, raw_id)) = route(request.uri().path()) else {
        return not_found(request.uri().clone()).await;
    };
    if request.method() != Method::POST {
        return method_not_allowed(request.method().clone()).await;
    }
    // Refused while draining before the id is looked at.
    let (work, arrival) = match ingest.arrive() {
        Ok(arrived) => arrived,
        Err(e) => return ingest.refuse(e),
    };
    let connection_id = match ConnectionId::from_segment(raw_id, &ingest) {
        Ok(id) => id,
        Err(e) => return ingest.refuse(e),
    };
    let (parts, body) = request.into_parts();
    let opened = Opened {
        _work: work,
        arrival,
        connection_id,
        parts,
        body,
    };
    if batch {
        self::batch(ingest, opened).await
    } else {
        single(ingest, opened).await
    }
}

/// Which producer route `path` names (`true`: the batch one) and its raw
/// `{id}` segment, matched as axum's router (matchit) matched them.
fn route(path: &str) -> Option<(bool, &str)> {
    let segment = |id: &str| !id.is_empty() && !id.contains('/');
    let rest = path.strip_prefix("/collection/")?;
    match rest.strip_prefix("batch/") {
        Some(id) if segment(id) => Some((true, id)),
        _ if segment(rest) => Some((false, rest)),
        _ => None,
    }
}

/// A producer request let in: its drain token (held until its answer is
/// built), arrival, checked connection id, head and body.
struct Opened {
    _work: TaskTrackerToken,
    arrival: Arrival,
    connection_id: ConnectionId,
    parts: Parts,
    body: Body,
}

/// `POST /collection/{id}`: one message, answered with its own result.
async fn single(ingest: Ingest, opened: Opened) -> Response {
    let Opened {
        _work,
        arrival,
        connection_id,
        parts,
        body,
    } = opened;
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
async fn batch(ingest: Ingest, opened: Opened) -> Response {
    let Opened {
        _work,
        arrival,
        connection_id,
        parts,
        body,
    } = opened;
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

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_match_as_the_router_did() {
        assert_eq!(route("/collection/c1"), Some((false, "c1")));
        assert_eq!(route("/collection/batch/c1"), Some((true, "c1")));
        assert_eq!(route("/collection/batch"), Some((false, "batch")));
        assert_eq!(route("/collection/a%2Fb"), Some((false, "a%2Fb")));
        assert_eq!(route("/collection/batch/a%2Fb"), Some((true, "a%2Fb")));
        for none in [
            "/",
            "/collection",
            "/collection/",
            "/collection//c1",
            "/collection/c1/",
            "/collection/batch/",
            "/collection/batch/c1/x",
            "/collection/a/b",
            "/Collection/c1",
            "/x/collection/c1",
        ] {
            assert_eq!(route(none), None, "{none}");
        }
    }
}
