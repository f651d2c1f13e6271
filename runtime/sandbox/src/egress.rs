//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`), deny-by-default.
//!
//! Every request a plugin sends passes [`Egress::send_request`]:
//! 1. its host must match a granted pattern ([`Allowed::http_grant`]);
//! 2. secrets configured for that host are attached (if granted) or the
//!    request is refused (if the plugin asked for them but was not granted);
//! 3. the name is resolved here, and every address is checked again
//!    (`addresses.rs`): special ranges are refused unless an address grant
//!    covers them;
//! 4. we connect to the checked address ourselves (no second lookup), so a
//!    name cannot be re-pointed between check and connect;
//! 5. the response body is cut off at [`MAX_RESPONSE_BYTES`].
//!
//! When the task's `breaker:` guards hosts, a request to a host whose
//! breaker is open is refused before any connection (and the attempt's
//! failure becomes `breaker-open`); the others count towards their host's
//! breaker: unreachable, 5xx and 429 as failures, any other answer as a
//! success.
//!
//! With a [`Cassette`], granted requests are recorded with their responses
//! (bodies read whole first), or answered from the cassette without any
//! network at all.
//!
//! The host never follows redirects: a 3xx goes back to the plugin, and the
//! request it then makes is checked like any other.
//! Refusals are recorded as messages so the task's failure says what was
//! refused and how to grant it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::addresses;
use super::cassette::{Cassette, Exchange};
use super::quota::{InFlight, Requests};
use crate::host_guard::{AttemptId, HostGuard, RequestGate};
use crate::secrets::Secrets;
use orchestrator_core::plugin::Allowed;

/// The largest response body a plugin may receive.
pub const MAX_RESPONSE_BYTES: u64 = 32 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Refusals recorded during one attempt.
pub(super) type Denials = Arc<Mutex<Vec<Refused>>>;

/// A request the host refused.
#[derive(Debug)]
pub(super) struct Refused {
    /// Refused because its host's circuit breaker is open (rather than by
    /// a grant or a limit).
    pub(super) breaker_open: bool,
    /// What was refused and what to do about it.
    pub(super) message: String,
}

/// The egress policy of one task attempt.
pub(super) struct Egress {
    pub(super) plugin: Arc<str>,
    pub(super) allowed: Arc<Allowed>,
    pub(super) secrets: Arc<Secrets>,
    pub(super) denials: Denials,
    /// Set when the task's breaker guards the hosts it calls.
    pub(super) hosts: Option<Arc<dyn HostGuard>>,
    /// Set when rate limits pace the hosts it calls.
    pub(super) gate: Option<Arc<dyn RequestGate>>,
    /// The attempt, as the gate counts it.
    pub(super) attempt: Arc<AttemptId>,
    /// Set when exchanges are recorded or replayed.
    pub(super) cassette: Option<Arc<Cassette>>,
    /// The attempt's requests, at once and in all.
    pub(super) requests: Requests,
}

/// A response, and the future that drives its connection.
type Answered = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

type Sent = Result<Answered, Error>;

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        // A replayed request leaves nothing on the wire: no secret to attach.
        let replaying = self.cassette.as_ref().is_some_and(|c| c.replaying());
        // A refusal is recorded now, not when the response future runs: the
        // plugin may see its request fail (its body stream closed) and end
        // the attempt before that future is ever polled.
        // Counted first: a refused request counts towards the attempt's
        // caps as much as a sent one.
        let checked = self
            .requests
            .admit()
            .and_then(|slot| Ok((self.check(request, !replaying)?, slot)))
            .map_err(|message| deny(&self.denials, message));
        let allowed = Arc::clone(&self.allowed);
        let denials = Arc::clone(&self.denials);
        let hosts = self.hosts.clone();
        let gate = self.gate.clone();
        let attempt = Arc::clone(&self.attempt);
        let cassette = self.cassette.clone();
        Box::new(async move {
            let ((request, target), slot) = checked?;
            let (request, recorded) = match &cassette {
                None => (request, None),
                Some(cassette) => {
                    let (request, sent) = read_whole(request)
                        .await
                        .map_err(|message| deny(&denials, message))?;
                    if cassette.replaying() {
                        let exchange = cassette
                            .answer(&sent.0, &sent.1, &sent.2)
                            .map_err(|message| deny(&denials, message))?;
                        return Ok(replayed(exchange));
                    }
                    (request, Some(sent))
                }
            };
            if let Some(gate) = &gate {
                gate.turn(&target.host, &attempt).await;
            }
            let call = match &hosts {
                Some(hosts) => Some(hosts.admit(&target.host, target.port).map_err(|message| {
                    refuse(
                        &denials,
                        Refused {
                            breaker_open: true,
                            message,
                        },
                    )
                })?),
                None => None,
            };
            let address = addresses::resolve(&target.host, target.port, &allowed)
                .await
                .map_err(|message| deny(&denials, message))?;
            let connect_timeout = options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(CONNECT_TIMEOUT);
            let sent = send(
                request,
                &target,
                address,
                connect_timeout,
                Arc::clone(&denials),
                slot,
            )
            .await;
            let sent = match (sent, recorded, &cassette) {
                (Ok((response, io)), Some(request), Some(cassette)) => {
                    record(cassette, request, response, &denials)
                        .await
                        .map(|r| (r, io))
                }
                (sent, _, _) => sent,
            };
            if let Some(call) = call {
                call.end(match &sent {
                    Ok((response, _)) => {
                        let status = response.status();
                        status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
                    }
                    Err(_) => true,
                });
            }
            sent
        })
    }
}

/// A request as a cassette keeps it: method, URL, body.
type Kept = (String, String, String);

/// The largest request body a recorded or replayed request may have.
const MAX_RECORDED_REQUEST_BYTES: usize = 8 << 20;

/// Reads the request body whole (a cassette compares and stores it), and
/// gives back the request with that body.
async fn read_whole(
    request: http::Request<WasiBody>,
) -> Result<(http::Request<WasiBody>, Kept), String> {
    let (parts, body) = request.into_parts();
    let url = parts.uri.to_string();
    let bytes = http_body_util::Limited::new(body, MAX_RECORDED_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body of {} {url}: {e}", parts.method))?
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        format!(
            "{} {url}: only text bodies can be recorded or replayed",
            parts.method
        )
    })?;
    let sent = (parts.method.to_string(), url, text);
    Ok((http::Request::from_parts(parts, full(bytes)), sent))
}

fn full(bytes: Bytes) -> WasiBody {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response from the cassette.
fn replayed(exchange: Exchange) -> Answered {
    let mut response = http::Response::new(full(Bytes::from(exchange.response)));
    *response.status_mut() =
        http::StatusCode::from_u16(exchange.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    for (name, value) in exchange.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name),
            http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    (response, Box::new(async { Ok(()) }))
}

/// Reads the response whole, keeps the exchange, and hands the plugin the
/// same response.
async fn record(
    cassette: &Cassette,
    (method, url, body): Kept,
    response: http::Response<WasiBody>,
    denials: &Denials,
) -> Result<http::Response<WasiBody>, Error> {
    let (parts, incoming) = response.into_parts();
    let bytes = incoming.collect().await?.to_bytes();
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            *name != http::header::CONTENT_LENGTH && *name != http::header::TRANSFER_ENCODING
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    cassette
        .keep(Exchange {
            method,
            url,
            body,
            status: parts.status.as_u16(),
            headers,
            response: String::from_utf8_lossy(&bytes).into_owned(),
        })
        .map_err(|message| deny(denials, message))?;
    Ok(http::Response::from_parts(parts, full(bytes)))
}

/// Where a request goes.
struct Target {
    host: String,
    port: u16,
    tls: bool,
}

impl Egress {
    /// Checks the host name against the grants and attaches secrets.
    fn check(
        &self,
        mut request: http::Request<WasiBody>,
        attach_secrets: bool,
    ) -> Result<(http::Request<WasiBody>, Target), String> {
        let uri = request.uri();
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        // An IPv6 literal comes in brackets (`[::1]`); the address is
        // without. A name's trailing dot (`127.0.0.1.`) names the same host.
        let host = uri.host().map(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
        });
        let Some(host) = host else {
            return Err(format!(
                "plugin `{}` sent a request without a host",
                self.plugin
            ));
        };
        if let Some(why) = addresses::odd_address(&host) {
            return Err(format!(
                "plugin `{}` sent a request to `{host}`, {why}; write the address in its usual form (and grant it)",
                self.plugin
            ));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if self.allowed.http_grant(&host, port).is_none() {
            let granted: Vec<String> = self
                .allowed
                .http_hosts
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(format!(
                "HTTP to `{host}:{port}` is not granted to plugin `{}` (granted: {}); the plugin must ask for the host in describe() and the operator grant it with `runtime install --allow-http {host}`",
                self.plugin,
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            ));
        }
        let secrets = self
            .secrets
            .for_host(&host, port, tls)
            .filter(|_| attach_secrets);
        for (secret, admitted) in secrets {
            let held = self.allowed.secrets.contains(&secret.name);
            if held && !admitted {
                let scheme = if tls { "https" } else { "http" };
                return Err(format!(
                    "plugin `{}` sent a request to {scheme}://{host}:{port}, a host of secret `{}`, which goes only to {}; the request was not sent. Use https:// (or, for a test server on loopback, set `insecure_http: true` and the port on the secret in the host's config)",
                    self.plugin,
                    secret.name,
                    secret.destinations()
                ));
            }
            if held {
                let value = secret.header_value().map_err(|why| {
                    format!("secret `{}` for `{host}` has no value: {why}", secret.name)
                })?;
                request
                    .headers_mut()
                    .insert(secret.header.clone(), value.clone());
            } else if admitted && self.allowed.secrets_withheld.contains(&secret.name) {
                return Err(format!(
                    "plugin `{}` asked for secret `{}` (attached to requests for `{host}`), which it was not granted; grant it with `runtime install --allow-secret {}`",
                    self.plugin, secret.name, secret.name
                ));
            }
        }
        Ok((request, Target { host, port, tls }))
    }
}

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

fn refuse(denials: &Denials, refused: Refused) -> Error {
    tracing::debug!(target: "egress", "{}", refused.message);
    let mut kept = denials.lock().expect("denials lock");
    let known = kept.iter().any(|r| r.message == refused.message);
    if !known && kept.len() < MAX_DENIALS {
        kept.push(refused);
    }
    Error::HttpRequestDenied
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }))
}

/// Connects to the checked address and sends the request over HTTP/1.1.
async fn send(
    mut request: http::Request<WasiBody>,
    target: &Target,
    address: SocketAddr,
    connect_timeout: Duration,
    denials: Denials,
    slot: InFlight,
) -> Sent {
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let stream: Box<dyn Stream> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(Error::InvalidDnsNameError)?;
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        Box::new(connector.connect(name, tcp).await.map_err(Error::Tls)?)
    } else {
        Box::new(tcp)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    let driver = tokio::spawn(connection);
    // Only the path goes on the wire; the Host header carries the authority.
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    let response = sender.send_request(request).await.map_err(Error::from)?;
    let too_large = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|&length| length > MAX_RESPONSE_BYTES);
    if let Some(length) = too_large {
        driver.abort();
        return Err(deny(
            &denials,
            response_too_large(&target.host, Some(length)),
        ));
    }
    let host = target.host.clone();
    let response = response.map(|body| {
        LimitedBody {
            inner: body,
            remaining: MAX_RESPONSE_BYTES,
            host,
            denials,
            _slot: slot,
        }
        .boxed_unsync()
    });
    let io = async move {
        match driver.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    };
    Ok((response, Box::new(io)))
}

fn response_too_large(host: &str, length: Option<u64>) -> String {
    let size = length.map_or_else(String::new, |l| format!(" ({l} bytes)"));
    format!(
        "the response from `{host}`{size} is larger than the {} MiB a plugin may receive",
        MAX_RESPONSE_BYTES >> 20
    )
}

/// A response body that fails once it passes its byte budget.
struct LimitedBody {
    inner: hyper::body::Incoming,
    remaining: u64,
    host: String,
    denials: Denials,
    /// The request's place among those in flight, freed with the body.
    _slot: InFlight,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.remaining = 0;
                let message = response_too_large(&self.host, None);
                return Poll::Ready(Some(Err(deny(&self.denials, message))));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
