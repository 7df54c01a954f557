//! What a request must pass before a handler runs: the Host check against DNS
//! rebinding, the Origin check of state-changing requests, and the permits that keep
//! expensive reads few at a time.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use super::state::AdminState;

/// Probes name the pod's address, whatever the names configured: they are exempt.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// Refuses (421) a request whose Host header names none of the allowed hosts. A
/// browser on another site that made its name resolve to this address sends that
/// name, so it cannot read the API through it. An IP address is always allowed:
/// rebinding needs a name, and scrapers and probes name the pod's address, which no
/// configuration can know in advance.
pub(crate) async fn check_host(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let allowed = state.allowed_hosts();
    if allowed.is_empty() || PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match host_of(request.headers()) {
        Some(host) if is_ip(host) || allowed.iter().any(|name| name.eq_ignore_ascii_case(host)) => {
            next.run(request).await
        }
        host => axum::response::IntoResponse::into_response(ApiError::MisdirectedHost(
            host.unwrap_or_default().to_owned(),
        )),
    }
}

/// The host of the Host header, without its port: `127.0.0.1`, `[::1]`, `admin.example`.
fn host_of(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    Some(strip_port(value.trim()))
}

/// Whether `host` is an IP literal: `10.0.0.5`, `[fd00::5]`.
fn is_ip(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
    bare.parse::<std::net::IpAddr>().is_ok()
}

/// `name:port` → `name`; `[v6]:port` → `[v6]`; a name without a port as is.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _port)| host)
}

/// Refuses (403) a request sent by a page of another origin: its `Origin` header's
/// authority is not the Host it was sent to. Requests without `Origin` (scripts,
/// curl) pass.
pub(crate) fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let authority = origin.split_once("://").map(|(_scheme, rest)| rest.trim_end_matches('/'));
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host.trim()) => Ok(()),
        _ => Err(ApiError::ForeignOrigin(origin.to_owned())),
    }
}

/// Answers 408 (with no body) to a request not answered within the request timeout
/// in force, which a reload may change.
pub(crate) async fn within_request_timeout(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.limits().request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// A permit to build a list: a few at a time, so that readers of large tables cannot
/// starve picks of CPU. A request that finds none free within the configured wait is
/// refused (503 with `Retry-After`) rather than queued without bound.
pub(crate) async fn expensive_read(state: &AdminState) -> Result<OwnedSemaphorePermit, ApiError> {
    let permits = std::sync::Arc::clone(state.expensive_reads());
    match tokio::time::timeout(state.limits().busy_wait, permits.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        // Never closed; treated as busy all the same.
        Ok(Err(_)) | Err(_) => {
            state.count_busy_refusal();
            Err(ApiError::Busy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn strip_port_keeps_the_host_of_every_form() {
        assert_eq!(strip_port("127.0.0.1:8524"), "127.0.0.1");
        assert_eq!(strip_port("localhost"), "localhost");
        assert_eq!(strip_port("[::1]:8524"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("admin.example:80"), "admin.example");
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_static(value))).collect()
    }

    #[test]
    fn ip_literals_are_told_from_names() {
        for ip in ["10.0.0.5", "[fd00::5]", "[::1]", "127.0.0.1"] {
            assert!(is_ip(ip), "{ip}");
        }
        for name in ["localhost", "admin.example", "10.0.0.5.nip.io", "[admin]"] {
            assert!(!is_ip(name), "{name}");
        }
    }

    #[test]
    fn an_origin_must_be_the_host_it_was_sent_to() {
        assert!(check_origin(&headers(&[(header::HOST, "127.0.0.1:8524")])).is_ok());
        let same = headers(&[(header::HOST, "127.0.0.1:8524"), (header::ORIGIN, "http://127.0.0.1:8524")]);
        assert!(check_origin(&same).is_ok());
        let foreign = headers(&[(header::HOST, "127.0.0.1:8524"), (header::ORIGIN, "https://evil.example")]);
        assert!(matches!(check_origin(&foreign), Err(ApiError::ForeignOrigin(_))));
        let opaque = headers(&[(header::HOST, "127.0.0.1:8524"), (header::ORIGIN, "null")]);
        assert!(check_origin(&opaque).is_err());
    }
}
