//! The `Prefer` request header (RFC 7240): does the producer ask for
//! `respond-async`? Preferences are comma-separated, each a case-insensitive
//! token with optional `=value` and `;parameters`; a quoted value may itself
//! hold commas. Every other preference is ignored, as the RFC asks.

use axum::http::header::HeaderName;
use axum::http::HeaderMap;

pub const PREFER: HeaderName = HeaderName::from_static("prefer");
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
pub const RESPOND_ASYNC: &str = "respond-async";

/// Whether any `Prefer` header of the request names `respond-async`.
pub fn respond_async(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| preferences(value).any(|token| token.eq_ignore_ascii_case(RESPOND_ASYNC)))
}

/// The preference tokens of one header value, in order.
fn preferences(value: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(value).map(|element| {
        let end = element.find(['=', ';']).unwrap_or(element.len());
        element[..end].trim()
    })
}

/// `value` split at the commas that are not inside a quoted string.
fn split_outside_quotes(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let text = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&text[i + 1..]);
                    return Some(&text[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn prefers(values: &[&'static str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(PREFER, HeaderValue::from_static(v));
        }
        respond_async(&headers)
    }

    #[test]
    fn finds_respond_async_among_other_preferences() {
        assert!(prefers(&["respond-async"]));
        assert!(prefers(&["Respond-Async"]));
        assert!(prefers(&["  respond-async  "]));
        assert!(prefers(&["wait=10, respond-async"]));
        assert!(prefers(&["respond-async, wait=10"]));
        assert!(prefers(&["handling=lenient; x=1,respond-async;foo"]));
        assert!(prefers(&["return=minimal", "respond-async"]));
        assert!(
            prefers(&["respond-async=yes"]),
            "a value does not change the token"
        );
    }

    #[test]
    fn ignores_everything_else() {
        assert!(!prefers(&[]));
        assert!(!prefers(&[""]));
        assert!(!prefers(&["return=minimal"]));
        assert!(!prefers(&["respond-asynchronously"]));
        assert!(!prefers(&["x-respond-async"]));
        assert!(!prefers(&["wait=respond-async"]), "a value is not a token");
        assert!(!prefers(&[r#"foo="a, respond-async""#]), "inside quotes");
        assert!(
            !prefers(&[r#"foo="a\", respond-async""#]),
            "an escaped quote"
        );
        assert!(
            !prefers(&["handling=lenient; respond-async"]),
            "a parameter is not a preference"
        );
    }

    proptest::proptest! {
        /// Any header value is read without a panic; `respond-async` after
        /// any other complete preference is found.
        #[test]
        fn any_value_is_read_and_a_later_respond_async_found(
            text in "[ -~]{0,40}",
            other in "[a-z]{1,8}(=[a-z0-9]{1,5})?",
        ) {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut headers = HeaderMap::new();
                headers.insert(PREFER, value);
                let _ = respond_async(&headers);
            }
            let mut headers = HeaderMap::new();
            let value = format!("{other}, respond-async");
            headers.insert(PREFER, HeaderValue::from_str(&value).unwrap());
            proptest::prop_assert!(respond_async(&headers));
        }
    }

    #[test]
    fn a_value_that_is_not_text_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(
            PREFER,
            HeaderValue::from_bytes(b"\xffrespond-async").unwrap(),
        );
        assert!(!respond_async(&headers));
    }
}
