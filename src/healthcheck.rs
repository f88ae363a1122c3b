//! `inletd healthcheck`: the container's health probe. One HTTP/1.0 GET over a
//! plain TCP connection, healthy when the answer's status is 200.
//!
//! Standard library only, and no async runtime: the image has no shell and no
//! curl, so the daemon's own binary is the probe, and it must stay cheap and
//! predictable when it runs every few seconds. It speaks just enough HTTP for
//! `/healthz`: plain `http://` URLs, a status line read back, nothing else.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connect, write and read deadline each; well under the image's health check
/// timeout, so a hung inletd shows as unhealthy instead of a hung probe.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Longest status line read: `HTTP/1.1 200 OK` with room for a long reason.
const MAX_STATUS_LINE: u64 = 256;

/// Why a probe found the target unhealthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("only http:// URLs can be probed")]
    NotHttp,
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: io::Error,
    },
    #[error("{authority} resolved to no address")]
    NoAddress { authority: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("the exchange failed: {0}")]
    Io(#[from] io::Error),
    #[error("no HTTP status line in the answer")]
    NoAnswer,
    #[error("answered {0}")]
    Status(String),
}

/// The `/healthz` URL of an inletd whose `admin_listen` is `admin`. An
/// unspecified address (`0.0.0.0`, `[::]`) is probed on the loopback of the
/// same family: the probe runs beside the daemon.
pub fn healthz_url(admin: SocketAddr) -> String {
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/healthz")
}

/// Probes `url` once; `Ok` when it answered 200.
pub fn probe(url: &str) -> Result<(), ProbeError> {
    let target = Target::parse(url)?;
    let addr = target.resolve()?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .map_err(|source| ProbeError::Connect { addr, source })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n",
        target.path, target.authority
    )?;
    match status_code(&read_status_line(stream)?) {
        Some("200") => Ok(()),
        Some(code) => Err(ProbeError::Status(code.to_owned())),
        None => Err(ProbeError::NoAnswer),
    }
}

/// The parts of an `http://authority/path` URL the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ProbeError> {
        let rest = url.strip_prefix("http://").ok_or(ProbeError::NotHttp)?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The first address of the authority; port 80 when it names none.
    fn resolve(&self) -> Result<SocketAddr, ProbeError> {
        let authority = self.authority.as_str();
        let resolved = authority
            .to_socket_addrs()
            .or_else(|_| (authority, 80).to_socket_addrs());
        resolved
            .map_err(|source| ProbeError::Resolve {
                authority: authority.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| ProbeError::NoAddress {
                authority: authority.to_owned(),
            })
    }
}

/// Reads up to the end of the first line (or of the answer), however the bytes
/// arrive: one `read` may return only part of the status line.
fn read_status_line(stream: impl Read) -> io::Result<String> {
    let mut line = Vec::new();
    BufReader::new(stream.take(MAX_STATUS_LINE)).read_until(b'\n', &mut line)?;
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The status code of an `HTTP/x.y CODE REASON` line.
fn status_code(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-shot server on 127.0.0.1 that writes `answer` in pieces of `chunk`
    /// bytes and hands back the request it read.
    fn serve_once(answer: &'static str, chunk: usize) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            for piece in answer.as_bytes().chunks(chunk) {
                // The probe hangs up once it has the status line.
                if conn.write_all(piece).and_then(|()| conn.flush()).is_err() {
                    break;
                }
            }
            String::from_utf8(request).unwrap()
        });
        (url, server)
    }

    #[test]
    fn healthy_on_200_and_sends_path_and_host() {
        let (url, server) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n", 64);
        probe(&url).unwrap();
        let request = server.join().unwrap();
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches("/healthz");
        assert_eq!(
            request,
            format!("GET /healthz HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        );
    }

    #[test]
    fn a_status_line_in_pieces_is_still_read() {
        let (url, server) = serve_once("HTTP/1.1 200 OK\r\n\r\n", 3);
        probe(&url).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn unhealthy_on_other_statuses() {
        let (url, server) = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n", 64);
        let err = probe(&url).unwrap_err();
        assert!(
            matches!(&err, ProbeError::Status(code) if code == "503"),
            "{err}"
        );
        server.join().unwrap();
    }

    #[test]
    fn unhealthy_on_an_answer_that_is_not_http() {
        let (url, server) = serve_once("SSH-2.0-OpenSSH\r\n", 64);
        assert!(matches!(probe(&url), Err(ProbeError::NoAnswer)));
        server.join().unwrap();
        let (url, server) = serve_once("", 64);
        assert!(matches!(probe(&url), Err(ProbeError::NoAnswer)));
        server.join().unwrap();
    }

    #[test]
    fn unhealthy_when_nothing_listens() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: the port refuses connections.
        let err = probe(&format!("http://{addr}/healthz")).unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{err}");
    }

    #[test]
    fn the_default_url_follows_admin_listen() {
        let url = |a: &str| healthz_url(a.parse().unwrap());
        assert_eq!(url("127.0.0.1:9464"), "http://127.0.0.1:9464/healthz");
        assert_eq!(url("0.0.0.0:9999"), "http://127.0.0.1:9999/healthz");
        assert_eq!(url("[::]:9464"), "http://[::1]:9464/healthz");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80/healthz");
    }

    #[test]
    fn urls_are_parsed_or_refused() {
        assert!(matches!(
            Target::parse("https://127.0.0.1/healthz"),
            Err(ProbeError::NotHttp)
        ));
        assert_eq!(
            Target::parse("http://127.0.0.1:9464").unwrap(),
            Target {
                authority: "127.0.0.1:9464".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            Target::parse("http://localhost:9464/a/b?c=d").unwrap().path,
            "/a/b?c=d"
        );
        assert_eq!(
            Target::parse("http://127.0.0.1/healthz")
                .unwrap()
                .resolve()
                .unwrap()
                .port(),
            80
        );
    }
}
