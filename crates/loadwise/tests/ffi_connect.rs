//! `lw_connect` called as C calls it, against a real dispatcher on loopback with two v2
//! agents (one advertising a port nobody listens on, one a listener): the socket
//! handed back is connected to the listener, every backend failing is
//! `LW_E_UNCONNECTED`, and unusable options are refused naming the field.
//!
//! Every `unsafe` call sits in a small wrapper below that says why it is sound.

use std::ffi::{CString, c_int};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd as _;
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use loadwise::agent::AgentConfig;
mod common;

use common::{c, code, message};
use loadwise::ffi::*;
use loadwise::protocol::v2::ServiceName;
use loadwise_testkit::{DEADLINE, TestServer};
use tokio::runtime::Runtime;

const LIVE_ID: u64 = 202;
const DEAD_ID: u64 = 201;

/// A dispatcher on 127.0.0.1:0 and agents of service `game`, on a runtime of their
/// own, so that the test's thread calls the C ABI from outside any runtime.
struct Pool {
    server: TestServer,
    /// Each agent stops when its sender is dropped; the runtime ends what is left.
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _runtime: Runtime,
}

impl Pool {
    /// Agents advertising `backends` (address, id), once all are registered.
    fn start(backends: &[(SocketAddr, u64)]) -> Pool {
        let runtime = Runtime::new().unwrap();
        let server = runtime.block_on(TestServer::start());
        let addr = server.addr.to_string();
        let stops = backends
            .iter()
            .map(|(advertise, backend_id)| {
                let config = AgentConfig {
                    interval: Duration::from_millis(100),
                    service: ServiceName::new("game").unwrap(),
                    backend_id: *backend_id,
                    ..AgentConfig::with_servers([addr.as_str()], advertise.to_string().parse().unwrap())
                };
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                runtime.spawn(loadwise::agent::run(config, || Ok(30), async move {
                    let _ = stopped.await;
                }));
                stop
            })
            .collect();
        let end = Instant::now() + DEADLINE;
        while server.dispatcher.backend_count() < backends.len() {
            assert!(Instant::now() < end, "the agents never registered");
            std::thread::sleep(Duration::from_millis(10));
        }
        Pool { server, _stops: stops, _runtime: runtime }
    }

    fn addr(&self) -> CString {
        c(&self.server.addr.to_string())
    }
}

/// A loopback port that refuses connections: bound, never listening, held (so no
/// other test takes it) until the returned socket is dropped.
fn closed_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// What `lw_connect` gave: the connection and the backend id, or the code and message.
fn connect(options: &lw_connect_options) -> Result<(TcpStream, u64), (c_int, String)> {
    let mut fd: c_int = 0;
    let mut picked: *mut lw_picked = null_mut();
    // SAFETY: `options` is a whole struct with NUL-terminated strings (or NULL) and
    // `key_len` readable key bytes; both out pointers are writable.
    let status = unsafe { lw_connect(options, &mut fd, &mut picked) };
    if status != code(lw_status::LW_OK) {
        assert!(fd == -1 && picked.is_null(), "a failed connect hands out nothing");
        return Err((status, message()));
    }
    // SAFETY: `picked` is live until the free below, which happens once.
    let backend_id = unsafe { lw_picked_backend_id(picked) };
    // SAFETY: freed once, not used afterwards.
    unsafe { lw_picked_free(picked) };
    // SAFETY: the library handed over this open socket; it is owned here alone.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    Ok((stream, backend_id))
}

fn options(servers: &CString, service: &CString) -> lw_connect_options {
    lw_connect_options {
        size: size_of::<lw_connect_options>(),
        servers: servers.as_ptr(),
        service: service.as_ptr(),
        key: null(),
        key_len: 0,
        bind: null(),
        connect_timeout_ms: 500,
        attempts: 0,
        pick_timeout_ms: 0,
    }
}

#[test]
fn lw_connect_hands_back_a_socket_connected_to_the_live_backend() {
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    let (dead, _held) = closed_port();
    let pool = Pool::start(&[(dead, DEAD_ID), (live_addr, LIVE_ID)]);
    let (servers, service) = (pool.addr(), c("game"));
    for n in 2..6 {
        let bind = c(&format!("127.0.0.{n}"));
        let (stream, backend_id) =
            connect(&lw_connect_options { bind: bind.as_ptr(), ..options(&servers, &service) }).unwrap();
        assert_eq!((stream.peer_addr().unwrap(), backend_id), (live_addr, LIVE_ID));
        let (accepted, _) = live.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
    }
}

#[test]
fn lw_connect_reports_every_backend_failing_and_refuses_unusable_options() {
    let ((one, _held), (two, _held_too)) = (closed_port(), closed_port());
    let pool = Pool::start(&[(one, DEAD_ID), (two, DEAD_ID + 10)]);
    let (servers, service) = (pool.addr(), c("game"));
    let failed = connect(&lw_connect_options { attempts: 2, ..options(&servers, &service) }).unwrap_err();
    assert_eq!(failed.0, code(lw_status::LW_E_UNCONNECTED), "{}", failed.1);
    assert!(failed.1.contains("could not connect to any backend in 2 attempt(s)"), "{}", failed.1);

    let too_many = connect(&lw_connect_options { attempts: 17, ..options(&servers, &service) }).unwrap_err();
    assert_eq!(too_many.0, code(lw_status::LW_E_INVALID));
    assert!(too_many.1.contains("options->attempts"), "{}", too_many.1);
    let long = lw_connect_options { connect_timeout_ms: 60_001, ..options(&servers, &service) };
    let too_long = connect(&long).unwrap_err();
    assert!(too_long.1.contains("options->connect_timeout_ms"), "{}", too_long.1);
    let bind = c("not-an-ip");
    let bad_bind = connect(&lw_connect_options { bind: bind.as_ptr(), ..options(&servers, &service) });
    let bad_bind = bad_bind.unwrap_err();
    assert!(
        bad_bind.0 == code(lw_status::LW_E_INVALID) && bad_bind.1.contains("options->bind"),
        "{}",
        bad_bind.1
    );
    let no_service = connect(&lw_connect_options { service: null(), ..options(&servers, &service) });
    assert_eq!(no_service.unwrap_err().0, code(lw_status::LW_E_NULL));
    let small = connect(&lw_connect_options { size: 8, ..options(&servers, &service) }).unwrap_err();
    assert!(small.1.contains("options->size"), "{}", small.1);
}
