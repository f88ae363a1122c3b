//! `dead-letter.jsonl`: content without credentials, exact messages, the
//! reader, and a failed write that loses nothing else.

use std::sync::Arc;

use super::*;
use crate::spool::{DeadLetterReader, SpoolError};

async fn write_and_read(bodies: &[&[u8]]) -> (String, Vec<crate::spool::DeadLetter>) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(options(dir.path()));
    for (n, body) in bodies.iter().enumerate() {
        let mut r = record(n as u64);
        r.body = Bytes::copy_from_slice(body);
        spool
            .dead_letter(&r, 400, "invalid XDM: \"id\" missing")
            .await
            .unwrap();
    }
    assert_eq!(spool.stats().dead_letters(), bodies.len() as u64);
    let spool_dir = dir.path().join("spool");
    let text = std::fs::read_to_string(spool_dir.join("dead-letter.jsonl")).unwrap();
    let read = DeadLetterReader::open(&spool_dir)
        .unwrap()
        .expect("a file")
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (text, read)
}

#[tokio::test]
async fn a_dead_letter_has_the_message_exactly_and_no_credentials() {
    let json = br#"{"header":{"schemaRef":{"id":"s"}},"body":{"v":1.50}}"#;
    let pretty = b"{\n  \"a\": 1\n}\n";
    let binary = b"\xff\xfe not utf-8";
    let (text, read) = write_and_read(&[json, pretty, binary]).await;

    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{text}"
    );
    assert!(!text.contains("x-api-key"), "{text}");
    assert_eq!(text.lines().count(), 3, "one line per dead letter");

    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["message"]["body"]["v"],
        serde_json::json!(1.5),
        "embedded as JSON"
    );
    assert_eq!(first["connectionId"], "conn-0");
    assert_eq!(first["status"], 400);
    assert_eq!(first["upstreamMessage"], "invalid XDM: \"id\" missing");
    assert!(first["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    let bodies: Vec<&[u8]> = read.iter().map(|d| &d.body[..]).collect();
    assert_eq!(bodies, vec![&json[..], &pretty[..], &binary[..]]);
    assert_eq!(read[1].connection_id, "conn-1");
}

#[tokio::test]
async fn the_reader_skips_a_torn_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let (spool, _) = open(options(dir.path()));
    spool.dead_letter(&record(0), 400, "bad").await.unwrap();
    spool.close().await;
    let path = spool_dir.join("dead-letter.jsonl");
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"{\"time\":\"20"); // torn: no newline
    std::fs::write(&path, &text).unwrap();
    let (spool, _) = open(options(dir.path()));
    spool.dead_letter(&record(1), 422, "bad too").await.unwrap();

    let items: Vec<_> = DeadLetterReader::open(&spool_dir)
        .unwrap()
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert!(items[0].is_ok() && items[2].is_ok());
    assert_eq!(items[1].as_ref().unwrap_err().line, 2);
    assert_eq!(items[2].as_ref().unwrap().status, 422);
}

#[tokio::test]
async fn no_file_means_no_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    assert!(DeadLetterReader::open(dir.path()).unwrap().is_none());
}

#[tokio::test]
async fn a_failed_dead_letter_write_is_cut_and_the_next_one_is_whole() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(Faulty::default());
    let (spool, _) = open(faulty_options(dir.path(), &faulty));
    spool.dead_letter(&record(0), 400, "one").await.unwrap();
    faulty.fail(FileKind::DeadLetter, Op::Write);
    let failed = spool.dead_letter(&record(1), 400, "two").await;
    assert!(matches!(failed, Err(SpoolError::Io(_))), "{failed:?}");
    faulty.heal();
    spool.dead_letter(&record(2), 400, "three").await.unwrap();

    let read: Vec<_> = DeadLetterReader::open(&dir.path().join("spool"))
        .unwrap()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let messages: Vec<&str> = read.iter().map(|d| d.upstream_message.as_str()).collect();
    assert_eq!(messages, vec!["one", "three"]);
    assert_eq!(spool.stats().dead_letters(), 2);
}
