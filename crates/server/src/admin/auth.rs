//! Bearer tokens for operator actions, compared in constant time.

use axum::http::{HeaderMap, header};

use super::error::ApiError;

/// Checks the `Authorization: Bearer TOKEN` header against the configured token.
/// With no token configured every action is refused, whatever was sent.
pub(crate) fn authorize(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = expected.ok_or(ApiError::ActionsDisabled)?;
    let presented = bearer(headers).ok_or(ApiError::Unauthorized)?;
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The token of an `Authorization: Bearer ...` header (the scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `a` and `b` are equal, in a time that depends only on their lengths and
/// not on where they first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        difference |= usize::from(std::hint::black_box(x ^ y));
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn equal_only_when_every_byte_and_the_length_match() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret\0"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn the_right_bearer_token_passes() {
        assert!(authorize(Some("s3cret"), &headers("Bearer s3cret")).is_ok());
        assert!(authorize(Some("s3cret"), &headers("bearer s3cret")).is_ok());
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthorized() {
        let unauthorized = |result: Result<(), ApiError>| matches!(result, Err(ApiError::Unauthorized));
        assert!(unauthorized(authorize(Some("s3cret"), &HeaderMap::new())));
        assert!(unauthorized(authorize(Some("s3cret"), &headers("Bearer wrong"))));
        assert!(unauthorized(authorize(Some("s3cret"), &headers("Basic s3cret"))));
        assert!(unauthorized(authorize(Some("s3cret"), &headers("Bearer"))));
    }

    #[test]
    fn without_a_configured_token_actions_are_disabled() {
        let result = authorize(None, &headers("Bearer anything"));
        assert!(matches!(result, Err(ApiError::ActionsDisabled)));
    }
}
