//! Reading a config: file or text to [`Config`], with errors that name the
//! file and the key, relative paths resolved against the file's folder, and
//! validation run before the config is handed out.

use std::path::{Path, PathBuf};

use super::Config;

/// Why a config was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The file (or the origin given to [`Config::parse`]).
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML, or not the config's shape (an unknown key, a
    /// value of the wrong type): the message names the key.
    #[error("{path}: {message}")]
    Parse {
        /// The file (or the origin given to [`Config::parse`]).
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    /// It parsed, but some settings are invalid: all of them, at once.
    #[error("{path}: invalid config:\n{}", format_problems(.problems))]
    Invalid {
        /// The file (or the origin given to [`Config::parse`]).
        path: String,
        /// Every invalid setting.
        problems: Vec<Problem>,
    },
}

/// One invalid setting: the key (a dotted path) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting, as a dotted path (`plugin[0] (upper).timeout`).
    pub key: String,
    /// Why it is refused.
    pub reason: String,
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {}: {}", p.key, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Read, parse and validate a config file. `${NAME}` in `[nats.auth]` and
    /// `[nats.tls]` is read from the environment; relative paths are made
    /// relative to the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config = Config::parse_unchecked(&text, &shown)?;
        config.take_secrets(&shown)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.runtime.cache_dir);
        let (auth, tls) = (&mut config.nats.auth, &mut config.nats.tls);
        for path in [
            &mut auth.creds_file,
            &mut tls.ca,
            &mut tls.cert,
            &mut tls.key,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        for plugin in &mut config.plugins {
            resolve(&mut plugin.path);
            for preopen in &mut plugin.wasi.preopen {
                resolve(&mut preopen.host);
            }
        }
        config.validate(&shown)?;
        Ok(config)
    }

    /// Parse and validate TOML text; `origin` names it in errors. Relative
    /// paths stay relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse_unchecked(text, origin)?;
        config.take_secrets(origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Credentials moved out of server URLs into `[nats.auth]` (see
    /// `secrets`); a no-op for a loaded config, whose URLs are clean.
    pub(crate) fn move_url_credentials(&mut self, origin: &str) -> Result<(), ConfigError> {
        let problems = super::secrets::move_url_credentials(self);
        invalid_if_any(origin, problems)
    }

    /// `${NAME}` references read from the environment, credentials moved out
    /// of server URLs (see `secrets`).
    fn take_secrets(&mut self, origin: &str) -> Result<(), ConfigError> {
        let lookup = |name: &str| std::env::var(name).ok();
        let mut problems = super::secrets::expand_env(self, &lookup);
        problems.extend(super::secrets::move_url_credentials(self));
        invalid_if_any(origin, problems)
    }

    fn parse_unchecked(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let parse_error = |key: String, e: toml::de::Error| {
            if let Some(line) = secret_line(text, &key, e.span()) {
                // toml's message quotes the offending text, here a secret.
                return ConfigError::Parse {
                    path: origin.to_string(),
                    message: format!(
                        "{}line {line}: invalid value (not shown: it may hold a secret)",
                        if key.is_empty() || key == "." {
                            String::new()
                        } else {
                            format!("key `{key}`: ")
                        }
                    ),
                };
            }
            let message = e.to_string().trim_end().to_string();
            ConfigError::Parse {
                path: origin.to_string(),
                message: if key.is_empty() || key == "." {
                    message
                } else {
                    format!("key `{key}`: {message}")
                },
            }
        };
        let de = toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_error(key, e.into_inner())
        })?;
        Ok(config)
    }

    /// The full default config as TOML (what `wasmgate config default` prints).
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).expect("default config serializes");
        format!(
            "# wasmgate default configuration. Every key is optional; add [[plugin]] tables.\n\
             # See the README's config reference for what each key means.\n\n{body}"
        )
    }
}

fn invalid_if_any(origin: &str, problems: Vec<Problem>) -> Result<(), ConfigError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: origin.to_string(),
            problems,
        })
    }
}

/// The line of a parse error when it may quote a secret: the error is in a
/// key of `[nats.auth]` or in `nats.servers` (URLs may carry credentials),
/// or, for a syntax error without a key, on a line inside `[nats.auth]` or
/// one that sets `servers`.
fn secret_line(text: &str, key: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span.map_or(0, |s| s.start).min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    if key.starts_with("nats.auth") || key.starts_with("nats.servers") {
        return Some(line);
    }
    if !key.is_empty() && key != "." {
        return None;
    }
    let mut table = "";
    for l in text[..start].lines() {
        let t = l.trim();
        if t.starts_with('[') {
            table = t;
        }
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let here = text[line_start..line_end].trim_start();
    let in_auth = table.trim_matches(['[', ']', ' ']) == "nats.auth";
    let sets_secret = ["servers", "token", "password", "nkey_seed"]
        .iter()
        .any(|k| here.starts_with(k));
    (in_auth || sets_secret || here.contains("://")).then_some(line)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::*;

    #[test]
    fn default_round_trips_and_validates() {
        let text = Config::default_toml();
        let parsed = Config::parse(&text, "default").expect("default config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("", "empty").unwrap(), Config::default());
    }

    #[test]
    fn parse_errors_never_quote_a_secret() {
        let cases = [
            "[nats.auth]\ntoken = 12345678\n",
            "[nats.auth]\npassword = \"hunter2-unterminated\n",
            "[nats.auth]\ntoken = \"hunter2-dup\"\ntoken = \"hunter2-dup\"\n",
            "[nats]\nservers = \"nats://u:hunter2-url@h:4222\"\n",
            "[nats]\nservers = [\"nats://u:hunter2-url@h:4222\" 7]\n",
        ];
        for text in cases {
            let err = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
            assert!(err.contains("line "), "{err}");
        }
        // Elsewhere toml's own message, with its snippet, stays.
        let err = Config::parse("[health]\ninterval = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `health.interval`"), "{err}");
        assert!(!err.contains("not shown"), "{err}");
    }

    #[test]
    fn durations_are_human_strings() {
        let c = Config::parse("[health]\ninterval = \"250ms\"\ntimeout = \"1m\"\n", "t").unwrap();
        assert_eq!(c.health.interval, Duration::from_millis(250));
        assert_eq!(c.health.timeout, Duration::from_secs(60));
    }

    #[test]
    fn sandbox_keys_default_to_nothing_granted_and_publishing_anywhere() {
        let c = Config::parse(
            "[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\n[[plugin.binding]]\nsubject = \"in\"\n",
            "t",
        )
        .unwrap();
        let p = &c.plugins[0];
        assert_eq!(p.publish_allow, [">"]);
        assert!(p.wasi.is_empty());
        assert_eq!(*p, {
            let mut d = PluginConfig::new("p", "p.wasm");
            d.bindings = p.bindings.clone();
            d
        });
    }

    #[test]
    fn sandbox_keys_parse() {
        let c = Config::parse(
            r#"
            [runtime]
            cache_dir = ""

            [[plugin]]
            name = "p"
            path = "p.wasm"
            publish_allow = ["out.>", "audit.*"]

            [plugin.wasi]
            env = ["HOME", "LANG"]
            preopen = [{ host = ".", guest = "/data" }]
            inherit_stderr = true

            [[plugin.binding]]
            subject = "in"
            "#,
            "t",
        )
        .unwrap();
        assert_eq!(
            c.runtime.cache_dir(),
            None,
            "an empty cache_dir turns it off"
        );
        let p = &c.plugins[0];
        assert_eq!(p.publish_allow, ["out.>", "audit.*"]);
        assert_eq!(
            p.wasi,
            WasiConfig {
                env: vec!["HOME".into(), "LANG".into()],
                preopen: vec![PreopenConfig {
                    host: ".".into(),
                    guest: "/data".into()
                }],
                inherit_stdout: false,
                inherit_stderr: true,
            }
        );
    }

    #[test]
    fn load_resolves_cache_and_preopen_paths_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let file = dir.path().join("gw.toml");
        std::fs::write(
            &file,
            "[runtime]\ncache_dir = \"cache\"\n[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\n\
             [plugin.wasi]\npreopen = [{ host = \"data\", guest = \"/data\" }]\n\
             [[plugin.binding]]\nsubject = \"in\"\n",
        )
        .unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(
            c.runtime.cache_dir(),
            Some(dir.path().join("cache").as_path())
        );
        assert_eq!(c.plugins[0].wasi.preopen[0].host, dir.path().join("data"));
        // Checked after resolving: from another working directory, `data`
        // would not exist.
        std::fs::remove_dir(dir.path().join("data")).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains("plugin[0] (p).wasi.preopen[0].host"), "{err}");
    }
}
