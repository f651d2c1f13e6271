//! Recording and replaying (`run --record` / `--replay`): with a
//! cassette, a granted request's body is read whole first; replaying, the
//! cassette answers it and nothing is sent; recording, the response is
//! read whole too, kept with the request, and handed to the plugin.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody};

use super::{Answered, Denials, Interceptor, Next, Outgoing, Sent, deny};
use crate::cassette::{Cassette, Exchange};

/// Records exchanges in, or answers them from, a cassette.
pub(super) struct Recording {
    cassette: Arc<Cassette>,
    denials: Denials,
}

impl Recording {
    pub(super) fn new(cassette: Arc<Cassette>, denials: Denials) -> Self {
        Self { cassette, denials }
    }
}

impl Interceptor for Recording {
    fn intercept(
        self: Arc<Self>,
        mut out: Outgoing,
        next: Next,
    ) -> Pin<Box<dyn Future<Output = Sent> + Send>> {
        Box::pin(async move {
            let (request, sent) = read_whole(out.request)
                .await
                .map_err(|message| deny(&self.denials, message))?;
            if self.cassette.replaying() {
                let exchange = self
                    .cassette
                    .answer(&sent.0, &sent.1, &sent.2)
                    .map_err(|message| deny(&self.denials, message))?;
                return Ok(replayed(exchange));
            }
            out.request = request;
            let (response, io) = next.send(out).await?;
            let response = record(&self.cassette, sent, response, &self.denials).await?;
            Ok((response, io))
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
