//! URLs the gate fetches or posts to, parsed with a real URL parser (`url`),
//! never by string prefixes: `http://127.0.0.1:1@jwks.example.com/keys` has
//! the host `jwks.example.com`, and a prefix check read it as loopback.
//!
//! Every such URL is http(s), names a host, and carries no user info
//! (credentials belong in secret references, and user info is how a host is
//! disguised).

/// Why `raw` is not a URL the gate may call, or the parsed URL.
pub fn outbound(raw: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("{raw:?} is not an http(s) URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "{raw:?} carries user info (user@ or user:password@): not allowed in a URL the gate calls"
        ));
    }
    if u.host().is_none() {
        return Err(format!("{raw:?} names no host"));
    }
    Ok(u)
}

/// Whether the URL's host is this machine: 127.0.0.0/8, `::1` or
/// `localhost` (exactly: `localhost.` or `localhost.example.com` are not).
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// `https://`, or `http://` to a loopback host only (tests, sidecars).
pub fn https_or_loopback(raw: &str) -> Result<url::Url, String> {
    let u = outbound(raw)?;
    if u.scheme() == "http" && !is_loopback(&u) {
        return Err(format!(
            "{raw:?} must be https:// (http:// only for a loopback host)"
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21 item 4: the tricky forms of every URL-taking setting.
    #[test]
    fn tricky_urls_are_parsed_not_prefix_matched() {
        for (raw, outbound_ok, https_or_loopback_ok) in [
            ("https://idp.example.com/keys", true, true),
            ("http://127.0.0.1:8080/keys", true, true),
            ("http://127.9.9.9/keys", true, true),
            ("http://[::1]:9/keys", true, true),
            ("http://localhost/keys", true, true),
            ("http://LOCALHOST:80/keys", true, true),
            // user info disguises the host
            ("http://127.0.0.1:1@jwks.example.com/keys", false, false),
            ("https://user:pass@idp.example.com/keys", false, false),
            ("https://user@idp.example.com/keys", false, false),
            ("http://localhost@evil.example.com/", false, false),
            // not loopback, whatever it looks like
            ("http://localhost.example.com/keys", true, false),
            ("http://localhost./keys", true, false),
            ("http://127.0.0.1.nip.io/keys", true, false),
            ("http://[::ffff:7f00:1]/keys", true, false),
            ("http://0x7f.1/keys", true, true), // the parser normalises it to 127.0.0.1
            ("http://%31%32%37.0.0.1/keys", true, true), // likewise, decoded to 127.0.0.1
            ("http://idp.example.com:443/keys", true, false),
            // not http(s), or no host
            ("file:///etc/passwd", false, false),
            ("ftp://idp.example.com/", false, false),
            ("idp.example.com/keys", false, false),
            ("https://", false, false),
        ] {
            assert_eq!(outbound(raw).is_ok(), outbound_ok, "outbound({raw})");
            assert_eq!(
                https_or_loopback(raw).is_ok(),
                https_or_loopback_ok,
                "https_or_loopback({raw})"
            );
        }
    }
}
