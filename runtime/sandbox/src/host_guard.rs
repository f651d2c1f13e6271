//! What the engine may put in front of a plugin's outgoing requests, by the
//! host they go to: the egress asks a [`HostGuard`] before each request and
//! tells the [`HostCall`] it got how the request ended. The engine's host
//! circuit breakers are one; the sandbox knows only this seam.

/// Asked before each outgoing request of a guarded plugin.
pub trait HostGuard: Send + Sync {
    /// Lets a request to `host:port` through, or says why not (the message
    /// becomes the refusal the plugin and the task see).
    fn admit(&self, host: &str, port: u16) -> Result<Box<dyn HostCall>, String>;
}

/// A request a [`HostGuard`] let through. Dropped without [`HostCall::end`],
/// the request was cut off (the attempt ended first).
pub trait HostCall: Send {
    /// Counts the request: `failed` when the host could not be reached or
    /// answered 5xx or 429.
    fn end(self: Box<Self>, failed: bool);
}
