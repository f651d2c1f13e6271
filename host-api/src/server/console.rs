//! The web console at `/console/`: three files embedded in the binary
//! (`host-api/console/`: HTML, JavaScript, CSS; no build step, nothing
//! loaded from elsewhere), which call this same server's REST/JSON routes
//! and Server-Sent Events with the API key a user logs in with, so what
//! it shows and may do is what that key may through any other client.

use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::header;

/// Where the console is served.
pub const CONSOLE_PATH: &str = "/console/";

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// Its own files only, no inline script, no framing: what a tenant or a
/// plugin managed to put in a value the console shows cannot run.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `router` with the console's routes, and `/` leading to it.
pub fn routes(router: axum::Router) -> axum::Router {
    router
        .route("/", get(|| async { Redirect::to(CONSOLE_PATH) }))
        .route("/console", get(|| async { Redirect::to(CONSOLE_PATH) }))
        .route(
            CONSOLE_PATH,
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/console/console.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/console.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

fn file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
