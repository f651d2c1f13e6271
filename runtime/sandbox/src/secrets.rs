//! Secrets the host attaches to a plugin's outgoing requests: which hosts,
//! ports and schemes each belongs to. Values never enter a store; the
//! engine's configuration file says where they come from.

use orchestrator_core::plugin::HostPattern;

/// Secrets the host may attach to requests.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    entries: Vec<Secret>,
}

/// One secret: its value stays on the host.
#[derive(Clone)]
pub struct Secret {
    /// The name plugins ask for and operators grant.
    pub name: String,
    /// Hosts it may be sent to.
    pub hosts: Vec<HostPattern>,
    /// Whether it may also go over plain `http://` (a test server on
    /// loopback); otherwise only over TLS.
    pub insecure_http: bool,
    /// The request header it goes in.
    pub header: http::HeaderName,
    /// The header value, or why there is none.
    value: Result<http::HeaderValue, String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("header", &self.header)
            .field("value", &"<hidden>")
            .finish()
    }
}

impl Secret {
    /// A secret named `name` for `hosts`, sent in `header` with `value`
    /// (or the reason there is none, said when a request would need it).
    pub fn new(
        name: String,
        hosts: Vec<HostPattern>,
        insecure_http: bool,
        header: http::HeaderName,
        value: Result<http::HeaderValue, String>,
    ) -> Self {
        Self {
            name,
            hosts,
            insecure_http,
            header,
            value,
        }
    }

    /// Whether this secret belongs to a request to `host:port` over TLS
    /// (`tls`) or plain HTTP: `None` if not; `Some(true)` if it may be
    /// attached; `Some(false)` if the request goes to its host by the wrong
    /// scheme or port and must be refused rather than sent with or without
    /// it. A host named without a port means `https://` on 443 (and
    /// `http://` on 80 with `insecure_http`); one named with a port means
    /// that port, over TLS unless `insecure_http`.
    pub fn admits(&self, host: &str, port: u16, tls: bool) -> Option<bool> {
        let mut verdict = None;
        for pattern in self.hosts.iter().filter(|h| h.matches_host(host)) {
            let usable = match pattern.port {
                Some(own) if own != port => continue,
                Some(_) => tls || self.insecure_http,
                None => (tls && port == 443) || (self.insecure_http && !tls && port == 80),
            };
            if usable {
                return Some(true);
            }
            verdict = Some(false);
        }
        verdict
    }

    /// Where it may go, for messages: `https://api.openai.com:443`.
    pub fn destinations(&self) -> String {
        let scheme = if self.insecure_http {
            "http(s)"
        } else {
            "https"
        };
        self.hosts
            .iter()
            .map(|h| match h.port {
                Some(_) => format!("{scheme}://{h}"),
                None if self.insecure_http => format!("{scheme}://{h}"),
                None => format!("{scheme}://{h}:443"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The header value, or why it is missing.
    pub fn header_value(&self) -> Result<&http::HeaderValue, &str> {
        self.value.as_ref().map_err(String::as_str)
    }
}

impl Secrets {
    /// These secrets.
    pub fn new(entries: Vec<Secret>) -> Self {
        Self { entries }
    }

    /// Secrets belonging to `host` (any port, any scheme), each with
    /// whether it may go on a request to `host:port` over TLS or not
    /// ([`Secret::admits`]).
    pub fn for_host<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        tls: bool,
    ) -> impl Iterator<Item = (&'a Secret, bool)> {
        self.entries
            .iter()
            .filter_map(move |s| Some((s, s.admits(host, port, tls)?)))
    }

    /// Whether a secret of this name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|s| s.name == name)
    }

    /// The configured names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|s| s.name.as_str())
    }
}
