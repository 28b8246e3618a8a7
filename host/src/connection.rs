//! Building one async-nats client from `[nats]` and `[reconnect]`: auth, TLS,
//! timeouts, the subscription buffer, the client's own reconnect driven by the
//! shared backoff policy, and its events forwarded to the supervisor.
//!
//! The client reconnects on its own after a dropped connection (up to
//! `max_attempts`); the supervisor never runs its loop beside it. See
//! `supervisor` for who decides what.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::config::{Config, NatsConfig};
use crate::status::StatusHub;

/// A client event, as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Connected,
    Disconnected,
    /// The client's own reconnect used up `max_attempts`.
    Exhausted,
    /// The client closed for another reason.
    GaveUp(String),
    SlowConsumer(u64),
    ServerError(String),
    /// A reconnect attempt was refused in a way retrying cannot mend: the
    /// server does not accept the credentials (any more), or TLS cannot be
    /// set up. The text says which, in the words of a refused connect.
    Refused(String),
    LameDuck,
    Other(String),
}

/// The delay before the client's own reconnect attempt `n`: the first retry is
/// immediate (a dropped connection is often back at once), later ones follow
/// the backoff from its first step.
pub fn client_delay(backoff: &Backoff, attempt: usize) -> Duration {
    if attempt <= 1 {
        Duration::ZERO
    } else {
        backoff.delay((attempt - 1).min(u32::MAX as usize) as u32)
    }
}

/// Why one connect failed, in one line that names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConnectFailure {
    /// Retrying cannot help (the server refused the credentials, TLS cannot
    /// be set up or does not verify); the supervisor stops instead of
    /// burning attempts.
    pub permanent: bool,
    pub message: String,
}

impl ConnectFailure {
    fn permanent(message: String) -> ConnectFailure {
        ConnectFailure {
            permanent: true,
            message,
        }
    }
}

/// Whether an error (anywhere in an anyhow chain) is a permanent connect failure.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<ConnectFailure>()
            .is_some_and(|f| f.permanent)
    })
}

fn is_auth_kind(text: &str) -> bool {
    text == async_nats::ConnectErrorKind::AuthorizationViolation.to_string()
        || text == async_nats::ConnectErrorKind::Authentication.to_string()
}

/// Connect once (each configured server tried once), returning the client
/// and its event stream.
pub async fn connect(
    config: &Config,
    status: &StatusHub,
) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ConnectFailure> {
    let n = &config.nats;
    let r = &config.reconnect;
    let backoff = Backoff::from_config(r);
    let (tx, rx) = mpsc::unbounded_channel();

    // The connector also calls the delay callback for the initial connect:
    // only attempts after the first connection are the client's reconnects.
    let connected_once = Arc::new(AtomicBool::new(false));
    let seen = connected_once.clone();
    let hub = status.clone();
    let auth_refusal = refused(n);
    let tls_refusal = format!("TLS setup failed ({})", tls_settings(n));
    let mut options = ConnectOptions::new()
        .name(&n.name)
        .connection_timeout(n.connect_timeout)
        .subscription_capacity(n.subscription_capacity)
        // Every subject this client publishes to is checked already: guest
        // publishes by `subject::validate_publish`, configured ones at load,
        // replies come from the server. A second check per message is waste.
        .skip_subject_validation(true)
        .max_reconnects(if r.max_attempts == 0 {
            None
        } else {
            Some(r.max_attempts as usize)
        })
        .reconnect_delay_callback(move |attempt| {
            if seen.load(Ordering::Relaxed) {
                hub.update(|s| s.reconnect_attempts = attempt.min(u32::MAX as usize) as u32);
            }
            client_delay(&backoff, attempt)
        })
        .event_callback(move |event| {
            let tx = tx.clone();
            let (auth_refusal, tls_refusal) = (auth_refusal.clone(), tls_refusal.clone());
            async move {
                let event = match event {
                    Event::Connected => ClientEvent::Connected,
                    Event::Disconnected => ClientEvent::Disconnected,
                    Event::Closed => ClientEvent::GaveUp("connection closed".into()),
                    Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                        ClientEvent::Exhausted
                    }
                    // The connector reports a failed reconnect attempt by its
                    // error kind's text only.
                    Event::ClientError(async_nats::ClientError::Other(kind))
                        if is_auth_kind(&kind) =>
                    {
                        ClientEvent::Refused(auth_refusal.clone())
                    }
                    Event::ClientError(async_nats::ClientError::Other(kind))
                        if kind == async_nats::ConnectErrorKind::Tls.to_string() =>
                    {
                        ClientEvent::Refused(tls_refusal.clone())
                    }
                    Event::SlowConsumer(sid) => ClientEvent::SlowConsumer(sid),
                    Event::ServerError(e) => ClientEvent::ServerError(e.to_string()),
                    Event::LameDuckMode => ClientEvent::LameDuck,
                    other => ClientEvent::Other(other.to_string()),
                };
                let _ = tx.send(event);
            }
        });

    let a = &n.auth;
    if let Some(path) = &a.creds_file {
        options = options.credentials_file(path).await.map_err(|e| {
            ConnectFailure::permanent(format!(
                "nats.auth.creds_file {}: {}",
                path.display(),
                crate::errors::chain(&e)
            ))
        })?;
    }
    if let Some(seed) = &a.nkey_seed {
        options = options.nkey(seed.expose().to_string());
    }
    if let Some(token) = &a.token {
        options = options.token(token.expose().to_string());
    }
    if let (Some(user), Some(password)) = (&a.user, &a.password) {
        options = options.user_and_password(user.clone(), password.expose().to_string());
    }
    let t = &n.tls;
    if t.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &t.ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }

    // URL credentials were moved into `[nats.auth]` before this (by
    // `Config::load` and `Gateway::start`): the client logs addresses.
    let servers: Vec<async_nats::ServerAddr> = n
        .servers
        .iter()
        .map(|s| {
            s.parse().map_err(|e: std::io::Error| {
                let shown = crate::config::secrets::redact_url(s);
                ConnectFailure::permanent(format!("nats.servers: {shown:?}: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let client = options
        .connect(servers)
        .await
        .map_err(|e| describe(&e, n))?;
    connected_once.store(true, Ordering::Relaxed);
    Ok((client, rx))
}

/// Turn async-nats's error into one line, permanent when retrying cannot help.
fn describe(e: &async_nats::ConnectError, n: &NatsConfig) -> ConnectFailure {
    use async_nats::ConnectErrorKind as Kind;
    match e.kind() {
        Kind::AuthorizationViolation => ConnectFailure::permanent(refused(n)),
        Kind::Authentication => ConnectFailure::permanent(format!(
            "authentication failed: could not sign the server's challenge with {}",
            credentials(n)
        )),
        Kind::Tls => ConnectFailure::permanent(format!(
            "TLS setup failed: {} ({})",
            crate::errors::chain(e),
            tls_settings(n)
        )),
        _ => match rustls_error(e) {
            Some(tls) => ConnectFailure::permanent(format!(
                "TLS handshake failed: {tls} ({})",
                tls_hint(tls, n)
            )),
            None => ConnectFailure {
                permanent: false,
                message: crate::errors::chain(e),
            },
        },
    }
}

/// What a refused reconnect means, in the same words as a refused connect.
pub fn refused(n: &NatsConfig) -> String {
    format!(
        "authorization violation: the server refused {}",
        credentials(n)
    )
}

/// The credentials `n` presents, named by their keys (never their values).
fn credentials(n: &NatsConfig) -> String {
    let a = &n.auth;
    if let Some(path) = &a.creds_file {
        let mut s = format!("the user JWT in nats.auth.creds_file {}", path.display());
        if let Some(expired) = crate::errors::creds_expiry(path) {
            s.push_str(&format!(" (it expired {expired})"));
        }
        s
    } else if let Some(seed) = &a.nkey_seed {
        match nkeys::KeyPair::from_seed(seed.expose()) {
            Ok(kp) => format!("nats.auth.nkey_seed (public key {})", kp.public_key()),
            Err(_) => "nats.auth.nkey_seed".into(),
        }
    } else if a.token.is_some() {
        "nats.auth.token".into()
    } else if let Some(user) = &a.user {
        format!("nats.auth.user {user:?} with nats.auth.password")
    } else {
        "a connection without credentials (nats.auth is empty)".into()
    }
}

fn tls_settings(n: &NatsConfig) -> String {
    let t = &n.tls;
    let mut parts = Vec::new();
    if let Some(ca) = &t.ca {
        parts.push(format!("nats.tls.ca {}", ca.display()));
    }
    if let Some(cert) = &t.cert {
        parts.push(format!("nats.tls.cert {}", cert.display()));
    }
    if let Some(key) = &t.key {
        parts.push(format!("nats.tls.key {}", key.display()));
    }
    if parts.is_empty() {
        "nats.tls sets nothing: the system's root certificates were trusted".into()
    } else {
        parts.join(", ")
    }
}

/// The rustls error behind a failed handshake: async-nats passes it on as an
/// I/O error.
fn rustls_error(e: &async_nats::ConnectError) -> Option<&async_nats::rustls::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<async_nats::rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
        {
            return Some(tls);
        }
        cause = c.source();
    }
    None
}

/// Which setting a handshake failure points at.
fn tls_hint(e: &async_nats::rustls::Error, n: &NatsConfig) -> String {
    use async_nats::rustls::{AlertDescription, CertificateError, Error};
    let t = &n.tls;
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => match &t.ca {
            Some(ca) => format!(
                "the server's certificate is not signed by nats.tls.ca {}",
                ca.display()
            ),
            None => {
                "the server's certificate is not signed by a system root; set nats.tls.ca".into()
            }
        },
        Error::InvalidCertificate(_) => format!("the server's certificate; {}", tls_settings(n)),
        Error::AlertReceived(
            AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::HandshakeFailure,
        ) => match &t.cert {
            None => {
                "the server wants a client certificate: set nats.tls.cert and nats.tls.key".into()
            }
            Some(cert) => format!(
                "the server refused the client certificate nats.tls.cert {}",
                cert.display()
            ),
        },
        _ => tls_settings(n),
    }
}

/// The servers to move to when the one described by `current` enters lame
/// duck mode: the configured ones and those the cluster advertises
/// (`connect_urls`), without `current` itself.
pub fn other_servers(configured: &[String], current: &async_nats::ServerInfo) -> Vec<String> {
    let here = (normal_host(&current.host), current.port);
    let mut servers: Vec<String> = Vec::new();
    for url in configured.iter().chain(&current.connect_urls) {
        let is_here = host_port(url).is_some_and(|(h, p)| (normal_host(&h), p) == here);
        if !is_here && !servers.contains(url) {
            servers.push(url.clone());
        }
    }
    servers
}

/// `host` and port of a server URL (`nats://user@host:port`, `host:port`,
/// `host`), the port 4222 when it has none.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next()?;
    if rest.is_empty() {
        return None;
    }
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 4222,
        };
        return Some((host.to_string(), port));
    }
    match rest.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((rest.to_string(), 4222)),
    }
}

fn normal_host(host: &str) -> String {
    match host {
        "localhost" => "127.0.0.1".to_string(),
        h => h.to_ascii_lowercase(),
    }
}

/// Whether the server of `old` knows the subscriptions `new` made on its
/// server: a message `old` publishes reaches a subscription `new` makes
/// after them (a route carries one server's subscriptions in order).
pub async fn seen_across(old: &Client, new: &Client, timeout: Duration) -> Result<(), String> {
    use futures::StreamExt;
    let inbox = new.new_inbox();
    let mut sub = new
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    new.flush().await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        old.publish(inbox.clone(), bytes::Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        let _ = old.flush().await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), sub.next()).await {
            return Ok(());
        }
    }
    Err(format!("no echo across the cluster within {timeout:?}"))
}

/// The oldest nats-server release the gateway is tested on (the suite runs
/// on it and on the current one): pull consumers with idle heartbeats,
/// which JetStream bindings rely on, came in 2.9.
const OLDEST_TESTED: semver::Version = semver::Version::new(2, 9, 0);

/// What to tell an operator about a server announcing `version`: `None`
/// for 2.9 and later (or a version that does not parse, which the server's
/// own build decides).
pub(crate) fn version_warning(version: &str) -> Option<String> {
    let v = semver::Version::parse(version.trim_start_matches('v')).ok()?;
    (v < OLDEST_TESTED).then(|| {
        format!(
            "nats-server {version} is older than 2.9, the oldest release wasmgate is tested on; JetStream bindings need 2.9 (pull consumers with idle heartbeats) and may fail"
        )
    })
}

#[cfg(test)]
mod lame_duck_tests {
    use super::*;

    fn info(host: &str, port: u16, connect_urls: &[&str]) -> async_nats::ServerInfo {
        async_nats::ServerInfo {
            host: host.into(),
            port,
            connect_urls: connect_urls.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_lame_duck_server_is_left_out_and_the_advertised_ones_added() {
        let configured = vec![
            "nats://127.0.0.1:4301".to_string(),
            "nats://user@localhost:4302".to_string(),
            "127.0.0.1:4303".to_string(),
        ];
        assert_eq!(
            other_servers(&configured, &info("127.0.0.1", 4302, &["127.0.0.1:4304"])),
            vec!["nats://127.0.0.1:4301", "127.0.0.1:4303", "127.0.0.1:4304"]
        );
        assert_eq!(
            other_servers(&configured[..1], &info("127.0.0.1", 4301, &[])),
            Vec::<String>::new(),
            "nowhere else to go"
        );
        assert_eq!(
            host_port("tls://nats.example.com"),
            Some(("nats.example.com".into(), 4222))
        );
        assert_eq!(host_port("nats://[::1]:4225"), Some(("::1".into(), 4225)));
        assert_eq!(host_port("[::1]"), Some(("::1".into(), 4222)));
    }
}

#[cfg(test)]
mod version_tests {
    use super::version_warning;

    #[test]
    fn servers_older_than_2_9_are_warned_about() {
        for old in ["2.8.4", "v2.2.0", "1.4.1"] {
            let w = version_warning(old).expect("a warning");
            assert!(w.contains(old) && w.contains("2.9"), "{w}");
        }
        for fine in [
            "2.9.0",
            "2.9.10",
            "2.15.1",
            "2.12.0-beta.1",
            "3.0.0",
            "not a version",
        ] {
            assert_eq!(version_warning(fine), None, "{fine}");
        }
    }
}
