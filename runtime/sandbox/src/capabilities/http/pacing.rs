//! Rate limits: a request waits for its turn at the engine's
//! [`RequestGate`] (per tenant and host) before it goes out, so a limit
//! delays a call rather than letting the provider refuse it. The
//! attempt's deadline bounds the wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Interceptor, Next, Outgoing, Sent};
use crate::host_guard::{AttemptId, RequestGate};

/// Waits for the gate's turn.
pub(super) struct Pacing {
    gate: Arc<dyn RequestGate>,
    /// The attempt, as the gate counts it.
    attempt: AttemptId,
}

impl Pacing {
    pub(super) fn new(gate: Arc<dyn RequestGate>, attempt: AttemptId) -> Self {
        Self { gate, attempt }
    }
}

impl Interceptor for Pacing {
    fn intercept(
        self: Arc<Self>,
        out: Outgoing,
        next: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        Box::pin(async move {
            self.gate.turn(&out.target.host, &self.attempt).await;
            next.send(out).await
        })
    }
}
