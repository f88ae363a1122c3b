//! The default target and reading entries back.

use std::net::SocketAddr;

use super::*;

#[test]
fn the_default_target_is_listen_with_a_wildcard_made_loopback() {
    let at = |s: &str| default_target(s.parse::<SocketAddr>().unwrap());
    assert_eq!(at("127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert_eq!(at("0.0.0.0:9000"), "http://127.0.0.1:9000");
    assert_eq!(at("[::]:8080"), "http://[::1]:8080");
}

#[test]
fn entries_keep_the_raw_line_and_report_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.jsonl");
    let good = r#"{"time":"2026-01-01T00:00:00.000Z","connectionId":"c","status":400,"upstreamMessage":"m","acceptedAt":"2026-01-01T00:00:00.000Z","message":{"a":1}}"#;
    std::fs::write(&path, format!("{good}\n\n{{\"torn\n")).unwrap();
    let entries = read_entries(&path).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].raw, good.as_bytes());
    assert_eq!(entries[0].letter.as_ref().unwrap().body, &br#"{"a":1}"#[..]);
    assert!(entries[1].letter.is_err());
    assert_eq!(entries[1].line, 2, "numbered among the non-blank lines");
}
