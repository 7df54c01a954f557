//! Every setting of `loadwise serve`, each defined once: its name, type, default,
//! bounds, doc, whether a reload applies it, and where it goes in [`Settings`]. The
//! flags, the variables, the file's keys, the example file, `config show`, the reload
//! diff, the docs tables and the bounds checks all follow from this list (see
//! `define.rs`). A new setting is one entry here, plus its use in the runtime.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::define::{Lens, at, optional_at, service_map, settings};
use super::info::SettingInfo;
use super::model::{Settings, TokenSource};
use super::text::{AdminListen, HostList, TlsListenAddr};
use loadwise_core::scoring::Scoring;
use loadwise_core::selection::Policy;
use loadwise_core::slots::SlotPolicy;
use loadwise_protocol::v2::{self, ServiceName};
use loadwise_protocol::{Heartbeat, MAX_FRAME_LEN};
use loadwise_server::netlist::NetList;

/// The shortest timeout accepted: below it a timeout is a typo, not a wish.
const MILLISECOND: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

/// The most connections of one kind, or backends: far beyond what a process can hold
/// open (each needs a file descriptor), yet far from the counters' limits.
const MAX_COUNT: usize = 10_000_000;

/// The cost of a client is kept in millionths of a percent: less is nothing.
const MIN_PERCENT: f64 = 0.000_001;

/// The shortest legacy frame worth accepting: one heartbeat.
const MIN_FRAME_LEN: u16 = Heartbeat::LEN as u16;

/// The shortest v2 frame limit: the largest v2 message.
const MIN_V2_FRAME_LEN: u16 = v2::MAX_MESSAGE_LEN as u16;

settings! {
    top {
        /// Where backends and clients connect. Refuses to start if the port is taken.
        listen: SocketAddr {
            live: false,
            value_name: "ADDR",
            default: SocketAddr::from(([127, 0, 0, 1], 8523)),
            summary: "where backends and clients connect; refuses to start if the port is taken",
            at: at!(server.listen),
        }
        /// How to choose a backend: least-loaded (lowest report plus the clients sent
        /// since), p2c (the better of two at random, by effective load), round-robin
        /// (ignores load), or original (lowest report only, as the old server did; for
        /// comparison).
        policy: Policy {
            live: true,
            value_name: "POLICY",
            default: Policy::LeastLoaded,
            summary: "`least-loaded`, `p2c`, `round-robin` or `original`; see the balancing guide",
            at: at!(server.dispatch.policy),
        }
        /// Remove a backend that has sent no heartbeat for this long.
        ttl: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(3),
            bounds: [MILLISECOND, HOUR],
            summary: "remove a backend with no heartbeat for this long",
            at: at!(server.dispatch.ttl),
        }
        /// A login whose timestamp is further than this from the dispatcher's clock gets
        /// the error reply. Whole seconds.
        max_clock_skew: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(60),
            bounds: [Duration::ZERO, DAY],
            summary: "a login whose timestamp is further off gets the error reply; whole seconds",
            at: at!(server.dispatch.max_clock_skew),
        }
        /// Most backends registered at once, and most backend connections open (those that
        /// have sent a heartbeat or a v2 Register); heartbeats of further backends are
        /// refused, and a further connection's first heartbeat closes it (v2: Error 13).
        max_backends: usize {
            live: true,
            value_name: "N",
            default: 10_000,
            bounds: [1, MAX_COUNT],
            summary: "heartbeats from further backends are refused; also the budget of backend connections",
            at: at!(server.dispatch.max_backends),
        }
        /// For this long after a backend registers, the clients sent to it count extra
        /// (up to 10 times), so a fresh server is not flooded; 0s turns it off.
        slow_start: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(3),
            bounds: [Duration::ZERO, HOUR],
            summary: "a new backend's picks count extra (up to 10×) for this long; `0s` turns it off",
            at: at!(server.dispatch.load.slow_start),
        }
        /// The cost of one client, in percent of a backend's load, assumed until its
        /// heartbeats show the real figure; from min_cost to max_cost.
        prior_cost: f64 {
            live: true,
            value_name: "PERCENT",
            default: 0.1,
            bounds: [MIN_PERCENT, 100.0],
            summary: "the cost of one client in percent, assumed until heartbeats show it",
            at: at!(server.dispatch.load.prior_cost),
        }
        /// The smallest cost of one client (percent) that learning may settle on.
        min_cost: f64 {
            live: true,
            value_name: "PERCENT",
            default: 0.001,
            bounds: [MIN_PERCENT, 100.0],
            summary: "the smallest learned cost of one client (percent)",
            at: at!(server.dispatch.load.min_cost),
        }
        /// The largest cost of one client (percent) that learning may settle on; at least
        /// min_cost.
        max_cost: f64 {
            live: true,
            value_name: "PERCENT",
            default: 10.0,
            bounds: [MIN_PERCENT, 100.0],
            summary: "the largest learned cost of one client (percent)",
            at: at!(server.dispatch.load.max_cost),
        }
        /// Most client connections open at once (those that have sent a login or a v2
        /// PickRequest, and no heartbeat); a further one's login gets the error reply (v2:
        /// status 14, busy) and is closed. Lowering it closes no open connection.
        max_client_connections: usize {
            live: true,
            value_name: "N",
            default: 8_192,
            bounds: [1, MAX_COUNT],
            summary: "client connections (a login or a v2 pick, no heartbeat) open at once; a further \
                      one's login gets the error reply (v2: status 14) and is closed",
            at: at!(server.max_client_connections),
        }
        /// Most connections open at once that have not yet sent a heartbeat, login or
        /// pick; further ones are closed as they arrive. Legacy backends send their first
        /// heartbeat a second after connecting: allow for as many as connect in a second.
        max_pending_connections: usize {
            live: true,
            value_name: "N",
            default: 1_024,
            bounds: [1, MAX_COUNT],
            summary: "connections open at once that have sent no heartbeat, login or pick yet; further \
                      ones are closed as they arrive",
            at: at!(server.max_pending_connections),
        }
        /// Most client and pending connections open at once from one IP address; further
        /// ones are closed as they arrive. Backend connections are not counted.
        max_connections_per_peer: usize {
            live: true,
            value_name: "N",
            default: 256,
            bounds: [1, MAX_COUNT],
            summary: "client and pending connections open at once from one IP address; further ones \
                      are closed as they arrive. Backend connections are not counted",
            at: at!(server.max_connections_per_peer),
        }
        /// Longest frame accepted, in bytes; a longer one closes its connection.
        max_frame_len: u16 {
            live: true,
            value_name: "BYTES",
            default: MAX_FRAME_LEN,
            bounds: [MIN_FRAME_LEN, MAX_FRAME_LEN],
            summary: "a longer frame closes its connection",
            at: at!(server.connection.max_frame_len),
        }
        /// Longest protocol v2 frame accepted, in bytes (at least the largest v2 message);
        /// a longer one closes its connection. v2 frames are held whole until they are
        /// decoded, so this bounds what one connection can make the dispatcher hold.
        max_v2_frame_len: u16 {
            live: true,
            value_name: "BYTES",
            default: v2::DEFAULT_MAX_V2_FRAME_LEN,
            bounds: [MIN_V2_FRAME_LEN, MAX_FRAME_LEN],
            summary: "a longer protocol v2 frame closes its connection (at least the largest v2 message)",
            at: at!(server.connection.max_v2_frame_len),
        }
        /// Close a connection that holds an incomplete frame for this long.
        frame_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(30),
            bounds: [MILLISECOND, HOUR],
            summary: "close a connection that holds an incomplete frame this long",
            at: at!(server.connection.frame_timeout),
        }
        /// Close a connection that has sent no heartbeat, login or pick this long after it
        /// was accepted (a TLS handshake included).
        first_frame_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(5),
            bounds: [MILLISECOND, HOUR],
            summary: "close a connection that has sent no heartbeat, login or pick this long after it \
                      was accepted (its TLS handshake included)",
            at: at!(server.connection.first_frame_timeout),
        }
        /// Close a connection that does no work (no heartbeat, login or well-formed v2
        /// message) for this long; 0s keeps idle connections.
        idle_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(60),
            bounds: [Duration::ZERO, DAY],
            summary: "close a connection that does no work (no heartbeat, login or well-formed v2 message) this long; `0s` keeps idle connections",
            at: Lens { get: idle_timeout, set: set_idle_timeout },
        }
        /// Close a connection whose peer does not read its replies for this long.
        write_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(10),
            bounds: [MILLISECOND, HOUR],
            summary: "close a connection whose peer does not read its replies this long",
            at: at!(server.connection.write_timeout),
        }
        /// On SIGINT/SIGTERM, how long connections may finish before they are closed.
        shutdown_grace: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(5),
            bounds: [Duration::ZERO, HOUR],
            summary: "on SIGINT/SIGTERM, time for connections to finish",
            at: at!(server.shutdown_grace),
        }
        /// Legacy heartbeats carry no proof of who sent them, so they are accepted only from
        /// these networks (comma-separated ADDRESS/PREFIX), or from none with "none"; so are
        /// v2 heartbeats when there is no auth_secret_file. With auth_secret_file set and
        /// this setting not given, from none. Logins are answered from anywhere.
        legacy_heartbeat_networks: NetList {
            live: true,
            value_name: "NETWORKS|none",
            default: NetList::private(),
            docs_default: "loopback and private ranges; none with `auth_secret_file`",
            summary: "legacy heartbeats, and v2 ones when there is no secret, are accepted only from \
                      these networks (comma-separated `ADDRESS/PREFIX`), or from none with `none`",
            at: at!(server.connection.legacy_heartbeats),
        }
        /// A file holding the secret shared with v2 agents (their --secret-file; at least
        /// 16 bytes, a trailing newline is not part of it), read at start and at each
        /// reload. With it, v2 backends must prove they know it before they register,
        /// and pick replies carry tickets signed with it; without it, v2 heartbeats are
        /// accepted unauthenticated and no tickets are issued.
        auth_secret_file: PathBuf {
            live: true,
            value_name: "PATH",
            example: "\"/etc/loadwise/secret\"",
            summary: "a file holding the secret shared with v2 agents (at least 16 bytes), read at start \
                      and at each reload",
            at: optional_at!(auth_secret_file),
        }
        /// How long the admission ticket in a v2 pick reply stays valid. Whole seconds.
        /// Tickets are issued only with auth_secret_file.
        ticket_lifetime: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(30),
            bounds: [Duration::from_secs(1), DAY],
            summary: "how long the ticket in a v2 pick reply stays valid; whole seconds",
            at: at!(server.connection.ticket_lifetime),
        }
        /// A second listener whose connections speak TLS (the same protocols as on listen),
        /// or "off". Needs tls_cert and tls_key.
        tls_listen: TlsListenAddr {
            live: false,
            value_name: "ADDR|off",
            default: TlsListenAddr::Off,
            summary: "a second listener whose connections speak TLS, or `off`; needs `tls_cert` and `tls_key`",
            at: at!(tls.listen),
        }
        /// The TLS listener's certificate chain: a PEM file, the server's certificate
        /// first, then any intermediates.
        tls_cert: PathBuf {
            live: false,
            value_name: "PATH",
            example: "\"/etc/loadwise/tls/cert.pem\"",
            summary: "the TLS listener's certificate chain, PEM: the server's certificate, then any \
                      intermediates",
            at: optional_at!(tls.cert),
        }
        /// The TLS listener's private key: a PEM file (PKCS#8, PKCS#1 or SEC1), readable
        /// by loadwise alone.
        tls_key: PathBuf {
            live: false,
            value_name: "PATH",
            example: "\"/etc/loadwise/tls/key.pem\"",
            summary: "the TLS listener's private key, PEM (PKCS#8, PKCS#1 or SEC1)",
            at: optional_at!(tls.key),
        }
        /// The service legacy heartbeats and logins belong to; v2 backends and clients that
        /// name it share its pool with them. 1 to 64 bytes of A-Z, a-z, 0-9, '.', '_', '-'.
        default_service: ServiceName {
            live: false,
            value_name: "NAME",
            default: ServiceName::new("default").expect("a valid service name"),
            summary: "the service legacy heartbeats and logins belong to (1 to 64 bytes of \
                      `A-Z a-z 0-9 . _ -`)",
            at: at!(server.dispatch.default_service),
        }
        /// How a v2 backend's metrics make the load it is ranked by, in services without a
        /// scoring of their own: memory, cpu, connections or a custom metric's name, alone,
        /// as the largest of several (max(memory, cpu)) or as a weighted sum
        /// (0.7*memory + 0.3*cpu; 0.5*connections makes 200 connections 100 %).
        scoring: Scoring {
            live: true,
            value_name: "SCORING",
            default: Scoring::default(),
            summary: "how a v2 backend's metrics make its load, in services without their own: \
                      `memory`, `max(memory, cpu)`, `0.7*memory + 0.3*cpu`, ...",
            at: at!(server.dispatch.scoring),
        }
        /// Sticky picks (a v2 PickRequest with a key) go to the key's backend while its
        /// effective load with the pick stays within max(c × mean, mean + slack): this
        /// is c, from 1.01 to 10. Lower spreads hot keys sooner; higher keeps
        /// more keys where they were.
        affinity_balance_factor: f64 {
            live: true,
            value_name: "FACTOR",
            default: loadwise_core::affinity::BALANCE_FACTOR,
            bounds: [loadwise_core::affinity::MIN_BALANCE_FACTOR, loadwise_core::affinity::MAX_BALANCE_FACTOR],
            summary: "sticky picks stay on their backend while its load is within max(c × mean, mean \
                      + slack): this is c; see the balancing guide",
            at: at!(server.dispatch.affinity.balance_factor),
        }
        /// The slack of the sticky-pick bound, in load points (0 to 100): below the mean
        /// plus this, a backend keeps its keys whatever c says, so that a lightly loaded
        /// pool stays sticky.
        affinity_slack: f64 {
            live: true,
            value_name: "POINTS",
            default: loadwise_core::affinity::SLACK,
            bounds: [0.0, loadwise_core::affinity::MAX_SLACK],
            summary: "the slack of the sticky-pick bound, in load points: below mean + slack a backend \
                      keeps its keys",
            at: at!(server.dispatch.affinity.slack),
        }
        /// Eject a backend (no new clients for a while) when this many distinct clients,
        /// each sent there within eject_window, report within one window that they could
        /// not use it (v2 FailureReports; `loadwise pick --connect` and the client
        /// library's connect send them).
        eject_min_clients: u32 {
            live: true,
            value_name: "N",
            default: loadwise_core::ejection::EjectionSettings::default().min_clients,
            bounds: [1, 1_000],
            summary: "eject a backend when this many distinct clients sent there report within                       `eject_window` that they could not use it",
            at: at!(server.dispatch.ejection.min_clients),
        }
        /// How long a pick lets its client report the backend it was sent to, and how
        /// close together the reports of distinct clients must be to count together.
        eject_window: Duration {
            live: true,
            value_name: "DURATION",
            default: loadwise_core::ejection::EjectionSettings::default().window,
            bounds: [MILLISECOND, HOUR],
            summary: "how long after a pick its client's failure report counts, and the window the                       reports of `eject_min_clients` clients must fall in",
            at: at!(server.dispatch.ejection.window),
        }
        /// How long a first ejection lasts; the n-th in a row lasts n times this, up to
        /// eject_max_time.
        eject_time: Duration {
            live: true,
            value_name: "DURATION",
            default: loadwise_core::ejection::EjectionSettings::default().base_time,
            bounds: [MILLISECOND, DAY],
            summary: "how long a first ejection lasts; the n-th in a row lasts n times this, up to                       `eject_max_time`",
            at: at!(server.dispatch.ejection.base_time),
        }
        /// The longest ejection; also the quiet time (no ejection since its return) after
        /// which a backend's next ejection lasts eject_time again.
        eject_max_time: Duration {
            live: true,
            value_name: "DURATION",
            default: loadwise_core::ejection::EjectionSettings::default().max_time,
            bounds: [MILLISECOND, DAY],
            summary: "the longest ejection, and the quiet time after which ejections are short again",
            at: at!(server.dispatch.ejection.max_time),
        }
        /// Eject a backend only while less than this percentage of its service is
        /// ejected (as Envoy's max_ejection_percent: the only backend of a service can
        /// be ejected); 0 turns ejection off.
        eject_max_percent: u8 {
            live: true,
            value_name: "PERCENT",
            default: loadwise_core::ejection::EjectionSettings::default().max_percent,
            bounds: [0, 100],
            summary: "eject only while less than this percentage of the service is ejected; `0`                       turns ejection off",
            at: at!(server.dispatch.ejection.max_percent),
        }
        /// The most failure reports one client (source address) may make per
        /// eject_window; more are ignored and counted.
        eject_reports_per_client: u32 {
            live: true,
            value_name: "N",
            default: loadwise_core::ejection::EjectionSettings::default().reports_per_client,
            bounds: [1, 10_000],
            summary: "the most failure reports one client address may make per `eject_window`; more                       are ignored",
            at: at!(server.dispatch.ejection.reports_per_client),
        }
        /// How a slot service (one whose backends report capacity slots) chooses among the
        /// backends with a place: spread (the most free places first, so clients spread
        /// evenly) or pack (the fullest backend that still has a place first, so idle
        /// servers stay idle and can be scaled down).
        slot_policy: SlotPolicy {
            live: true,
            value_name: "POLICY",
            default: SlotPolicy::Spread,
            summary: "how slot services choose among backends with a free place: `spread` (most free \
                      first) or `pack` (fullest with a place first)",
            at: at!(server.dispatch.slot_policy),
        }
    }
    services {
        /// A service whose backends' load is scored otherwise than by `scoring`, in a
        /// [services.NAME] table of its own. A service given by a flag or variable
        /// replaces the same service's table here; the other tables stay.
        scoring: Scoring {
            live: true,
            value_name: "SCORING",
            example: "\"max(memory, cpu)\"",
            summary: "the scoring of one service, in its own `[services.NAME]` table; the flag takes \
                      `NAME=SCORING` and may be repeated, the variable holds such entries separated by `;`",
            at: service_map!(server.dispatch.service_scoring),
        }
        /// A service whose sticky picks have a balance factor of their own (see
        /// affinity_balance_factor), in its [services.NAME] table.
        affinity_balance_factor: f64 {
            live: true,
            value_name: "FACTOR",
            bounds: [loadwise_core::affinity::MIN_BALANCE_FACTOR, loadwise_core::affinity::MAX_BALANCE_FACTOR],
            example: "1.5",
            summary: "the sticky-pick balance factor of one service, in its `[services.NAME]` table; the \
                      flag takes `NAME=FACTOR`",
            at: service_map!(server.dispatch.service_balance_factor),
        }
        /// A service whose sticky picks have a slack of their own (see affinity_slack),
        /// in its [services.NAME] table.
        affinity_slack: f64 {
            live: true,
            value_name: "POINTS",
            bounds: [0.0, loadwise_core::affinity::MAX_SLACK],
            example: "10.0",
            summary: "the sticky-pick slack of one service, in its `[services.NAME]` table; the flag takes \
                      `NAME=POINTS`",
            at: service_map!(server.dispatch.service_slack),
        }
        /// A slot service that chooses otherwise than by `slot_policy`, in its
        /// [services.NAME] table.
        slot_policy: SlotPolicy {
            live: true,
            value_name: "POLICY",
            example: "\"pack\"",
            summary: "the slot policy of one service, in its `[services.NAME]` table; the flag takes \
                      `NAME=POLICY`",
            at: service_map!(server.dispatch.service_slot_policy),
        }
    }
    admin {
        /// Where the admin HTTP API and dashboard listen, or "off". Keep it on loopback or
        /// a private network: reads need no token.
        listen: AdminListen {
            live: false,
            value_name: "ADDR|off",
            default: AdminListen::default(),
            summary: "the admin HTTP API and dashboard, or `off`",
            at: at!(admin.listen),
        }
        /// The bearer token operator actions (drain, maintenance) must present; without one
        /// they are refused. Prefer token_file, which keeps the secret out of this file
        /// and out of the process list.
        token: String {
            live: true,
            value_name: "TOKEN",
            example: "\"change-me\"",
            secret: true,
            summary: "bearer token for operator actions (drain, maintenance); without one they are refused",
            at: Lens { get: inline_token, set: set_inline_token },
        }
        /// A file holding the admin token, read at start and at each reload (SIGHUP).
        token_file: PathBuf {
            live: true,
            value_name: "PATH",
            example: "\"/etc/loadwise/admin-token\"",
            summary: "a file holding the admin token (surrounding whitespace removed; empty means none)",
            at: Lens { get: token_file, set: set_token_file },
        }
        /// Most admin API connections open at once; further ones are closed as they are
        /// accepted, and counted. They count against the open-file limit with the main
        /// port's budgets, so admin clients cannot starve it.
        max_connections: usize {
            live: false,
            value_name: "N",
            default: 64,
            bounds: [1, 100_000],
            summary: "admin API connections open at once; further ones are closed as they are accepted",
            at: at!(admin.limits.max_connections),
        }
        /// Close an admin connection that has not sent a whole request header this long
        /// after it opened or after its last response.
        header_read_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(5),
            bounds: [MILLISECOND, HOUR],
            summary: "close an admin connection that has not sent a whole request header this long",
            at: at!(admin.limits.header_read_timeout),
        }
        /// Close an admin connection whose client takes no bytes of a response for this
        /// long: one that asks for a large list and stops reading would hold its slot.
        write_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(10),
            bounds: [MILLISECOND, HOUR],
            summary: "close an admin connection whose client takes no bytes of a response this long",
            at: at!(admin.limits.write_timeout),
        }
        /// Answer 408 to an admin request not answered within this.
        request_timeout: Duration {
            live: true,
            value_name: "DURATION",
            default: Duration::from_secs(10),
            bounds: [MILLISECOND, HOUR],
            summary: "an admin request not answered within this gets 408",
            at: at!(admin.limits.request_timeout),
        }
        /// Host names the admin API answers for, comma-separated, besides localhost and
        /// any IP address; a request naming another host gets 421 (a defence against
        /// DNS rebinding). /healthz and /readyz answer any host.
        allowed_hosts: HostList {
            live: false,
            value_name: "HOSTS",
            example: "\"admin.example,10.0.0.5\"",
            summary: "host names the admin API answers for besides `localhost` and IP addresses; others get 421",
            at: optional_at!(admin.allowed_hosts),
        }
    }
}

/// Zero keeps idle connections open.
fn idle_timeout(settings: &Settings) -> Option<Duration> {
    Some(settings.server.connection.idle_timeout.unwrap_or(Duration::ZERO))
}

fn set_idle_timeout(settings: &mut Settings, idle: Duration) {
    settings.server.connection.idle_timeout = (!idle.is_zero()).then_some(idle);
}

fn inline_token(settings: &Settings) -> Option<String> {
    match &settings.admin.token {
        Some(TokenSource::Inline(token)) => Some(token.clone()),
        _ => None,
    }
}

fn set_inline_token(settings: &mut Settings, token: String) {
    settings.admin.token = Some(TokenSource::Inline(token));
}

fn token_file(settings: &Settings) -> Option<PathBuf> {
    match &settings.admin.token {
        Some(TokenSource::File(path)) => Some(path.clone()),
        _ => None,
    }
}

fn set_token_file(settings: &mut Settings, path: PathBuf) {
    settings.admin.token = Some(TokenSource::File(path));
}

// `find` lives by the catalogue it searches, so that `info.rs` needs nothing of it.
impl SettingInfo {
    /// The setting named `name`, as a file key or as a flag.
    pub fn find(name: &str) -> Option<&'static SettingInfo> {
        CATALOG.iter().find(|info| info.key == name || info.long == name)
    }
}
