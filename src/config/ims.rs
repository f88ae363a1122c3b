//! The `ims_*` keys brought together: the [`ImsCredentials`] a loaded
//! [`Config`] carries (the secret included, taken only from
//! `INLETD_IMS_CLIENT_SECRET` or `ims_client_secret_file`), the refusal of a
//! secret written where it must not be (the TOML file; the command line is
//! refused by the binary), and the start-up errors naming the missing keys.
//! The checks of each value live in `crate::ims::config`.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::{Config, ConfigError};
use crate::ims::{resolve_secret, ImsConfig, SecretError};

/// The name the secret would have as a key: refused in the TOML file and as a
/// flag, and not reported as an unknown `INLETD_*` variable.
pub const SECRET_KEY: &str = "ims_client_secret";

/// The IMS credentials of a configuration; `None` while `ims_client_id` is
/// empty. `Debug` never shows the secret.
#[derive(Clone, Debug, Default)]
pub struct ImsCredentials(pub Option<ImsConfig>);

impl ImsCredentials {
    pub fn get(&self) -> Option<&ImsConfig> {
        self.0.as_ref()
    }
}

/// Equal when every value is, the secret included (compared, never shown):
/// a reload can tell whether anything changed.
impl PartialEq for ImsCredentials {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.client_id == b.client_id
                    && a.org_id == b.org_id
                    && a.scopes == b.scopes
                    && a.token_url == b.token_url
                    && a.client_secret.expose_secret() == b.client_secret.expose_secret()
            }
            _ => false,
        }
    }
}

/// Refuses a config file that names the secret, saying where it may come from.
pub(super) fn refuse_secret_in_file(path: &str, text: &str) -> Result<(), ConfigError> {
    // Only the key's presence matters; a file that does not parse is reported
    // by the parse that follows.
    let named = text
        .parse::<toml::Table>()
        .is_ok_and(|table| table.contains_key(SECRET_KEY));
    if named {
        return Err(ConfigError::Secret(crate::ims::not_allowed_here(format!(
            "the config file {path}"
        ))));
    }
    Ok(())
}

/// The credentials from the merged keys and the secret's two allowed sources
/// (`env` holds the `INLETD_*` variables).
pub(super) fn resolve(
    config: &Config,
    env: &BTreeMap<String, String>,
) -> Result<ImsCredentials, ConfigError> {
    let secret = resolve_secret(env, config.ims_client_secret_file.0.as_deref())?;
    let client_id = config.ims_client_id.trim();
    if client_id.is_empty() {
        return Ok(ImsCredentials(None));
    }
    let missing = |key: &'static str, what: &str| ConfigError::Invalid {
        key,
        origin: "the merged configuration".into(),
        reason: format!("ims_client_id is set, so {what} is required too"),
    };
    if config.ims_org_id.trim().is_empty() {
        return Err(missing(
            "ims_org_id",
            "the IMS organization id (…@AdobeOrg)",
        ));
    }
    if config.ims_scopes.trim().is_empty() {
        return Err(missing(
            "ims_scopes",
            "the credential's scopes (one comma-separated value)",
        ));
    }
    let Some(secret) = secret else {
        return Err(ConfigError::Invalid {
            key: SECRET_KEY,
            origin: "the merged configuration".into(),
            reason: format!(
                "ims_client_id is set, so the client secret is required too: give it in the \
                 environment variable {} or a file named by `{}`",
                crate::ims::SECRET_ENV,
                crate::ims::SECRET_FILE_KEY
            ),
        });
    };
    let ims = ImsConfig::new(
        client_id,
        secret,
        &config.ims_org_id,
        &config.ims_scopes,
        Some(&config.ims_token_url),
    )
    .map_err(|e| ConfigError::Invalid {
        key: e.key,
        origin: "the merged configuration".into(),
        reason: e.reason,
    })?;
    Ok(ImsCredentials(Some(ims)))
}

impl From<SecretError> for ConfigError {
    fn from(e: SecretError) -> ConfigError {
        ConfigError::Secret(e)
    }
}

impl Config {
    /// How `check-config` shows the client secret: `set` or `not set`.
    pub fn ims_secret_shown(&self) -> &'static str {
        crate::ims::secret_shown(self.ims.get().map(|c| &c.client_secret))
    }
}
