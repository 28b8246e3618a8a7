//! The health probe: a real round trip through the server.
//!
//! `Client::flush` only empties the local write buffer, so against a hung
//! server (SIGSTOP, a half-open TCP connection) it keeps succeeding until the
//! kernel's socket buffer fills. The probe instead publishes a sequence number
//! to a private inbox the connection is subscribed to and waits, bounded by
//! `health.timeout`, for it to come back. Because the server handles one
//! connection's protocol in order, an echo also proves that every SUB sent
//! before it has been processed: the same probe confirms bindings.

use std::time::{Duration, Instant};

use async_nats::{Client, Subscriber};
use futures::StreamExt;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no echo from the server within {0:?}")]
    Timeout(Duration),
    #[error("probe publish failed: {0}")]
    Publish(String),
    #[error("probe subscription closed")]
    Closed,
}

/// A connection's probe: its inbox subscription and the last sequence sent.
pub struct Probe {
    subject: async_nats::Subject,
    sub: Subscriber,
    seq: u64,
}

impl Probe {
    /// Subscribe the probe inbox on `client`.
    pub async fn new(client: &Client) -> Result<Probe, async_nats::SubscribeError> {
        let subject: async_nats::Subject = format!("{}.probe", client.new_inbox()).into();
        let sub = client.subscribe(subject.clone()).await?;
        Ok(Probe {
            subject,
            sub,
            seq: 0,
        })
    }

    /// One round trip, bounded by `timeout`; returns its duration.
    pub async fn round_trip(
        &mut self,
        client: &Client,
        timeout: Duration,
    ) -> Result<Duration, ProbeError> {
        self.seq += 1;
        let want = self.seq.to_string();
        let start = Instant::now();
        let echo = async {
            client
                .publish(self.subject.clone(), want.clone().into())
                .await
                .map_err(|e| ProbeError::Publish(e.to_string()))?;
            client
                .flush()
                .await
                .map_err(|e| ProbeError::Publish(e.to_string()))?;
            // Echoes of earlier, timed-out probes may still arrive: skip them.
            loop {
                match self.sub.next().await {
                    Some(msg) if msg.payload.as_ref() == want.as_bytes() => {
                        return Ok(start.elapsed());
                    }
                    Some(_) => continue,
                    None => return Err(ProbeError::Closed),
                }
            }
        };
        match tokio::time::timeout(timeout, echo).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        }
    }
}
