//! The end of the chain: the host name is resolved here and every address
//! checked again (`addresses.rs`: special ranges refused unless an address
//! grant covers them), then we connect to the checked address ourselves
//! (no second lookup, so a name cannot be re-pointed between check and
//! connect), speak TLS for `https`, send over HTTP/1.1, and cut the
//! response body off at [`MAX_RESPONSE_BYTES`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use super::{Denials, Interceptor, Next, Outgoing, Sent, Target, addresses, deny};
use crate::quota::InFlight;
use orchestrator_core::plugin::Allowed;

/// The largest response body a plugin may receive.
pub const MAX_RESPONSE_BYTES: u64 = 32 << 20;

/// Sends requests over the network.
pub(super) struct Connect {
    allowed: Arc<Allowed>,
    denials: Denials,
}

impl Connect {
    pub(super) fn new(allowed: Arc<Allowed>, denials: Denials) -> Self {
        Self { allowed, denials }
    }
}

impl Interceptor for Connect {
    fn intercept(
        self: Arc<Self>,
        out: Outgoing,
        _last: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        Box::pin(async move {
            let address = addresses::resolve(&out.target.host, out.target.port, &self.allowed)
                .await
                .map_err(|message| deny(&self.denials, message))?;
            send(
                out.request,
                &out.target,
                address,
                out.connect_timeout,
                Arc::clone(&self.denials),
                out.slot,
            )
            .await
        })
    }
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
