//! Which addresses a plugin may reach: resolving a host ourselves and
//! checking every address it resolves to against the special ranges
//! (loopback, private, link-local and cloud metadata, shared, NAT64, 6to4,
//! Teredo, ...), which need an address grant; and refusing addresses
//! written in forms a resolver reads as addresses while grants read them as
//! names. No HTTP here: `egress.rs` asks.

use std::net::{IpAddr, SocketAddr};

use orchestrator_core::plugin::Allowed;

/// Resolves the host and returns the first address it may connect to.
pub(super) async fn resolve(
    host: &str,
    port: u16,
    allowed: &Allowed,
) -> Result<SocketAddr, String> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    let mut refused = Vec::new();
    for address in &addresses {
        match special_range(address.ip()) {
            Some(range) if !allowed.grants_address(address.ip(), port) => {
                refused.push(format!("{} ({range})", address.ip()));
            }
            _ => return Ok(*address),
        }
    }
    Err(format!(
        "`{}` resolved to {}; loopback, private, link-local and metadata addresses are refused unless the address itself is granted, e.g. `--allow-http {}`",
        host,
        if refused.is_empty() {
            "no address".to_owned()
        } else {
            refused.join(", ")
        },
        addresses
            .first()
            .map_or_else(|| host.to_owned(), |a| a.ip().to_string())
    ))
}

/// The kind of address a plugin may not reach without an explicit grant.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local, cloud metadata")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared address space")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if a == 192 && b == 0 && c == 0 {
                Some("IETF protocol assignments")
            } else if a == 198 && (b == 18 || b == 19) {
                Some("benchmarking")
            } else if v4.is_documentation() {
                Some("documentation")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_range(IpAddr::V4(v4));
            }
            let [first, second, ..] = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.segments()[..6] == [0; 6] {
                // `::a.b.c.d`, deprecated IPv4-compatible addresses.
                Some("IPv4-compatible")
            } else if first == 0x64 && second == 0xff9b {
                // 64:ff9b::/96 and 64:ff9b:1::/48 reach IPv4 hosts through a
                // translator, private ones included.
                Some("NAT64")
            } else if first == 0x2002 {
                Some("6to4")
            } else if first == 0x2001 && second == 0 {
                Some("Teredo")
            } else if first == 0x2001 && second == 0xdb8 {
                Some("documentation")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Why `host` (no brackets, no trailing dot) is an address in a form other
/// than the usual one (`2130706433`, `0x7f.1`, `127.1`, `fe80::1%eth0`),
/// which a resolver would read as an address while the grants read it as
/// a name.
pub(super) fn odd_address(host: &str) -> Option<&'static str> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    if host.contains('%') {
        return Some("an address with a zone");
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    (numeric || last.starts_with("0x")).then_some("an address written in an unusual form")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_ranges_are_recognised() {
        let range = |s: &str| special_range(s.parse().expect("an address"));
        assert_eq!(range("127.0.0.1"), Some("loopback"));
        assert_eq!(range("10.1.2.3"), Some("private"));
        assert_eq!(range("192.168.0.1"), Some("private"));
        assert_eq!(range("169.254.169.254"), Some("link-local, cloud metadata"));
        assert_eq!(range("100.100.100.200"), Some("shared address space"));
        assert_eq!(range("0.0.0.0"), Some("unspecified"));
        assert_eq!(range("::1"), Some("loopback"));
        assert_eq!(range("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(range("fd00:ec2::254"), Some("private (unique local)"));
        assert_eq!(range("fe80::1"), Some("link-local"));
        assert_eq!(range("192.0.0.170"), Some("IETF protocol assignments"));
        assert_eq!(range("198.18.0.1"), Some("benchmarking"));
        assert_eq!(range("198.19.255.1"), Some("benchmarking"));
        assert_eq!(range("64:ff9b::7f00:1"), Some("NAT64"));
        assert_eq!(range("64:ff9b:1::a9fe:a9fe"), Some("NAT64"));
        assert_eq!(range("2002:7f00:1::1"), Some("6to4"));
        assert_eq!(range("::127.0.0.1"), Some("IPv4-compatible"));
        assert_eq!(range("::a9fe:a9fe"), Some("IPv4-compatible"));
        assert_eq!(range("fec0::1"), Some("site-local"));
        assert_eq!(range("2001:0:4136:e378::1"), Some("Teredo"));
        assert_eq!(range("93.184.216.34"), None);
        assert_eq!(range("198.20.0.1"), None);
        for odd in [
            "2130706433",
            "0x7f000001",
            "127.1",
            "0x7f.0.0.1",
            "fe80::1%eth0",
            "10.0.0.0x1",
        ] {
            assert!(odd_address(odd).is_some(), "{odd}");
        }
        for usual in [
            "api.example.com",
            "127.0.0.1",
            "::1",
            "x2.example.com",
            "1password.com",
        ] {
            assert_eq!(odd_address(usual), None, "{usual}");
        }
        assert_eq!(range("2606:4700::1111"), None);
    }
}
