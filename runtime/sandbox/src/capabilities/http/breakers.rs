//! Host breakers: when the task's `breaker:` guards the hosts it calls, a
//! request to a host whose breaker is open is refused before any
//! connection (the attempt's failure becomes `breaker-open`); the others
//! count towards their host's breaker: unreachable, 5xx and 429 as
//! failures, any other answer as a success. The engine keeps the breakers
//! ([`HostGuard`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Denials, Interceptor, Next, Outgoing, Refused, Sent, refuse};
use crate::host_guard::HostGuard;

/// Asks the guard before a request and tells it how the request ended.
pub(super) struct HostBreakers {
    guard: Arc<dyn HostGuard>,
    denials: Denials,
}

impl HostBreakers {
    pub(super) fn new(guard: Arc<dyn HostGuard>, denials: Denials) -> Self {
        Self { guard, denials }
    }
}

impl Interceptor for HostBreakers {
    fn intercept(
        self: Arc<Self>,
        out: Outgoing,
        next: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        Box::pin(async move {
            let call = self
                .guard
                .admit(&out.target.host, out.target.port)
                .map_err(|message| {
                    refuse(
                        &self.denials,
                        Refused {
                            breaker_open: true,
                            message,
                        },
                    )
                })?;
            let sent = next.send(out).await;
            call.end(match &sent {
                Ok((response, _)) => {
                    let status = response.status();
                    status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
                }
                Err(_) => true,
            });
            sent
        })
    }
}
