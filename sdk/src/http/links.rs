//! URLs in and out: path segments decoded exactly once, the links the API returns built from
//! a base that a request cannot choose, and the Durable Functions base path.
//!
//! **Which base URL links use.** With [`HttpOptions::public_url`](super::HttpOptions) set,
//! every link starts with it, whatever the request says. Otherwise, with
//! [`HttpOptions::trust_forwarded_headers`](super::HttpOptions), a proxy's `Forwarded` /
//! `X-Forwarded-Host` / `X-Forwarded-Proto` headers choose the scheme and host. Otherwise
//! the scheme is `http` (the server speaks plain HTTP) and the host is the request's `Host`
//! header, which must be a well-formed `host[:port]` (400 `invalid_host` otherwise); proxy
//! headers are ignored, so one request cannot make the API hand out links to another site.
//!
//! **Path segments** (instance ids, event names, entity names and keys) are percent-decoded
//! completely: actix's router leaves `%2F`, `%25` and `%2B` encoded, and the handlers finish
//! the job, so every id the API accepts round-trips through the links it returns.

use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};

use super::{ApiError, State};

/// Durable Functions' base path: every route answers under it too, so a DF client pointed
/// at `http://host:7071/runtime/webhooks/durabletask` works.
pub(crate) const DF_PREFIX: &str = "/runtime/webhooks/durabletask";

/// The path parameter `name`, percent-decoded; 400 if it is not UTF-8 once decoded.
pub(crate) fn path_param(req: &HttpRequest, name: &str) -> Result<String, ApiError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    decode_segment(raw).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("the path segment `{raw}` is not UTF-8 text once percent-decoded"),
        )
    })
}

/// Decodes every `%XX` escape; an invalid escape stays as it is. `None` if the result is not
/// UTF-8.
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a path segment: everything but RFC 3986's unreserved characters and `:`
/// and `@` (allowed in a segment) is escaped.
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The base of the links in a response to `req`: scheme, host and the base path the request
/// came in on (`DF_PREFIX` or none), without a trailing slash.
pub(crate) fn base_url(req: &HttpRequest, state: &State) -> Result<String, ApiError> {
    let prefix = if req.path().starts_with(DF_PREFIX) {
        DF_PREFIX
    } else {
        ""
    };
    if let Some(public) = &state.public_url {
        return Ok(format!("{public}{prefix}"));
    }
    if state.trust_forwarded_headers {
        let info = req.connection_info();
        let host = info.host();
        check_host(host)?;
        return Ok(format!("{}://{host}{prefix}", info.scheme()));
    }
    let host = match req.headers().get(header::HOST) {
        Some(value) => value
            .to_str()
            .map_err(|_| invalid_host("(not text)"))?
            .to_owned(),
        // HTTP/1.0 without a Host header: the address the request came in on.
        None => req.app_config().host().to_owned(),
    };
    check_host(&host)?;
    Ok(format!("http://{host}{prefix}"))
}

/// The link to an instance: `{base}/instances/{id}`.
pub(crate) fn instance_url(req: &HttpRequest, state: &State, id: &str) -> Result<String, ApiError> {
    Ok(format!(
        "{}/instances/{}",
        base_url(req, state)?,
        encode_segment(id)
    ))
}

/// 400 unless `host` is `name[:port]`, `IPv4[:port]` or `[IPv6][:port]`.
pub(crate) fn check_host(host: &str) -> Result<(), ApiError> {
    if is_valid_host(host) {
        Ok(())
    } else {
        Err(invalid_host(host))
    }
}

fn invalid_host(host: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_host",
        format!(
            "the Host header `{}` is not a host name or address with an optional port",
            host.escape_debug()
        ),
    )
}

fn is_valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        // [IPv6]:port
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        || name.parse::<std::net::Ipv4Addr>().is_ok();
    name_ok && port_ok
}

/// Checks a `--public-url`: `http(s)://host[:port][/path]`, no query or fragment; returns it
/// without a trailing slash.
pub(crate) fn normalize_public_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("the public URL `{url}` must start with http:// or https://"))?;
    if url.contains(['?', '#']) {
        return Err(format!(
            "the public URL `{url}` must not have a query or a fragment"
        ));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if !is_valid_host(host) {
        return Err(format!(
            "the public URL `{url}` does not start with a host name or address"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_what_the_router_leaves_encoded() {
        assert_eq!(decode_segment("a%2Fb%2Bc%25d").as_deref(), Some("a/b+c%d"));
        assert_eq!(decode_segment("a+b").as_deref(), Some("a+b"));
        assert_eq!(decode_segment("100%").as_deref(), Some("100%"));
        assert_eq!(decode_segment("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode_segment("%C3%A9").as_deref(), Some("é"));
        assert_eq!(decode_segment("%FF"), None);
    }

    #[test]
    fn segments_round_trip() {
        for id in ["order-42:1", "a b+c", "x%y/z", "é@", "?#&="] {
            assert_eq!(decode_segment(&encode_segment(id)).as_deref(), Some(id));
        }
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn hosts_are_names_or_addresses_with_a_port() {
        for host in [
            "localhost",
            "localhost:7071",
            "127.0.0.1:80",
            "[::1]:7071",
            "[::1]",
            "api.example.com",
            "my_host",
        ] {
            assert!(is_valid_host(host), "{host}");
        }
        for host in [
            "",
            "evil.com/x",
            "a b",
            "host:port",
            "host:99999",
            "[::1",
            "[nope]:1",
            "a..b",
            "x\"><script>",
            "user@host",
        ] {
            assert!(!is_valid_host(host), "{host}");
        }
    }

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            normalize_public_url("https://api.example.com/durable/").as_deref(),
            Ok("https://api.example.com/durable")
        );
        assert!(normalize_public_url("ftp://x").is_err());
        assert!(normalize_public_url("https://x/?a=1").is_err());
        assert!(normalize_public_url("https:///path").is_err());
    }
}
