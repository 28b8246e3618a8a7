//! Where a JetStream binding's messages come from: the consumer declared or
//! found ([`super::declare`]), pulled in batches with an idle heartbeat, and
//! re-attached with backoff when the server loses it. Each message is
//! handed on with its delivery metadata read once ([`JsMessage`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{JsBinding, JsMessage, declare_noting};
use crate::backoff::Backoff;
use crate::status::{BindingState, Position, StatusHub};

/// Where a JetStream binding's messages come from; re-attaches itself.
pub struct JsSource {
    pub js: Context,
    pub binding: Arc<JsBinding>,
    messages: pull::Stream,
    status: StatusHub,
    index: Position,
}

impl JsSource {
    /// Declare the consumer and start pulling.
    pub async fn attach(
        js: Context,
        binding: Arc<JsBinding>,
        status: StatusHub,
        index: Position,
    ) -> anyhow::Result<JsSource> {
        let (messages, warning) = pull_stream(&js, &binding).await?;
        status.set_binding_warning(index.get(), warning);
        Ok(JsSource {
            js,
            binding,
            messages,
            status,
            index,
        })
    }

    /// The next message; on a lost consumer or a broken pull, re-attach
    /// (with backoff) and go on. `None` when `stop` fires first.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<JsMessage> {
        loop {
            let item = tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                item = self.messages.next() => item,
            };
            let error = match item {
                Some(Ok(msg)) => return Some(JsMessage::new(msg)),
                Some(Err(e)) => e.to_string(),
                None => "pull stream ended".to_string(),
            };
            // Boxed: the re-attach state machine is large and rare; inline it
            // made every waiting JetStream worker carry it.
            if !Box::pin(self.recover(&error, stop)).await {
                return None;
            }
        }
    }

    /// A message only if one is ready now (to fill a batch).
    pub fn try_next(&mut self) -> Option<JsMessage> {
        use futures::FutureExt;
        match self.messages.next().now_or_never() {
            Some(Some(Ok(msg))) => Some(JsMessage::new(msg)),
            _ => None,
        }
    }

    async fn recover(&mut self, error: &str, stop: &CancellationToken) -> bool {
        let c = &self.binding.config;
        tracing::warn!(stream = %c.stream, consumer = %c.consumer, %error, "JetStream binding lost; re-attaching");
        self.status.set_binding(
            self.index.get(),
            BindingState::Rebinding,
            Some(format!("{error}; re-attaching consumer {}", c.consumer)),
        );
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            factor: 2.0,
            jitter: 0.2,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                r = pull_stream(&self.js, &self.binding) => r,
            };
            match result {
                Ok((messages, warning)) => {
                    self.messages = messages;
                    self.status.set_binding_warning(self.index.get(), warning);
                    let note = if c.create {
                        format!("re-declared consumer {} after: {error}", c.consumer)
                    } else {
                        format!("re-attached to consumer {} after: {error}", c.consumer)
                    };
                    tracing::info!(stream = %c.stream, consumer = %c.consumer, attempt, "JetStream binding restored");
                    self.status
                        .set_binding(self.index.get(), BindingState::Bound, Some(note));
                    return true;
                }
                Err(e) => {
                    self.status.set_binding(
                        self.index.get(),
                        BindingState::Rebinding,
                        Some(format!(
                            "{error}; re-attach attempt {attempt} failed: {}",
                            crate::errors::anyhow_chain(&e)
                        )),
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(backoff.delay(attempt)) => {}
                    }
                }
            }
        }
    }
}

/// Declare and start pulling; the declaration's warning, if any, with it.
async fn pull_stream(
    js: &Context,
    b: &JsBinding,
) -> anyhow::Result<(pull::Stream, Option<String>)> {
    let (consumer, warning) = declare_noting(js, b).await?;
    let c = &b.config;
    let batch = c.pull_batch.min(c.max_ack_pending as usize).max(1);
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(c.heartbeat)
        .expires(c.heartbeat * 6)
        .messages()
        .await
        .map(|messages| (messages, warning))
        .with_context(|| format!("pulling from consumer {}", c.consumer))
}
