//! `TestApp`: inletd plus its own AEP stand-in, both on 127.0.0.1 port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aep_standin::{StandIn, StandInConfig, StandInHandle};
use inletd::config::{HumanDuration, UpstreamUrl};
use inletd::{App, Config, DrainReport};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub standin: StandInHandle,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<DrainReport>>,
    standin_stop: CancellationToken,
}

/// A test configuration: quick back-off, 127.0.0.1 port 0 listeners.
pub fn test_config(upstream: SocketAddr) -> Config {
    let mut c = Config::defaults();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.admin_listen = "127.0.0.1:0".parse().unwrap();
    c.upstream = format!("http://{upstream}").parse::<UpstreamUrl>().unwrap();
    c.linger = ms(20);
    c.retry_initial_backoff = ms(10);
    c.retry_max_backoff = ms(40);
    c
}

/// Stops `app` as SIGTERM does, with spooled messages undelivered: the drain
/// is complete all the same and nothing is dead-lettered for stopping.
pub async fn stop_keeping_the_spool(app: TestApp, dir: &Path) {
    let report = app.stop().await;
    assert!(
        report.complete,
        "spooled messages left on disk are not an incomplete drain"
    );
    assert!(
        !dir.join("dead-letter.jsonl").exists(),
        "nothing dead-lettered by stopping"
    );
}

/// A stand-in serving in the background (for an inletd child process):
/// its base URL and the handle that steers and reads it.
pub async fn background_standin(config: StandInConfig) -> (String, StandInHandle) {
    let standin = StandIn::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("stand-in binds");
    let url = format!("http://{}", standin.local_addr());
    let handle = standin.handle();
    tokio::spawn(standin.run(std::future::pending()));
    (url, handle)
}

/// A 127.0.0.1 port free a moment ago, for a process started next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An upstream where nothing listens: every send is refused. The port is
/// held (bound, never listening) for as long as this lives, so no other
/// test's server can be given it meanwhile and receive these sends (a port
/// freed at once was, under a full parallel run).
pub struct RefusedUpstream {
    pub url: String,
    _held: socket2::Socket,
}

pub fn refused_upstream() -> RefusedUpstream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any_port.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    RefusedUpstream {
        url: format!("http://{addr}"),
        _held: socket,
    }
}

/// The header that makes a producer request fire-and-forget.
pub const ASYNC: (&str, &str) = ("prefer", "respond-async");

/// A config tweak that spools in `dir`.
pub fn spooled_in(dir: &Path) -> impl FnOnce(&mut Config) + '_ {
    move |c| c.spool_dir = inletd::config::OptionalPath(Some(dir.to_path_buf()))
}

/// Leaves `ids` on disk in `dir` for the next start: inletd spools them
/// (each got its 202) while its upstream refuses every send, then stops.
pub async fn spool_backlog(dir: &Path, ids: &[String]) {
    let dead = refused_upstream();
    let app = TestApp::start(|c| {
        spooled_in(dir)(c);
        c.upstream = dead.url.parse().unwrap();
    })
    .await;
    for id in ids {
        let answer = app.post("/collection/c1", message(id, ""), &[ASYNC]).await;
        assert_eq!(answer.status, 202, "{}", answer.text);
    }
    app.stop().await;
}

pub fn ms(n: u64) -> HumanDuration {
    HumanDuration(Duration::from_millis(n))
}

/// A unique, valid AEP message whose body carries `id` (and `extra` fields).
pub fn message(id: &str, extra: &str) -> String {
    format!(
        r#"{{"header":{{"schemaRef":{{"id":"https://ns.adobe.com/x/schemas/y","contentType":"application/vnd.adobe.xed-full+json;version=1"}},"imsOrgId":"ORG@AdobeOrg","datasetId":"ds"}},"body":{{"xdmEntity":{{"_id":"{id}"}}{extra}}}}}"#
    )
}

impl TestApp {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestApp {
        Self::start_with(StandInConfig::default(), tweak).await
    }

    pub async fn start_with(standin: StandInConfig, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let standin = StandIn::bind("127.0.0.1:0".parse().unwrap(), standin)
            .await
            .expect("stand-in binds");
        let mut config = test_config(standin.local_addr());
        tweak(&mut config);
        Self::start_on(standin, config).await
    }

    pub async fn start_on(standin: StandIn, config: Config) -> TestApp {
        Self::start_app(standin, config, |app| app).await
    }

    /// [`TestApp::start_with`], with `adjust` applied to the bound [`App`]
    /// (e.g. to inject spool faults).
    pub async fn start_adjusted(
        standin: StandInConfig,
        tweak: impl FnOnce(&mut Config),
        adjust: impl FnOnce(App) -> App,
    ) -> TestApp {
        let standin = StandIn::bind("127.0.0.1:0".parse().unwrap(), standin)
            .await
            .expect("stand-in binds");
        let mut config = test_config(standin.local_addr());
        tweak(&mut config);
        Self::start_app(standin, config, adjust).await
    }

    async fn start_app(
        standin: StandIn,
        config: Config,
        adjust: impl FnOnce(App) -> App,
    ) -> TestApp {
        let standin_stop = CancellationToken::new();
        let handle = standin.handle();
        let stop_token = standin_stop.clone();
        tokio::spawn(standin.run(async move { stop_token.cancelled().await }));
        let app = adjust(App::bind(config).await.expect("inletd binds"));
        let (addr, admin) = (app.addr(), app.admin_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async move {
                let _ = stopped.await;
            })
            .await
            .expect("inletd runs")
        });
        TestApp {
            addr,
            admin,
            standin: handle,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            task: Some(task),
            standin_stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs `body` to `path` with extra headers; returns status, headers and JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<String>,
        headers: &[(&str, &str)],
    ) -> Answer {
        post(&self.client, &self.url(path), body.into(), headers).await
    }

    pub async fn send(&self, connection: &str, body: impl Into<String>) -> Answer {
        self.post(&format!("/collection/{connection}"), body, &[])
            .await
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.admin)
    }

    /// Waits until this instance's metric `series` reads `value`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        wait_for_metric(&self.metrics_url(), series, value).await;
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn admin_status(&self, path: &str) -> u16 {
        let url = format!("http://{}{}", self.admin, path);
        self.client.get(url).send().await.unwrap().status().as_u16()
    }

    /// Starts the drain (as SIGTERM would) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Drains and returns the report.
    pub async fn stop(mut self) -> DrainReport {
        self.begin_shutdown();
        let report = self.task.take().unwrap().await.expect("inletd task");
        self.standin_stop.cancel();
        report
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_shutdown();
        self.standin_stop.cancel();
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("inletd answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// Polls `check` until it holds (events, not timing: the bound only stops a hung test).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// The value of a metric line such as `name{label="x"}` in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the metric `series` at `metrics_url` reads `value`.
pub async fn wait_for_metric(metrics_url: &str, series: &str, value: f64) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    eventually(&format!("{series} reaches {value}"), || {
        let request = client.get(metrics_url).send();
        async move {
            match request.await {
                Ok(r) => metric(&r.text().await.unwrap_or_default(), series) == value,
                Err(_) => false,
            }
        }
    })
    .await;
}

/// Sends `bodies` to `/collection/{connection}` concurrently; the answers in order.
pub async fn send_all(
    app: &std::sync::Arc<TestApp>,
    connection: &str,
    bodies: Vec<String>,
) -> Vec<Answer> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let (app, connection) = (app.clone(), connection.to_owned());
            tokio::spawn(async move { app.send(&connection, body).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("sender task"));
    }
    answers
}
