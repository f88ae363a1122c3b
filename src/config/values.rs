//! The value types of configuration keys and their one parser each
//! (`FromStr`), shared by every source: a TOML string, an `INLETD_*` value
//! and a flag go through the same code, so every source accepts the same values.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written the human way: `20ms`, `5s`, `1m 30s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration like `20ms` or `5s` ({e})"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The upstream's base URL (`http` or `https`, no query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    text: String,
    url: reqwest::Url,
}

impl UpstreamUrl {
    /// The base without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `{base}/{segments…}?{query}`. Each segment is percent-encoded as exactly
    /// one path segment, so no value can turn into path structure (`/`, `..`, `?`).
    pub fn endpoint(&self, segments: &[&str], query: Option<&str>) -> reqwest::Url {
        let mut url = self.url.clone();
        // Only cannot-be-a-base URLs refuse; `from_str` admits http(s) alone, which never are.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.set_query(query);
        url
    }
}

impl FromStr for UpstreamUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("`{s}` must start with http:// or https://"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("`{s}` must not carry a query or fragment"));
        }
        let text = url.as_str().trim_end_matches('/').to_owned();
        // Parsed again from the trimmed text, so `http://h/base/` and
        // `http://h/base` are one and the same base (found by fuzzing).
        let url = reqwest::Url::parse(&text).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
        Ok(UpstreamUrl { text, url })
    }
}

/// Shown in logs and `check-config`: a password in the URL is redacted.
impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.url.password().is_some() {
            let mut url = self.url.clone();
            let _ = url.set_password(Some("REDACTED"));
            f.write_str(url.as_str().trim_end_matches('/'))
        } else {
            f.write_str(&self.text)
        }
    }
}

/// A file path that may be left empty (`""`: none), so that the example
/// config can set every key, this one included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionalPath(pub Option<std::path::PathBuf>);

impl FromStr for OptionalPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Ok(OptionalPath((!s.is_empty()).then(|| s.into())))
    }
}

impl fmt::Display for OptionalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => Ok(()),
        }
    }
}

/// On or off: `true`/`false` in TOML (a boolean, or the text `check-config`
/// prints), the environment and flags alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Switch(pub bool);

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Switch(true)),
            "false" => Ok(Switch(false)),
            _ => Err(format!("`{s}` is not `true` or `false`")),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Switch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Switch, E> {
                Ok(Switch(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Switch, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{s}` is not `text` or `json`")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A value written as text in TOML goes through the same parser as one from the
/// environment or the command line, so every source accepts the same values.
macro_rules! deserialize_from_str {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

deserialize_from_str!(HumanDuration, UpstreamUrl, LogFormat, OptionalPath);
