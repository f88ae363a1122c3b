//! The provider's timing logic under paused time, against a scripted
//! [`TokenSource`]: single flight, refresh at 80 %, no expired token handed
//! out, one refresh per rejection, cooled-down failures and refusals.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

#[derive(Clone)]
enum Answer {
    Token(Duration),
    Fail(TokenError),
    Hang,
}

/// Answers from a script, then `fallback`; counts calls and records when
/// each came. Every answer takes 10 ms, so concurrent callers overlap.
#[derive(Clone)]
struct Script {
    calls: Arc<AtomicUsize>,
    at: Arc<Mutex<Vec<Instant>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    fallback: Arc<Mutex<Answer>>,
}

impl Script {
    fn new(answers: Vec<Answer>, fallback: Answer) -> Script {
        Script {
            calls: Arc::default(),
            at: Arc::default(),
            answers: Arc::new(Mutex::new(answers.into())),
            fallback: Arc::new(Mutex::new(fallback)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set_fallback(&self, answer: Answer) {
        *self.fallback.lock().unwrap() = answer;
    }
}

impl TokenSource for Script {
    fn fetch(&self) -> BoxFuture<'_, Result<Grant, TokenError>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.at.lock().unwrap().push(Instant::now());
        let next = self.answers.lock().unwrap().pop_front();
        let answer = next.unwrap_or_else(|| self.fallback.lock().unwrap().clone());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match answer {
                Answer::Token(expires_in) => Ok(Grant {
                    access_token: format!("tok-{n}").into(),
                    expires_in,
                }),
                Answer::Fail(error) => Err(error),
                Answer::Hang => std::future::pending().await,
            }
        })
    }
}

const DAY: Duration = Duration::from_secs(86_400);

fn headers() -> ManagedHeaders {
    let config = ImsConfig::new("client-1", "s3cret".into(), "ORG@AdobeOrg", "openid", None);
    ManagedHeaders::new(&config.unwrap()).unwrap()
}

fn provider(script: &Script) -> TokenProvider {
    TokenProvider::new(script.clone(), headers(), Timing::default())
}

fn down() -> TokenError {
    TokenError::Unavailable("HTTP 503".into())
}

fn refused() -> TokenError {
    TokenError::Refused {
        status: 401,
        error: "invalid_client".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_crowd_of_callers_at_start_up_causes_one_fetch() {
    let script = Script::new(vec![], Answer::Token(DAY));
    let provider = provider(&script);
    let crowd: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let provider = provider.clone();
                async move { provider.token().await }
            })
        })
        .collect();
    for caller in crowd {
        let token = caller.await.unwrap().unwrap();
        assert_eq!(token.generation(), 1);
    }
    assert_eq!(script.calls(), 1);
    assert!(provider.has_token());
    assert_eq!(provider.stats().fetches(FetchResult::Ok), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_does_not_cancel_the_fetch_others_wait_for() {
    let script = Script::new(vec![], Answer::Token(DAY));
    let provider = provider(&script);
    let gave_up = tokio::time::timeout(Duration::from_millis(5), provider.token()).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(provider.has_token());
    assert_eq!(provider.token().await.unwrap().generation(), 1);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_refreshed_at_80_percent_and_none_is_handed_out_expired() {
    let lifetime = Duration::from_secs(100);
    let script = Script::new(vec![], Answer::Token(lifetime));
    let provider = provider(&script);
    let stop = CancellationToken::new();
    let refresher = provider.spawn_refresher(stop.clone());
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < Duration::from_secs(1_000) {
        let token = provider.token().await.unwrap();
        assert!(Instant::now() < token.expires_at(), "{token:?} expired");
        assert!(token.generation() >= last);
        last = token.generation();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    refresher.await.unwrap();
    // One fetch at start, then one each 80 s, counted from when each left.
    let at = script.at.lock().unwrap().clone();
    assert_eq!(at.len(), 13, "{at:?}");
    for pair in at.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(80));
    }
}

#[tokio::test(start_paused = true)]
async fn when_refreshing_fails_the_old_token_is_used_until_its_margin_then_errors() {
    let lifetime = Duration::from_secs(100);
    let script = Script::new(vec![Answer::Token(lifetime)], Answer::Fail(down()));
    let provider = provider(&script);
    let stop = CancellationToken::new();
    let _refresher = provider.spawn_refresher(stop.clone());
    let first = provider.token().await.unwrap();
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..300 {
        match provider.token().await {
            Ok(token) => {
                assert!(token.same_as(&first));
                // Still good for the margin (a tenth of its life) after being handed out.
                assert!(Instant::now() + Duration::from_secs(10) <= token.expires_at());
                ok += 1;
            }
            Err(error) => {
                assert!(error.is_transient(), "{error}");
                assert!(!provider.has_token());
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok > 150 && failed > 100, "ok {ok}, failed {failed}");
    assert!(provider.last_failure().is_some());
    assert_eq!(provider.seconds_until_expiry(), Some(0.0));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_replaced_once_for_everyone_who_saw_it() {
    let script = Script::new(vec![], Answer::Token(DAY));
    let provider = provider(&script);
    let first = provider.token().await.unwrap();
    let crowd: Vec<_> = (0..50)
        .map(|_| {
            let (provider, first) = (provider.clone(), first.clone());
            tokio::spawn(async move {
                provider.invalidate(&first);
                provider.token().await
            })
        })
        .collect();
    for caller in crowd {
        assert_eq!(caller.await.unwrap().unwrap().generation(), 2);
    }
    assert_eq!(script.calls(), 2);
    // A late 401 for the replaced token changes nothing.
    assert!(!provider.invalidate(&first));
    assert_eq!(provider.token().await.unwrap().generation(), 2);
    assert_eq!(script.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_during_a_scheduled_refresh_waits_for_it_instead_of_fetching_again() {
    let lifetime = Duration::from_secs(100);
    let script = Script::new(vec![], Answer::Token(lifetime));
    let provider = provider(&script);
    let stop = CancellationToken::new();
    let _refresher = provider.spawn_refresher(stop.clone());
    let first = provider.token().await.unwrap();
    // The refresh leaves at 80 s and takes 10 ms: be in the middle of it.
    tokio::time::sleep_until(first.expires_at() - Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(script.calls(), 2, "the scheduled refresh is under way");
    assert!(provider.invalidate(&first));
    let second = provider.token().await.unwrap();
    assert_eq!(second.generation(), 2);
    assert_eq!(script.calls(), 2);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_token_that_keeps_being_refused_causes_no_refresh_storm() {
    let script = Script::new(vec![], Answer::Token(DAY));
    let provider = provider(&script);
    let start = Instant::now();
    let mut same_back = 0;
    while start.elapsed() < Duration::from_secs(600) {
        let token = provider.token().await.unwrap();
        provider.invalidate(&token);
        if provider.token().await.unwrap().same_as(&token) {
            same_back += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first fetch, then at most one forced refresh per 30 s.
    let calls = script.calls();
    assert!((2..=22).contains(&calls), "{calls} fetches");
    assert!(same_back > 5_000, "{same_back}");
}

#[tokio::test(start_paused = true)]
async fn ims_down_at_start_is_retried_with_back_off_and_recovers() {
    let script = Script::new(vec![Answer::Fail(down()); 6], Answer::Token(DAY));
    let provider = provider(&script);
    // One fetch: the first try and three retries.
    let error = provider.token().await.unwrap_err();
    assert_eq!(error, down());
    assert!(
        error.to_string().contains("IMS is unavailable (HTTP 503)"),
        "{error}"
    );
    assert_eq!(script.calls(), 4);
    // Meanwhile callers get the failure without asking IMS again.
    for _ in 0..100 {
        assert_eq!(provider.token().await.unwrap_err(), down());
    }
    assert_eq!(script.calls(), 4);
    let stop = CancellationToken::new();
    let _refresher = provider.spawn_refresher(stop.clone());
    while !provider.has_token() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(script.calls(), 7);
    assert_eq!(provider.token().await.unwrap().generation(), 1);
    assert!(provider.last_failure().is_none());
    assert_eq!(provider.stats().fetches(FetchResult::Unavailable), 6);
    assert_eq!(provider.stats().fetches(FetchResult::Ok), 1);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_are_reported_and_not_retried_in_a_tight_loop() {
    let script = Script::new(vec![], Answer::Fail(refused()));
    let provider = provider(&script);
    let error = provider.token().await.unwrap_err();
    assert_eq!(error, refused());
    assert!(error
        .to_string()
        .contains("IMS refused the credentials (HTTP 401, invalid_client)"));
    assert_eq!(script.calls(), 1, "a refusal is not retried");
    let stop = CancellationToken::new();
    let _refresher = provider.spawn_refresher(stop.clone());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(600) {
        assert!(provider.token().await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once a minute (the refusal's cool-down), however many callers ask.
    let calls = script.calls();
    assert!((10..=11).contains(&calls), "{calls} fetches");
    assert_eq!(provider.stats().fetches(FetchResult::Refused), calls as u64);
    // Fixed credentials are picked up on the next round.
    script.set_fallback(Answer::Token(DAY));
    while !provider.has_token() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_ims_that_never_answers_times_out_as_unavailable() {
    let script = Script::new(vec![], Answer::Hang);
    let provider = provider(&script);
    let error = provider.token().await.unwrap_err();
    assert!(
        error.to_string().contains("no answer within 10s"),
        "{error}"
    );
    assert_eq!(script.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn absurd_lifetimes_from_any_source_are_refused() {
    for lifetime in [Duration::ZERO, Duration::MAX, DAY * 365] {
        let script = Script::new(vec![], Answer::Token(lifetime));
        let provider = provider(&script);
        let error = provider.token().await.unwrap_err();
        assert!(matches!(error, TokenError::BadAnswer(_)), "{error}");
        assert_eq!(
            script.calls(),
            1,
            "an unusable answer is not retried at once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn headers_carry_the_token_marked_sensitive_and_nothing_prints_it() {
    let script = Script::new(vec![], Answer::Token(DAY));
    let provider = provider(&script);
    let token = provider.token().await.unwrap();
    let headers = provider.headers(&token);
    let auth = &headers[reqwest::header::AUTHORIZATION];
    assert_eq!(auth, "Bearer tok-1");
    assert!(auth.is_sensitive());
    assert_eq!(headers[ORG_HEADER], "ORG@AdobeOrg");
    assert_eq!(headers[API_KEY_HEADER], "client-1");
    let seconds = provider.seconds_until_expiry().unwrap();
    assert!(seconds > 86_000.0 && seconds <= 86_400.0, "{seconds}");
    for shown in [
        format!("{token:?}"),
        format!("{headers:?}"),
        format!("{provider:?}"),
        format!("{:?}", provider.stats()),
    ] {
        assert!(!shown.contains("tok-1"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
