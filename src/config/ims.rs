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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{unknown_env_vars, Layer, Sources};

    const SECRET: &str = "p8e-s3cr&t=+ x";

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(Sources {
            file: file.map(|text| ("inletd.toml".to_owned(), text.to_owned())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: Layer::default(),
        })
    }

    const KEYS: &str = "ims_client_id = \"client-1\"\nims_org_id = \"O@AdobeOrg\"\nims_scopes = \"openid,AdobeID\"\n";

    #[test]
    fn the_ims_keys_and_the_secret_from_the_environment_make_the_credentials() {
        let config = load(Some(KEYS), &[("INLETD_IMS_CLIENT_SECRET", SECRET)]).unwrap();
        let ims = config.ims.get().expect("credentials");
        assert_eq!(ims.client_id, "client-1");
        assert_eq!(ims.scope(), "openid,AdobeID");
        assert_eq!(ims.client_secret.expose_secret(), SECRET);
        assert_eq!(config.ims_secret_shown(), "set");
        assert!(!format!("{config:?}").contains(SECRET));
        let env = [("INLETD_IMS_CLIENT_SECRET".to_owned(), SECRET.to_owned())];
        assert!(unknown_env_vars(&env.into_iter().collect()).is_empty());

        let off = load(None, &[]).unwrap();
        assert!(off.ims.get().is_none());
        assert_eq!(off.ims_secret_shown(), "not set");
        assert_eq!(off, Config::defaults());
    }

    #[test]
    fn a_client_id_without_its_companions_is_refused_naming_the_key() {
        let key = |file: &str, env: &[(&str, &str)]| match load(Some(file), env) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        let secret = [("INLETD_IMS_CLIENT_SECRET", SECRET)];
        assert_eq!(key(KEYS, &[]), SECRET_KEY);
        assert_eq!(key(&KEYS.replace("O@AdobeOrg", " "), &secret), "ims_org_id");
        assert_eq!(
            key(&KEYS.replace("openid,AdobeID", ""), &secret),
            "ims_scopes"
        );
        let http = format!("{KEYS}ims_token_url = \"http://ims.example/token\"\n");
        assert_eq!(key(&http, &secret), "ims_token_url");
    }

    #[test]
    fn the_secret_in_the_config_file_is_refused_without_showing_it() {
        let file = format!("{KEYS}ims_client_secret = {SECRET:?}\n");
        let error = load(Some(&file), &[]).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ConfigError::Secret(_)), "{text}");
        assert!(text.contains("INLETD_IMS_CLIENT_SECRET"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}
