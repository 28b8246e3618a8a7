//! The host-wide cap on batches in flight (`runtime.max_concurrent_calls`):
//! a dispatch worker takes a slot for each batch and, when none is free,
//! waits or sheds, as `runtime.overload` says.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Overload, RuntimeConfig};

/// The host-wide cap on batches handled at once, and what to do when it is reached.
pub struct Admission {
    slots: Arc<tokio::sync::Semaphore>,
    overload: Overload,
    wait: Duration,
}

pub(super) enum Admit {
    Granted(tokio::sync::OwnedSemaphorePermit),
    Shed,
    Stopped,
}

impl Admission {
    /// `None` when the config sets no cap.
    pub fn from_config(c: &RuntimeConfig) -> Option<Arc<Admission>> {
        (c.max_concurrent_calls > 0).then(|| {
            Arc::new(Admission {
                slots: Arc::new(tokio::sync::Semaphore::new(c.max_concurrent_calls)),
                overload: c.overload,
                wait: c.admission_wait,
            })
        })
    }

    pub(super) async fn admit(&self, stop: &CancellationToken) -> Admit {
        let acquire = self.slots.clone().acquire_owned();
        let bounded = async {
            match self.overload {
                Overload::Wait => acquire.await.ok(),
                Overload::Shed => tokio::time::timeout(self.wait, acquire)
                    .await
                    .ok()
                    .and_then(Result::ok),
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => Admit::Stopped,
            permit = bounded => match permit {
                Some(p) => Admit::Granted(p),
                None => Admit::Shed,
            },
        }
    }
}
