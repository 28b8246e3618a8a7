//! The plugin's config: the `config` table of its `[[plugin]]` in the
//! gateway's TOML file (or `--config k=v` of `wasmgate invoke`). Values
//! arrive as strings and are parsed with [`FromStr`](std::str::FromStr).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::bindings::wasmgate::plugin::config as wit;

/// The whole config, read from the host once per instance: it cannot
/// change while an instance lives (a reload makes new instances).
fn cached() -> &'static BTreeMap<String, String> {
    static ALL: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ALL.get_or_init(|| wit::get_all().into_iter().collect())
}

fn lookup(key: &str) -> Option<String> {
    cached().get(key).cloned()
}

/// A config value that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Missing {
        key: String,
    },
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { key } => {
                write!(f, "config key {key:?} is required but not set")
            }
            ConfigError::Invalid {
                key,
                value,
                expected,
                reason,
            } => write!(
                f,
                "config key {key:?}: {value:?} is not a valid {expected}: {reason}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The raw string value of a key.
pub fn raw(key: &str) -> Option<String> {
    lookup(key)
}

/// The raw value of a key, borrowed: no allocation per call, for hot
/// handlers (the config is read once per instance and kept).
pub fn str(key: &str) -> Option<&'static str> {
    cached().get(key).map(String::as_str)
}

/// Every key and value, sorted by key.
pub fn all() -> Vec<(String, String)> {
    cached()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An optional value: `Ok(None)` when unset, an error when it does not parse.
pub fn get<T>(key: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    parse(key, lookup(key))
}

pub(crate) fn parse<T>(key: &str, value: Option<String>) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match value {
        None => Ok(None),
        Some(value) => match value.parse::<T>() {
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(ConfigError::Invalid {
                key: key.to_string(),
                value,
                expected: short_type_name::<T>(),
                reason: e.to_string(),
            }),
        },
    }
}

/// A value with a default for when it is unset; an error when it does not parse.
pub fn get_or<T>(key: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    Ok(get(key)?.unwrap_or(default))
}

/// A value that must be set and parse.
pub fn require<T>(key: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    get(key)?.ok_or_else(|| ConfigError::Missing {
        key: key.to_string(),
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
