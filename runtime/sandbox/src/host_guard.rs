//! What the engine may put in front of a plugin's outgoing requests, by the
//! host they go to: the egress waits for a [`RequestGate`]'s turn (rate
//! limits), then asks a [`HostGuard`] and tells the [`HostCall`] it got how
//! the request ended (circuit breakers). The sandbox knows only these
//! seams; the engine implements them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The task attempt a request belongs to, so a gate can count what one
/// attempt sent (rate limits by tokens charge the hosts it called).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptId {
    /// The execution.
    pub execution: Arc<str>,
    /// The task (or `for_each` item).
    pub task: String,
    /// The attempt's number.
    pub attempt: u32,
}

/// Asked before each outgoing request of a guarded plugin.
pub trait HostGuard: Send + Sync {
    /// Lets a request to `host:port` through, or says why not (the message
    /// becomes the refusal the plugin and the task see).
    fn admit(&self, host: &str, port: u16) -> Result<Box<dyn HostCall>, String>;
}

/// Paces outgoing requests by host: each request waits for its turn
/// before it is sent (after its grants were checked), so a rate limit
/// delays a call instead of letting the provider refuse it. The attempt's
/// deadline bounds the wait.
pub trait RequestGate: Send + Sync {
    /// Resolves when a request of `attempt` to `host` may go out.
    fn turn<'a>(
        &'a self,
        host: &'a str,
        attempt: &'a AttemptId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// A request a [`HostGuard`] let through. Dropped without [`HostCall::end`],
/// the request was cut off (the attempt ended first).
pub trait HostCall: Send {
    /// Counts the request: `failed` when the host could not be reached or
    /// answered 5xx or 429.
    fn end(self: Box<Self>, failed: bool);
}
