//! Outgoing HTTP for plugins (`wasi:http/outgoing-handler`), deny by
//! default, as a chain every request goes through, one step per file.
//!
//! When the plugin sends, before anything leaves (a refusal is recorded
//! now: the plugin may end the attempt before the request's future runs),
//! the request is counted towards the attempt's caps, then checked:
//! 1. `grants.rs`: its host must match a granted pattern;
//! 2. `secrets.rs`: secrets configured for that host are attached (if
//!    granted), or the request is refused (if the plugin asked for them
//!    but was not granted, or the scheme or port is not theirs).
//!
//! Then, as the request's future runs, the [`Interceptor`]s in order, each
//! handing it on to the [`Next`] or answering it itself:
//! 3. `hold.rs`: under strict durability, the request waits until the
//!    task's inputs are durable;
//! 4. `recording.rs`: with a cassette, the exchange is recorded, or
//!    answered from the cassette with no network at all;
//! 5. `pacing.rs`: the engine's rate limits give the request its turn;
//! 6. `breakers.rs`: the task's host breakers refuse a host whose breaker
//!    is open and count how the others end (unreachable, 5xx and 429 as
//!    failures);
//! 7. `connect.rs`, the last: the name is resolved here and every address
//!    checked again (`addresses.rs`), we connect to the checked address
//!    ourselves (no second lookup), TLS, HTTP/1.1, and the response body is
//!    cut off at [`MAX_RESPONSE_BYTES`].
//!
//! The host never follows redirects: a 3xx goes back to the plugin, and
//! the request it then makes is checked like any other. Refusals are kept
//! as messages so the task's failure says what was refused and how to
//! grant it.

mod addresses;
mod breakers;
mod connect;
mod grants;
mod hold;
mod pacing;
mod recording;
mod secrets;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::Plugin;
use crate::host_guard::AttemptId;
use crate::quota::{InFlight, Requests};
pub use connect::MAX_RESPONSE_BYTES;
use orchestrator_core::scheduler::Effects;

/// How long a connection may take unless the plugin asks for less or more.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Refusals recorded during one attempt.
pub(crate) type Denials = Arc<Mutex<Vec<Refused>>>;

/// A request the host refused.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Refused because its host's circuit breaker is open (rather than by
    /// a grant or a limit).
    pub(crate) breaker_open: bool,
    /// What was refused and what to do about it.
    pub(crate) message: String,
}

/// A response, and the future that drives its connection.
type Answered = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// What sending a request came to.
type Sent = Result<Answered, Error>;

/// A request on its way out, checked.
struct Outgoing {
    request: http::Request<WasiBody>,
    target: Target,
    connect_timeout: Duration,
    /// Its place among the attempt's requests in flight, held until its
    /// response body is done.
    slot: InFlight,
}

/// Where a request goes.
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

/// One step of the chain after the checks.
trait Interceptor: Send + Sync {
    /// Hands `out` on to `next` (before and after which it may do its
    /// part), or answers it itself.
    fn intercept(
        self: Arc<Self>,
        out: Outgoing,
        next: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>>;
}

/// The rest of the chain.
struct Next {
    steps: Arc<[Arc<dyn Interceptor>]>,
    at: usize,
}

impl Next {
    /// Sends `out` through the remaining steps.
    fn send(self, out: Outgoing) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        match self.steps.get(self.at).cloned() {
            Some(step) => step.intercept(
                out,
                Self {
                    steps: self.steps,
                    at: self.at + 1,
                },
            ),
            // The chain ends with `connect`, which never calls on.
            None => Box::pin(async { Err(Error::HttpRequestDenied) }),
        }
    }
}

/// The outgoing HTTP of one task attempt.
pub(crate) struct Egress {
    plugin: Arc<str>,
    checks: grants::Grants,
    secrets: secrets::Attach,
    denials: Denials,
    /// The attempt's requests, at once and in all.
    requests: Requests,
    steps: Arc<[Arc<dyn Interceptor>]>,
}

impl Egress {
    /// The chain for an attempt (`attempt`) of `plugin` whose requests go
    /// out when `effects` allows, keeping refusals in `denials`.
    pub(crate) fn new(
        plugin: &Plugin,
        attempt: AttemptId,
        effects: &Effects,
        denials: &Denials,
    ) -> Self {
        let denials = Arc::clone(denials);
        let mut steps: Vec<Arc<dyn Interceptor>> = Vec::new();
        if !effects.is_released() {
            steps.push(Arc::new(hold::Hold::new(
                effects.clone(),
                Arc::clone(&denials),
            )));
        }
        let replaying = plugin.cassette.as_ref().is_some_and(|c| c.replaying());
        if let Some(cassette) = &plugin.cassette {
            steps.push(Arc::new(recording::Recording::new(
                Arc::clone(cassette),
                Arc::clone(&denials),
            )));
        }
        if let Some(gate) = &plugin.gate {
            steps.push(Arc::new(pacing::Pacing::new(Arc::clone(gate), attempt)));
        }
        if let Some(guard) = &plugin.host_guard {
            steps.push(Arc::new(breakers::HostBreakers::new(
                Arc::clone(guard),
                Arc::clone(&denials),
            )));
        }
        steps.push(Arc::new(connect::Connect::new(
            Arc::clone(&plugin.allowed),
            Arc::clone(&denials),
        )));
        Self {
            plugin: Arc::clone(&plugin.name),
            checks: grants::Grants::new(Arc::clone(&plugin.allowed)),
            // A replayed request leaves nothing on the wire: no secret to
            // attach.
            secrets: secrets::Attach::new(
                Arc::clone(&plugin.allowed),
                Arc::clone(&plugin.secrets),
                !replaying,
            ),
            denials,
            requests: Requests::default(),
            steps: steps.into(),
        }
    }

    /// The checks made when the plugin sends.
    fn check(
        &self,
        mut request: http::Request<WasiBody>,
    ) -> Result<(http::Request<WasiBody>, Target), String> {
        let target = self.checks.target(&self.plugin, &request)?;
        self.secrets.attach(&self.plugin, &mut request, &target)?;
        Ok((request, target))
    }
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        // Made here, inside the plugin call: the request's future runs
        // on a task of its own.
        let span = tracing::debug_span!(
            "http_request",
            method = %request.method(),
            host = request.uri().host().unwrap_or_default(),
            status = tracing::field::Empty,
        );
        // Counted first: a refused request counts towards the attempt's
        // caps as much as a sent one.
        let checked = self
            .requests
            .admit()
            .and_then(|slot| Ok((self.check(request)?, slot)))
            .map_err(|message| deny(&self.denials, message));
        let next = Next {
            steps: Arc::clone(&self.steps),
            at: 0,
        };
        Box::new(
            async move {
                let ((request, target), slot) = checked?;
                let connect_timeout = options
                    .and_then(|o| o.connect_timeout)
                    .unwrap_or(CONNECT_TIMEOUT);
                let sent = next
                    .send(Outgoing {
                        request,
                        target,
                        connect_timeout,
                        slot,
                    })
                    .await;
                if let Ok((response, _)) = &sent {
                    tracing::Span::current().record("status", response.status().as_u16());
                }
                sent
            }
            .instrument(span),
        )
    }
}

/// Records a refusal by a grant or a limit.
fn deny(denials: &Denials, message: String) -> Error {
    refuse(
        denials,
        Refused {
            breaker_open: false,
            message,
        },
    )
}

/// The most distinct refusals one attempt keeps for its failure message.
const MAX_DENIALS: usize = 32;

/// Records `refused` (each message once) and gives the error the plugin
/// sees.
fn refuse(denials: &Denials, refused: Refused) -> Error {
    tracing::debug!(target: "egress", "{}", refused.message);
    let mut kept = denials.lock().expect("denials lock");
    let known = kept.iter().any(|r| r.message == refused.message);
    if !known && kept.len() < MAX_DENIALS {
        kept.push(refused);
    }
    Error::HttpRequestDenied
}
