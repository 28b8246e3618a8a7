//! Where the config's secrets come from and where they must not go.
//!
//! - `${NAME}` in any string of `[nats.auth]` and `[nats.tls]`, in the
//!   server URLs and in `http.listen` (several gateways on one host, one
//!   file), is replaced by the environment variable `NAME` when the
//!   config is loaded, so a secret need not sit in the TOML file (`$${` is a
//!   literal `${`). An unset variable is a config error naming the key and
//!   the variable (never a value).
//! - Credentials written into a server URL (`nats://user:pass@host`,
//!   `nats://token@host`) are moved into `[nats.auth]` at load and the URL
//!   keeps only scheme, host and port: the client logs server addresses at
//!   `debug`, and status and errors show them too.
//! - [`redact_url`] is for any place that prints a URL that was never
//!   cleaned (a config built in code, a validation error).

use std::borrow::Cow;
use std::path::PathBuf;

use super::{Config, Problem, Secret};

/// Replace every `${NAME}` in the secret-bearing strings of `config`, looking
/// names up with `lookup`. Returns one problem per key that could not be expanded.
pub(crate) fn expand_env(
    config: &mut Config,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut text = |key: &str, value: &mut String| match expand(value, lookup) {
        Ok(Some(expanded)) => *value = expanded,
        Ok(None) => {}
        Err(reason) => problems.push(Problem {
            key: key.to_string(),
            reason,
        }),
    };
    for (i, server) in config.nats.servers.iter_mut().enumerate() {
        text(&format!("nats.servers[{i}]"), server);
    }
    text("http.listen", &mut config.http.listen);
    let a = &mut config.nats.auth;
    if let Some(v) = &mut a.user {
        text("nats.auth.user", v);
    }
    for (key, secret) in [
        ("nats.auth.nkey_seed", &mut a.nkey_seed),
        ("nats.auth.token", &mut a.token),
        ("nats.auth.password", &mut a.password),
    ] {
        if let Some(Secret(v)) = secret {
            text(key, v);
        }
    }
    let t = &mut config.nats.tls;
    for (key, path) in [
        ("nats.auth.creds_file", &mut a.creds_file),
        ("nats.tls.ca", &mut t.ca),
        ("nats.tls.cert", &mut t.cert),
        ("nats.tls.key", &mut t.key),
    ] {
        let Some(p) = path else { continue };
        // A path that is not UTF-8 holds no `${`: nothing to expand.
        if let Some(s) = p.to_str() {
            let mut s = s.to_string();
            text(key, &mut s);
            *p = PathBuf::from(s);
        }
    }
    problems
}

/// `value` with every `${NAME}` replaced, `None` when it has none.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    if !value.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            // `$${`: a literal `${`.
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("has `${` without a closing `}`".into());
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            // Not named: the text may be part of a secret.
            return Err(
                "has `${` not followed by an environment variable name (letters, digits, '_') \
                 and `}`; write `$${` for a literal `${`"
                    .into(),
            );
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Credentials found in a server URL.
#[derive(Clone, PartialEq, Eq)]
enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

/// Split `url` into the URL without its user-info and the credentials it held.
fn split_credentials(url: &str) -> (String, Option<UrlCredentials>) {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The last `@` ends the user-info even when an unencoded `/`, `?` or
    // `#` in a password comes before it: a NATS URL has no path to confuse
    // it with, and missing a password here would leave it in the URL.
    let Some(at) = rest.rfind('@') else {
        return (url.to_string(), None);
    };
    let info = &rest[..at];
    let clean = format!("{scheme}{}", &rest[at + 1..]);
    let credentials = match info.split_once(':') {
        Some((user, password)) => {
            UrlCredentials::UserPassword(percent_decode(user), percent_decode(password))
        }
        None => UrlCredentials::Token(percent_decode(info)),
    };
    (clean, Some(credentials))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with any user-info replaced by `***`, for printing.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    match split_credentials(url) {
        (_, None) => Cow::Borrowed(url),
        (clean, Some(_)) => {
            let at = clean.find("://").map(|i| i + 3).unwrap_or(0);
            Cow::Owned(format!("{}***@{}", &clean[..at], &clean[at..]))
        }
    }
}

/// Take credentials out of every server URL and put them in `[nats.auth]`.
/// Returns problems for URLs whose credentials disagree or clash with
/// `[nats.auth]`; their URLs are cleaned either way.
pub(crate) fn move_url_credentials(config: &mut Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut found: Option<UrlCredentials> = None;
    for (i, server) in config.nats.servers.iter_mut().enumerate() {
        let (clean, credentials) = split_credentials(server);
        let Some(credentials) = credentials else {
            continue;
        };
        *server = clean;
        match &found {
            None => found = Some(credentials),
            Some(first) if *first == credentials => {}
            Some(_) => problems.push(Problem {
                key: format!("nats.servers[{i}]"),
                reason: "carries other credentials than an earlier server URL; one gateway \
                         connects as one user"
                    .into(),
            }),
        }
    }
    let Some(credentials) = found else {
        return problems;
    };
    let a = &mut config.nats.auth;
    if a.creds_file.is_some()
        || a.nkey_seed.is_some()
        || a.token.is_some()
        || a.user.is_some()
        || a.password.is_some()
    {
        problems.push(Problem {
            key: "nats.servers".into(),
            reason: "a server URL carries credentials and [nats.auth] sets them too; keep one"
                .into(),
        });
        return problems;
    }
    match credentials {
        UrlCredentials::UserPassword(user, password) => {
            a.user = Some(user);
            a.password = Some(Secret(password));
        }
        UrlCredentials::Token(token) => a.token = Some(Secret(token)),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "GW_TOKEN" => Some("s3cr3t-token".into()),
            "DIR" => Some("/etc/gw".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_names_whole_and_embedded() {
        assert_eq!(expand("${GW_TOKEN}", &env), Ok(Some("s3cr3t-token".into())));
        assert_eq!(
            expand("${DIR}/ca.pem", &env),
            Ok(Some("/etc/gw/ca.pem".into()))
        );
        assert_eq!(expand("plain", &env), Ok(None));
        assert_eq!(expand("a$b", &env), Ok(None));
        assert_eq!(
            expand("${MISSING}", &env),
            Err("environment variable MISSING is not set".into())
        );
        assert!(expand("${GW_TOKEN", &env).unwrap_err().contains("closing"));
        assert!(
            expand("${}", &env)
                .unwrap_err()
                .contains("not followed by an environment")
        );
        assert!(
            !expand("${s3cr3t pass}", &env)
                .unwrap_err()
                .contains("s3cr3t")
        );
        assert!(expand("${9X}", &env).is_err());
        assert_eq!(
            expand("a$${GW_TOKEN}b", &env),
            Ok(Some("a${GW_TOKEN}b".into()))
        );
        assert_eq!(
            expand("$${DIR}/${DIR}", &env),
            Ok(Some("${DIR}//etc/gw".into()))
        );
    }

    #[test]
    fn expand_env_names_the_key_and_variable() {
        let mut c = Config::default();
        c.nats.servers = vec!["nats://gw:${GW_TOKEN}@h:4222".into()];
        c.nats.auth.token = Some(Secret::new("${GW_TOKEN}"));
        c.nats.tls.ca = Some("${DIR}/ca.pem".into());
        c.nats.tls.key = Some("${NO_SUCH_KEY_VAR}".into());
        let problems = expand_env(&mut c, &env);
        assert_eq!(c.nats.auth.token.as_ref().unwrap().expose(), "s3cr3t-token");
        assert_eq!(c.nats.servers, ["nats://gw:s3cr3t-token@h:4222"]);
        assert_eq!(
            c.nats.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/gw/ca.pem"))
        );
        assert_eq!(
            problems,
            vec![Problem {
                key: "nats.tls.key".into(),
                reason: "environment variable NO_SUCH_KEY_VAR is not set".into()
            }]
        );
    }

    #[test]
    fn url_credentials_move_into_auth() {
        let mut c = Config::default();
        c.nats.servers = vec![
            "nats://gw:p%40ss@127.0.0.1:4333".into(),
            "nats://gw:p%40ss@127.0.0.1:4334".into(),
            "127.0.0.1:4335".into(),
        ];
        assert!(move_url_credentials(&mut c).is_empty());
        assert_eq!(
            c.nats.servers,
            [
                "nats://127.0.0.1:4333",
                "nats://127.0.0.1:4334",
                "127.0.0.1:4335"
            ]
        );
        assert_eq!(c.nats.auth.user.as_deref(), Some("gw"));
        assert_eq!(c.nats.auth.password.as_ref().unwrap().expose(), "p@ss");

        let mut c = Config::default();
        c.nats.servers = vec!["nats://u:pa/ss@[::1]:4222".into()];
        assert!(move_url_credentials(&mut c).is_empty());
        assert_eq!(c.nats.servers, ["nats://[::1]:4222"]);
        assert_eq!(c.nats.auth.password.as_ref().unwrap().expose(), "pa/ss");

        let mut c = Config::default();
        c.nats.servers = vec!["tls://tok3n@host:4222".into()];
        assert!(move_url_credentials(&mut c).is_empty());
        assert_eq!(c.nats.auth.token.as_ref().unwrap().expose(), "tok3n");
        assert_eq!(c.nats.servers, ["tls://host:4222"]);
    }

    #[test]
    fn url_credentials_that_clash_are_problems_and_still_removed() {
        let mut c = Config::default();
        c.nats.servers = vec!["nats://a:1@h:1".into(), "nats://b:2@h:2".into()];
        let p = move_url_credentials(&mut c);
        assert_eq!(p[0].key, "nats.servers[1]");
        assert_eq!(c.nats.servers, ["nats://h:1", "nats://h:2"]);

        let mut c = Config::default();
        c.nats.servers = vec!["nats://a:1@h:1".into()];
        c.nats.auth.token = Some(Secret::new("t"));
        let p = move_url_credentials(&mut c);
        assert_eq!(p[0].key, "nats.servers");
        assert!(!format!("{p:?}").contains(":1@"));
    }

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        // Every secret at once (not a valid config: Debug must not care).
        let mut c = Config::default();
        c.nats.servers = vec!["nats://gw:url-pass-1@127.0.0.1:4222".into()];
        c.nats.auth.token = Some(Secret::new("token-2"));
        c.nats.auth.password = Some(Secret::new("password-3"));
        c.nats.auth.nkey_seed = Some(Secret::new("SUAKseed4"));
        let shown = format!(
            "{c:?} {c:#?} {} {:?}",
            c.nats.auth.token.as_ref().unwrap(),
            c.nats
        );
        for secret in ["url-pass-1", "token-2", "password-3", "SUAKseed4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("nats://***@127.0.0.1:4222"), "{shown}");
    }

    #[test]
    fn redacts_urls() {
        assert_eq!(redact_url("nats://u:pw@h:1"), "nats://***@h:1");
        assert_eq!(redact_url("tok@h:1"), "***@h:1");
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
        assert_eq!(redact_url("nats://u:pa/ss@h:1"), "nats://***@h:1");
        assert_eq!(redact_url("nats://u:p#w@h:1"), "nats://***@h:1");
    }
}
