//! The errors of a running gateway, and error text for operators.
//!
//! [`GatewayError`](crate::GatewayError) is what starting, reloading or
//! running a gateway returns; each variant keeps its cause as the error's
//! source: [`ConfigError`](crate::config::ConfigError) (names the file,
//! key and reason), [`LoadError`](crate::plugin::LoadError) (names the
//! plugin and its file), [`SupervisorError`] (the connection gave up, after
//! [`Exhausted`] attempts). A handler call that did not return is a
//! [`CallError`](crate::plugin::CallError); a malformed subject a
//! [`SubjectError`](crate::subject::SubjectError); trace export settings
//! that cannot be used an [`OtlpError`](crate::otel::OtlpError).
//!
//! async-nats's errors print their source inside their own message *and*
//! return it from `source()`, so the usual `{:#}` chain repeats every cause
//! (`authorization violation: nats: authorization violation: nats: …`).
//! [`chain`] and [`anyhow_chain`] walk a chain and drop a cause whose text
//! the previous link already shows: each cause once, on one line.

use std::path::Path;
use std::time::{Duration, SystemTime};

pub use crate::backoff::Exhausted;
pub use crate::supervisor::SupervisorError;

/// `e` and its sources, joined by `: `, each cause once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    join(std::iter::successors(Some(e), |e| e.source()).map(|e| e.to_string()))
}

/// [`chain`] for an `anyhow::Error` (its contexts included).
pub fn anyhow_chain(e: &anyhow::Error) -> String {
    join(e.chain().map(|e| e.to_string()))
}

fn join(texts: impl Iterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for text in texts {
        let shown = parts
            .last()
            .is_some_and(|prev| prev.contains(text.as_str()));
        if !shown && !text.is_empty() {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// When the user JWT in a creds file has expired: `at <time>`, for the
/// message of a refused connect. `None` when it has not, has no expiry, or
/// cannot be read (the server's refusal is reported either way).
pub(crate) fn creds_expiry(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let jwt = text
        .lines()
        .skip_while(|l| !l.contains("BEGIN NATS USER JWT"))
        .nth(1)?
        .trim();
    let claims = jwt.split('.').nth(1)?;
    let claims = data_encoding::BASE64URL_NOPAD
        .decode(claims.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(exp);
    (at < SystemTime::now()).then(|| format!("at {}", humantime::format_rfc3339_seconds(at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_once() {
        // The shape of async-nats's ConnectError: the kind and its source in
        // one message, and the source again from `source()`.
        let inner = E("nats: authorization violation", None);
        let outer = E(
            "authorization violation: nats: authorization violation",
            Some(Box::new(inner)),
        );
        assert_eq!(
            chain(&outer),
            "authorization violation: nats: authorization violation"
        );

        let e = anyhow::Error::new(E("connection refused", None)).context("connecting to nats");
        assert_eq!(anyhow_chain(&e), "connecting to nats: connection refused");
    }

    #[test]
    fn expired_creds_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |exp: u64| {
            let claims = data_encoding::BASE64URL_NOPAD
                .encode(format!(r#"{{"exp":{exp},"sub":"U"}}"#).as_bytes());
            let path = dir.path().join(format!("{exp}.creds"));
            std::fs::write(
                &path,
                format!(
                    "-----BEGIN NATS USER JWT-----\nhdr.{claims}.sig\n------END NATS USER JWT------\n"
                ),
            )
            .unwrap();
            path
        };
        assert_eq!(
            creds_expiry(&write(1_000_000_000)).as_deref(),
            Some("at 2001-09-09T01:46:40Z")
        );
        assert_eq!(creds_expiry(&write(u32::MAX as u64 * 2)), None);
        assert_eq!(creds_expiry(Path::new("/no/such/file")), None);
    }
}
