//! Header parsing (values never in errors or `Debug`), URLs and reasons.

use super::*;

#[test]
fn headers_parse_and_are_marked_sensitive() {
    let map = parse_headers(["Authorization: Bearer s3cr3t", "x-api-key:k"]).unwrap();
    assert_eq!(map["authorization"], "Bearer s3cr3t");
    assert!(map["authorization"].is_sensitive());
    assert_eq!(map["x-api-key"], "k");
    assert!(!format!("{map:?}").contains("s3cr3t"));
}

#[test]
fn a_bad_header_is_refused_without_showing_its_value() {
    let no_colon = parse_headers(["Authorization Bearer s3cr3t"]).unwrap_err();
    assert!(!no_colon.contains("s3cr3t"), "{no_colon}");
    let bad_value = parse_headers(["Authorization: Bearer s3cr3t\u{7f}"]).unwrap_err();
    assert!(!bad_value.contains("s3cr3t"), "{bad_value}");
    assert!(bad_value.contains("authorization"), "{bad_value}");
    let bad_name = parse_headers(["Auth orization: s3cr3t"]).unwrap_err();
    assert!(!bad_name.contains("s3cr3t"), "{bad_name}");
}

#[test]
fn debug_of_the_arguments_hides_the_headers() {
    use clap::Parser;
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: ResendArgs,
    }
    let cli = Cli::parse_from(["x", "--header", "Authorization: Bearer s3cr3t"]);
    let shown = format!("{cli:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("1 redacted"), "{shown}");
}

#[test]
fn the_connection_id_is_one_escaped_path_segment() {
    let base = Url::parse("http://127.0.0.1:8080").unwrap();
    assert_eq!(
        collection_url(&base, "abc-123").unwrap().as_str(),
        "http://127.0.0.1:8080/collection/abc-123"
    );
    assert_eq!(
        collection_url(&base, "../batch/x?y").unwrap().as_str(),
        "http://127.0.0.1:8080/collection/..%2Fbatch%2Fx%3Fy"
    );
    let prefixed = Url::parse("https://gw.example/aep/").unwrap();
    assert_eq!(
        collection_url(&prefixed, "c").unwrap().as_str(),
        "https://gw.example/aep/collection/c"
    );
}

#[test]
fn a_reason_is_the_json_message_or_the_text_on_one_short_line() {
    assert_eq!(
        reason(br#"{"statusCode":400,"message":"invalid XDM"}"#),
        "invalid XDM"
    );
    assert_eq!(reason(b"oops\nbroken"), "oops broken");
    assert_eq!(reason(&[b'x'; 5000]).len(), MAX_REASON_CHARS);
}

#[test]
fn a_kept_line_is_noted_and_its_message_keeps_every_byte() {
    let raw = br#"{"time":"t","connectionId":"c","status":400,"upstreamMessage":"m","acceptedAt":"a","message":{"body":{"v":1.50,"s":"\u00e9"}}}"#;
    let at = std::time::UNIX_EPOCH + Duration::from_secs(1);
    let once = noted(raw, "http://127.0.0.1:8080/", "400: still invalid", at);
    let twice = noted(&once, "http://127.0.0.1:8080/", "503: busy", at);
    let text = String::from_utf8(twice.clone()).unwrap();
    assert!(
        text.contains(r#""message":{"body":{"v":1.50,"s":"\u00e9"}}"#),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_slice(&twice).unwrap();
    assert_eq!(
        v["lastResend"]["result"], "503: busy",
        "the latest replaces the earlier"
    );
    assert_eq!(v["lastResend"]["time"], "1970-01-01T00:00:01.000Z");
    let letter = crate::spool::DeadLetterReader::parse(&twice).unwrap();
    assert_eq!(&letter.body[..], br#"{"body":{"v":1.50,"s":"\u00e9"}}"#);
}

#[test]
fn the_target_is_shown_without_its_password() {
    let url = Url::parse("http://user:s3cr3t@127.0.0.1:8080/").unwrap();
    assert_eq!(shown(&url), "http://127.0.0.1:8080/");
}
