//! The boundary's own guarantees: panics caught, messages kept per thread, struct
//! layouts that can grow, and constants that agree with what they promise.

use std::ffi::CStr;
use std::mem::{offset_of, size_of};

use super::boundary::{self, Failure};
use super::codes::*;
use super::*;

fn message() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until the next call on this thread.
    unsafe { CStr::from_ptr(lw_last_error_message()) }.to_string_lossy().into_owned()
}

#[test]
fn a_panic_inside_an_entry_point_is_caught_and_reported() {
    let status = boundary::call(|| panic!("boom at {}", 42));
    assert_eq!(status, LW_E_PANIC);
    assert!(
        message().contains("boom at 42") && message().contains("caught at the C boundary"),
        "{}",
        message()
    );
    let status = boundary::call(|| std::panic::panic_any(7u8));
    assert_eq!(status, LW_E_PANIC);
    assert!(message().contains("no message"), "{}", message());
    // An accessor answers its fallback and leaves the reason.
    let value = boundary::access(17u64, || panic!("in an accessor"));
    assert_eq!(value, 17);
    assert!(message().contains("in an accessor"), "{}", message());
    // And the next call works as ever.
    assert_eq!(boundary::call(|| Ok(())), LW_OK);
    assert_eq!(message(), "");
}

#[test]
fn a_failure_sets_the_code_and_a_message_without_inner_nuls() {
    assert_eq!(boundary::call(|| Err(Failure::invalid("bad\0byte"))), LW_E_INVALID);
    assert_eq!(message(), "bad\\0byte");
    assert_eq!(boundary::call(|| Err(Failure::null("servers"))), LW_E_NULL);
    assert_eq!(message(), "servers is NULL");
}

#[test]
fn the_abi_version_is_the_sonames() {
    assert_eq!(LW_ABI_VERSION.to_string(), env!("LOADWISE_ABI_VERSION"));
}

#[test]
fn the_address_buffer_holds_the_longest_address() {
    let longest = format!("{}:65535", "a".repeat(loadwise_protocol::v2::HostName::MAX_LEN));
    assert_eq!(longest.len() + 1, LW_ADDR_LEN);
    assert_eq!(LW_TICKET_TEXT_LEN, loadwise_protocol::ticket::TEXT_LEN);
    assert_eq!(LW_NOT_REPORTED, loadwise_protocol::v2::NOT_REPORTED_U32);
}

#[test]
fn the_options_struct_has_no_padding_so_a_later_field_never_lands_in_it() {
    // Fields are appended at or past an older version's sizeof; no padding means
    // sizeof is exactly where the last field ends.
    let end = offset_of!(lw_agent_options, promise_lifetime_ms) + size_of::<u32>();
    assert_eq!(size_of::<lw_agent_options>(), end);
    assert_eq!(offset_of!(lw_agent_options, size), 0);
    assert_eq!(offset_of!(lw_ticket_claims, size), 0);
}
