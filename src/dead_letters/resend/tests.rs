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
