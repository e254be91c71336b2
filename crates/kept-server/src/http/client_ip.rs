//! The address a request came from, as far as this server can know it.
//!
//! Without proxies in front (`trusted_proxies = 0`, the default) that is the connection's peer
//! address, and `X-Forwarded-For` is ignored: anyone can send it, and a rate limit keyed on it
//! would be evaded by making one up. With `n` proxies in front, each of which appends the
//! address it received the request from, the client is the `n`th address counted back from the
//! peer through `X-Forwarded-For`; what lies further left was written by the client and is not
//! believed.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

/// The client's address for this request; `None` when the server cannot tell (a request
/// handed to the router in-process, with no connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The address as text, for hashing into evidence or keying a limit.
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientIp, Infallible> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or_else(|| {
                // Outside the router's middleware (a handler called directly): the peer only.
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                ClientIp(peer)
            }))
    }
}

/// Middleware: works out the client's address once per request and leaves it in the request's
/// extensions for `ClientIp`.
pub async fn find(State(trusted_proxies): State<u8>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = client_ip(peer, req.headers(), trusted_proxies);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The client's address given the peer, the headers and how many proxies are trusted.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted_proxies: u8) -> Option<IpAddr> {
    if trusted_proxies == 0 {
        return peer;
    }
    // Nearest first: the peer, then `X-Forwarded-For` from its right end (several headers
    // read as one list, in order).
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut hops: Vec<Option<IpAddr>> = Vec::with_capacity(forwarded.len() + 1);
    if let Some(peer) = peer {
        hops.push(Some(peer));
    }
    hops.extend(forwarded.iter().rev().map(|s| parse(s)));
    let wanted = usize::from(trusted_proxies);
    // Fewer hops than proxies: the request came round them; the furthest address is the best
    // there is. A hop a trusted proxy wrote but that is not an address: the nearest known one.
    let at = wanted.min(hops.len().saturating_sub(1));
    match hops.get(at).copied().flatten() {
        Some(ip) => Some(ip),
        None => hops.iter().take(at).rev().find_map(|h| *h),
    }
}

/// An address as proxies write it: bare, with a port, or bracketed IPv6 with a port.
fn parse(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|inner| inner.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn without_proxies_the_header_is_not_believed() {
        let peer = ip("198.51.100.7");
        assert_eq!(client_ip(peer, &headers(&["203.0.113.9"]), 0), peer);
        assert_eq!(client_ip(None, &headers(&["203.0.113.9"]), 0), None);
    }

    #[test]
    fn each_trusted_proxy_moves_one_address_back() {
        // client 203.0.113.9 -> proxy 10.0.0.1 -> proxy 10.0.0.2 (the peer).
        let h = headers(&["203.0.113.9, 10.0.0.1"]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(peer, &h, 1), ip("10.0.0.1"));
        assert_eq!(client_ip(peer, &h, 2), ip("203.0.113.9"));
        // More proxies than hops: the furthest address.
        assert_eq!(client_ip(peer, &h, 5), ip("203.0.113.9"));
    }

    #[test]
    fn what_the_client_wrote_itself_is_ignored() {
        // The client sent a made-up header; the one proxy appended the real address.
        let h = headers(&["1.2.3.4", "203.0.113.9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, 1), ip("203.0.113.9"));
    }

    #[test]
    fn ports_and_brackets_are_read_and_garbage_falls_back() {
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(peer, &headers(&["203.0.113.9:4711"]), 1),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(peer, &headers(&["[2001:db8::1]:443"]), 1),
            ip("2001:db8::1")
        );
        assert_eq!(client_ip(peer, &headers(&["unknown"]), 1), peer);
        assert_eq!(client_ip(peer, &HeaderMap::new(), 1), peer);
    }
}
