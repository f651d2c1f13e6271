//! Strict durability: a request waits here, before anything else of the
//! chain, until the commit holding the task's inputs has returned, so no
//! request is ever sent on inputs a crash could still take back. It is
//! refused if they can never be made durable. The attempt's deadline
//! bounds the wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use orchestrator_core::scheduler::Effects;

use super::{Denials, Interceptor, Next, Outgoing, Sent, deny};

/// Holds requests until the task's effects are released.
pub(super) struct Hold {
    effects: Effects,
    denials: Denials,
}

impl Hold {
    pub(super) fn new(effects: Effects, denials: Denials) -> Self {
        Self { effects, denials }
    }
}

impl Interceptor for Hold {
    fn intercept(
        self: Arc<Self>,
        out: Outgoing,
        next: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        Box::pin(async move {
            if let Err(message) = self.effects.wait().await {
                return Err(deny(&self.denials, message));
            }
            next.send(out).await
        })
    }
}
