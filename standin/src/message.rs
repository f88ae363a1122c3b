//! Per-message checks (the stand-in's idea of a valid `{"header","body"}`
//! message) and the test directives a message may carry in `body.standin`:
//! `{"poison":true}` makes the whole request a 400; `{"status":N,"times":K,
//! "as_string":bool}` makes its own entry fail with N for the first K sightings.
//! Pure functions over raw JSON text; no state, no HTTP.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// Instructions a test put in a message's `body.standin`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Directive {
    /// Fail this message's entry with this status code.
    pub status: Option<u16>,
    /// ... only the first `times` sightings of this exact message (`None`: always).
    pub times: Option<u64>,
    /// Send the status code as a JSON string (`"503"`), as AEP sometimes does.
    pub as_string: bool,
    /// Make the whole request fail with 400, so the client has to bisect.
    pub poison: bool,
}

/// The verdict on one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// Fails with 400 and this reason.
    Invalid(String),
    /// Acceptable, possibly with a directive.
    Valid(Option<Directive>),
}

impl Check {
    pub fn is_poison(&self) -> bool {
        matches!(self, Check::Valid(Some(d)) if d.poison)
    }
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    header: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HeaderView {
    #[serde(rename = "imsOrgId", default)]
    ims_org_id: Option<Value>,
}

#[derive(Deserialize)]
struct BodyView {
    #[serde(default)]
    standin: Option<Value>,
}

fn is_object(raw: &str) -> bool {
    raw.trim_start().starts_with('{')
}

/// Checks one message given as raw JSON text.
pub(super) fn check_message(raw: &str, ims_org: Option<&str>) -> Check {
    // A struct also deserializes from an array, so test the shape first.
    if !is_object(raw) {
        return Check::Invalid(
            "Message has unknown xdm format: message is not a JSON object".into(),
        );
    }
    let view: MessageView = match serde_json::from_str(raw) {
        Ok(view) => view,
        Err(err) => {
            return Check::Invalid(format!(
                "Message has unknown xdm format: message is not valid JSON: {err}"
            ))
        }
    };
    let Some(header) = view.header else {
        return Check::Invalid("Message has unknown xdm format: message has no header".into());
    };
    if !is_object(header.get()) {
        return Check::Invalid(
            "Message has unknown xdm format: message header is not an object".into(),
        );
    }
    let Some(body) = view.body else {
        return Check::Invalid("Message has unknown xdm format: message has no body".into());
    };
    if let Some(org) = ims_org {
        let header: HeaderView = match serde_json::from_str(header.get()) {
            Ok(header) => header,
            Err(err) => return Check::Invalid(format!("message header is invalid: {err}")),
        };
        if let Some(given) = header.ims_org_id {
            if given.as_str() != Some(org) {
                return Check::Invalid(
                    "Message imsOrgId does not match the inlet (wrong org)".into(),
                );
            }
        }
    }
    Check::Valid(directive(body.get()))
}

/// The message's `header.imsOrgId` if it is a string (for failure texts).
pub(super) fn ims_org_of(raw: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct View {
        header: HeaderView,
    }
    let view: View = serde_json::from_str(raw).ok()?;
    view.header.ims_org_id?.as_str().map(str::to_owned)
}

/// Reads `body.standin`, if any. Malformed directives are ignored.
pub(super) fn directive(body: &str) -> Option<Directive> {
    // Cheap pre-filter: almost no message carries a directive.
    if !body.contains("standin") || !is_object(body) {
        return None;
    }
    let standin = serde_json::from_str::<BodyView>(body).ok()?.standin?;
    let status = standin.get("status").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let directive = Directive {
        status: status.and_then(|s| u16::try_from(s).ok()),
        times: standin.get("times").and_then(Value::as_u64),
        as_string: standin.get("as_string").and_then(Value::as_bool) == Some(true),
        poison: standin.get("poison").and_then(Value::as_bool) == Some(true),
    };
    (directive.status.is_some() || directive.poison).then_some(directive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(directive: Option<Directive>) -> Check {
        Check::Valid(directive)
    }

    #[test]
    fn accepts_plain_messages() {
        let raw = r#"{"header":{"schemaRef":{"id":"x"}},"body":{"xdmEntity":{"a":1}}}"#;
        assert_eq!(check_message(raw, None), valid(None));
        assert_eq!(check_message(raw, Some("ORG@AdobeOrg")), valid(None));
    }

    #[test]
    fn rejects_malformed_messages() {
        let cases = [
            ("[1,2]", "not a JSON object"),
            ("42", "not a JSON object"),
            (r#"{"body":{}}"#, "no header"),
            (r#"{"header":[],"body":{}}"#, "header is not an object"),
            (r#"{"header":{}}"#, "no body"),
            (r#"{"header":{},"body":null}"#, "no body"),
            (r#"{"header":{}, "body":{} "#, "not valid JSON"),
        ];
        for (raw, reason) in cases {
            match check_message(raw, None) {
                Check::Invalid(msg) => assert!(msg.contains(reason), "{raw}: {msg}"),
                other => panic!("{raw}: expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn checks_the_org_only_when_configured_and_given() {
        let wrong = r#"{"header":{"imsOrgId":"OTHER@AdobeOrg"},"body":{}}"#;
        let right = r#"{"header":{"imsOrgId":"ORG@AdobeOrg"},"body":{}}"#;
        let absent = r#"{"header":{},"body":{}}"#;
        let org = Some("ORG@AdobeOrg");
        assert!(matches!(check_message(wrong, org), Check::Invalid(m) if m.contains("wrong org")));
        assert_eq!(check_message(right, org), valid(None));
        assert_eq!(check_message(absent, org), valid(None));
        assert_eq!(check_message(wrong, None), valid(None));
    }

    #[test]
    fn parses_directives() {
        let body = r#"{"x":1,"standin":{"status":503,"times":2,"as_string":true}}"#;
        assert_eq!(
            directive(body),
            Some(Directive {
                status: Some(503),
                times: Some(2),
                as_string: true,
                poison: false
            })
        );
        assert_eq!(
            directive(r#"{"standin":{"status":"429"}}"#),
            Some(Directive {
                status: Some(429),
                ..Directive::default()
            })
        );
        let poison = directive(r#"{"standin":{"poison":true}}"#).expect("poison");
        assert!(poison.poison && poison.status.is_none());
        assert_eq!(directive(r#"{"standin":{"poison":false}}"#), None);
        assert_eq!(directive(r#"{"standin":{"status":70000}}"#), None);
        assert_eq!(directive(r#"{"standin":"yes"}"#), None);
        assert_eq!(directive(r#"{"note":"standin"}"#), None);
        assert_eq!(directive(r#""standin""#), None);

        let raw = r#"{"header":{},"body":{"standin":{"poison":true}}}"#;
        assert!(check_message(raw, None).is_poison());
    }
}
