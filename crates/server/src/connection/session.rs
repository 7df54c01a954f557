//! One connection's protocol v2 session: the handshake, heartbeats and picks, and
//! the reply each frame is owed.
//!
//! No socket here: each frame comes in decoded, its reply frames are appended to the
//! connection's write buffer, and a [`Verdict`] says whether the connection goes on.
//! The rules are those of docs/protocol.md ("Authentication", "Error codes").

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use crate::log_limit::RateLimitedLog;
use crate::pick_answer::ServicePick;
use crate::stats::{WireStats, bump};
use loadwise_core::dispatcher::{Batch, Dispatcher, V2HeartbeatAccepted, V2HeartbeatRefused};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::{self as core, Clocks};
use loadwise_protocol::codec::Inbound;
use loadwise_protocol::ticket;
use loadwise_protocol::v2;
use loadwise_protocol::v2::auth::{self, Nonce, Secret};
use loadwise_protocol::v2::{
    Challenge, DecodeError, Decoded, Endpoint, ErrorCode, ErrorMessage, Heartbeat, LeaseReport, Message,
    PickOutcome, PickReply, PickRequest, Picked, Register, Registered, ServiceName,
};

/// What a connection does after a v2 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Go on reading.
    Continue,
    /// Close once the replies owed are written: the peer broke a rule that the
    /// connection cannot recover from.
    Close { code: ErrorCode, reason: String },
}

/// The v2 state of one connection.
#[derive(Debug, Default)]
pub(super) struct Session {
    /// The nonce of the Challenge sent and not yet used by a Register.
    challenge: Option<Nonce>,
    /// Who the connection's heartbeats must come from: set by an accepted Register,
    /// or without a secret by the first heartbeat.
    identity: Option<(ServiceName, u64)>,
    /// Whether `identity` was proven by a Register.
    registered: bool,
    /// Whether the peer has sent a well-formed v2 message. Until it has, a frame of
    /// another version is skipped without a reply, as a legacy peer must be answered
    /// nothing but its logins' 22-byte replies.
    spoke_v2: bool,
    /// Whether an Error for a skipped frame was sent in the current read: one per read
    /// is enough to tell the peer, and more would let it buy replies cheaply.
    warned_this_read: bool,
    /// Whether a Challenge was sent in the current read: further Hellos in it are
    /// answered by that one, so that 4-byte Hellos cannot buy 28-byte Challenges.
    challenged_this_read: bool,
}

/// What a session needs from its connection to handle one frame.
pub(super) struct Context<'c, 'b> {
    /// This connection's id: the v2 backend heard on it goes when it closes.
    pub connection: ConnectionId,
    pub peer: SocketAddr,
    pub secret: Option<&'c Secret>,
    /// Whether the peer is in the networks unauthenticated heartbeats are accepted
    /// from (`legacy_heartbeat_networks`): without a secret, a v2 heartbeat proves no
    /// more than a legacy one.
    pub unauthenticated_allowed: bool,
    pub ticket_lifetime: Duration,
    /// The unix time of the read, taken once when first needed.
    pub unix_now: &'c mut Option<u64>,
    pub dispatcher: &'c Dispatcher,
    /// Where v2 registrations and refusals are counted.
    pub wire: &'c WireStats,
    pub batch: &'c mut Batch<'b>,
    /// Where refusals worth an operator's attention are logged, at most once a second.
    pub refusal_log: &'c RateLimitedLog,
    /// Told when an ejection begins, so that its end is swept on time.
    pub wake_sweeper: &'c tokio::sync::Notify,
    pub out: &'c mut BytesMut,
}

impl Context<'_, '_> {
    fn unix_now(&mut self) -> u64 {
        *self.unix_now.get_or_insert_with(loadwise_protocol::unix_time_now)
    }

    fn send(&mut self, message: &Message) {
        match message.encode() {
            Ok(frame) => self.out.extend_from_slice(&frame),
            // Every field sent is built here from checked values; a failure is a bug,
            // and the peer is better told nothing than something malformed.
            Err(error) => tracing::error!(%error, ?message, "cannot encode a v2 reply"),
        }
    }

    /// Sends an Error and counts it.
    fn send_error(&mut self, code: ErrorCode, text: &str) {
        self.wire.count_v2_refusal(code);
        self.send(&Message::Error(ErrorMessage::new(code, text)));
    }

    /// Sends an Error, counts and logs it (rate-limited, outside the lock), and
    /// closes the connection.
    fn refuse(&mut self, code: ErrorCode, reason: String) -> Verdict {
        self.send_error(code, &reason);
        self.batch.unlock();
        if let Some(suppressed) = self.refusal_log.should_log(self.batch.now()) {
            let kind = code.name().unwrap_or("refused");
            tracing::warn!(peer = %self.peer, %reason, suppressed, "v2 connection refused ({kind}); closing it");
        }
        Verdict::Close { code, reason }
    }
}

impl Session {
    /// Marks the start of a new read.
    pub(super) fn new_read(&mut self) {
        self.warned_this_read = false;
        self.challenged_this_read = false;
    }

    /// Whether the peer has sent a well-formed v2 message, and so may be answered in
    /// v2 about frames that are not v2 (docs/protocol.md, "Versioning").
    pub(super) fn spoke_v2(&self) -> bool {
        self.spoke_v2
    }

    /// Handles one v2 item of the codec.
    pub(super) fn handle(&mut self, item: Inbound, cx: &mut Context<'_, '_>) -> Verdict {
        match item {
            Inbound::V2(Decoded::Message(message)) => {
                self.spoke_v2 = true;
                self.on_message(message, cx)
            }
            Inbound::V2(Decoded::UnknownType { msg_type, .. }) => {
                self.warn(cx, ErrorCode::UNKNOWN_TYPE, &format!("unknown v2 message type 0x{msg_type:02x}"))
            }
            Inbound::V2(Decoded::OtherVersion { .. }) | Inbound::Skipped { .. } => {
                self.warn(cx, ErrorCode::UNSUPPORTED_VERSION, "supported versions: 0 2")
            }
            Inbound::V2Malformed(error) => self.on_malformed(&error, cx),
            Inbound::Request(_) => Verdict::Continue,
        }
    }

    fn on_message(&mut self, message: Message, cx: &mut Context<'_, '_>) -> Verdict {
        match message {
            Message::Hello(_) => self.on_hello(cx),
            Message::Register(register) => self.on_register(&register, cx),
            Message::Heartbeat(heartbeat) => self.on_heartbeat(heartbeat, cx),
            Message::PickRequest(request) => on_pick(&request, cx),
            Message::FailureReport(report) => {
                let judge = super::failure::Judge {
                    client: cx.peer.ip().to_canonical(),
                    secret: cx.secret,
                    unix_now: cx.unix_now(),
                    batch: cx.batch,
                    wire: cx.wire,
                    refusal_log: cx.refusal_log,
                    wake_sweeper: cx.wake_sweeper,
                };
                super::failure::on_failure_report(&report, judge);
                Verdict::Continue
            }
            other => {
                let text = format!("a {:?} is sent by the dispatcher, not to it", other.message_type());
                self.warn(cx, ErrorCode::UNEXPECTED, &text)
            }
        }
    }

    /// A malformed frame was skipped. A client waits for one answer per
    /// PickRequest, so a malformed one is always answered; others once per read.
    fn on_malformed(&mut self, error: &DecodeError, cx: &mut Context<'_, '_>) -> Verdict {
        match error {
            DecodeError::Malformed { kind: loadwise_protocol::v2::MessageType::PickRequest, .. } => {
                // Short, since every one is answered: the reply stays near the request's size.
                cx.send_error(ErrorCode::MALFORMED, "malformed PickRequest");
                Verdict::Continue
            }
            _ => self.warn(cx, ErrorCode::MALFORMED, &error_text(error)),
        }
    }

    /// Answers a frame that is skipped with an Error, at most once per read.
    fn warn(&mut self, cx: &mut Context<'_, '_>, code: ErrorCode, text: &str) -> Verdict {
        if std::mem::replace(&mut self.warned_this_read, true) {
            cx.wire.count_v2_refusal(code);
        } else {
            cx.send_error(code, text);
        }
        Verdict::Continue
    }

    /// `42 of service search at 10.0.0.2:1002`, for log lines: the backend this
    /// connection's heartbeats come from.
    fn describe(&self, backend_id: u64, endpoint: &Endpoint) -> String {
        let service = self.identity.as_ref().map_or("?", |(service, _)| service.as_str());
        format!("{backend_id} of service {service} at {endpoint}")
    }

    fn on_hello(&mut self, cx: &mut Context<'_, '_>) -> Verdict {
        if self.challenged_this_read && self.challenge.is_some() {
            return Verdict::Continue;
        }
        self.challenged_this_read = true;
        let nonce = auth::new_nonce(&mut rand::rng());
        self.challenge = Some(nonce);
        let server_time = cx.unix_now();
        cx.send(&Message::Challenge(Challenge { nonce, server_time }));
        Verdict::Continue
    }

    fn on_register(&mut self, register: &Register, cx: &mut Context<'_, '_>) -> Verdict {
        let Some(nonce) = self.challenge.take() else {
            return cx
                .refuse(ErrorCode::NO_CHALLENGE, "a Register needs a Challenge first: send Hello".into());
        };
        if let Some(secret) = cx.secret
            && auth::verify_register(secret.as_bytes(), &nonce, register).is_err()
        {
            let reason = format!(
                "backend {} of service {} did not prove it knows the secret",
                register.backend_id, register.service
            );
            return cx.refuse(ErrorCode::AUTH_FAILED, reason);
        }
        if let Some(verdict) = self.check_identity((&register.service, register.backend_id), cx) {
            return verdict;
        }
        self.identity = Some((register.service.clone(), register.backend_id));
        self.registered = true;
        bump(&cx.wire.v2_registrations);
        cx.send(&Message::Registered(Registered { backend_id: register.backend_id }));
        Verdict::Continue
    }

    /// Refuses a claim to be another backend than the one this connection is bound to.
    fn check_identity(
        &self,
        (service, id): (&ServiceName, u64),
        cx: &mut Context<'_, '_>,
    ) -> Option<Verdict> {
        let bound = self
            .identity
            .as_ref()
            .filter(|(bound_service, bound_id)| (bound_service, *bound_id) != (service, id))?;
        let reason = format!(
            "this connection belongs to backend {} of service {}, not {id} of {service}",
            bound.1, bound.0
        );
        Some(cx.refuse(ErrorCode::IDENTITY_MISMATCH, reason))
    }

    fn on_heartbeat(&mut self, heartbeat: Heartbeat, cx: &mut Context<'_, '_>) -> Verdict {
        if cx.secret.is_some() && !self.registered {
            let reason = "this dispatcher needs a Register (Hello, Challenge, Register) before heartbeats";
            return cx.refuse(ErrorCode::AUTH_REQUIRED, reason.into());
        }
        if cx.secret.is_none() && !cx.unauthenticated_allowed {
            bump(&cx.wire.heartbeats_not_allowed);
            loadwise_core::dispatcher::bump(&cx.dispatcher.stats().refused_heartbeats);
            let reason = "heartbeats are accepted unauthenticated only from legacy_heartbeat_networks, and this \
                dispatcher has no secret to authenticate others";
            return cx.refuse(ErrorCode::AUTH_REQUIRED, reason.into());
        }
        if let Some(verdict) = self.check_identity((&heartbeat.service, heartbeat.backend_id), cx) {
            return verdict;
        }
        if self.identity.is_none() {
            self.identity = Some((heartbeat.service.clone(), heartbeat.backend_id));
        }
        // What log lines name the backend by; formatted only when one is written.
        let (backend_id, endpoint) = (heartbeat.backend_id, heartbeat.endpoint.clone());
        let accepted = cx.batch.heartbeat_v2(cx.connection, report_of(heartbeat));
        if let Ok(V2HeartbeatAccepted { lease: Some(lease), .. }) = &accepted {
            let report = LeaseReport { grant_seq: lease.grant_seq, sent_total: lease.sent_total };
            cx.send(&Message::LeaseReport(report));
        }
        match accepted {
            Ok(V2HeartbeatAccepted { registered: false, .. }) => {}
            Ok(accepted) => {
                cx.batch.unlock();
                log_registered(&accepted, &self.describe(backend_id, &endpoint), cx.peer);
            }
            Err(refused) => {
                match refused {
                    // An Error 8 like any other: once per read, so that a peer cannot
                    // buy a long reply with each short frame.
                    V2HeartbeatRefused::LegacyAddress { .. } => {
                        self.warn(cx, ErrorCode::MALFORMED, &refused.to_string());
                    }
                    V2HeartbeatRefused::Full(_) => {
                        self.warn(cx, ErrorCode::BACKEND_LIMIT, &refused.to_string());
                    }
                }
                cx.batch.unlock();
                if let Some(suppressed) = cx.refusal_log.should_log(cx.batch.now()) {
                    let backend = self.describe(backend_id, &endpoint);
                    tracing::warn!(peer = %cx.peer, %backend, error = %refused, suppressed, "v2 heartbeat refused");
                }
            }
        }
        Verdict::Continue
    }
}

/// Answers a PickRequest with a PickReply, a ticket included when there is a secret.
fn on_pick(request: &PickRequest, cx: &mut Context<'_, '_>) -> Verdict {
    let unix_now = cx.unix_now();
    let clocks = Clocks { client: request.timestamp, dispatcher: unix_now };
    // The client's address is remembered with the pick, so that its failure report
    // about that backend counts.
    let client = cx.peer.ip().to_canonical();
    let asked = core::PickRequest::service(&request.service, clocks)
        .with_key(request.key.as_bytes())
        .from_client(client);
    let outcome = cx.batch.pick(&asked);
    let outcome = match ServicePick::of(outcome) {
        Ok(ServicePick { backend_id, endpoint, legacy, .. }) => {
            let ticket = match cx.secret {
                Some(secret) if !legacy => {
                    // An HMAC is slow next to a pick: not while every connection waits.
                    cx.batch.unlock();
                    let lifetime = cx.ticket_lifetime.as_secs();
                    issue_ticket(secret, backend_id, &request.service, unix_now, lifetime)
                }
                _ => Vec::new(),
            };
            PickOutcome::Picked(Picked { backend_id, endpoint, ticket })
        }
        Err(code) => {
            cx.wire.count_v2_refusal(code);
            PickOutcome::Refused(code)
        }
    };
    cx.send(&Message::PickReply(PickReply { request_id: request.request_id, outcome }));
    Verdict::Continue
}

fn issue_ticket(secret: &Secret, backend_id: u64, service: &ServiceName, now: u64, lifetime: u64) -> Vec<u8> {
    let mut nonce = [0u8; ticket::NONCE_LEN];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce);
    let claims = ticket::Claims::new(backend_id, service, now, lifetime, nonce);
    ticket::issue(secret.as_bytes(), &claims).as_bytes().to_vec()
}

/// The error and its cause, on one line, for an Error's text.
fn error_text(error: &DecodeError) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

fn log_registered(accepted: &V2HeartbeatAccepted, backend: &str, peer: SocketAddr) {
    match accepted.score {
        Some(score) => tracing::info!(%backend, %peer, score, id = %accepted.id, "v2 backend registered"),
        None => tracing::info!(%backend, %peer, score = "none", id = %accepted.id, "v2 backend registered"),
    }
    if accepted.score.is_none() {
        // Usual for a moment: an agent reports CPU from its second heartbeat on.
        tracing::info!(%backend, "not scored yet: the heartbeat lacks a figure its service's scoring needs; ranked last until it has one");
    }
}

/// A v2 heartbeat in the core's terms: percentages from hundredths, counts and custom
/// figures as numbers, the endpoint and state as the core names them.
fn report_of(heartbeat: v2::Heartbeat) -> core::V2Report {
    let percent = |value: v2::Percent| f64::from(value.hundredths()) / 100.0;
    let metrics = core::Metrics {
        memory: heartbeat.memory.map(percent),
        cpu: heartbeat.cpu.map(percent),
        connections: heartbeat.connections.map(f64::from),
        custom: heartbeat
            .metrics
            .into_iter()
            .map(|metric| (metric.name.as_str().to_owned(), metric.value))
            .collect(),
    };
    let health = match heartbeat.health {
        v2::Health::Healthy => core::Health::Healthy,
        v2::Health::Unhealthy => core::Health::Unhealthy,
    };
    let state = match heartbeat.state {
        v2::State::Ready => core::State::Ready,
        v2::State::Draining => core::State::Draining,
        v2::State::Maintenance => core::State::Maintenance,
    };
    core::V2Report {
        service: heartbeat.service,
        backend_id: heartbeat.backend_id,
        endpoint: core_endpoint(heartbeat.endpoint),
        metrics,
        weight: heartbeat.weight,
        state,
        health,
        slots: heartbeat.slots.map(|slots| core::SlotReport {
            capacity: slots.capacity,
            in_use: slots.in_use,
            grant_seq: slots.grant_seq,
            grant_total: slots.grant_total,
        }),
    }
}

/// A v2 endpoint as the core keeps it.
fn core_endpoint(endpoint: v2::Endpoint) -> core::Endpoint {
    let host = match endpoint.host {
        v2::Host::V4(ip) => core::Host::V4(ip),
        v2::Host::V6(ip) => core::Host::V6(ip),
        v2::Host::Name(name) => core::Host::Name(name),
    };
    core::Endpoint { host, port: endpoint.port }
}
