//! Capabilities, deny-by-default: what the operator grants, and what a task's
//! plugin may actually do.
//!
//! A plugin gets the intersection of what it asks for (`describe()`) and what
//! the operator granted at install ([`Grants`]); a workflow task may narrow
//! that further ([`GrantLimits`]) but never widen it. The result is an
//! [`Allowed`], which the sandbox turns into preopens, environment variables
//! and an egress policy.
//!
//! Addresses are the operator's alone: `*` and `*.example.com` cover host
//! names, never IP literals or address ranges, so an address (and with it
//! any loopback, private or metadata address a name resolves to) is
//! reachable only when the operator's grant names that address or a range
//! holding it. A plugin asking for `*` gets the operator's address grants;
//! a plugin or a workflow naming an address the operator did not grant gets
//! nothing.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::manifest::Capabilities;
use crate::workflow::GrantLimits;

/// What the operator granted a plugin at install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Host patterns it may reach over HTTP.
    pub http_hosts: Vec<String>,
    /// Directories it may see.
    pub dirs: Vec<DirGrant>,
    /// Environment variables it may read (values come from the host's environment).
    pub env: Vec<String>,
    /// Secrets the host attaches to its requests.
    pub secrets: Vec<String>,
    /// The plugin calls models: policies (the host's and the workflow's)
    /// run around every call to it, however a task names it.
    #[serde(default)]
    pub model: bool,
}

impl Grants {
    /// These grants and `more`: each host, directory, variable and secret
    /// once, in the order they were first granted; `model` if either says so.
    pub fn merge(mut self, more: Self) -> Self {
        fn add<T: PartialEq>(have: &mut Vec<T>, more: Vec<T>) {
            for item in more {
                if !have.contains(&item) {
                    have.push(item);
                }
            }
        }
        add(&mut self.http_hosts, more.http_hosts);
        add(&mut self.dirs, more.dirs);
        add(&mut self.env, more.env);
        add(&mut self.secrets, more.secrets);
        self.model |= more.model;
        self
    }
}

/// A host directory shown to a plugin at a path of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// Where the plugin sees it, for example `/data`.
    pub path: String,
    /// The directory on the host.
    pub host_dir: PathBuf,
    /// Whether the plugin may write there.
    pub writable: bool,
}

/// What one task's plugin may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Allowed {
    /// Hosts it may reach.
    pub http_hosts: Vec<HostPattern>,
    /// Directories preopened for it.
    pub dirs: Vec<DirGrant>,
    /// Environment variables it sees.
    pub env: Vec<String>,
    /// Secrets attached to its requests.
    pub secrets: Vec<String>,
    /// Secrets it asked for but was not granted: requests bound for their
    /// hosts are refused with a message saying so.
    pub secrets_withheld: Vec<String>,
}

impl Allowed {
    /// The intersection of what a plugin asks for and what it was granted.
    pub fn intersect(requested: &Capabilities, granted: &Grants) -> Self {
        let asked: Vec<HostPattern> = parse_all(&requested.http_hosts);
        let given: Vec<HostPattern> = parse_all(&granted.http_hosts);
        let mut http_hosts: Vec<HostPattern> = Vec::new();
        // What the plugin asks for that a grant covers, and what the
        // operator granted that the plugin's asks take in (an ask of `*`
        // takes in granted addresses too: the operator named them).
        let candidates = asked
            .iter()
            .filter(|a| given.iter().any(|g| g.covers(a)))
            .chain(given.iter().filter(|g| asked.iter().any(|a| a.takes_in(g))));
        for pattern in candidates {
            if !http_hosts.contains(pattern) {
                http_hosts.push(pattern.clone());
            }
        }
        let dirs = granted
            .dirs
            .iter()
            .filter_map(|g| {
                let asked = requested.filesystem.iter().find(|r| r.path == g.path)?;
                Some(DirGrant {
                    writable: g.writable && asked.writable,
                    ..g.clone()
                })
            })
            .collect();
        let both = |asked: &[String], given: &[String]| -> Vec<String> {
            asked
                .iter()
                .filter(|a| given.contains(a))
                .cloned()
                .collect()
        };
        let secrets = both(&requested.secrets, &granted.secrets);
        let secrets_withheld = requested
            .secrets
            .iter()
            .filter(|s| !secrets.contains(s))
            .cloned()
            .collect();
        Self {
            http_hosts,
            dirs,
            env: both(&requested.env, &granted.env),
            secrets,
            secrets_withheld,
        }
    }

    /// Narrows to what a workflow task allows. Asking for anything this does
    /// not already allow is an error: a workflow can only take away.
    pub fn narrow(&self, limits: &GrantLimits) -> Result<Self, String> {
        let mut narrowed = self.clone();
        if let Some(hosts) = &limits.http {
            narrowed.http_hosts = Vec::new();
            for text in hosts {
                let pattern = HostPattern::parse(text)?;
                if !self.http_hosts.iter().any(|p| p.covers(&pattern)) {
                    return Err(format!("HTTP to `{pattern}` {}", self.not_granted()));
                }
                narrowed.http_hosts.push(pattern);
            }
        }
        if let Some(env) = &limits.env {
            if let Some(missing) = env.iter().find(|e| !self.env.contains(e)) {
                return Err(format!(
                    "environment variable `{missing}` {}",
                    self.not_granted()
                ));
            }
            narrowed.env = env.clone();
        }
        if let Some(secrets) = &limits.secrets {
            if let Some(missing) = secrets.iter().find(|s| !self.secrets.contains(s)) {
                return Err(format!("secret `{missing}` {}", self.not_granted()));
            }
            narrowed.secrets = secrets.clone();
            narrowed.secrets_withheld.extend(
                self.secrets
                    .iter()
                    .filter(|s| !secrets.contains(s))
                    .cloned(),
            );
        }
        if let Some(filesystem) = &limits.filesystem {
            narrowed.dirs = Vec::new();
            for (path, writable) in filesystem {
                let Some(dir) = self.dirs.iter().find(|d| &d.path == path) else {
                    return Err(format!("directory `{path}` {}", self.not_granted()));
                };
                if *writable && !dir.writable {
                    return Err(format!("writing to `{path}` {}", self.not_granted()));
                }
                narrowed.dirs.push(DirGrant {
                    writable: *writable,
                    ..dir.clone()
                });
            }
        }
        Ok(narrowed)
    }

    fn not_granted(&self) -> &'static str {
        "is not allowed to this plugin (it was not both asked for and granted at install); a workflow can only narrow grants"
    }

    /// The granted host pattern allowing `host:port`, if any.
    pub fn http_grant(&self, host: &str, port: u16) -> Option<&HostPattern> {
        self.http_hosts.iter().find(|p| p.matches(host, port))
    }

    /// Whether an address in a special range (loopback, private, link-local,
    /// ...) was granted explicitly, by an address or range pattern (which
    /// only an operator's grant can put here).
    pub fn grants_address(&self, ip: IpAddr, port: u16) -> bool {
        // An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4
        // address: only an IPv4 grant covers it.
        let ip = ip.to_canonical();
        self.http_hosts.iter().any(|p| {
            p.port.is_none_or(|q| q == port) && p.net().is_some_and(|net| net.contains(&ip))
        })
    }
}

fn parse_all(patterns: &[String]) -> Vec<HostPattern> {
    patterns
        .iter()
        .filter_map(|p| HostPattern::parse(p).ok())
        .collect()
}

/// A host a plugin may reach: `api.example.com`, `*.example.com`, `*`, an
/// IP address or an address range (`10.0.0.0/8`), each optionally with
/// `:port` (an IPv6 address in brackets then: `[::1]:8080`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPattern {
    /// Lower-case host, `*.suffix`, `*`, an address or a range.
    pub host: String,
    /// The only port allowed, if set.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parses and normalises a pattern.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{text}`: `{port}` is not a port number"))?;
                (host.to_owned(), Some(port))
            }
            _ => (text.clone(), None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = host == "*"
            || net_of(&host).is_some()
            || (!name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                }));
        if !valid {
            return Err(format!(
                "`{text}` is not a host pattern; write `api.example.com`, `*.example.com`, `*`, an IP address or a range such as `10.0.0.0/8`, optionally with `:port`"
            ));
        }
        Ok(Self { host, port })
    }

    /// Whether a request to `host:port` fits.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.port.is_none_or(|p| p == port) && self.matches_host(host)
    }

    /// Whether `host` fits, on whatever port.
    pub fn matches_host(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        host_covers(&self.host, &host)
    }

    /// Whether everything `other` allows, this allows too. Names and
    /// wildcards never cover addresses.
    pub fn covers(&self, other: &HostPattern) -> bool {
        self.covers_port(other) && host_covers(&self.host, &other.host)
    }

    /// Whether a plugin asking for this takes in what the operator granted
    /// as `granted`: like [`covers`](Self::covers), except that an ask of
    /// `*` takes in granted addresses too.
    pub fn takes_in(&self, granted: &HostPattern) -> bool {
        self.covers(granted) || (self.host == "*" && self.covers_port(granted))
    }

    fn covers_port(&self, other: &HostPattern) -> bool {
        match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        }
    }

    /// The address, if the pattern is one IP address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The addresses the pattern names, if it is an address or a range.
    pub fn net(&self) -> Option<IpNet> {
        net_of(&self.host)
    }
}

/// An address (`10.1.2.3`, `::1`) or a range (`10.0.0.0/8`) as a range.
fn net_of(host: &str) -> Option<IpNet> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Some(IpNet::from(ip.to_canonical())),
        Err(_) => host.parse::<IpNet>().ok().map(|net| net.trunc()),
    }
}

fn host_covers(pattern: &str, host: &str) -> bool {
    match (net_of(pattern), net_of(host)) {
        (Some(pattern), Some(host)) => return pattern.contains(&host),
        // A name or a wildcard never covers an address, nor an address a name.
        (None, Some(_)) | (Some(_), None) => return false,
        (None, None) => {}
    }
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.')),
        None => false,
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host: &str = &self.host;
        match (self.port, host.contains(':')) {
            (Some(port), true) => write!(f, "[{host}]:{port}"),
            (Some(port), false) => write!(f, "{host}:{port}"),
            (None, _) => f.write_str(host),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::plugin::manifest::FsAccess;

    fn hosts(allowed: &Allowed) -> Vec<String> {
        allowed.http_hosts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn patterns_match_exact_wildcard_and_port() {
        let p = HostPattern::parse("*.Example.com").unwrap();
        assert!(p.matches("api.example.com", 443));
        assert!(p.matches("a.b.example.com", 80));
        assert!(!p.matches("example.com", 443));
        assert!(!p.matches("evilexample.com", 443));
        let p = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(p.matches("127.0.0.1", 8080));
        assert!(!p.matches("127.0.0.1", 8081));
        assert_eq!(p.ip(), Some(IpAddr::from([127, 0, 0, 1])));
        let p = HostPattern::parse("[::1]:80").unwrap();
        assert!(p.matches("[::1]", 80));
        assert!(HostPattern::parse("exa mple.com").is_err());
        assert!(HostPattern::parse("host:http").is_err());
    }

    #[test]
    fn a_plugin_asking_more_than_granted_gets_the_grant() {
        let asked = Capabilities {
            http_hosts: vec!["*".into()],
            env: vec!["HOME".into(), "PATH".into()],
            secrets: vec!["token".into()],
            filesystem: vec![FsAccess {
                path: "/data".into(),
                writable: true,
            }],
        };
        let granted = Grants {
            http_hosts: vec!["127.0.0.1".into(), "*.example.com".into()],
            env: vec!["HOME".into()],
            dirs: vec![DirGrant {
                path: "/data".into(),
                host_dir: "/srv".into(),
                writable: false,
            }],
            secrets: vec![],
            model: false,
        };
        let allowed = Allowed::intersect(&asked, &granted);
        assert_eq!(hosts(&allowed), ["127.0.0.1", "*.example.com"]);
        assert_eq!(allowed.env, ["HOME"]);
        assert!(!allowed.dirs[0].writable);
        assert!(allowed.secrets.is_empty());
        assert_eq!(allowed.secrets_withheld, ["token"]);
    }

    #[test]
    fn an_operator_granting_more_than_asked_gives_only_what_was_asked() {
        let asked = Capabilities {
            http_hosts: vec!["api.example.com".into()],
            env: vec!["HOME".into()],
            secrets: vec!["token".into()],
            filesystem: vec![FsAccess {
                path: "/data".into(),
                writable: false,
            }],
        };
        let granted = Grants {
            http_hosts: vec!["*".into()],
            env: vec!["HOME".into(), "PATH".into()],
            dirs: vec![
                DirGrant {
                    path: "/data".into(),
                    host_dir: "/srv".into(),
                    writable: true,
                },
                DirGrant {
                    path: "/other".into(),
                    host_dir: "/tmp".into(),
                    writable: true,
                },
            ],
            secrets: vec!["token".into(), "other".into()],
            model: false,
        };
        let allowed = Allowed::intersect(&asked, &granted);
        assert_eq!(hosts(&allowed), ["api.example.com"]);
        assert_eq!(allowed.env, ["HOME"]);
        assert_eq!(allowed.dirs.len(), 1);
        assert!(!allowed.dirs[0].writable);
        assert_eq!(allowed.secrets, ["token"]);
    }

    #[test]
    fn wildcards_never_cover_addresses() {
        let any = HostPattern::parse("*").unwrap();
        assert!(any.matches("api.example.com", 443));
        for address in [
            "127.0.0.1",
            "169.254.169.254",
            "[::1]",
            "10.0.0.1",
            "93.184.216.34",
        ] {
            assert!(!any.matches(address, 80), "{address}");
        }
        let suffix = HostPattern::parse("*.example.com").unwrap();
        assert!(!suffix.covers(&HostPattern::parse("127.0.0.1").unwrap()));
        assert!(!any.covers(&HostPattern::parse("169.254.169.254").unwrap()));
        assert!(!any.covers(&HostPattern::parse("10.0.0.0/8").unwrap()));
        // A name never covers an address either.
        let name = HostPattern::parse("localhost").unwrap();
        assert!(!name.matches("127.0.0.1", 80));
    }

    #[test]
    fn ranges_cover_their_addresses() {
        let private = HostPattern::parse("10.0.0.0/8").unwrap();
        assert!(private.matches("10.1.2.3", 80));
        assert!(!private.matches("11.0.0.1", 80));
        assert!(private.covers(&HostPattern::parse("10.9.0.0/16").unwrap()));
        assert!(!private.covers(&HostPattern::parse("0.0.0.0/0").unwrap()));
        let v6 = HostPattern::parse("[fd00::/8]:8080").unwrap();
        assert!(v6.matches("[fd12::1]", 8080));
        assert!(!v6.matches("[fd12::1]", 80));
        let allowed = Allowed {
            http_hosts: vec![private],
            ..Allowed::default()
        };
        assert!(allowed.grants_address("10.255.0.1".parse().unwrap(), 443));
        assert!(!allowed.grants_address("192.168.0.1".parse().unwrap(), 443));
        assert!(HostPattern::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn a_plugin_cannot_ask_for_an_address_the_operator_did_not_grant() {
        let asked = Capabilities {
            http_hosts: vec!["*".into(), "169.254.169.254".into(), "127.0.0.1".into()],
            ..Capabilities::default()
        };
        let granted = Grants {
            http_hosts: vec!["*".into()],
            ..Grants::default()
        };
        let allowed = Allowed::intersect(&asked, &granted);
        assert_eq!(hosts(&allowed), ["*"]);
        assert!(!allowed.grants_address("169.254.169.254".parse().unwrap(), 80));
        assert!(allowed.http_grant("169.254.169.254", 80).is_none());
        assert!(allowed.http_grant("127.0.0.1", 80).is_none());

        // The operator naming the address is what grants it.
        let granted = Grants {
            http_hosts: vec!["*".into(), "127.0.0.1".into()],
            ..Grants::default()
        };
        let allowed = Allowed::intersect(&asked, &granted);
        assert!(allowed.grants_address("127.0.0.1".parse().unwrap(), 80));
        assert!(!allowed.grants_address("169.254.169.254".parse().unwrap(), 80));
    }

    #[test]
    fn a_workflow_cannot_narrow_a_wildcard_into_an_address() {
        let allowed = Allowed {
            http_hosts: vec![HostPattern::parse("*").unwrap()],
            ..Allowed::default()
        };
        for address in ["127.0.0.1", "169.254.169.254", "10.0.0.0/8", "[::1]:80"] {
            let narrow = GrantLimits {
                http: Some(vec![address.into()]),
                ..GrantLimits::default()
            };
            let error = allowed.narrow(&narrow).unwrap_err();
            assert!(error.contains("a workflow can only narrow"), "{error}");
        }
        let narrow = GrantLimits {
            http: Some(vec!["api.example.com".into()]),
            ..GrantLimits::default()
        };
        assert!(allowed.narrow(&narrow).is_ok());
    }

    #[test]
    fn a_workflow_narrows_but_cannot_widen() {
        let allowed = Allowed {
            http_hosts: vec![HostPattern::parse("*.example.com").unwrap()],
            env: vec!["HOME".into()],
            secrets: vec!["token".into()],
            dirs: vec![DirGrant {
                path: "/data".into(),
                host_dir: "/srv".into(),
                writable: true,
            }],
            secrets_withheld: vec![],
        };
        let narrow = GrantLimits {
            http: Some(vec!["api.example.com".into()]),
            env: Some(vec![]),
            secrets: Some(vec![]),
            filesystem: Some(vec![("/data".into(), false)]),
        };
        let narrowed = allowed.narrow(&narrow).unwrap();
        assert_eq!(hosts(&narrowed), ["api.example.com"]);
        assert!(narrowed.env.is_empty());
        assert_eq!(narrowed.secrets_withheld, ["token"]);
        assert!(!narrowed.dirs[0].writable);

        let wider = GrantLimits {
            http: Some(vec!["evil.com".into()]),
            ..GrantLimits::default()
        };
        let error = allowed.narrow(&wider).unwrap_err();
        assert!(error.contains("`evil.com` is not allowed"), "{error}");
        let writes = GrantLimits {
            filesystem: Some(vec![("/data".into(), true)]),
            ..GrantLimits::default()
        };
        assert!(
            narrowed
                .narrow(&writes)
                .unwrap_err()
                .contains("writing to `/data`")
        );
    }

    #[test]
    fn merged_grants_keep_each_grant_once_in_order() {
        let have = Grants {
            http_hosts: vec!["a.example".into()],
            env: vec!["HOME".into()],
            ..Grants::default()
        };
        let more = Grants {
            http_hosts: vec!["a.example".into(), "b.example".into()],
            secrets: vec!["key".into()],
            model: true,
            ..Grants::default()
        };
        let merged = have.merge(more);
        assert_eq!(merged.http_hosts, ["a.example", "b.example"]);
        assert_eq!(merged.env, ["HOME"]);
        assert_eq!(merged.secrets, ["key"]);
        assert!(merged.model);
    }
}
