//! Ticket checks from C: verify the admission ticket a client brings against the shared
//! secret, this backend's id and its service; and read the secret file as the
//! dispatcher does.

use std::ffi::{c_char, c_int};
use std::mem::{offset_of, size_of};
use std::time::{SystemTime, UNIX_EPOCH};

use loadwise_agent::{DEFAULT_SERVICE, MIN_SECRET_LEN, Secret};
use loadwise_protocol::ticket::{self, Claims, NONCE_LEN, TicketError};
use loadwise_protocol::v2::ServiceName;
use loadwise_protocol::v2::auth::SecretFileError;

use super::boundary::{self, Failure};
use super::codes::{
    LW_E_BUFFER, LW_E_INVALID, LW_E_IO, LW_E_TICKET_EXPIRED, LW_E_TICKET_INVALID, LW_E_TICKET_MISMATCH,
};

/// What a verified ticket says. Set `size` to `sizeof(lw_ticket_claims)`
/// (`lw_ticket_claims_init` does); the library fills only the fields within `size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct lw_ticket_claims {
    /// `sizeof(lw_ticket_claims)` as the caller's header knows it.
    pub size: usize,
    /// The backend the client was sent to.
    pub backend_id: u64,
    /// When the dispatcher issued the ticket, unix seconds.
    pub issued_unix: u64,
    /// The first second the ticket is no longer valid, unix seconds.
    pub expires_unix: u64,
    /// Random bytes unique to the ticket: a backend that wants each ticket used once
    /// remembers the nonces it has seen until they expire.
    pub nonce: [u8; 16],
}

/// Verifies `ticket` (its hex text, as `lw_picked_ticket` gives it) with this host's
/// clock: signed with `secret` (`secret_len` bytes, at least 16, the same bytes as the
/// dispatcher's secret file without its final newline, see `lw_secret_read_file`),
/// for this backend (`backend_id`, see `lw_agent_backend_id`) and `service` (NULL for
/// the default service), and within its validity.
///
/// Returns `LW_OK`, filling `claims` unless it is NULL; or `LW_E_TICKET_INVALID`
/// (forged, altered, another secret, not a ticket), `LW_E_TICKET_MISMATCH` (another
/// backend or service), `LW_E_TICKET_EXPIRED`, `LW_E_INVALID` or `LW_E_NULL`. Pure
/// computation: no I/O, safe from any thread.
///
/// # Safety
/// `secret` points to `secret_len` readable bytes; `ticket` and `service` are NULL or
/// NUL-terminated strings; `claims` is NULL or points to a writable struct of at least
/// `claims->size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_ticket_verify(
    secret: *const u8,
    secret_len: usize,
    ticket: *const c_char,
    service: *const c_char,
    backend_id: u64,
    claims: *mut lw_ticket_claims,
) -> c_int {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    // SAFETY: the caller's promise, passed on.
    unsafe { lw_ticket_verify_at(secret, secret_len, ticket, service, backend_id, now, claims) }
}

/// `lw_ticket_verify` at the time `now_unix` (unix seconds) instead of this host's
/// clock: for tests, and for callers with a clock of their own.
///
/// # Safety
/// As for `lw_ticket_verify`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_ticket_verify_at(
    secret: *const u8,
    secret_len: usize,
    ticket: *const c_char,
    service: *const c_char,
    backend_id: u64,
    now_unix: u64,
    claims: *mut lw_ticket_claims,
) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise for each argument.
        let secret = unsafe { secret_bytes(secret, secret_len) }?;
        // SAFETY: as above.
        let text = unsafe { boundary::string(ticket, "ticket") }?;
        // SAFETY: as above.
        let service = unsafe { service_or_default(service) }?;
        if !claims.is_null() {
            // Checked before verifying, so a bad struct is reported whatever the ticket.
            // SAFETY: as above.
            unsafe { claims_size(claims) }?;
        }
        let verified = ticket::verify(secret, text.as_bytes(), &service, backend_id, now_unix)
            .map_err(|error| Failure::new(ticket_code(&error), format!("ticket refused: {error}")))?;
        if !claims.is_null() {
            // SAFETY: checked above: non-NULL, aligned, `size` writable bytes.
            unsafe { write_claims(claims, &verified) };
        }
        Ok(())
    })
}

/// Reads the secret file at `path` as the dispatcher (`auth_secret_file`) and the
/// agent (`--secret-file`) do: its bytes without a final newline, at least 16. Writes
/// them to `out` (`out_len` bytes) and their count to `*secret_len`.
///
/// Returns `LW_OK`; `LW_E_BUFFER` if `out_len` is too small (nothing written to `out`,
/// `*secret_len` set to the size needed); `LW_E_IO` if the file cannot be read;
/// `LW_E_INVALID` if the secret is too short; `LW_E_NULL`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or points to `out_len`
/// writable bytes; `secret_len` is NULL or points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_secret_read_file(
    path: *const c_char,
    out: *mut u8,
    out_len: usize,
    secret_len: *mut usize,
) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise.
        let path = unsafe { boundary::string(path, "path") }?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        if secret_len.is_null() || !secret_len.is_aligned() {
            return Err(Failure::null("secret_len"));
        }
        let secret = Secret::read_file(path.as_ref()).map_err(|error| match error {
            SecretFileError::Read { .. } => Failure::new(LW_E_IO, error.to_string()),
            SecretFileError::Invalid(error) => {
                Failure::new(LW_E_INVALID, format!("{path}: {}", error.reason))
            }
        })?;
        let bytes = secret.as_bytes();
        // SAFETY: non-NULL and aligned, writable per the caller's promise.
        unsafe { secret_len.write(bytes.len()) };
        if bytes.len() > out_len {
            let message = format!("out_len is {out_len}, the secret in {path} is {} bytes", bytes.len());
            return Err(Failure::new(LW_E_BUFFER, message));
        }
        // SAFETY: `out` has `out_len >= bytes.len()` writable bytes, and cannot
        // overlap the secret the library just read.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
        Ok(())
    })
}

/// # Safety
/// `secret` is NULL or points to `len` readable bytes.
unsafe fn secret_bytes<'a>(secret: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if secret.is_null() {
        return Err(Failure::null("secret"));
    }
    // SAFETY: the caller's promise.
    let bytes = unsafe { boundary::bytes(secret, len, "secret") }?;
    if bytes.len() < MIN_SECRET_LEN {
        let message = format!("secret_len is {}: a secret is at least {MIN_SECRET_LEN} bytes", bytes.len());
        return Err(Failure::invalid(message));
    }
    Ok(bytes)
}

/// # Safety
/// `service` is NULL or a NUL-terminated string.
pub(crate) unsafe fn service_or_default(service: *const c_char) -> Result<ServiceName, Failure> {
    // SAFETY: the caller's promise.
    let name = unsafe { boundary::optional_string(service, "service") }?;
    let name = name.as_deref().unwrap_or(DEFAULT_SERVICE);
    ServiceName::new(name).map_err(|error| Failure::invalid(format!("service: {error}")))
}

fn ticket_code(error: &TicketError) -> c_int {
    match error {
        TicketError::WrongBackend { .. } | TicketError::WrongService { .. } => LW_E_TICKET_MISMATCH,
        TicketError::Expired { .. } | TicketError::NotYetValid { .. } => LW_E_TICKET_EXPIRED,
        TicketError::WrongLength { .. }
        | TicketError::UnsupportedVersion(_)
        | TicketError::BadText
        | TicketError::TrailingText(_)
        | TicketError::BadSignature => LW_E_TICKET_INVALID,
        // Checked before, with its own message (secret_bytes); kept for completeness.
        TicketError::WeakSecret { .. } => LW_E_INVALID,
    }
}

/// The `size` of an output `lw_ticket_claims`: at least its own field, at most 4096.
///
/// # Safety
/// `claims` is non-NULL and points to a struct starting with a readable `size_t`.
unsafe fn claims_size(claims: *const lw_ticket_claims) -> Result<usize, Failure> {
    if !claims.is_aligned() {
        return Err(Failure::invalid("claims is not aligned"));
    }
    // SAFETY: non-NULL, aligned, and starting with a size_t per the caller's promise.
    let size = unsafe { claims.cast::<usize>().read() };
    if size < size_of::<usize>() || size > 4096 {
        let expected = size_of::<lw_ticket_claims>();
        return Err(Failure::invalid(format!(
            "claims->size is {size}, expected {expected} (lw_ticket_claims_init sets it)"
        )));
    }
    Ok(size)
}

/// Writes each field of `claims` that lies within its `size`, one by one, so that
/// padding is never read and a smaller (older) struct is never overrun.
///
/// # Safety
/// `out` is non-NULL, aligned, and has `size` writable bytes, `size` being what
/// `claims_size` accepted.
unsafe fn write_claims(out: *mut lw_ticket_claims, claims: &Claims) {
    // SAFETY: checked by the caller before.
    let size = unsafe { out.cast::<usize>().read() };
    let fits = |offset: usize, len: usize| offset + len <= size;
    if fits(offset_of!(lw_ticket_claims, backend_id), 8) {
        // SAFETY: the field lies within the `size` writable bytes.
        unsafe { (&raw mut (*out).backend_id).write(claims.backend_id) };
    }
    if fits(offset_of!(lw_ticket_claims, issued_unix), 8) {
        // SAFETY: the field lies within the `size` writable bytes.
        unsafe { (&raw mut (*out).issued_unix).write(claims.issued) };
    }
    if fits(offset_of!(lw_ticket_claims, expires_unix), 8) {
        // SAFETY: the field lies within the `size` writable bytes.
        unsafe { (&raw mut (*out).expires_unix).write(claims.expires) };
    }
    if fits(offset_of!(lw_ticket_claims, nonce), NONCE_LEN) {
        // SAFETY: the field lies within the `size` writable bytes.
        unsafe { (&raw mut (*out).nonce).write(claims.nonce) };
    }
}
