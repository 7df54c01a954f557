//! The C ABI called as C calls it, against a real dispatcher on loopback: NULL
//! pointers, short buffers, invalid UTF-8 and overlong strings, grown structs, picks,
//! ticket checks and an embedded agent's setters as the dispatcher sees them.
//!
//! Every `unsafe` call sits in a small wrapper below that says why it is sound; the
//! tests call the wrappers.

use std::ffi::{CStr, CString, c_char, c_int};
use std::mem::{offset_of, size_of};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

mod common;

use common::{c, code, message};
use loadwise::ffi::*;
use loadwise::protocol::v2::ServiceName;
use loadwise::protocol::v2::auth::Secret;
use loadwise::ticket::{self, Claims};
use loadwise_server::{ConnectionLimits, ServerConfig};
use loadwise_testkit::{DEADLINE, TestServer};
use tokio::runtime::Runtime;

const SECRET: &[u8] = b"a secret of 32 bytes, for tests!";

/// A dispatcher on 127.0.0.1:0, on a runtime of its own so that the test's thread
/// calls the C ABI from outside any runtime, as a C program does.
struct Dispatcher {
    server: TestServer,
    runtime: Runtime,
}

/// What the dispatcher holds of a v2 backend's latest heartbeat.
struct Seen {
    connections: Option<f64>,
    metrics: Vec<(String, f64)>,
    state: &'static str,
}

impl Dispatcher {
    fn start(secret: Option<&[u8]>) -> Dispatcher {
        let runtime = Runtime::new().unwrap();
        let connection = ConnectionLimits {
            secret: secret.map(|secret| Secret::new(secret).unwrap()),
            ..ConnectionLimits::default()
        };
        let config = ServerConfig { connection, ..ServerConfig::default() };
        let server = runtime.block_on(TestServer::start_with(config));
        Dispatcher { server, runtime }
    }

    fn addr(&self) -> String {
        self.server.addr.to_string()
    }

    /// Waits until what the dispatcher holds of a v2 backend's latest heartbeat satisfies `ok`, or none is there
    /// when `ok` is `None`-tolerant; fails after the deadline.
    fn wait_for(&self, what: &str, ok: impl Fn(Option<&Seen>) -> bool) {
        let end = Instant::now() + DEADLINE;
        loop {
            let backends = self.server.dispatcher.backends();
            let seen = backends.iter().find_map(|(_, backend)| {
                backend.v2.as_ref().map(|v2| Seen {
                    connections: v2.metrics.connections,
                    metrics: v2.metrics.custom.clone(),
                    state: v2.state.name(),
                })
            });
            if ok(seen.as_ref()) {
                return;
            }
            assert!(Instant::now() < end, "no {what} within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `lw_pick` into `buffer`, telling the library it has `len` bytes.
fn pick(servers: &[u8], service: Option<&[u8]>, buffer: &mut [u8], len: usize) -> c_int {
    assert!(len <= buffer.len());
    let servers = CString::new(servers).unwrap();
    let service = service.map(|service| CString::new(service).unwrap());
    let service_ptr = service.as_ref().map_or(null(), |service| service.as_ptr());
    // SAFETY: NUL-terminated strings; `buffer` has at least `len` writable bytes.
    unsafe { lw_pick(servers.as_ptr(), service_ptr, 2000, buffer.as_mut_ptr().cast(), len) }
}

/// The owned result of `lw_pick_ex`.
#[derive(Debug)]
struct PickedOwned {
    addr: String,
    backend_id: u64,
    ticket: String,
    dispatcher: String,
}

fn pick_ex(servers: &str, service: Option<&str>) -> Result<PickedOwned, (c_int, String)> {
    let servers = c(servers);
    let service = service.map(c);
    let service_ptr = service.as_ref().map_or(null(), |service| service.as_ptr());
    let mut picked: *mut lw_picked = null_mut();
    // SAFETY: NUL-terminated strings and a writable out pointer.
    let status = unsafe { lw_pick_ex(servers.as_ptr(), service_ptr, 2000, &mut picked) };
    if status != code(lw_status::LW_OK) {
        assert!(picked.is_null(), "a failed pick leaves *out NULL");
        return Err((status, message()));
    }
    let text = |ptr: *const c_char| {
        // SAFETY: the accessors return strings owned by `picked`, alive until it is freed.
        unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned()
    };
    // SAFETY: `picked` is live until the free below, which happens once.
    let owned = unsafe {
        PickedOwned {
            addr: text(lw_picked_addr(picked)),
            backend_id: lw_picked_backend_id(picked),
            ticket: text(lw_picked_ticket(picked)),
            dispatcher: text(lw_picked_dispatcher(picked)),
        }
    };
    // SAFETY: freed once, not used afterwards.
    unsafe { lw_picked_free(picked) };
    Ok(owned)
}

fn verify_at(
    secret: &[u8],
    ticket: &[u8],
    service: Option<&str>,
    backend_id: u64,
    now: u64,
    claims: *mut lw_ticket_claims,
) -> c_int {
    let ticket = CString::new(ticket).unwrap();
    let service = service.map(c);
    let service_ptr = service.as_ref().map_or(null(), |service| service.as_ptr());
    // SAFETY: `secret` has its length in bytes; strings NUL-terminated; `claims` is
    // NULL or a writable struct of its `size`, as each caller sets up.
    unsafe {
        lw_ticket_verify_at(
            secret.as_ptr(),
            secret.len(),
            ticket.as_ptr(),
            service_ptr,
            backend_id,
            now,
            claims,
        )
    }
}

fn claims_init() -> lw_ticket_claims {
    lw_ticket_claims {
        size: size_of::<lw_ticket_claims>(),
        backend_id: 0,
        issued_unix: 0,
        expires_unix: 0,
        nonce: [0; 16],
    }
}

/// The options of an agent for `servers`, advertising `advertise`, every other
/// field zero (its default), as `lw_agent_options_init` leaves them.
struct Options {
    servers: CString,
    advertise: CString,
    service: Option<CString>,
    secret: Option<Vec<u8>>,
    raw: lw_agent_options,
}

impl Options {
    fn new(servers: &str, advertise: &str) -> Options {
        let raw = lw_agent_options {
            size: size_of::<lw_agent_options>(),
            servers: null(),
            advertise: null(),
            service: null(),
            secret: null(),
            secret_len: 0,
            backend_id: 0,
            interval_ms: 0,
            connect_timeout_ms: 0,
            weight: 0,
            protocol: 0,
            capacity: 0,
            promise_lifetime_ms: 0,
        };
        Options { servers: c(servers), advertise: c(advertise), service: None, secret: None, raw }
    }

    /// The C struct, pointing into `self`.
    fn raw(&self) -> lw_agent_options {
        let secret = self.secret.as_deref().unwrap_or_default();
        lw_agent_options {
            servers: self.servers.as_ptr(),
            advertise: self.advertise.as_ptr(),
            service: self.service.as_ref().map_or(null(), |service| service.as_ptr()),
            secret: self.secret.as_ref().map_or(null(), |_| secret.as_ptr()),
            secret_len: secret.len(),
            ..self.raw
        }
    }
}

/// Starts an agent from `options` as given (pointers and all).
fn start_raw(options: *const lw_agent_options) -> Result<*mut lw_agent, (c_int, String)> {
    let mut agent: *mut lw_agent = null_mut();
    // SAFETY: `options` is NULL or a live struct of its `size` with live strings.
    let status = unsafe { lw_agent_start(options, &mut agent) };
    match status == code(lw_status::LW_OK) {
        true => Ok(agent),
        false => {
            assert!(agent.is_null(), "a failed start leaves *out NULL");
            Err((status, message()))
        }
    }
}

fn start(options: &Options) -> Result<*mut lw_agent, (c_int, String)> {
    let raw = options.raw();
    start_raw(&raw)
}

/// An agent's handle, stopped and freed at the end of the test whatever happens.
struct Agent(*mut lw_agent);

impl Agent {
    fn id(&self) -> u64 {
        // SAFETY: live until dropped.
        unsafe { lw_agent_backend_id(self.0) }
    }

    fn metric(&self, name: &[u8], value: f64) -> c_int {
        let name = CString::new(name).unwrap();
        // SAFETY: live agent, NUL-terminated name.
        unsafe { lw_agent_set_metric(self.0, name.as_ptr(), value) }
    }

    fn remove_metric(&self, name: &str) -> c_int {
        let name = c(name);
        // SAFETY: live agent, NUL-terminated name.
        unsafe { lw_agent_remove_metric(self.0, name.as_ptr()) }
    }

    fn connections(&self, count: u32) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_set_connections(self.0, count) }
    }

    fn draining(&self, draining: bool) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_set_draining(self.0, draining) }
    }

    fn healthy(&self, healthy: bool) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_set_healthy(self.0, healthy) }
    }

    fn arrive(&self) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_arrive(self.0) }
    }

    fn leave(&self) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_leave(self.0) }
    }

    fn stop(&self) -> c_int {
        // SAFETY: live agent.
        unsafe { lw_agent_stop(self.0) }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: freed once, here.
        unsafe { lw_agent_free(self.0) };
    }
}

#[test]
fn the_version_and_the_abi_version_are_the_crates() {
    // SAFETY: a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(lw_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(lw_abi_version(), LW_ABI_VERSION);
}

#[test]
fn null_pointers_are_refused_with_a_message_naming_them() {
    let null_code = code(lw_status::LW_E_NULL);
    let servers = c("127.0.0.1:1");
    let mut buffer = [0u8; 64];
    // SAFETY (every call in this test): each pointer is NULL or valid; NULLs are the point.
    unsafe {
        assert_eq!(lw_pick(null(), null(), 0, buffer.as_mut_ptr().cast(), 64), null_code);
        assert!(message().contains("servers"), "{}", message());
        assert_eq!(lw_pick(servers.as_ptr(), null(), 0, null_mut(), 0), null_code);
        assert!(message().contains("addr_out"), "{}", message());
        assert_eq!(lw_pick_ex(servers.as_ptr(), null(), 0, null_mut()), null_code);
        assert_eq!(lw_ticket_verify(null(), 0, null(), null(), 1, null_mut()), null_code);
        assert!(message().contains("secret"), "{}", message());
        assert_eq!(lw_ticket_verify(SECRET.as_ptr(), SECRET.len(), null(), null(), 1, null_mut()), null_code);
        assert!(message().contains("ticket"), "{}", message());
        let mut len = 0usize;
        assert_eq!(lw_secret_read_file(null(), buffer.as_mut_ptr(), 64, &mut len), null_code);
        assert_eq!(lw_secret_read_file(servers.as_ptr(), null_mut(), 64, &mut len), null_code);
        assert_eq!(lw_secret_read_file(servers.as_ptr(), buffer.as_mut_ptr(), 64, null_mut()), null_code);
        let mut agent = null_mut();
        assert_eq!(lw_agent_start(null(), &mut agent), null_code);
        let owner = Options::new("127.0.0.1:1", "127.0.0.1:7000");
        let options = owner.raw();
        assert_eq!(lw_agent_start(&options, null_mut()), null_code);
        let no_servers = lw_agent_options { servers: null(), ..options };
        assert_eq!(lw_agent_start(&no_servers, &mut agent), null_code);
        assert!(message().contains("options->servers"), "{}", message());
        let no_advertise = lw_agent_options { advertise: null(), ..options };
        assert_eq!(lw_agent_start(&no_advertise, &mut agent), null_code);
        assert!(message().contains("options->advertise"), "{}", message());
        let secret_without_bytes = lw_agent_options { secret: null(), secret_len: 16, ..options };
        // A NULL secret means none; its length is then ignored.
        assert_eq!(lw_agent_start(&secret_without_bytes, &mut agent), 0, "{}", message());
        lw_agent_free(agent);
        let name = c("queue");
        assert_eq!(lw_agent_set_metric(null(), name.as_ptr(), 1.0), null_code);
        assert_eq!(lw_agent_remove_metric(null(), name.as_ptr()), null_code);
        assert_eq!(lw_agent_set_connections(null(), 1), null_code);
        assert_eq!(lw_agent_set_draining(null(), true), null_code);
        assert_eq!(lw_agent_set_healthy(null(), true), null_code);
        assert_eq!(lw_agent_stop(null_mut()), null_code);
        assert_eq!(lw_agent_backend_id(null()), 0);
        assert!(lw_picked_addr(null()).is_null());
        assert!(lw_picked_ticket(null()).is_null());
        assert!(lw_picked_dispatcher(null()).is_null());
        assert_eq!(lw_picked_backend_id(null()), 0);
        lw_picked_free(null_mut());
        lw_agent_free(null_mut());
    }
}

#[test]
fn a_short_address_buffer_gets_lw_e_buffer_and_nothing_written() {
    let dispatcher = Dispatcher::start(None);
    let _backend = dispatcher.runtime.block_on(dispatcher.server.register(20, "10.0.0.2", 1002));
    let servers = dispatcher.addr();
    let wanted = b"10.0.0.2:1002\0";
    for len in [0, 1, wanted.len() - 1] {
        let mut buffer = [0xaau8; 32];
        assert_eq!(
            pick(servers.as_bytes(), None, &mut buffer, len),
            code(lw_status::LW_E_BUFFER),
            "addr_len {len}"
        );
        assert_eq!(buffer, [0xaa; 32], "addr_len {len}: nothing written");
        assert!(message().contains(&format!("addr_len is {len}, 14 bytes are needed")), "{}", message());
    }
    let mut buffer = [0xaau8; 32];
    assert_eq!(
        pick(servers.as_bytes(), None, &mut buffer, wanted.len()),
        code(lw_status::LW_OK),
        "{}",
        message()
    );
    assert_eq!(&buffer[..wanted.len()], wanted);
    assert_eq!(buffer[wanted.len()..], [0xaa; 32 - 14], "nothing past the NUL");
    assert_eq!(message(), "", "success clears the message");
    let legacy = pick_ex(&servers, None).unwrap();
    assert_eq!((legacy.addr.as_str(), legacy.backend_id, legacy.ticket.as_str()), ("10.0.0.2:1002", 0, ""));
    assert_eq!(legacy.dispatcher, servers);
}

#[test]
fn invalid_utf8_overlong_strings_and_bad_lists_are_refused() {
    let invalid = code(lw_status::LW_E_INVALID);
    let mut buffer = [0u8; LW_ADDR_LEN];
    assert_eq!(pick(b"127.0.0.1:1\xff", None, &mut buffer, LW_ADDR_LEN), invalid);
    assert!(message().contains("servers is not UTF-8 (invalid byte at offset 11)"), "{}", message());
    assert_eq!(pick(b"127.0.0.1:1", Some(b"g\xc3"), &mut buffer, LW_ADDR_LEN), invalid);
    assert!(message().contains("service is not UTF-8"), "{}", message());
    let overlong = vec![b'a'; LW_MAX_STRING_LEN + 1];
    assert_eq!(pick(&overlong, None, &mut buffer, LW_ADDR_LEN), invalid);
    assert!(
        message().contains(&format!("servers is longer than {LW_MAX_STRING_LEN} bytes")),
        "{}",
        message()
    );
    for bad in ["", "127.0.0.1", "127.0.0.1:1,,127.0.0.1:2", "127.0.0.1:0", "h:70000"] {
        assert_eq!(pick(bad.as_bytes(), None, &mut buffer, LW_ADDR_LEN), invalid, "{bad:?}");
        assert!(message().starts_with("servers:"), "{bad:?}: {}", message());
    }
    let many: Vec<String> = (0..65).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect();
    assert_eq!(pick(many.join(",").as_bytes(), None, &mut buffer, LW_ADDR_LEN), invalid);
    assert_eq!(pick(b"127.0.0.1:1", Some(b"no spaces"), &mut buffer, LW_ADDR_LEN), invalid);
    assert!(message().starts_with("service:"), "{}", message());
    assert_eq!(verify_at(SECRET, b"\xfe\xff", None, 1, 0, null_mut()), invalid);
    assert!(message().contains("ticket is not UTF-8"), "{}", message());
    let short_secret = b"too short";
    assert_eq!(verify_at(short_secret, b"00", None, 1, 0, null_mut()), invalid);
    assert!(message().contains("at least 16 bytes"), "{}", message());
}

#[test]
fn picks_fail_with_codes_that_tell_refusal_from_silence() {
    let dispatcher = Dispatcher::start(None);
    let err = pick_ex(&dispatcher.addr(), None).unwrap_err();
    assert_eq!(err.0, code(lw_status::LW_E_REFUSED), "{}", err.1);
    let err = pick_ex(&dispatcher.addr(), Some("nobody-serves-this")).unwrap_err();
    assert_eq!(err.0, code(lw_status::LW_E_REFUSED), "{}", err.1);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = pick_ex(&closed.to_string(), None).unwrap_err();
    assert_eq!(err.0, code(lw_status::LW_E_UNREACHABLE), "{}", err.1);
    assert!(err.1.contains(&closed.to_string()), "the message names the dispatcher: {}", err.1);
    // One replica down, one answering: failover finds the backend's refusal.
    let both = format!("{closed},{}", dispatcher.addr());
    assert_eq!(pick_ex(&both, None).unwrap_err().0, code(lw_status::LW_E_REFUSED));
}

#[test]
fn tickets_verify_and_forged_mismatched_or_expired_ones_are_refused() {
    let service = ServiceName::new("game").unwrap();
    let claims = Claims::new(42, &service, 1_700_000_000, 30, [7; 16]);
    let text = ticket::issue(SECRET, &claims).to_text();
    let mut out = claims_init();
    assert_eq!(
        verify_at(SECRET, text.as_bytes(), Some("game"), 42, 1_700_000_010, &mut out),
        0,
        "{}",
        message()
    );
    assert_eq!(
        (out.backend_id, out.issued_unix, out.expires_unix, out.nonce),
        (42, 1_700_000_000, 1_700_000_030, [7; 16])
    );
    let at = |ticket: &[u8], service, id, now| verify_at(SECRET, ticket, service, id, now, null_mut());
    let mut forged = text.clone().into_bytes();
    forged[100] = if forged[100] == b'0' { b'1' } else { b'0' };
    assert_eq!(at(&forged, Some("game"), 42, 1_700_000_010), code(lw_status::LW_E_TICKET_INVALID));
    assert!(message().contains("signature"), "{}", message());
    assert_eq!(at(b"not a ticket", Some("game"), 42, 1_700_000_010), code(lw_status::LW_E_TICKET_INVALID));
    let other_secret = verify_at(
        b"another secret of 32 bytes, too!",
        text.as_bytes(),
        Some("game"),
        42,
        1_700_000_010,
        null_mut(),
    );
    assert_eq!(other_secret, code(lw_status::LW_E_TICKET_INVALID));
    assert_eq!(at(text.as_bytes(), Some("game"), 43, 1_700_000_010), code(lw_status::LW_E_TICKET_MISMATCH));
    assert_eq!(at(text.as_bytes(), Some("chat"), 42, 1_700_000_010), code(lw_status::LW_E_TICKET_MISMATCH));
    assert_eq!(
        at(text.as_bytes(), None, 42, 1_700_000_010),
        code(lw_status::LW_E_TICKET_MISMATCH),
        "NULL is the default service"
    );
    assert_eq!(at(text.as_bytes(), Some("game"), 42, 1_700_000_030), code(lw_status::LW_E_TICKET_EXPIRED));
    assert!(message().contains("expired"), "{}", message());
    assert_eq!(at(text.as_bytes(), Some("game"), 42, 1_000_000_000), code(lw_status::LW_E_TICKET_EXPIRED));
    // The host's clock is long past 2023: the ticket has expired.
    let ticket = c(&text);
    let service = c("game");
    // SAFETY: valid secret, strings and a NULL claims pointer.
    let now = unsafe {
        lw_ticket_verify(SECRET.as_ptr(), SECRET.len(), ticket.as_ptr(), service.as_ptr(), 42, null_mut())
    };
    assert_eq!(now, code(lw_status::LW_E_TICKET_EXPIRED));
}

#[test]
fn claims_are_written_only_within_the_size_the_caller_gives() {
    let service = ServiceName::new("default").unwrap();
    let text = ticket::issue(SECRET, &Claims::new(9, &service, 100, 30, [1; 16])).to_text();
    let sentinel =
        lw_ticket_claims { size: 0, backend_id: 5, issued_unix: 5, expires_unix: 5, nonce: [5; 16] };
    // An older, smaller struct: only the id fits.
    let mut old = lw_ticket_claims { size: offset_of!(lw_ticket_claims, issued_unix), ..sentinel };
    assert_eq!(verify_at(SECRET, text.as_bytes(), None, 9, 110, &mut old), 0, "{}", message());
    assert_eq!((old.backend_id, old.issued_unix, old.expires_unix, old.nonce), (9, 5, 5, [5; 16]));
    for size in [0, 4096 + 1] {
        let mut bad = lw_ticket_claims { size, ..sentinel };
        assert_eq!(verify_at(SECRET, text.as_bytes(), None, 9, 110, &mut bad), code(lw_status::LW_E_INVALID));
        assert!(message().contains("claims->size"), "{}", message());
    }
}

#[test]
fn the_secret_file_reads_as_the_dispatcher_reads_it() {
    let dir = loadwise_testkit::TempDir::new("ffi-secret");
    let path = dir.path().join("secret");
    std::fs::write(&path, "0123456789abcdef\n").unwrap();
    let read = |path: &std::path::Path, capacity: usize| {
        let path = c(path.to_str().unwrap());
        let mut out = vec![0u8; capacity];
        let mut len = usize::MAX;
        // SAFETY: a NUL-terminated path, `capacity` writable bytes, a writable length.
        let status = unsafe { lw_secret_read_file(path.as_ptr(), out.as_mut_ptr(), capacity, &mut len) };
        (status, out, len)
    };
    let (status, out, len) = read(&path, 64);
    assert_eq!((status, len), (0, 16), "{}", message());
    assert_eq!(&out[..16], b"0123456789abcdef", "without the newline");
    let (status, out, len) = read(&path, 15);
    assert_eq!((status, len), (code(lw_status::LW_E_BUFFER), 16));
    assert_eq!(out, [0; 15], "nothing written");
    assert_eq!(read(&dir.path().join("absent"), 64).0, code(lw_status::LW_E_IO));
    std::fs::write(&path, "short\n").unwrap();
    assert_eq!(read(&path, 64).0, code(lw_status::LW_E_INVALID));
    assert!(message().contains("at least 16 bytes"), "{}", message());
}

#[test]
fn bad_agent_options_are_refused_naming_the_field() {
    let invalid = code(lw_status::LW_E_INVALID);
    let options = Options::new("127.0.0.1:1", "127.0.0.1:7000");
    let refused = |raw: lw_agent_options, needle: &str| {
        let (status, text) = start_raw(&raw).expect_err("refused");
        assert_eq!(status, invalid, "{text}");
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    };
    refused(lw_agent_options { size: 8, ..options.raw() }, "options->size is 8");
    refused(lw_agent_options { weight: 70_000, ..options.raw() }, "options->weight");
    refused(lw_agent_options { protocol: 7, ..options.raw() }, "options->protocol");
    let bad_advertise = Options::new("127.0.0.1:1", "127.0.0.1");
    refused(bad_advertise.raw(), "options->advertise");
    for any in ["0.0.0.0:7000", "[::]:7000"] {
        refused(Options::new("127.0.0.1:1", any).raw(), "not an address clients can connect to");
    }
    refused(Options::new("127.0.0.1:1", "127.0.0.1:0").raw(), "port 0");
    let mut short_secret = Options::new("127.0.0.1:1", "127.0.0.1:7000");
    short_secret.secret = Some(b"short".to_vec());
    refused(short_secret.raw(), "options->secret");
    let mut legacy_with_secret = Options::new("127.0.0.1:1", "127.0.0.1:7000");
    legacy_with_secret.secret = Some(SECRET.to_vec());
    legacy_with_secret.raw.protocol = LW_PROTOCOL_LEGACY;
    refused(legacy_with_secret.raw(), "protocol");
    refused(Options::new("127.0.0.1:1,127.0.0.1:1", "127.0.0.1:7000").raw(), "twice");

    // A newer header's struct: accepted while the fields this library does not know
    // are zero, refused when one is set.
    #[repr(C)]
    struct Newer {
        known: lw_agent_options,
        capacity: u64,
    }
    let mut newer = Newer { known: options.raw(), capacity: 0 };
    newer.known.size = size_of::<Newer>();
    let agent = Agent(start_raw(&newer.known).expect("zero unknown fields are accepted"));
    assert_eq!(agent.stop(), 0, "{}", message());
    newer.capacity = 100;
    let (status, text) = start_raw(&newer.known).unwrap_err();
    assert_eq!(status, invalid);
    assert!(text.contains("does not know"), "{text}");
}

#[test]
fn a_program_built_with_the_first_header_still_starts_an_agent() {
    let options = Options::new("127.0.0.1:1", "127.0.0.1:7000");
    let first_len = std::mem::offset_of!(lw_agent_options, capacity);
    let agent = Agent(start_raw(&lw_agent_options { size: first_len, ..options.raw() }).expect("accepted"));
    assert_eq!(agent.arrive(), code(lw_status::LW_E_INVALID), "no capacity slots");
    assert!(message().contains("capacity"), "{}", message());
    assert_eq!(agent.stop(), 0);
    let too_big = lw_agent_options { capacity: 10_000_001, ..options.raw() };
    let (status, text) = start_raw(&too_big).unwrap_err();
    assert_eq!(status, code(lw_status::LW_E_INVALID));
    assert!(text.contains("options->capacity"), "{text}");
}

#[test]
fn a_slot_agent_admits_no_more_clients_than_its_places_and_frees_one_when_a_client_leaves() {
    let dispatcher = Dispatcher::start(None);
    let mut options = Options::new(&dispatcher.addr(), "127.0.0.1:7000");
    options.service = Some(c("game"));
    options.raw.interval_ms = 50;
    options.raw.capacity = 2;
    let agent = Agent(start(&options).unwrap());
    dispatcher.wait_for("registration", |heartbeat| heartbeat.is_some());
    // Two places: two picks, then no free place, once the grant has come.
    let start = std::time::Instant::now();
    let mut admitted = 0;
    while admitted < 2 {
        if pick_ex(&dispatcher.addr(), Some("game")).is_ok() {
            admitted += 1;
            assert_eq!(agent.arrive(), 0, "{}", message());
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "never granted");
    }
    for _ in 0..5 {
        let refused = pick_ex(&dispatcher.addr(), Some("game")).unwrap_err();
        assert_eq!(refused.0, code(lw_status::LW_E_REFUSED), "{}", refused.1);
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    // One leaves: one place, within a few heartbeats.
    assert_eq!(agent.leave(), 0);
    let start = std::time::Instant::now();
    while pick_ex(&dispatcher.addr(), Some("game")).is_err() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the freed place never came back");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(pick_ex(&dispatcher.addr(), Some("game")).unwrap_err().0, code(lw_status::LW_E_REFUSED));
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_embedded_agent_registers_reports_drains_and_stops() {
    let dispatcher = Dispatcher::start(Some(SECRET));
    let mut options = Options::new(&dispatcher.addr(), "127.0.0.1:7000");
    options.service = Some(c("game"));
    options.secret = Some(SECRET.to_vec());
    options.raw.interval_ms = 50;
    let agent = Agent(start(&options).unwrap());
    let expected_id = loadwise::agent::default_backend_id(
        &ServiceName::new("game").unwrap(),
        &"127.0.0.1:7000".parse().unwrap(),
    );
    assert_eq!(agent.id(), expected_id);
    dispatcher.wait_for("registration", |heartbeat| heartbeat.is_some());

    let picked = pick_ex(&dispatcher.addr(), Some("game")).unwrap();
    assert_eq!((picked.addr.as_str(), picked.backend_id), ("127.0.0.1:7000", agent.id()));
    assert_eq!(picked.ticket.len(), LW_TICKET_TEXT_LEN);
    let mut claims = claims_init();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let verified = verify_at(SECRET, picked.ticket.as_bytes(), Some("game"), agent.id(), now, &mut claims);
    assert_eq!(verified, 0, "{}", message());
    assert_eq!(claims.backend_id, agent.id());

    assert_eq!(agent.metric(b"queue", 7.5), 0, "{}", message());
    assert_eq!(agent.connections(12), 0);
    dispatcher.wait_for("the metric and the count", |heartbeat| {
        heartbeat.is_some_and(|h| {
            h.connections == Some(12.0)
                && h.metrics.iter().any(|(name, value)| name == "queue" && *value == 7.5)
        })
    });
    assert_eq!(agent.metric(b"bad name", 1.0), code(lw_status::LW_E_INVALID));
    assert_eq!(agent.metric(b"queue", f64::NAN), code(lw_status::LW_E_INVALID));
    assert_eq!(agent.metric(b"q\xff", 1.0), code(lw_status::LW_E_INVALID));
    assert_eq!(agent.remove_metric("queue"), 0);
    assert_eq!(agent.connections(LW_NOT_REPORTED), 0);
    dispatcher.wait_for("no metric and no count", |heartbeat| {
        heartbeat.is_some_and(|h| h.connections.is_none() && h.metrics.is_empty())
    });

    assert_eq!(agent.draining(true), 0);
    dispatcher.wait_for("draining", |heartbeat| heartbeat.is_some_and(|h| h.state == "draining"));
    assert_eq!(pick_ex(&dispatcher.addr(), Some("game")).unwrap_err().0, code(lw_status::LW_E_REFUSED));
    assert_eq!(agent.healthy(false), 0);
    dispatcher.wait_for("maintenance", |heartbeat| heartbeat.is_some_and(|h| h.state == "maintenance"));
    assert_eq!(agent.draining(false), 0);
    assert_eq!(agent.healthy(true), 0);
    dispatcher.wait_for("ready again", |heartbeat| heartbeat.is_some_and(|h| h.state == "ready"));

    assert_eq!(agent.stop(), 0, "{}", message());
    dispatcher.wait_for("the backend gone", |heartbeat| heartbeat.is_none());
    assert_eq!(agent.draining(true), code(lw_status::LW_E_STOPPED));
    assert_eq!(agent.metric(b"queue", 1.0), code(lw_status::LW_E_STOPPED));
    assert_eq!(agent.stop(), 0, "a second stop is harmless");
}

#[test]
fn at_most_32_metrics_are_kept() {
    let agent = Agent(start(&Options::new("127.0.0.1:1", "127.0.0.1:7000")).unwrap());
    for i in 0..32 {
        assert_eq!(agent.metric(format!("m{i}").as_bytes(), 1.0), 0, "{}", message());
    }
    assert_eq!(agent.metric(b"m0", 2.0), 0, "replacing one is fine");
    assert_eq!(agent.metric(b"one-more", 1.0), code(lw_status::LW_E_INVALID));
    assert!(message().contains("at most 32"), "{}", message());
}

#[test]
fn a_pick_from_inside_an_async_runtime_is_refused_rather_than_stalling_it() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut buffer = [0u8; LW_ADDR_LEN];
    let status = runtime.block_on(async { pick(b"127.0.0.1:1", None, &mut buffer, LW_ADDR_LEN) });
    assert_eq!(status, code(lw_status::LW_E_INVALID));
    assert!(message().contains("inside an async runtime"), "{}", message());
}

#[test]
fn the_last_error_message_belongs_to_each_thread() {
    let mut buffer = [0u8; 8];
    assert_eq!(pick(b"", None, &mut buffer, 8), code(lw_status::LW_E_INVALID));
    let here = message();
    assert!(!here.is_empty());
    let there = std::thread::spawn(message).join().unwrap();
    assert_eq!(there, "", "another thread has no error");
    assert_eq!(message(), here, "reading it changes nothing");
}

/// `lw_pick_with` for `service` and `key`, with `size` as the caller's header would
/// set it (`lw_pick_options_init` sets the struct's own): the address, or the code
/// and the message.
fn pick_with(
    servers: &str,
    service: Option<&str>,
    key: &[u8],
    size: usize,
) -> Result<String, (c_int, String)> {
    let servers = c(servers);
    let service = service.map(c);
    let options = lw_pick_options {
        size,
        servers: servers.as_ptr(),
        service: service.as_ref().map_or(null(), |service| service.as_ptr()),
        timeout_ms: 2000,
        key: if key.is_empty() { null() } else { key.as_ptr() },
        key_len: key.len(),
    };
    let mut picked: *mut lw_picked = null_mut();
    // SAFETY: `options` is a whole struct (a smaller `size` is refused before any
    // field is read) with NUL-terminated strings and `key_len` readable key bytes;
    // `picked` is a writable out pointer.
    let status = unsafe { lw_pick_with(&options, &mut picked) };
    if status != code(lw_status::LW_OK) {
        assert!(picked.is_null(), "a failed pick leaves *out NULL");
        return Err((status, message()));
    }
    // SAFETY: `picked` is live until the free below, which happens once; the
    // address is a NUL-terminated string it owns.
    let addr = unsafe { CStr::from_ptr(lw_picked_addr(picked)) }.to_str().unwrap().to_owned();
    // SAFETY: freed once, not used afterwards.
    unsafe { lw_picked_free(picked) };
    Ok(addr)
}

#[test]
fn a_keyed_pick_names_the_same_backend_and_bad_keys_are_refused() {
    let dispatcher = Dispatcher::start(None);
    let agents: Vec<Agent> = (1..=3)
        .map(|n| {
            let mut options = Options::new(&dispatcher.addr(), &format!("127.0.0.1:700{n}"));
            options.service = Some(c("game"));
            options.raw.interval_ms = 50;
            Agent(start(&options).unwrap())
        })
        .collect();
    let end = Instant::now() + DEADLINE;
    while dispatcher.server.dispatcher.backend_count() < 3 {
        assert!(Instant::now() < end, "the agents never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
    let size = size_of::<lw_pick_options>();
    let home = pick_with(&dispatcher.addr(), Some("game"), b"player-42", size).unwrap();
    for _ in 0..5 {
        assert_eq!(pick_with(&dispatcher.addr(), Some("game"), b"player-42", size).unwrap(), home);
    }
    let too_long = [b'k'; LW_MAX_KEY_LEN + 1];
    let refused = pick_with(&dispatcher.addr(), Some("game"), &too_long, size).unwrap_err();
    assert_eq!(refused.0, code(lw_status::LW_E_INVALID), "{}", refused.1);
    assert!(refused.1.contains("options->key"), "{}", refused.1);
    let legacy = pick_with(&dispatcher.addr(), None, b"player-42", size).unwrap_err();
    assert_eq!(legacy.0, code(lw_status::LW_E_INVALID), "a key needs a service: {}", legacy.1);
    let small = pick_with(&dispatcher.addr(), Some("game"), b"player-42", size - 1).unwrap_err();
    assert_eq!(small.0, code(lw_status::LW_E_INVALID), "{}", small.1);
    drop(agents);
}
