//! Picks from C: ask the dispatchers of a comma-separated list for a backend, with
//! failover, and hand back its address (and, in v2, its id and ticket); or, with
//! `lw_connect`, also connect to it, reporting the backends that cannot be reached.

use std::ffi::{CString, c_char, c_int};
use std::net::IpAddr;
use std::time::Duration;

use loadwise_agent::MAX_SERVERS;
use loadwise_client::{
    ConnectError, ConnectOptions, Failover, FailoverConfig, FailoverError, PickError, SetupError, connect,
};
use loadwise_protocol::v2::{PickKey, Picked, ServiceName};

use super::boundary::{self, Failure};
use super::codes::{
    LW_DEFAULT_TIMEOUT_MS, LW_E_INVALID, LW_E_REFUSED, LW_E_RUNTIME, LW_E_TIMEOUT, LW_E_UNCONNECTED,
    LW_E_UNREACHABLE,
};

/// A backend a pick returned: its address, id, ticket and the dispatcher that chose
/// it. Opaque; read it with the `lw_picked_*` functions and free it with
/// `lw_picked_free`.
#[allow(non_camel_case_types)]
pub struct lw_picked {
    addr: CString,
    backend_id: u64,
    ticket: CString,
    dispatcher: CString,
}

/// Asks the dispatchers in `servers` for a backend and writes its address.
///
/// `servers` is a comma-separated list of `HOST:PORT` dispatcher replicas (at most 64);
/// they are asked in a random order, one at a time, until one answers, each for at
/// most 1 s and all together for at most `timeout_ms` (0 means
/// `LW_DEFAULT_TIMEOUT_MS`, 3 s). `service` NULL asks with the legacy login (the
/// dispatcher's default service); a name asks for a backend of that service with
/// protocol v2.
///
/// On success returns `LW_OK` and writes `HOST:PORT` (IPv6 in brackets) and a NUL to
/// `addr_out`; `LW_ADDR_LEN` bytes always suffice. If `addr_len` is too small, returns
/// `LW_E_BUFFER` and writes nothing. Otherwise `LW_E_REFUSED` (a dispatcher had no
/// backend), `LW_E_UNREACHABLE`, `LW_E_TIMEOUT`, `LW_E_INVALID` or `LW_E_NULL`, with
/// `lw_last_error_message()` saying why. Blocks the calling thread; safe to call from
/// several threads at once.
///
/// # Safety
/// `servers` and `service` are NULL or NUL-terminated strings; `addr_out` is NULL or
/// points to `addr_len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_pick(
    servers: *const c_char,
    service: *const c_char,
    timeout_ms: u32,
    addr_out: *mut c_char,
    addr_len: usize,
) -> c_int {
    boundary::call(|| {
        // SAFETY: the caller's promise for both strings.
        let request = unsafe { Request::read(servers, service, timeout_ms) }?;
        if addr_out.is_null() {
            return Err(Failure::null("addr_out"));
        }
        let picked = request.run()?;
        // SAFETY: non-NULL, with `addr_len` writable bytes per the caller's promise.
        unsafe {
            boundary::write_string(picked.addr.to_str().unwrap_or_default(), addr_out, addr_len, "addr_len")
        }
    })
}

/// `lw_pick`, returning the whole answer: on success `*out` is a new `lw_picked`
/// that the caller frees with `lw_picked_free`; on failure `*out` is NULL.
///
/// # Safety
/// `servers` and `service` are NULL or NUL-terminated strings; `out` is NULL or points
/// to a writable `lw_picked *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_pick_ex(
    servers: *const c_char,
    service: *const c_char,
    timeout_ms: u32,
    out: *mut *mut lw_picked,
) -> c_int {
    boundary::call(|| {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        // SAFETY: non-NULL, and the caller promises a writable pointer.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller's promise for both strings.
        let picked = unsafe { Request::read(servers, service, timeout_ms) }?.run()?;
        // SAFETY: as above; ownership of the box passes to the caller.
        unsafe { out.write(Box::into_raw(Box::new(picked))) };
        Ok(())
    })
}

/// How `lw_pick_with` asks. Zero is the default of every field but `size` and
/// `servers`; `lw_pick_options_init` sets `size` and zeroes the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct lw_pick_options {
    /// `sizeof(lw_pick_options)` as the caller's header knows it.
    pub size: usize,
    /// The dispatchers, comma-separated `HOST:PORT` (at most 64), as for `lw_pick`.
    pub servers: *const c_char,
    /// The service a backend is wanted for (protocol v2); NULL for a legacy login.
    pub service: *const c_char,
    /// All attempts together, milliseconds; 0 for `LW_DEFAULT_TIMEOUT_MS`.
    pub timeout_ms: u32,
    /// An affinity key, `key_len` bytes (at most `LW_MAX_KEY_LEN`): the picks with the
    /// same key go to the same backend of `service` while it is ready and within its
    /// load bound. NULL (with `key_len` 0) for none; a key needs a `service`.
    pub key: *const u8,
    /// The length of `key`.
    pub key_len: usize,
}

/// `lw_pick_ex` with its arguments in `options`, and an affinity key: on success
/// `*out` is a new `lw_picked` that the caller frees with `lw_picked_free`; on failure
/// `*out` is NULL, and the code is as for `lw_pick`.
///
/// # Safety
/// `options` is NULL or points to an `lw_pick_options` of `options->size` readable
/// bytes whose strings are NULL or NUL-terminated and whose `key` has `key_len`
/// readable bytes; `out` is NULL or points to a writable `lw_picked *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_pick_with(options: *const lw_pick_options, out: *mut *mut lw_picked) -> c_int {
    boundary::call(|| {
        if out.is_null() || !out.is_aligned() {
            return Err(Failure::null("out"));
        }
        // SAFETY: non-NULL and aligned, writable per the caller's promise.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller's promise.
        unsafe { boundary::struct_size(options, "options") }?;
        // SAFETY: checked non-NULL, aligned and at least this struct's size.
        let options = unsafe { options.read() };
        // SAFETY: the caller's promise for the strings.
        let mut request = unsafe { Request::read(options.servers, options.service, options.timeout_ms) }?;
        // SAFETY: the caller's promise for the key.
        let key = unsafe { boundary::bytes(options.key, options.key_len, "options->key") }?;
        request.key =
            PickKey::new(key).map_err(|error| Failure::invalid(format!("options->key: {error}")))?;
        if !request.key.is_empty() && request.service.is_none() {
            return Err(Failure::invalid(
                "options->key: a key needs options->service (legacy logins have none)",
            ));
        }
        let picked = request.run()?;
        // SAFETY: as above; ownership of the box passes to the caller.
        unsafe { out.write(Box::into_raw(Box::new(picked))) };
        Ok(())
    })
}

/// How `lw_connect` asks and connects. Zero is the default of every field but `size`,
/// `servers` and `service`; `lw_connect_options_init` sets `size` and zeroes the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct lw_connect_options {
    /// `sizeof(lw_connect_options)` as the caller's header knows it.
    pub size: usize,
    /// The dispatchers, comma-separated `HOST:PORT` (at most 64). The sequence starts
    /// at one of them and moves to the next only if one cannot be reached.
    pub servers: *const c_char,
    /// The service a backend is wanted for (protocol v2); required.
    pub service: *const c_char,
    /// An affinity key, `key_len` bytes (at most `LW_MAX_KEY_LEN`); NULL for none.
    pub key: *const u8,
    /// The length of `key`.
    pub key_len: usize,
    /// The local address (an IP, no port) the dispatcher connection comes from: the
    /// dispatcher knows clients by their source address. NULL lets the system choose.
    pub bind: *const c_char,
    /// The longest wait for one backend's connection, milliseconds, up to 60000; 0
    /// for 1000.
    pub connect_timeout_ms: u32,
    /// The most picks, 1 to 16; 0 for 3.
    pub attempts: u32,
    /// The longest wait for one dispatcher exchange (connecting, or a pick and its
    /// reply), milliseconds, up to 60000; 0 for 1000.
    pub pick_timeout_ms: u32,
}

/// Asks a dispatcher for a backend of `options->service` and connects to it: a backend
/// not connected to within `connect_timeout_ms` is reported to the dispatcher (a v2
/// FailureReport, on the same dispatcher connection) and another is asked for, up to
/// `attempts` picks. A backend named again after it failed is passed over (unless the
/// pick before was passed over too).
///
/// On success returns `LW_OK`, writes the connected socket (blocking, no option
/// set, owned by the caller, who closes it) to `*fd_out`, and a new `lw_picked` (the
/// backend's address, id and ticket, to show it) to `*picked_out`, freed with
/// `lw_picked_free`. Otherwise `*fd_out` is -1 and `*picked_out` NULL, and the code is
/// `LW_E_UNCONNECTED` (every backend named failed), `LW_E_REFUSED` (a dispatcher had no
/// backend), `LW_E_UNREACHABLE` (no dispatcher answered), `LW_E_INVALID` or
/// `LW_E_NULL`, with `lw_last_error_message()` listing each attempt. Blocks the calling
/// thread for at most one `pick_timeout_ms` per dispatcher plus `attempts` ×
/// (`pick_timeout_ms` + `connect_timeout_ms`).
///
/// # Safety
/// `options` is NULL or points to an `lw_connect_options` of `options->size` readable
/// bytes whose strings are NULL or NUL-terminated and whose `key` has `key_len`
/// readable bytes; `fd_out` is NULL or points to a writable `int`; `picked_out` is NULL
/// or points to a writable `lw_picked *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_connect(
    options: *const lw_connect_options,
    fd_out: *mut c_int,
    picked_out: *mut *mut lw_picked,
) -> c_int {
    boundary::call(|| {
        if fd_out.is_null() || !fd_out.is_aligned() {
            return Err(Failure::null("fd_out"));
        }
        if picked_out.is_null() || !picked_out.is_aligned() {
            return Err(Failure::null("picked_out"));
        }
        // SAFETY: both non-NULL and aligned, writable per the caller's promise.
        unsafe {
            fd_out.write(-1);
            picked_out.write(std::ptr::null_mut());
        }
        // SAFETY: the caller's promise.
        unsafe { boundary::struct_size(options, "options") }?;
        // SAFETY: checked non-NULL, aligned and at least this struct's size.
        let options = unsafe { options.read() };
        // SAFETY: the caller's promise for the strings and the key.
        let (servers, service, connect) = unsafe { read_connect(&options) }?;
        let (fd, picked) = run_connect(&servers, &service, &connect)?;
        // SAFETY: as above; ownership of the socket and the box passes to the caller.
        unsafe {
            fd_out.write(fd);
            picked_out.write(Box::into_raw(Box::new(picked)));
        }
        Ok(())
    })
}

/// The dispatchers, the service and the options of an `lw_connect_options`.
///
/// # Safety
/// The strings of `options` are NULL or NUL-terminated; its `key` has `key_len`
/// readable bytes.
unsafe fn read_connect(
    options: &lw_connect_options,
) -> Result<(Vec<String>, ServiceName, ConnectOptions), Failure> {
    // SAFETY: the caller's promise.
    let servers = parse_servers(&unsafe { boundary::string(options.servers, "options->servers") }?)?;
    // SAFETY: the caller's promise.
    let service = unsafe { boundary::string(options.service, "options->service") }?;
    let service =
        ServiceName::new(&service).map_err(|error| Failure::invalid(format!("options->service: {error}")))?;
    // SAFETY: the caller's promise.
    let key = unsafe { boundary::bytes(options.key, options.key_len, "options->key") }?;
    let key = PickKey::new(key).map_err(|error| Failure::invalid(format!("options->key: {error}")))?;
    // SAFETY: the caller's promise.
    let bind = match unsafe { boundary::optional_string(options.bind, "options->bind") }? {
        None => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|error| {
            Failure::invalid(format!("options->bind: {text:?} is not an IP address: {error}"))
        })?),
    };
    let millis = |value: u32, default: Duration| match value {
        0 => default,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let defaults = ConnectOptions::default();
    let connect = ConnectOptions {
        connect_timeout: millis(options.connect_timeout_ms, defaults.connect_timeout),
        attempts: if options.attempts == 0 { defaults.attempts } else { options.attempts },
        pick_timeout: millis(options.pick_timeout_ms, defaults.pick_timeout),
        key,
        tls: None,
        bind,
    };
    connect.validate().map_err(|error| {
        Failure::invalid(format!("options->{}: {}", field_of(error.setting), error.reason))
    })?;
    Ok((servers, service, connect))
}

/// The `lw_connect_options` field of a setting `ConnectOptions::validate` names.
fn field_of(setting: &str) -> &str {
    match setting {
        "connect-timeout" => "connect_timeout_ms",
        "attempt-timeout" => "pick_timeout_ms",
        other => other,
    }
}

/// Connects on a runtime of this call's own, on this thread; hands back the socket
/// as a blocking descriptor.
fn run_connect(
    servers: &[String],
    service: &ServiceName,
    options: &ConnectOptions,
) -> Result<(c_int, lw_picked), Failure> {
    use std::os::fd::IntoRawFd as _;
    if tokio::runtime::Handle::try_current().is_ok() {
        let message =
            "lw_connect cannot block inside an async runtime: from Rust, use loadwise::client::connect";
        return Err(Failure::invalid(message));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Failure::new(LW_E_RUNTIME, format!("cannot start an I/O runtime: {error}")))?;
    let connected = runtime.block_on(connect(servers, service, options)).map_err(|error| {
        let code = match &error {
            ConnectError::Config(_) => LW_E_INVALID,
            ConnectError::Declined { .. } => LW_E_REFUSED,
            ConnectError::Unanswered { .. } => LW_E_UNREACHABLE,
            ConnectError::Exhausted { .. } => LW_E_UNCONNECTED,
        };
        Failure::new(code, error.to_string())
    })?;
    let picked = v2(connected.backend, &connected.dispatcher);
    let stream = connected
        .stream
        .into_std()
        .and_then(|stream| stream.set_nonblocking(false).map(|()| stream))
        .map_err(|error| Failure::new(LW_E_RUNTIME, format!("cannot hand over the connection: {error}")))?;
    Ok((stream.into_raw_fd(), picked))
}

/// The backend's address, `HOST:PORT`: owned by `picked`, valid until it is freed.
/// NULL if `picked` is NULL.
///
/// # Safety
/// `picked` is NULL or an `lw_picked` from `lw_pick_ex` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_picked_addr(picked: *const lw_picked) -> *const c_char {
    // SAFETY: the caller's promise, passed on.
    unsafe { read(picked, std::ptr::null(), |p| p.addr.as_ptr()) }
}

/// The backend's id (what its tickets are bound to); 0 for a legacy pick, which
/// carries none, or if `picked` is NULL.
///
/// # Safety
/// As for `lw_picked_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_picked_backend_id(picked: *const lw_picked) -> u64 {
    // SAFETY: the caller's promise, passed on.
    unsafe { read(picked, 0, |p| p.backend_id) }
}

/// The admission ticket as hex text (`LW_TICKET_TEXT_LEN` digits), to hand to the
/// backend; the empty string when the dispatcher signs none (a legacy pick, or a
/// dispatcher without a secret). Owned by `picked`; NULL if `picked` is NULL.
///
/// # Safety
/// As for `lw_picked_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_picked_ticket(picked: *const lw_picked) -> *const c_char {
    // SAFETY: the caller's promise, passed on.
    unsafe { read(picked, std::ptr::null(), |p| p.ticket.as_ptr()) }
}

/// The dispatcher that answered, as given in `servers`. Owned by `picked`; NULL if
/// `picked` is NULL.
///
/// # Safety
/// As for `lw_picked_addr`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_picked_dispatcher(picked: *const lw_picked) -> *const c_char {
    // SAFETY: the caller's promise, passed on.
    unsafe { read(picked, std::ptr::null(), |p| p.dispatcher.as_ptr()) }
}

/// Frees an `lw_picked`; NULL is ignored.
///
/// # Safety
/// `picked` is NULL or an `lw_picked` from `lw_pick_ex` not yet freed; it must not be
/// used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lw_picked_free(picked: *mut lw_picked) {
    boundary::access((), || {
        if !picked.is_null() && picked.is_aligned() {
            // SAFETY: a box this library leaked in lw_pick_ex, freed once per the
            // caller's promise.
            drop(unsafe { Box::from_raw(picked) });
        }
        Some(())
    })
}

/// A field of `picked`, or `fallback` when it is NULL.
///
/// # Safety
/// `picked` is NULL or an `lw_picked` from `lw_pick_ex` not yet freed.
unsafe fn read<T>(picked: *const lw_picked, fallback: T, field: impl FnOnce(&lw_picked) -> T) -> T {
    boundary::access(fallback, || {
        // SAFETY: the caller's promise.
        let picked = unsafe { boundary::handle(picked, "picked") }.ok()?;
        Some(field(picked))
    })
}

/// What to ask and of whom, read from the C arguments.
struct Request {
    servers: Vec<String>,
    service: Option<ServiceName>,
    /// Empty for none.
    key: PickKey,
    deadline: Duration,
}

impl Request {
    /// # Safety
    /// `servers` and `service` are NULL or NUL-terminated strings.
    unsafe fn read(
        servers: *const c_char,
        service: *const c_char,
        timeout_ms: u32,
    ) -> Result<Request, Failure> {
        // SAFETY: the caller's promise.
        let servers = parse_servers(&unsafe { boundary::string(servers, "servers") }?)?;
        // SAFETY: the caller's promise.
        let service = match unsafe { boundary::optional_string(service, "service") }? {
            None => None,
            Some(name) => {
                Some(ServiceName::new(&name).map_err(|error| Failure::invalid(format!("service: {error}")))?)
            }
        };
        let timeout_ms = if timeout_ms == 0 { LW_DEFAULT_TIMEOUT_MS } else { timeout_ms };
        let deadline = Duration::from_millis(u64::from(timeout_ms));
        Ok(Request { servers, service, key: PickKey::NONE, deadline })
    }

    /// Asks the dispatchers on a runtime of this call's own, on this thread.
    fn run(self) -> Result<lw_picked, Failure> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would stall (and tokio refuses) the caller's own runtime.
            let message = "lw_pick cannot block inside an async runtime: from Rust, use loadwise::client";
            return Err(Failure::invalid(message));
        }
        let defaults = FailoverConfig::default();
        let config = FailoverConfig {
            attempt_timeout: defaults.attempt_timeout.min(self.deadline),
            deadline: self.deadline,
            ..defaults
        };
        let failover = Failover::new(self.servers, config).map_err(|error| match error {
            SetupError::Config(_) => Failure::invalid(error.to_string()),
            SetupError::NoRandomness(_) => Failure::new(LW_E_RUNTIME, error.to_string()),
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| Failure::new(LW_E_RUNTIME, format!("cannot start an I/O runtime: {error}")))?;
        let picked = match &self.service {
            None => {
                runtime.block_on(failover.pick()).map(|answer| legacy(answer.backend, &answer.dispatcher))
            }
            Some(service) => runtime
                .block_on(failover.pick_keyed(service, &self.key))
                .map(|answer| v2(answer.backend, &answer.dispatcher)),
        };
        picked.map_err(|error| failover_failure(&error))
    }
}

/// Splits `HOST:PORT,HOST:PORT,...`, refusing empty entries and a missing port.
pub(crate) fn parse_servers(text: &str) -> Result<Vec<String>, Failure> {
    let servers: Vec<String> = text.split(',').map(|server| server.trim().to_owned()).collect();
    for server in &servers {
        let port = server.rsplit_once(':').map(|(_, port)| port);
        if !port.is_some_and(|port| port.parse::<u16>().is_ok_and(|port| port != 0)) {
            return Err(Failure::invalid(format!(
                "servers: {server:?} in {text:?} is not HOST:PORT (a comma-separated list such as \"10.0.0.1:8523,10.0.0.2:8523\")"
            )));
        }
    }
    if servers.len() > MAX_SERVERS {
        return Err(Failure::invalid(format!(
            "servers: {} dispatchers, at most {MAX_SERVERS}",
            servers.len()
        )));
    }
    Ok(servers)
}

fn legacy(backend: loadwise_client::Assigned, dispatcher: &str) -> lw_picked {
    lw_picked {
        addr: c_string(backend.to_string()),
        backend_id: 0,
        ticket: CString::default(),
        dispatcher: c_string(dispatcher),
    }
}

fn v2(backend: Picked, dispatcher: &str) -> lw_picked {
    let ticket: String = backend.ticket.iter().map(|byte| format!("{byte:02x}")).collect();
    lw_picked {
        addr: c_string(backend.endpoint.to_string()),
        backend_id: backend.backend_id,
        ticket: c_string(ticket),
        dispatcher: c_string(dispatcher),
    }
}

/// Addresses, hex and dispatcher names from the caller's own string hold no NUL; an
/// empty string is the safe answer should one ever.
fn c_string(text: impl Into<Vec<u8>>) -> CString {
    CString::new(text).unwrap_or_default()
}

/// The code for why no dispatcher gave a backend: a refusal says the dispatchers work
/// and the pool is empty; timeouts and the deadline say time ran out.
fn failover_failure(error: &FailoverError) -> Failure {
    let timed_out = error.deadline_reached
        || (!error.attempts.is_empty()
            && error.attempts.iter().all(|attempt| matches!(attempt.error, PickError::Timeout { .. })));
    let code = if error.any_refusal() {
        LW_E_REFUSED
    } else if timed_out {
        LW_E_TIMEOUT
    } else {
        LW_E_UNREACHABLE
    };
    Failure::new(code, error.to_string())
}
