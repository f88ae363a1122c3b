//! The IMS credentials' configuration: [`ImsConfig`] and its validation, and
//! where the client secret may come from ([`resolve_secret`]): only the
//! environment variable `INLETD_IMS_CLIENT_SECRET` or the file named by
//! `ims_client_secret_file`, never a flag or the TOML file. The layering of
//! the other keys stays in `crate::config`, which calls these.

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

/// The environment variable that may carry the secret.
pub const SECRET_ENV: &str = "INLETD_IMS_CLIENT_SECRET";
/// The key naming a file that holds the secret.
pub const SECRET_FILE_KEY: &str = "ims_client_secret_file";
/// The default token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://ims-na1.adobelogin.com/ims/token/v3";

/// Adobe OAuth server-to-server credentials. `Debug` never shows the secret
/// (`secrecy` redacts it).
#[derive(Clone, Debug)]
pub struct ImsConfig {
    /// `ims_client_id`; also sent upstream as `x-api-key`.
    pub client_id: String,
    pub client_secret: SecretString,
    /// `ims_org_id` (`…@AdobeOrg`), sent upstream as `x-gw-ims-org-id`.
    pub org_id: String,
    /// `ims_scopes`, sent to IMS as one comma-separated `scope` value.
    pub scopes: Vec<String>,
    /// `ims_token_url`.
    pub token_url: reqwest::Url,
}

/// A bad IMS setting; the text names the key and never holds the secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct ImsConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ImsConfigError {
    ImsConfigError {
        key,
        reason: reason.into(),
    }
}

impl ImsConfig {
    /// Checks every value and builds the configuration. `scopes` is the
    /// comma-separated `ims_scopes`; `token_url` is `ims_token_url` (`None`:
    /// the default).
    pub fn new(
        client_id: &str,
        client_secret: SecretString,
        org_id: &str,
        scopes: &str,
        token_url: Option<&str>,
    ) -> Result<ImsConfig, ImsConfigError> {
        let client_id = header_text("ims_client_id", client_id)?;
        let org_id = header_text("ims_org_id", org_id)?;
        let scopes = parse_scopes(scopes)?;
        let token_url = parse_token_url(token_url.unwrap_or(DEFAULT_TOKEN_URL))?;
        Ok(ImsConfig {
            client_id,
            client_secret,
            org_id,
            scopes,
            token_url,
        })
    }

    /// The `scope` form value: the scopes joined by commas, as IMS expects.
    pub fn scope(&self) -> String {
        self.scopes.join(",")
    }

    /// How `check-config` shows the secret.
    pub fn secret_shown(&self) -> &'static str {
        secret_shown(Some(&self.client_secret))
    }
}

/// How `check-config` shows a secret that may be absent: `set` or `not set`.
pub fn secret_shown(secret: Option<&SecretString>) -> &'static str {
    match secret {
        Some(_) => "set",
        None => "not set",
    }
}

/// A value sent upstream as a header: non-empty, printable, no spaces.
fn header_text(key: &'static str, value: &str) -> Result<String, ImsConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if value.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(invalid(
            key,
            format!("`{value}` must be printable ASCII without spaces"),
        ));
    }
    HeaderValue::from_str(value).map_err(|e| invalid(key, e.to_string()))?;
    Ok(value.to_owned())
}

fn parse_scopes(scopes: &str) -> Result<Vec<String>, ImsConfigError> {
    let list: Vec<String> = scopes.split(',').map(|s| s.trim().to_owned()).collect();
    if list.iter().all(String::is_empty) {
        return Err(invalid(
            "ims_scopes",
            "must name at least one scope, e.g. `openid,AdobeID,read_organizations`",
        ));
    }
    if let Some(bad) = list
        .iter()
        .find(|s| s.is_empty() || s.chars().any(|c| !c.is_ascii_graphic() || c == ','))
    {
        return Err(invalid(
            "ims_scopes",
            format!("`{bad}` is not a scope: write them comma-separated, without empty entries"),
        ));
    }
    Ok(list)
}

fn parse_token_url(text: &str) -> Result<reqwest::Url, ImsConfigError> {
    let key = "ims_token_url";
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| invalid(key, format!("`{text}` is not a URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "must not carry a user or password"));
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    // The secret travels in the body: plain http only to this machine (a
    // local stand-in), never across a network.
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(invalid(
            key,
            format!("`{text}` must be https:// (http:// only to 127.0.0.1 or localhost)"),
        )),
    }
}

/// Why the secret could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Given somewhere it must not be (a flag, the TOML file).
    #[error(
        "the IMS client secret cannot be set in {origin}: it comes only from the \
         environment variable {SECRET_ENV} or a file named by `{SECRET_FILE_KEY}`"
    )]
    NotAllowedHere { origin: String },
    #[error(
        "the IMS client secret is given twice ({SECRET_ENV} and `{SECRET_FILE_KEY}`): keep one"
    )]
    Twice,
    #[error("`{SECRET_FILE_KEY}`: cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("the IMS client secret from {origin} is empty")]
    Empty { origin: String },
    #[error("the IMS client secret from {origin} is not UTF-8 text")]
    NotText { origin: String },
}

/// The refusal for a secret found at `origin` (e.g. "the TOML file",
/// "the command line"): says where it may come from instead.
pub fn not_allowed_here(origin: impl Into<String>) -> SecretError {
    SecretError::NotAllowedHere {
        origin: origin.into(),
    }
}

/// The secret from [`SECRET_ENV`] in `env` or from the file at `file`
/// (`ims_client_secret_file`); `None` when neither is given. A trailing line
/// break in the file (as `echo` and most editors leave) is not part of it.
pub fn resolve_secret(
    env: &BTreeMap<String, String>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, SecretError> {
    let from_env = env.get(SECRET_ENV);
    match (from_env, file) {
        (Some(_), Some(_)) => Err(SecretError::Twice),
        (Some(value), None) => {
            let origin = || format!("environment variable {SECRET_ENV}");
            checked(SecretString::from(value.as_str()), origin).map(Some)
        }
        (None, Some(path)) => {
            let origin = || format!("the file {}", path.display());
            let bytes = std::fs::read(path).map_err(|source| SecretError::Unreadable {
                path: path.display().to_string(),
                source,
            })?;
            let text =
                String::from_utf8(bytes).map_err(|_| SecretError::NotText { origin: origin() })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            checked(SecretString::from(value), origin).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn checked(secret: SecretString, origin: impl Fn() -> String) -> Result<SecretString, SecretError> {
    if secret.expose_secret().is_empty() {
        return Err(SecretError::Empty { origin: origin() });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p8e-S3cr&t=+ x";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_secret_comes_from_the_environment_or_a_file() {
        let from_env = resolve_secret(&env(&[(SECRET_ENV, SECRET)]), None).unwrap();
        assert_eq!(from_env.unwrap().expose_secret(), SECRET);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\r\n")).unwrap();
        let from_file = resolve_secret(&env(&[]), Some(&path)).unwrap();
        assert_eq!(from_file.unwrap().expose_secret(), SECRET);

        assert!(resolve_secret(&env(&[("INLETD_OTHER", "x")]), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_secret_given_twice_empty_or_unreadable_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, SECRET).unwrap();
        let both = resolve_secret(&env(&[(SECRET_ENV, SECRET)]), Some(&path)).unwrap_err();
        assert!(matches!(both, SecretError::Twice), "{both}");

        std::fs::write(&path, "\n").unwrap();
        let empty = resolve_secret(&env(&[]), Some(&path)).unwrap_err();
        assert!(empty.to_string().contains("is empty"), "{empty}");

        let missing = dir.path().join("missing");
        let unreadable = resolve_secret(&env(&[]), Some(&missing)).unwrap_err();
        assert!(
            unreadable.to_string().contains(SECRET_FILE_KEY),
            "{unreadable}"
        );

        for error in [both, empty, unreadable] {
            assert!(!error.to_string().contains(SECRET), "{error}");
            assert!(!format!("{error:?}").contains(SECRET), "{error:?}");
        }
    }

    #[test]
    fn a_secret_from_elsewhere_is_refused_saying_where_it_may_come_from() {
        let message = not_allowed_here("the TOML file").to_string();
        assert!(message.contains("the TOML file"), "{message}");
        assert!(message.contains(SECRET_ENV), "{message}");
        assert!(message.contains(SECRET_FILE_KEY), "{message}");
    }

    #[test]
    fn the_config_validates_each_key_and_never_shows_the_secret() {
        let ok = ImsConfig::new(
            " client-1 ",
            SECRET.into(),
            "ORG@AdobeOrg",
            "openid, AdobeID,read_organizations",
            None,
        )
        .unwrap();
        assert_eq!(ok.client_id, "client-1");
        assert_eq!(ok.scope(), "openid,AdobeID,read_organizations");
        assert_eq!(ok.token_url.as_str(), DEFAULT_TOKEN_URL);
        assert_eq!(ok.secret_shown(), "set");
        assert_eq!(secret_shown(None), "not set");
        assert!(!format!("{ok:?}").contains(SECRET), "{ok:?}");

        let bad = |id: &str, org: &str, scopes: &str, url: Option<&str>| {
            ImsConfig::new(id, SECRET.into(), org, scopes, url)
                .unwrap_err()
                .key
        };
        assert_eq!(bad("", "O@AdobeOrg", "openid", None), "ims_client_id");
        assert_eq!(bad("a b", "O@AdobeOrg", "openid", None), "ims_client_id");
        assert_eq!(bad("id", "", "openid", None), "ims_org_id");
        assert_eq!(bad("id", "O@AdobeOrg", " , ", None), "ims_scopes");
        assert_eq!(bad("id", "O@AdobeOrg", "openid,,x", None), "ims_scopes");
        for url in [
            "not a url",
            "ftp://ims.example/token",
            "http://ims.example/token",
            "https://user:pw@ims.example/token",
        ] {
            assert_eq!(
                bad("id", "O@AdobeOrg", "openid", Some(url)),
                "ims_token_url"
            );
        }
        let local = ImsConfig::new(
            "id",
            SECRET.into(),
            "O@AdobeOrg",
            "openid",
            Some("http://127.0.0.1:9/ims/token/v3"),
        );
        assert!(local.is_ok(), "{local:?}");
    }
}
