//! What the C ABI tests share: status codes as C sees them, C strings, and the
//! thread's last error message.

use std::ffi::{CStr, CString, c_int};

use loadwise::ffi::{lw_last_error_message, lw_status};

pub fn code(status: lw_status) -> c_int {
    status as c_int
}

pub fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

/// This thread's last error message.
pub fn message() -> String {
    // SAFETY: never NULL, NUL-terminated, valid until the next lw_* call here.
    unsafe { CStr::from_ptr(lw_last_error_message()) }.to_string_lossy().into_owned()
}
