//! TLS on loopback: a dispatcher with a TLS listener and a certificate made in the
//! test, an agent and a client speaking TLS to it, and the peers it must turn away
//! (another CA, another name, plain TCP) without disturbing the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadwise_agent::AgentConfig;
use loadwise_client::dial::DialError;
use loadwise_client::tls::ClientTls;
use loadwise_client::{self as client, Failover, FailoverConfig, PickError};
use loadwise_core::dispatcher::Dispatcher;
use loadwise_protocol::v2::ServiceName;
use loadwise_server::stats::{ConnectionKind, ConnectionRefusal, WireSnapshot, WireStats};
use loadwise_server::{Server, ServerConfig, ServerError, TlsListen};
use loadwise_testkit::{TempDir, expect_closed, heartbeat, send, wait_until, within};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough for any loopback exchange, short enough to fail fast.
const ATTEMPT: Duration = Duration::from_secs(5);

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _dir: TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = TempDir::new(name);
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("loadwise test CA {name}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "loadwise test dispatcher");
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();
        Pki {
            ca: dir.write("ca.pem", &ca_cert.pem()),
            cert: dir.write("cert.pem", &server_cert.pem()),
            key: dir.write("key.pem", &server_key.serialize_pem()),
            _dir: dir,
        }
    }

    fn client(&self) -> ClientTls {
        ClientTls::from_ca_file(&self.ca).unwrap()
    }
}

/// A dispatcher listening on plain TCP and on TLS, both on ephemeral loopback ports.
struct Dispatch {
    plain: SocketAddr,
    tls: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    wire: Arc<WireStats>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn tls_config(cert: &Path, key: &Path, config: ServerConfig) -> ServerConfig {
    let listen = "127.0.0.1:0".parse().unwrap();
    let tls = TlsListen { listen, cert: cert.to_owned(), key: key.to_owned() };
    ServerConfig { listen, tls: Some(tls), ..config }
}

impl Dispatch {
    async fn start(pki: &Pki, config: ServerConfig) -> Dispatch {
        let server = Server::bind(tls_config(&pki.cert, &pki.key, config)).await.unwrap();
        let plain = server.local_addr().unwrap();
        let tls = server.tls_local_addr().expect("a TLS listener").unwrap();
        let (dispatcher, wire) = (server.dispatcher(), server.wire_stats());
        let stop = CancellationToken::new();
        let task = tokio::spawn(server.run(stop.clone().cancelled_owned()));
        Dispatch { plain, tls, dispatcher, wire, stop, task }
    }

    fn wire(&self) -> WireSnapshot {
        self.wire.snapshot()
    }

    /// Registers a backend over plain TCP; the connection keeps it registered.
    async fn register_plain(&self, ip: &str, port: u16) -> TcpStream {
        let mut stream = within(TcpStream::connect(self.plain)).await.unwrap();
        send(&mut stream, &heartbeat(20, ip, port)).await;
        self.wait_for_backends(1).await;
        stream
    }

    async fn wait_for_backends(&self, count: usize) {
        wait_until(&format!("{count} backend(s) registered"), || self.dispatcher.backend_count() == count)
            .await;
    }

    async fn pick_tls(&self, tls: &ClientTls) -> Result<client::Assigned, PickError> {
        let server = self.tls.to_string();
        client::pick_over(&server, Some(tls), loadwise_testkit::unix_now(), ATTEMPT).await
    }

    async fn shut_down(self) {
        self.stop.cancel();
        within(self.task).await.unwrap();
    }
}

#[tokio::test]
async fn an_agent_and_a_client_round_trip_through_tls() {
    let pki = Pki::new("round-trip");
    let dispatch = Dispatch::start(&pki, ServerConfig::default()).await;
    let config = AgentConfig {
        interval: Duration::from_millis(100),
        tls: Some(pki.client()),
        ..AgentConfig::new(dispatch.tls.to_string(), "10.0.0.7:7007".parse().unwrap())
    };
    let stop_agent = CancellationToken::new();
    let agent = tokio::spawn(loadwise_agent::run(config, || Ok(30), stop_agent.clone().cancelled_owned()));
    dispatch.wait_for_backends(1).await;

    let failover = FailoverConfig { tls: Some(pki.client()), ..FailoverConfig::default() };
    let failover = Failover::new(vec![dispatch.tls.to_string()], failover).unwrap();
    let answer = within(failover.pick()).await.unwrap();
    assert_eq!(answer.backend.to_string(), "10.0.0.7:7007");
    // By name rather than address, and by an overriding name.
    let by_name = format!("localhost:{}", dispatch.tls.port());
    let tls = pki.client();
    let assigned =
        client::pick_over(&by_name, Some(&tls), loadwise_testkit::unix_now(), ATTEMPT).await.unwrap();
    assert_eq!(assigned.to_string(), "10.0.0.7:7007");
    let pinned = pki.client().with_server_name("localhost").unwrap();
    assert_eq!(dispatch.pick_tls(&pinned).await.unwrap().to_string(), "10.0.0.7:7007");
    // One table behind both listeners.
    let plain = client::pick(&dispatch.plain.to_string(), ATTEMPT).await.unwrap();
    assert_eq!(plain.to_string(), "10.0.0.7:7007");
    // The agent speaks v2 by default: a v2 pick through TLS names it, by its own id.
    let service = ServiceName::new("default").unwrap();
    let v2 =
        client::pick_service_over(&dispatch.tls.to_string(), Some(&tls), &service, ATTEMPT).await.unwrap();
    assert_eq!(v2.endpoint.to_string(), "10.0.0.7:7007");
    assert!(v2.ticket.is_empty(), "no secret, no ticket");

    stop_agent.cancel();
    within(agent).await.unwrap().unwrap();
    dispatch.wait_for_backends(0).await;
    let tls_addr = dispatch.tls;
    dispatch.shut_down().await;
    assert!(TcpStream::connect(tls_addr).await.is_err(), "the TLS listener is closed on shutdown");
}

#[tokio::test]
async fn an_authenticated_v2_backend_and_a_ticketed_pick_through_tls() {
    let pki = Pki::new("v2-auth");
    let secret = loadwise_agent::Secret::new(*b"a secret of twenty-four").unwrap();
    let mut config = ServerConfig::default();
    config.connection.secret = Some(secret.clone());
    let dispatch = Dispatch::start(&pki, config).await;
    let service = ServiceName::new("game").unwrap();
    let config = AgentConfig {
        interval: Duration::from_millis(100),
        tls: Some(pki.client()),
        secret: Some(secret.clone()),
        ..AgentConfig::new(dispatch.tls.to_string(), "[2001:db8::7]:7007".parse().unwrap())
            .v2(service.clone())
    };
    let backend_id = config.backend_id;
    let stop_agent = CancellationToken::new();
    let agent = tokio::spawn(loadwise_agent::run(config, || Ok(30), stop_agent.clone().cancelled_owned()));
    dispatch.wait_for_backends(1).await;
    assert_eq!(dispatch.wire().v2_registrations, 1);

    let tls = pki.client();
    let picked =
        client::pick_service_over(&dispatch.tls.to_string(), Some(&tls), &service, ATTEMPT).await.unwrap();
    assert_eq!(
        (picked.backend_id, picked.endpoint.to_string()),
        (backend_id, "[2001:db8::7]:7007".to_owned())
    );
    loadwise_protocol::ticket::verify(
        secret.as_bytes(),
        &picked.ticket,
        &service,
        backend_id,
        loadwise_testkit::unix_now(),
    )
    .unwrap();

    stop_agent.cancel();
    within(agent).await.unwrap().unwrap();
    dispatch.shut_down().await;
}

#[tokio::test]
async fn a_peer_trusting_another_ca_or_expecting_another_name_is_refused_and_others_are_served() {
    let pki = Pki::new("trusted");
    let stranger = Pki::new("stranger");
    let dispatch = Dispatch::start(&pki, ServerConfig::default()).await;
    let _backend = dispatch.register_plain("10.0.0.8", 7008).await;

    let error = dispatch.pick_tls(&stranger.client()).await.unwrap_err();
    assert!(matches!(error, PickError::Unreachable(DialError::Handshake { .. })), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("TLS handshake with") && message.contains("UnknownIssuer"), "{message}");
    let wrong_name = pki.client().with_server_name("dispatcher.example").unwrap();
    let message = dispatch.pick_tls(&wrong_name).await.unwrap_err().to_string();
    assert!(message.contains("TLS handshake with") && message.contains("not valid for name"), "{message}");

    assert_eq!(dispatch.pick_tls(&pki.client()).await.unwrap().to_string(), "10.0.0.8:7008");
    dispatch.shut_down().await;
}

#[tokio::test]
async fn plain_tcp_on_the_tls_port_is_closed_within_the_handshake_timeout_without_disturbing_others() {
    let pki = Pki::new("plain");
    let mut config = ServerConfig::default();
    // Also bounds the handshake, so the silent peer is closed quickly.
    config.connection.frame_timeout = Duration::from_millis(300);
    let dispatch = Dispatch::start(&pki, config).await;
    let _backend = dispatch.register_plain("10.0.0.9", 7009).await;

    // A legacy login is no TLS record: the handshake fails at once, and no login
    // reply comes back, only (at most) a TLS alert before the close.
    let mut talker = within(TcpStream::connect(dispatch.tls)).await.unwrap();
    send(&mut talker, &loadwise_testkit::login_now()).await;
    let mut received = Vec::new();
    let read = within(talker.read_to_end(&mut received)).await;
    assert!(read.is_ok() || read.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    assert!(received.len() < loadwise_testkit::REPLY_LEN, "a plain peer got a reply: {received:02x?}");

    // A peer that never starts the handshake holds its slot only until the timeout;
    // meanwhile a TLS client is served.
    let started = Instant::now();
    let mut silent = within(TcpStream::connect(dispatch.tls)).await.unwrap();
    assert_eq!(dispatch.pick_tls(&pki.client()).await.unwrap().to_string(), "10.0.0.9:7009");
    expect_closed(&mut silent).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "closed before the handshake timeout: {waited:?}");
    assert!(waited < Duration::from_secs(5), "not closed within the handshake timeout: {waited:?}");
    // Only the backend's connection is left.
    wait_until("the refused connections closed", || dispatch.wire().connections_open == 1).await;
    dispatch.shut_down().await;
}

#[tokio::test]
async fn both_listeners_share_the_budgets_and_a_handshake_holds_a_pending_slot() {
    let pki = Pki::new("budgets");
    let config =
        ServerConfig { max_pending_connections: 1, max_client_connections: 1, ..ServerConfig::default() };
    let dispatch = Dispatch::start(&pki, config).await;
    let _backend = dispatch.register_plain("10.0.0.10", 7010).await;
    // A TLS peer that has not finished its handshake is pending: with the headroom
    // full, a plain connection is closed on accept.
    let silent = within(TcpStream::connect(dispatch.tls)).await.unwrap();
    wait_until("the handshake pending", || dispatch.wire().open(ConnectionKind::Pending) == 1).await;
    let mut refused = within(TcpStream::connect(dispatch.plain)).await.unwrap();
    expect_closed(&mut refused).await;
    assert_eq!(dispatch.wire().refused(ConnectionRefusal::PendingLimit), 1);
    drop(silent);
    wait_until("the headroom free", || dispatch.wire().open(ConnectionKind::Pending) == 0).await;

    // The one client slot goes to a TLS client, whose pick works.
    let tls = pki.client();
    let mut held = loadwise_client::dial::open(&dispatch.tls.to_string(), Some(&tls)).await.unwrap();
    held.write_all(&loadwise_testkit::login_now()).await.unwrap();
    held.flush().await.unwrap();
    let assigned = within(client::read_reply(&mut held)).await.unwrap();
    assert_eq!(assigned.to_string(), "10.0.0.10:7010");
    // Full: a plain client's login gets the error reply, and its connection is closed.
    let mut plain = within(TcpStream::connect(dispatch.plain)).await.unwrap();
    send(&mut plain, &loadwise_testkit::login_now()).await;
    let mut reply = Vec::new();
    within(plain.read_to_end(&mut reply)).await.unwrap();
    assert_eq!(reply, loadwise_testkit::ERROR_REPLY);
    assert_eq!(dispatch.wire().refused(ConnectionRefusal::ClientLimit), 1);
    // The held TLS connection is served all the same.
    held.write_all(&loadwise_testkit::login_now()).await.unwrap();
    held.flush().await.unwrap();
    let assigned = within(client::read_reply(&mut held)).await.unwrap();
    assert_eq!(assigned.to_string(), "10.0.0.10:7010");
    dispatch.shut_down().await;
}

#[tokio::test]
async fn unusable_certificate_or_key_files_stop_the_start_naming_the_file() {
    let pki = Pki::new("bad-files");
    let other = Pki::new("other-key");
    let missing = pki.cert.with_file_name("missing.pem");
    let start = |cert: &Path, key: &Path| Server::bind(tls_config(cert, key, ServerConfig::default()));

    let error = start(&missing, &pki.key).await.unwrap_err();
    assert!(matches!(error, ServerError::Tls(_)), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("TLS certificate file") && message.contains(&missing.display().to_string()),
        "{message}"
    );

    let message = start(&pki.cert, &missing).await.unwrap_err().to_string();
    assert!(message.contains("TLS key file") && message.contains("missing.pem"), "{message}");

    let message = start(&pki.cert, &other.key).await.unwrap_err().to_string();
    let key = other.key.display().to_string();
    assert!(message.contains(&key) && message.contains("does not match"), "{message}");

    let message = start(&pki.key, &pki.key).await.unwrap_err().to_string();
    assert!(message.contains("holds no certificate"), "{message}");
}

/// The PEM files' checks, through the public API.
mod files {
    use std::net::IpAddr;

    use loadwise_client::tls::{TlsError as ClientTlsError, client_config};
    use loadwise_server::tls::rustls::ServerConfig;
    use loadwise_server::tls::rustls::pki_types::ServerName;
    use loadwise_server::tls::{TlsError, server_config};

    use super::*;

    fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap()
    }

    #[test]
    fn a_matching_certificate_and_key_make_a_server_config() {
        let dir = TempDir::new("ok");
        let pair = self_signed();
        let cert = dir.write("cert.pem", &pair.cert.pem());
        let key = dir.write("key.pem", &pair.signing_key.serialize_pem());
        server_config(&cert, &key).unwrap();
        // One file holding both works too.
        let both = dir.write("both.pem", &format!("{}{}", pair.cert.pem(), pair.signing_key.serialize_pem()));
        server_config(&both, &both).unwrap();
    }

    #[test]
    fn errors_name_the_file_and_what_is_wrong() {
        let dir = TempDir::new("errors");
        let pair = self_signed();
        let cert = dir.write("cert.pem", &pair.cert.pem());
        let key = dir.write("key.pem", &pair.signing_key.serialize_pem());
        let missing = dir.path().join("missing.pem");
        let message = |result: Result<Arc<ServerConfig>, TlsError>| result.unwrap_err().to_string();

        let error = message(server_config(&missing, &key));
        assert!(
            error.contains("cannot read the TLS certificate file") && error.contains("missing.pem"),
            "{error}"
        );
        let error = message(server_config(&cert, &missing));
        assert!(error.contains("TLS key file") && error.contains("missing.pem"), "{error}");
        // The key file holds no certificate, and the certificate file no key.
        let error = message(server_config(&key, &key));
        assert!(error.contains("key.pem holds no certificate"), "{error}");
        let error = message(server_config(&cert, &cert));
        assert!(error.contains("cert.pem holds no private key"), "{error}");
        let other_key = dir.write("other.pem", &self_signed().signing_key.serialize_pem());
        let error = server_config(&cert, &other_key).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("other.pem does not match the certificate in"), "{error}");
        let broken = dir.write("broken.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
        let error = message(server_config(&broken, &key));
        assert!(error.contains("broken.pem is not valid PEM"), "{error}");
    }

    #[test]
    fn a_client_config_needs_a_ca_certificate() {
        let dir = TempDir::new("ca");
        let pair = self_signed();
        let ca = dir.write("ca.pem", &pair.cert.pem());
        client_config(&ca).unwrap();
        let key_only = dir.write("key.pem", &pair.signing_key.serialize_pem());
        let error = client_config(&key_only).unwrap_err().to_string();
        assert!(error.contains("TLS CA file") && error.contains("holds no CA certificate"), "{error}");
        let error = client_config(&dir.path().join("none.pem")).unwrap_err().to_string();
        assert!(error.contains("cannot read the TLS CA file"), "{error}");
    }

    #[test]
    fn the_server_name_is_the_host_unless_overridden() {
        let dir = TempDir::new("name");
        let tls = ClientTls::from_ca_file(&dir.write("ca.pem", &self_signed().cert.pem())).unwrap();
        let ip = |text: &str| ServerName::from(text.parse::<IpAddr>().unwrap());
        assert_eq!(tls.server_name_for("127.0.0.1:8525").unwrap(), ip("127.0.0.1"));
        assert_eq!(tls.server_name_for("[::1]:8525").unwrap(), ip("::1"));
        let dns = ServerName::try_from("lb.example.com").unwrap();
        assert_eq!(tls.server_name_for("lb.example.com:8525").unwrap(), dns);
        assert!(matches!(tls.server_name_for("bad_name!:1"), Err(ClientTlsError::ServerName { .. })));
        let pinned = tls.clone().with_server_name("lb.example.com").unwrap();
        assert_eq!(pinned.server_name_for("10.0.0.1:8525").unwrap(), dns);
        assert_ne!(pinned, tls);
        assert_eq!(tls.clone(), tls);
    }
}
