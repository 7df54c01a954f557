//! The crossing between C and Rust: panics caught, the thread's last error kept, and
//! C pointers and strings read within bounds.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::codes::{LW_E_BUFFER, LW_E_INVALID, LW_E_NULL, LW_E_PANIC, LW_MAX_STRING_LEN, LW_OK};

/// Why a call failed: the code it returns and the message it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: c_int,
    pub message: String,
}

impl Failure {
    pub fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }

    /// A required pointer, `name`, was NULL.
    pub fn null(name: &str) -> Failure {
        Failure::new(LW_E_NULL, format!("{name} is NULL"))
    }

    /// The argument is unusable; `message` names it.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(LW_E_INVALID, message)
    }
}

thread_local! {
    /// The message of the last `int`-returning call on this thread.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// The empty string, for a thread whose storage is already torn down.
const EMPTY: &std::ffi::CStr = c"";

/// This thread's last error message, valid until the next call that sets it.
pub(crate) fn last_error_message() -> *const c_char {
    // The pointer stays valid while the CString is not replaced, which only a later
    // call on this same thread does.
    LAST_ERROR.try_with(|last| last.borrow().as_ptr()).unwrap_or(EMPTY.as_ptr())
}

fn set_last_error(message: &str) {
    // A NUL inside would cut the message short in C; show it instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // During thread teardown there is nowhere to keep it; the code still tells.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = text);
}

/// Runs `body`, turning a panic into a `Failure` with `LW_E_PANIC`.
fn catch<T>(body: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    // Nothing `body` touches is left for a later call in a torn state that matters:
    // shared state is behind mutexes whose poisoning is ignored on purpose.
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = panic_text(payload.as_ref());
        Err(Failure::new(LW_E_PANIC, format!("internal error (a panic, caught at the C boundary): {what}")))
    })
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (_, Some(text)) => text,
        _ => "no message",
    }
}

/// The body of an `int`-returning entry point: `LW_OK` or the failure's code, with
/// the last error message set either way.
pub(crate) fn call(body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    match catch(body) {
        Ok(()) => {
            set_last_error("");
            LW_OK
        }
        Err(failure) => {
            set_last_error(&failure.message);
            failure.code
        }
    }
}

/// The body of an accessor: its value, or `fallback` (NULL, 0) for a NULL argument
/// or a caught panic. Accessors leave the last error message alone, so it can be read
/// after them; only a panic sets it.
pub(crate) fn access<T>(fallback: T, body: impl FnOnce() -> Option<T>) -> T {
    match catch(|| Ok(body())) {
        Ok(value) => value.unwrap_or(fallback),
        Err(failure) => {
            set_last_error(&failure.message);
            fallback
        }
    }
}

/// Reads the C string `ptr`, the argument `name`, as UTF-8.
///
/// # Safety
/// `ptr` is NULL, or points to bytes readable up to and including a NUL, or to at
/// least `LW_MAX_STRING_LEN + 1` readable bytes.
pub(crate) unsafe fn string(ptr: *const c_char, name: &str) -> Result<String, Failure> {
    // SAFETY: the caller's promise, passed on.
    let bytes = unsafe { bytes_until_nul(ptr, name) }?;
    String::from_utf8(bytes.to_vec()).map_err(|error| {
        let at = error.utf8_error().valid_up_to();
        Failure::invalid(format!("{name} is not UTF-8 (invalid byte at offset {at})"))
    })
}

/// `string` for an argument where NULL means "not given".
///
/// # Safety
/// As for `string`.
pub(crate) unsafe fn optional_string(ptr: *const c_char, name: &str) -> Result<Option<String>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's promise, passed on.
    unsafe { string(ptr, name) }.map(Some)
}

/// The bytes before the NUL of `ptr`, at most `LW_MAX_STRING_LEN`.
///
/// # Safety
/// As for `string`.
unsafe fn bytes_until_nul<'a>(ptr: *const c_char, name: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    let start = ptr.cast::<u8>();
    let mut len = 0;
    loop {
        // SAFETY: no byte before `len` was a NUL, so byte `len` is still part of the
        // string (or of the LW_MAX_STRING_LEN + 1 readable bytes): within what the
        // caller promised readable.
        if unsafe { start.add(len).read() } == 0 {
            break;
        }
        if len == LW_MAX_STRING_LEN {
            return Err(Failure::invalid(format!("{name} is longer than {LW_MAX_STRING_LEN} bytes")));
        }
        len += 1;
    }
    // SAFETY: these `len` bytes were just read one by one, and C keeps them for the
    // duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(start, len) })
}

/// The `len` bytes at `ptr`, the argument `name`; NULL is allowed only with `len` 0.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if len > LW_MAX_STRING_LEN {
        return Err(Failure::invalid(format!("{name} is longer than {LW_MAX_STRING_LEN} bytes")));
    }
    if ptr.is_null() {
        return match len {
            0 => Ok(&[]),
            _ => Err(Failure::null(name)),
        };
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes; `len` is bounded.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `text` and a NUL to the `capacity` bytes at `out`, or fails with
/// `LW_E_BUFFER` (naming `capacity_name`) and writes nothing.
///
/// # Safety
/// `out` is NULL or points to `capacity` writable bytes.
pub(crate) unsafe fn write_string(
    text: &str,
    out: *mut c_char,
    capacity: usize,
    capacity_name: &str,
) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null("the output buffer"));
    }
    let needed = text.len() + 1;
    if needed > capacity {
        let message =
            format!("{capacity_name} is {capacity}, {needed} bytes are needed (\"{text}\" and a NUL)");
        return Err(Failure::new(LW_E_BUFFER, message));
    }
    // SAFETY: `out` has `capacity >= needed` writable bytes, and a fresh Rust string
    // cannot overlap the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out.cast::<u8>(), text.len());
        out.add(text.len()).write(0);
    }
    Ok(())
}

/// A shared reference to the object behind a handle, the argument `name`.
///
/// # Safety
/// `ptr` is NULL or a handle this library returned and that was not freed.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!("{name} is not a pointer this library returned")));
    }
    // SAFETY: a live handle from Box::into_raw, per the caller's promise.
    Ok(unsafe { &*ptr })
}

/// A struct the caller passes whose later versions append fields: `T` as this library
/// knows it, read from the caller's `size` bytes, which cover at least the first
/// version (`first_len` bytes). The fields a shorter struct lacks read as zero (their
/// documented "default"); bytes past `T` must be zero, as in [`struct_size`].
///
/// # Safety
/// As [`struct_size`]; and every field of `T` is valid as zero bytes.
pub(crate) unsafe fn read_versioned<T: Copy>(
    ptr: *const T,
    name: &str,
    first_len: usize,
) -> Result<T, Failure> {
    // SAFETY: the caller's promise.
    let size = unsafe { checked_size(ptr, name, first_len) }?;
    // A size between two versions' is no version's: a field cut in two.
    if size != first_len && size < std::mem::size_of::<T>() {
        let message =
            format!("{name}->size is {size}: neither the first version's ({first_len}) nor this one's");
        return Err(Failure::invalid(message));
    }
    // SAFETY: zero is valid for every field (the caller's promise); then at most
    // `size` readable bytes are copied over it, within `T`.
    let mut value: T = unsafe { std::mem::zeroed() };
    let len = size.min(std::mem::size_of::<T>());
    // SAFETY: `len` bytes are readable at `ptr` (within the caller's `size`) and
    // writable in `value` (within `T`), and the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&raw mut value).cast::<u8>(), len) };
    Ok(value)
}

/// The `size` a caller put first in a struct it passes, the argument `name`: checked
/// to cover at least this library's struct `T` (today's is the first version, all of
/// whose fields are required) and at most 4096 bytes, with any bytes past `T` zero
/// (fields of a later version, which this library would ignore).
///
/// # Safety
/// `ptr` is NULL or points to a `T` whose first field is a `size_t` and that has that
/// many readable bytes.
pub(crate) unsafe fn struct_size<T>(ptr: *const T, name: &str) -> Result<usize, Failure> {
    // SAFETY: the caller's promise.
    unsafe { checked_size(ptr, name, std::mem::size_of::<T>()) }
}

/// The caller's `size` of a struct `T` at `ptr`: at least `min_len` and at most 4096
/// bytes, with any bytes past `T` zero.
///
/// # Safety
/// As [`struct_size`].
unsafe fn checked_size<T>(ptr: *const T, name: &str, min_len: usize) -> Result<usize, Failure> {
    const MAX_STRUCT_LEN: usize = 4096;
    let known = std::mem::size_of::<T>();
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!("{name} is not aligned")));
    }
    // SAFETY: non-NULL and aligned; the caller promises the struct starts with a size_t.
    let size = unsafe { ptr.cast::<usize>().read() };
    if size < min_len || size > MAX_STRUCT_LEN {
        let expected = if min_len == known { known.to_string() } else { format!("{min_len} to {known}") };
        let message = format!(
            "{name}->size is {size}, expected {expected} (set it to sizeof the struct, as the header's init function does)"
        );
        return Err(Failure::invalid(message));
    }
    let bytes = ptr.cast::<u8>();
    for at in known..size {
        // SAFETY: `at < size`, and the caller promises `size` readable bytes.
        if unsafe { bytes.add(at).read() } != 0 {
            let message = format!(
                "{name} sets fields this library does not know (byte {at} of {size}): the library is older than the header the program was built with"
            );
            return Err(Failure::invalid(message));
        }
    }
    Ok(size)
}
