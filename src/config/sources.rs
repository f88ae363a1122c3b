//! Where values come from and how they stack: defaults < TOML file <
//! `INLETD_*` environment < command-line flags. The sources are injected
//! ([`Sources`]), so tests never touch the process environment.

use std::collections::BTreeMap;

use super::{Config, ConfigError, Layer};

/// The injected inputs of [`Config::load`].
#[derive(Debug, Default)]
pub struct Sources {
    /// The config file's path and text, if one was named.
    pub file: Option<(String, String)>,
    /// `INLETD_*` variables (others are ignored).
    pub env: BTreeMap<String, String>,
    /// Keys given on the command line.
    pub flags: Layer,
}

impl Sources {
    /// Reads the config file named by `--config` or else `INLETD_CONFIG`.
    pub fn read(
        config_path: Option<String>,
        env: BTreeMap<String, String>,
        flags: Layer,
    ) -> Result<Sources, ConfigError> {
        let path = config_path.or_else(|| env.get("INLETD_CONFIG").cloned());
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some((path, text))
            }
            None => None,
        };
        Ok(Sources { file, env, flags })
    }
}

impl Config {
    /// Stacks defaults < file < environment < flags, then validates.
    pub fn load(sources: Sources) -> Result<Config, ConfigError> {
        let mut layer = Layer::default();
        if let Some((path, text)) = &sources.file {
            super::ims::refuse_secret_in_file(path, text)?;
            let file: Layer = toml::from_str(text).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string().trim_end().to_owned(),
            })?;
            layer.overlay(file);
        }
        layer.overlay(Layer::from_env_map(&sources.env)?);
        layer.overlay(sources.flags);
        let mut config = layer.into_config();
        config.ims = super::ims::resolve(&config, &sources.env)?;
        config.validate()?;
        Ok(config)
    }

    /// The built-in defaults (what `load` gives with no sources).
    pub fn defaults() -> Config {
        Layer::default().into_config()
    }
}
