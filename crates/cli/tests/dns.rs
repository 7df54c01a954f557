//! Replica sets that follow DNS: `loadwise agent` and `loadwise pick` with
//! `--servers-from`, asking a DNS server on loopback that the test controls, with
//! dispatchers on 127.0.0.2, .3 and .4 (one port for A records; SRV records for
//! distinct ports). The agent and pick are the real binary; the dispatchers, the
//! DNS server and the library's `Failover` run in the test.

mod process;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use loadwise_client::discover::DiscoveryConfig;
use loadwise_client::{Failover, FailoverConfig};
use loadwise_server::ServerConfig;
use loadwise_testkit::{TestServer, wait_until};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The name of the A records.
const NAME: &str = "lb.test";
/// The name of the SRV records.
const SRV_NAME: &str = "_loadwise._tcp.lb.test";
/// The backend the agent reports.
const ADVERTISE: &str = "127.0.0.1:7000";

/// An SRV record: a target name at a port, and the target's address in the
/// additional section (as Kubernetes and Consul send it) or only under its name.
#[derive(Debug, Clone)]
struct Srv {
    target: String,
    port: u16,
    glue: Option<Ipv4Addr>,
}

/// What the DNS server answers: A records and SRV records by name (without the
/// final dot, lower case).
#[derive(Debug, Default)]
struct Zone {
    a: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<Srv>>,
}

/// A DNS server on 127.0.0.1 (UDP) answering from a zone the test changes, and
/// counting the A queries it gets for each name.
struct Dns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    a_queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Dns {
    async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let a_queries = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(socket, Arc::clone(&zone), Arc::clone(&a_queries)));
        Dns { addr, zone, a_queries, task }
    }

    /// Publishes `127.0.0.LAST` for each of `lasts` as the A records of `name`.
    fn set_a(&self, name: &str, lasts: &[u8]) {
        let ips = lasts.iter().map(|last| Ipv4Addr::new(127, 0, 0, *last)).collect();
        self.zone.lock().unwrap().a.insert(name.to_owned(), ips);
    }

    fn set_srv(&self, name: &str, records: Vec<Srv>) {
        self.zone.lock().unwrap().srv.insert(name.to_owned(), records);
    }

    /// A queries answered so far, for any name.
    fn a_queries(&self) -> usize {
        self.a_queries.load(Ordering::SeqCst)
    }

    fn resolver(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>, a_queries: Arc<AtomicUsize>) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else { continue };
        let reply = {
            let zone = zone.lock().unwrap();
            answer(&zone, &buffer[..len], &a_queries)
        };
        if let Some(reply) = reply {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The response to one query message: the zone's records of the name and type
/// asked, or none (NOERROR without records).
fn answer(zone: &Zone, request: &[u8], a_queries: &AtomicUsize) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_queries(request.queries.iter().cloned());
    for query in &request.queries {
        let asked = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        match query.query_type() {
            RecordType::A => {
                a_queries.fetch_add(1, Ordering::SeqCst);
                for ip in zone.a.get(&asked).into_iter().flatten() {
                    response.add_answer(Record::from_rdata(query.name().clone(), 0, RData::A(A(*ip))));
                }
            }
            RecordType::SRV => {
                for srv in zone.srv.get(&asked).into_iter().flatten() {
                    let target = Name::from_ascii(format!("{}.", srv.target)).unwrap();
                    let record = RData::SRV(SRV::new(0, 0, srv.port, target.clone()));
                    response.add_answer(Record::from_rdata(query.name().clone(), 0, record));
                    if let Some(ip) = srv.glue {
                        response.add_additional(Record::from_rdata(target, 0, RData::A(A(ip))));
                    }
                }
            }
            _ => {}
        }
    }
    response.to_vec().ok()
}

/// Dispatchers on `127.0.0.LAST` for each of `lasts`, all on one port (as the
/// replicas behind A records are), and that port.
async fn replicas_on_one_port(lasts: &[u8]) -> (u16, Vec<TestServer>) {
    'again: for _ in 0..20 {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, lasts[0]), 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for last in &lasts[1..] {
            match TcpListener::bind((Ipv4Addr::new(127, 0, 0, *last), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'again,
            }
        }
        let servers =
            listeners.into_iter().map(|l| TestServer::start_on(l, ServerConfig::default())).collect();
        return (port, servers);
    }
    panic!("no port free on every address of {lasts:?} in 20 tries");
}

/// A dispatcher on `127.0.0.LAST` on a port of its own.
async fn replica_on(last: u8) -> TestServer {
    let listener = TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), 0)).await.unwrap();
    TestServer::start_on(listener, ServerConfig::default())
}

fn lists_backend(server: &TestServer) -> bool {
    !server.dispatcher.backends().is_empty()
}

fn open_connections(server: &TestServer) -> u64 {
    server.wire().connections_open
}

/// `loadwise agent` reporting every 200 ms, with `args` saying where to.
fn agent(args: &[&str]) -> process::Proc {
    let base = ["agent", "--advertise", ADVERTISE, "--interval", "200ms", "--max-backoff", "200ms"];
    process::Spawn::new(&[&base[..], args].concat()).start()
}

/// Blocks this worker on the agent's log (the dispatchers and the DNS server run
/// on the other).
fn wait_for_log(agent: &process::Proc, needle: &str) -> String {
    tokio::task::block_in_place(|| agent.wait_for_line(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_the_addresses_of_a_name_as_replicas_come_and_go() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    let (port, servers) = replicas_on_one_port(&[2, 3, 4]).await;
    let [r2, r3, r4] = &servers[..] else { unreachable!() };
    dns.set_a(NAME, &[2, 3]);
    let interval = Duration::from_millis(200);
    let grace = Duration::from_secs(1);
    let source = format!("dns:{NAME}:{port}");
    let agent = agent(&[
        "--servers-from",
        &source,
        "--resolver",
        &dns.resolver(),
        "--resolve-interval",
        "200ms",
        "--removal-grace",
        "1s",
    ]);
    wait_until("both replicas list the backend", || lists_backend(r2) && lists_backend(r3)).await;
    assert_eq!(open_connections(r4), 0, "a replica not in DNS gets no link");

    // A third replica: a link within one re-resolve interval (and the connect).
    let added = Instant::now();
    dns.set_a(NAME, &[2, 3, 4]);
    wait_until("the new replica lists the backend", || lists_backend(r4)).await;
    let found_after = added.elapsed();
    wait_for_log(&agent, &format!("127.0.0.4:{port}"));
    assert!(found_after < interval + Duration::from_secs(2), "found after {found_after:?}");

    // A replica leaves: its link is closed after the grace period, not before.
    let removed = Instant::now();
    dns.set_a(NAME, &[2, 4]);
    wait_until("the removed replica's link is closed", || open_connections(r3) == 0).await;
    let closed_after = removed.elapsed();
    assert!(closed_after >= grace, "closed after {closed_after:?}, within the grace period of {grace:?}");
    wait_for_log(&agent, "closing the link to a replica gone from DNS");
    eprintln!(
        "measured: new replica found after {found_after:?}; removed replica's link closed after {closed_after:?}"
    );

    // An answer with no records keeps every link, and says so.
    let empty_since = Instant::now();
    let queries = dns.a_queries();
    dns.set_a(NAME, &[]);
    wait_until("lookups without records for longer than the grace period", || {
        empty_since.elapsed() > grace + interval && dns.a_queries() >= queries + 4
    })
    .await;
    wait_for_log(&agent, "the DNS answer has no records");
    assert_eq!((open_connections(r2), open_connections(r4)), (1, 1), "the links are kept");
    assert!(lists_backend(r2) && lists_backend(r4));

    // Records again: the replica that left comes back.
    dns.set_a(NAME, &[2, 3, 4]);
    wait_until("the returning replica lists the backend", || lists_backend(r3)).await;
    drop(agent);
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_replicas_on_ports_of_their_own_mixed_with_static_servers() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    let (r1, r2, r3) = (replica_on(2).await, replica_on(3).await, replica_on(4).await);
    let static_one = replica_on(5).await;
    let srv = |n: u8, server: &TestServer, glue: bool| Srv {
        target: format!("r{n}.lb.test"),
        port: server.addr.port(),
        glue: glue.then_some(Ipv4Addr::new(127, 0, 0, n + 1)),
    };
    // r2's address only under its own name: the agent looks it up.
    dns.set_a("r2.lb.test", &[3]);
    dns.set_srv(SRV_NAME, vec![srv(1, &r1, true), srv(2, &r2, false)]);
    let source = format!("dns+srv:{SRV_NAME}");
    // r1 is also given by address: one link, not two.
    let servers = format!("{},{}", static_one.addr, r1.addr);
    let agent = agent(&[
        "--servers-from",
        &source,
        "--server",
        &servers,
        "--resolver",
        &dns.resolver(),
        "--resolve-interval",
        "200ms",
        "--removal-grace",
        "1s",
    ]);
    wait_until("every replica lists the backend", || {
        lists_backend(&r1) && lists_backend(&r2) && lists_backend(&static_one)
    })
    .await;
    assert_eq!(open_connections(&r3), 0);

    dns.set_srv(SRV_NAME, vec![srv(1, &r1, true), srv(2, &r2, false), srv(3, &r3, true)]);
    wait_until("the new SRV replica lists the backend", || lists_backend(&r3)).await;
    wait_for_log(&agent, &r3.addr.to_string());
    // Several lookups have named r1 by now, and it is still one link.
    assert_eq!(open_connections(&r1), 1, "a replica given twice gets one link");

    // r1 leaves DNS but stays given by address: its link stays.
    dns.set_srv(SRV_NAME, vec![srv(2, &r2, false), srv(3, &r3, true)]);
    let left = Instant::now();
    wait_until("past the grace period", || left.elapsed() > Duration::from_millis(1500)).await;
    assert_eq!(open_connections(&r1), 1, "a static server keeps its link");
    drop(agent);
    for server in [r1, r2, r3, static_one] {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_makes_the_agent_look_the_name_up_again_at_once() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    let (port, mut servers) = replicas_on_one_port(&[2, 3, 4]).await;
    dns.set_a(NAME, &[2, 3]);
    let source = format!("dns:{NAME}:{port}");
    // An hour between lookups: only a lost link can bring the next one forward.
    let _agent =
        agent(&["--servers-from", &source, "--resolver", &dns.resolver(), "--resolve-interval", "1h"]);
    wait_until("both replicas list the backend", || lists_backend(&servers[0]) && lists_backend(&servers[1]))
        .await;
    let lookups = dns.a_queries();

    // The replica on .3 is replaced by one on .4 (a rolling update).
    dns.set_a(NAME, &[2, 4]);
    servers.remove(1).stop().await;
    wait_until("the replacement lists the backend", || lists_backend(&servers[1])).await;
    assert!(dns.a_queries() > lookups);
    for server in servers {
        server.stop().await;
    }
}

/// `loadwise pick` asking the replicas of a name, to its end.
async fn pick(args: &[&str]) -> process::Finished {
    let args: Vec<String> = ["pick", "--json"].iter().chain(args).map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        process::run_to_end(&args, &[])
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_fails_over_across_the_replicas_of_a_name() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    // A replica on .3 only; .2 on the same port is named in DNS but down.
    let (port, servers) = replicas_on_one_port(&[3]).await;
    let live = &servers[0];
    let _backend = live.register(10, "10.0.0.9", 7009).await;
    dns.set_a(NAME, &[2, 3]);
    let source = format!("dns:{NAME}:{port}");
    let resolver = dns.resolver();
    let args = ["--servers-from", &source, "--resolver", &resolver];
    let down = format!("127.0.0.2:{port}");
    let mut failed_over = false;
    // The order is random: ask until one pick has tried the replica that is down
    // first (one in two; twenty picks miss it one time in a million).
    for _ in 0..20 {
        let out = pick(&args).await;
        assert!(out.success(), "{out:?}");
        let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(value["backend"], "10.0.0.9:7009");
        assert_eq!(value["dispatcher"], format!("127.0.0.3:{port}"));
        if value["failed"].as_array().unwrap().iter().any(|attempt| attempt["dispatcher"] == down.as_str()) {
            failed_over = true;
            break;
        }
    }
    assert!(failed_over, "no pick tried {down} first");

    // Mixed with a static server: the name alone has only the replica that is down.
    dns.set_a(NAME, &[2]);
    let out = pick(&[&args[..], &["--server", &live.addr.to_string()]].concat()).await;
    assert!(out.success(), "{out:?}");

    // A name without records: the pick fails as unreachable, naming the name.
    dns.set_a(NAME, &[]);
    let out = pick(&args).await;
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stdout.contains("no records") && out.stdout.contains(NAME), "{out:?}");
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(
            &["pick", "--servers-from", &format!("dns:{NAME}:{port}"), "--resolver", &resolver],
            &[],
        )
    })
    .await
    .unwrap();
    assert!(out.stderr.contains("no records"), "{out:?}");
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_follows_the_name_and_looks_again_after_a_replica_fails() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    let (port, mut servers) = replicas_on_one_port(&[2, 3]).await;
    let _backends =
        (servers[0].register(10, "10.0.0.2", 7002).await, servers[1].register(10, "10.0.0.3", 7003).await);
    dns.set_a(NAME, &[2]);
    let discovery = DiscoveryConfig {
        sources: vec![format!("dns:{NAME}:{port}").parse().unwrap()],
        resolver: Some(dns.addr),
        // An hour between lookups: only a failed replica brings the next one forward.
        interval: Duration::from_secs(3600),
        grace: Duration::ZERO,
    };
    let config = FailoverConfig {
        discovery,
        attempt_timeout: Duration::from_millis(500),
        ..FailoverConfig::default()
    };
    let failover = Failover::new(Vec::new(), config).unwrap();
    let answer = failover.pick().await.unwrap();
    assert_eq!(answer.dispatcher, format!("127.0.0.2:{port}"));
    assert_eq!(failover.replicas(), [format!("127.0.0.2:{port}")]);

    // The replica on .2 goes, one on .3 takes its place in DNS.
    servers.remove(0).stop().await;
    dns.set_a(NAME, &[3]);
    let deadline = Instant::now() + process::DEADLINE;
    let answer = loop {
        match failover.pick().await {
            Ok(answer) => break answer,
            Err(error) => assert!(Instant::now() < deadline, "still failing: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.dispatcher, format!("127.0.0.3:{port}"));
    assert_eq!(answer.backend.to_string(), "10.0.0.3:7003");
    for server in servers {
        server.stop().await;
    }
}

/// With the default interval (5 s) and grace period (10 s): how long a new
/// replica waits for an agent to find it, and how long an agent keeps its link to
/// a replica gone from DNS. Run by hand (it takes about 20 s):
/// `cargo test -p loadwise-cli --test dns -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes about 20 s; run by hand to measure"]
async fn measure_the_default_discovery_times() {
    let _serial = loadwise_testkit::shared_access().await;
    let dns = Dns::start().await;
    let (port, servers) = replicas_on_one_port(&[2, 3]).await;
    dns.set_a(NAME, &[2]);
    let source = format!("dns:{NAME}:{port}");
    let _agent = agent(&["--servers-from", &source, "--resolver", &dns.resolver()]);
    wait_until("the first replica lists the backend", || lists_backend(&servers[0])).await;
    let added = Instant::now();
    dns.set_a(NAME, &[2, 3]);
    within_30s("finding the new replica", &|| lists_backend(&servers[1])).await;
    let found_after = added.elapsed();
    let removed = Instant::now();
    dns.set_a(NAME, &[3]);
    within_30s("closing the removed replica's link", &|| open_connections(&servers[0]) == 0).await;
    let closed_after = removed.elapsed();
    eprintln!(
        "defaults: new replica found after {found_after:?}; removed replica's link closed after {closed_after:?}"
    );
}

/// Polls `done` until it holds; fails after 30 s.
async fn within_30s(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} took over 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
