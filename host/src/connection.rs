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
use crate::config::Config;
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

/// Connect once (each configured server tried once), returning the client
/// and its event stream.
pub async fn connect(
    config: &Config,
    status: &StatusHub,
) -> anyhow::Result<(Client, mpsc::UnboundedReceiver<ClientEvent>)> {
    let n = &config.nats;
    let r = &config.reconnect;
    let backoff = Backoff::from_config(r);
    let (tx, rx) = mpsc::unbounded_channel();

    // The connector also calls the delay callback for the initial connect:
    // only attempts after the first connection are the client's reconnects.
    let connected_once = Arc::new(AtomicBool::new(false));
    let seen = connected_once.clone();
    let hub = status.clone();
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
            async move {
                let event = match event {
                    Event::Connected => ClientEvent::Connected,
                    Event::Disconnected => ClientEvent::Disconnected,
                    Event::Closed => ClientEvent::GaveUp("connection closed".into()),
                    Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                        ClientEvent::Exhausted
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
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("nats.auth.creds_file {}: {e}", path.display()))?;
    }
    if let Some(seed) = &a.nkey_seed {
        options = options.nkey(seed.clone());
    }
    if let Some(token) = &a.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&a.user, &a.password) {
        options = options.user_and_password(user.clone(), password.clone());
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

    let servers: Vec<async_nats::ServerAddr> = n
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let client = options.connect(servers).await?;
    connected_once.store(true, Ordering::Relaxed);
    Ok((client, rx))
}
