//! Prometheus metrics, read from the dispatcher's and the server's own counters at
//! scrape time.
//!
//! Nothing is counted twice: the dispatcher keeps its atomics
//! ([`Stats`](loadwise_core::dispatcher::Stats)), the server its wire ones
//! ([`WireStats`]), and the collector turns a snapshot of them into metrics on every
//! scrape. Counter names get their `_total` suffix from the
//! encoder.
//!
//! Label cardinality is bounded: a service exists while it has a backend (the
//! default one always), so there are at most `max_backends + 1` services; refusal
//! codes are the fixed list of [`ErrorCode::ALL`] and `other`; connection kinds and
//! refusal reasons are fixed lists too.

use std::fmt::Error;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::error::ApiError;
use super::views::by_service;
use crate::stats::{CloseReason, ConnectionKind, ConnectionRefusal, ReportVerdict, WireSnapshot, WireStats};
use loadwise_core::affinity::PassReason;
use loadwise_core::dispatcher::{BackendSnapshot, Dispatcher, LatencyHistogram, ServicePicks, StatsSnapshot};
use loadwise_core::model::Cause;
use loadwise_core::selection::BackendState;
use loadwise_protocol::v2::{ErrorCode, FailureReason, ServiceName};

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose only sources are the dispatcher's and the server's counters, under
/// the `loadwise_` prefix.
pub(crate) fn registry(dispatcher: Arc<Dispatcher>, wire: Arc<WireStats>) -> Registry {
    let mut registry = Registry::with_prefix("loadwise");
    registry.register_collector(Box::new(DispatcherCollector { dispatcher, wire }));
    registry
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(registry): State<Arc<Registry>>) -> Result<Response, ApiError> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry)
        .map_err(|error| ApiError::Internal(format!("encoding metrics: {error}")))?;
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// Turns the dispatcher's counters and table, and the server's wire counters, into
/// metrics on each scrape.
#[derive(Debug)]
struct DispatcherCollector {
    dispatcher: Arc<Dispatcher>,
    wire: Arc<WireStats>,
}

impl Collector for DispatcherCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        let stats = self.dispatcher.stats();
        let snapshot = stats.snapshot();
        let wire = self.wire.snapshot();
        // The default service is fixed for the dispatcher's life; one lock per scrape.
        let default_service = self.dispatcher.settings().default_service;
        encode_build_info(&mut encoder)?;
        let services = self.dispatcher.service_picks();
        encode_picks(&mut encoder, &snapshot, default_service.as_str(), &services)?;
        encode_latency(&mut encoder, &stats.pick_latency)?;
        let backends = self.dispatcher.snapshot();
        encode_backends(&mut encoder, &self.dispatcher, &backends)?;
        encode_outliers(&mut encoder, &backends, &snapshot, &wire)?;
        encode_affinity(&mut encoder, &self.dispatcher)?;
        encode_heartbeats(&mut encoder, &snapshot, &wire)?;
        encode_connections(&mut encoder, &wire)?;
        encode_protocol(&mut encoder, &wire)?;
        encode_v2(&mut encoder, &wire)
    }
}

type Labels<'a> = [(&'static str, &'a str)];

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), Error> {
    let gauge = as_gauge(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Gauges are signed; no count here comes near the limit.
fn as_gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// One metric with a series per label set.
fn family(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    series: &[(&Labels<'_>, u64)],
) -> Result<(), Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let labels: &Labels<'_> = labels;
        let encoder = metric.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => as_gauge(*value).encode(encoder)?,
            _ => ConstCounter::new(*value).encode(encoder)?,
        }
    }
    Ok(())
}

/// `loadwise_build_info{version}`, always 1: joins the version to other series.
fn encode_build_info(encoder: &mut DescriptorEncoder) -> Result<(), Error> {
    let help = "The running build: its version as a label, value 1.";
    let labels: &Labels<'_> = &[("version", env!("CARGO_PKG_VERSION"))];
    family(encoder, ("build_info", help, MetricType::Gauge), &[(labels, 1)])
}

/// The dispatcher counts every pick, and each other service's apart
/// ([`Dispatcher::service_picks`]); the default service's are what is left. Picks
/// refused before a service was found (a clock skew, an unknown service) count
/// under the default service.
fn encode_picks(
    encoder: &mut DescriptorEncoder,
    stats: &StatsSnapshot,
    default: &str,
    services: &[(ServiceName, ServicePicks)],
) -> Result<(), Error> {
    let others = services.iter().fold(ServicePicks::default(), |sum, (_, picks)| ServicePicks {
        answered: sum.answered + picks.answered,
        no_backend: sum.no_backend + picks.no_backend,
    });
    let mut rows: Vec<([(&'static str, &str); 2], u64)> = vec![
        (
            [("service", default), ("result", "answered")],
            stats.logins_answered.saturating_sub(others.answered),
        ),
        (
            [("service", default), ("result", "no_backend")],
            stats.logins_no_backend.saturating_sub(others.no_backend),
        ),
        ([("service", default), ("result", "clock_skew")], stats.logins_clock_skew),
    ];
    for (name, picks) in services {
        rows.push(([("service", name.as_str()), ("result", "answered")], picks.answered));
        rows.push(([("service", name.as_str()), ("result", "no_backend")], picks.no_backend));
    }
    let series: Vec<(&Labels<'_>, u64)> = rows.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "Client picks (legacy logins, v2 PickRequests and HTTP picks) by service and outcome; refusals before a service is found (clock skew, unknown service) count under the default service.";
    family(encoder, ("picks", help, MetricType::Counter), &series)
}

/// The latency histogram, from the dispatcher's cumulative buckets.
fn encode_latency(encoder: &mut DescriptorEncoder, histogram: &LatencyHistogram) -> Result<(), Error> {
    let help = "Time the dispatcher took to answer a pick, lock wait included; picks that arrived in one read each count that read's average.";
    let metric =
        encoder.encode_descriptor("pick_duration", help, Some(&Unit::Seconds), MetricType::Histogram);
    let cumulative = histogram.buckets();
    // The encoder sums the counts it is given, so it takes per-bucket counts.
    let mut previous = 0;
    let per_bucket: Vec<(f64, u64)> = cumulative
        .iter()
        .map(|&(bound, total)| {
            let count = total - previous;
            previous = total;
            (bound, count)
        })
        .collect();
    let count = cumulative.last().map_or(0, |&(_, total)| total);
    metric?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        histogram.sum_seconds(),
        count,
        &per_bucket,
        None,
    )
}

fn encode_backends(
    encoder: &mut DescriptorEncoder,
    dispatcher: &Dispatcher,
    backends: &[BackendSnapshot],
) -> Result<(), Error> {
    let services = dispatcher.services();
    let counted = by_service(&services, backends);
    let series: Vec<_> = counted
        .iter()
        .flat_map(|(service, counts)| {
            BackendState::ALL.into_iter().map(move |state| {
                ([("service", service.name.as_str()), ("state", state.name())], counts.get(state) as u64)
            })
        })
        .collect();
    let series: Vec<(&Labels<'_>, u64)> =
        series.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "Registered backends by service and state. A service is listed while it has a backend (the default one always), so there are at most max_backends + 1 services.";
    family(encoder, ("backends", help, MetricType::Gauge), &series)
}

/// Backends out of rotation by service and cause; clients' failure reports, the
/// ejections they made and the returns.
fn encode_outliers(
    encoder: &mut DescriptorEncoder,
    backends: &[BackendSnapshot],
    stats: &StatsSnapshot,
    wire: &WireSnapshot,
) -> Result<(), Error> {
    let mut out: BTreeMap<(&str, Cause), u64> = BTreeMap::new();
    for backend in backends {
        if let Some(cause) = backend.hold.standing().cause {
            *out.entry((backend.service.as_str(), cause)).or_default() += 1;
        }
    }
    let labels: Vec<_> =
        out.keys().map(|(service, cause)| [("service", *service), ("cause", cause.name())]).collect();
    let series: Vec<(&Labels<'_>, u64)> =
        labels.iter().zip(out.values()).map(|(l, v)| (&l[..], *v)).collect();
    let help = "Backends that get no new clients, by service and cause (operator, agent: its drain or maintenance, unhealthy: its own checks, ejected: its clients' failure reports); each is counted under the first cause in that order. Only causes with a backend are listed.";
    family(encoder, ("backends_out", help, MetricType::Gauge), &series)?;
    let failures = &wire.failures;
    let labels: Vec<_> = FailureReason::ALL
        .iter()
        .flat_map(|reason| {
            ReportVerdict::NAMES.iter().map(move |verdict| [("reason", reason.name()), ("outcome", *verdict)])
        })
        .collect();
    let values = failures.reports.iter().flatten();
    let series: Vec<(&Labels<'_>, u64)> = labels.iter().zip(values).map(|(l, v)| (&l[..], *v)).collect();
    let help = "Clients' failure reports (v2 FailureReport), by reason and outcome: counted toward an ejection, ejected (the report that ejected the backend), cap_reached (enough clients, but eject_max_percent of the service is out), not_sent_there (the client was not sent to that backend within eject_window), rate_limited, already_ejected, unknown_backend, bad_ticket.";
    family(encoder, ("failure_reports", help, MetricType::Counter), &series)?;
    let labels: Vec<_> = FailureReason::ALL.iter().map(|reason| [("reason", reason.name())]).collect();
    let series: Vec<(&Labels<'_>, u64)> =
        labels.iter().zip(&failures.ejections).map(|(l, v)| (&l[..], *v)).collect();
    let help =
        "Backends ejected by their clients' failure reports, by the reason of the report that ejected them.";
    family(encoder, ("ejections", help, MetricType::Counter), &series)?;
    let help = "Ejected backends back in rotation because their ejection time ended.";
    counter(encoder, "ejection_returns", help, stats.ejection_returns)?;
    encode_slots(encoder, backends, stats)
}

/// The places of each slot service, summed over its slot backends, and the picks
/// refused for lack of one.
fn encode_slots(
    encoder: &mut DescriptorEncoder,
    backends: &[BackendSnapshot],
    stats: &StatsSnapshot,
) -> Result<(), Error> {
    let mut sums: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for backend in backends {
        if let Some(slots) = &backend.slots {
            let sum = sums.entry(backend.service.as_str()).or_default();
            let figures =
                [u64::from(slots.capacity), u64::from(slots.in_use), slots.free, slots.sent_since_report];
            for (total, figure) in sum.iter_mut().zip(figures) {
                *total = total.saturating_add(figure);
            }
        }
    }
    const KINDS: [&str; 4] = ["capacity", "in_use", "free", "sent_since_heartbeat"];
    let labels: Vec<_> =
        sums.keys().flat_map(|service| KINDS.map(|kind| [("service", *service), ("kind", kind)])).collect();
    let values = sums.values().flatten();
    let series: Vec<(&Labels<'_>, u64)> = labels.iter().zip(values).map(|(l, v)| (&l[..], *v)).collect();
    let help = "The places of each slot service, summed over its backends that report capacity slots: capacity, in_use (as the backends count them), free (what this dispatcher may still fill: each backend's grant's rest, at most its places reported free less the clients sent since), sent_since_heartbeat (clients this dispatcher sent since each backend's last heartbeat).";
    family(encoder, ("slot_places", help, MetricType::Gauge), &series)?;
    let help = "Picks of slot services refused because no backend had a free place this dispatcher may fill (v2 status 15, HTTP 503, the legacy error reply).";
    counter(encoder, "no_free_place", help, stats.no_free_place)
}

/// Keyed picks per service, and why their key's first backend was passed over. Only
/// the services that had a keyed pick and still have a backend are listed.
fn encode_affinity(encoder: &mut DescriptorEncoder, dispatcher: &Dispatcher) -> Result<(), Error> {
    let counts = dispatcher.affinity_counts();
    let keyed: Vec<_> =
        counts.iter().map(|(service, counts)| ([("service", service.as_str())], counts.keyed)).collect();
    let keyed: Vec<(&Labels<'_>, u64)> = keyed.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "v2 picks that carried an affinity key, by service.";
    family(encoder, ("keyed_picks", help, MetricType::Counter), &keyed)?;
    let passed: Vec<_> = counts
        .iter()
        .flat_map(|(service, counts)| {
            PassReason::ALL.iter().zip(counts.first_passed).map(move |(reason, value)| {
                ([("service", service.as_str()), ("reason", reason.name())], value)
            })
        })
        .collect();
    let passed: Vec<(&Labels<'_>, u64)> =
        passed.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "Keyed picks whose key's first backend was passed over, by service and reason (draining, maintenance, over_bound: its load with the pick above the bound, unscored, gone).";
    family(encoder, ("keyed_first_choice_passed", help, MetricType::Counter), &passed)?;
    let fallbacks: Vec<_> =
        counts.iter().map(|(service, counts)| ([("service", service.as_str())], counts.fallbacks)).collect();
    let fallbacks: Vec<(&Labels<'_>, u64)> =
        fallbacks.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "Keyed picks that met no backend within the bound on their walk and were answered by the policy, by service.";
    family(encoder, ("keyed_fallbacks", help, MetricType::Counter), &fallbacks)
}

fn encode_heartbeats(
    encoder: &mut DescriptorEncoder,
    stats: &StatsSnapshot,
    wire: &WireSnapshot,
) -> Result<(), Error> {
    counter(encoder, "heartbeats", "Heartbeats received, refused ones included.", stats.heartbeats)?;
    let help = "Heartbeats refused: an unusable address, a new backend while the table is full, or a legacy heartbeat from outside the allowed networks.";
    counter(encoder, "heartbeats_refused", help, stats.refused_heartbeats)?;
    let help = "Unauthenticated heartbeats (legacy, or v2 without a secret) refused because the peer is outside legacy_heartbeat_networks.";
    counter(encoder, "heartbeats_not_allowed", help, wire.heartbeats_not_allowed)?;
    let help = "Heartbeats refused, by reason: not_allowed (unauthenticated, from outside legacy_heartbeat_networks, which is empty when auth_secret_file is set and it is not given), other (an unusable address, a full table).";
    let other = stats.refused_heartbeats.saturating_sub(wire.heartbeats_not_allowed);
    family(
        encoder,
        ("refused_heartbeats", help, MetricType::Counter),
        &[(&[("reason", "not_allowed")], wire.heartbeats_not_allowed), (&[("reason", "other")], other)],
    )?;
    let help = "Heartbeats reporting a load above 100 %, which is not a percentage.";
    counter(encoder, "invalid_load_reports", help, stats.invalid_mem_reports)?;
    family(
        encoder,
        ("evictions", "Backends removed from the table, by reason.", MetricType::Counter),
        &[
            (&[("reason", "disconnected")], stats.evicted_disconnected),
            (&[("reason", "expired")], stats.evicted_expired),
        ],
    )
}

fn encode_connections(encoder: &mut DescriptorEncoder, stats: &WireSnapshot) -> Result<(), Error> {
    let help = "TCP connections, accepted or refused as they arrived (by the per-peer cap or a full pending headroom).";
    family(
        encoder,
        ("connections", help, MetricType::Counter),
        &[
            (&[("result", "accepted")], stats.connections_accepted),
            (&[("result", "refused")], stats.connections_refused),
        ],
    )?;
    gauge(encoder, "connections_open", "TCP connections open now.", stats.connections_open)?;
    let by_kind: Vec<[(&'static str, &str); 1]> =
        ConnectionKind::ALL.iter().map(|kind| [("kind", kind.name())]).collect();
    let series: Vec<(&Labels<'_>, u64)> = by_kind
        .iter()
        .zip(ConnectionKind::ALL)
        .map(|(labels, kind)| (&labels[..], stats.open(kind)))
        .collect();
    let help = "TCP connections open now, by kind: pending (nothing said yet), client (logged in or picked), backend (heartbeated); each has a budget.";
    family(encoder, ("connections_open_by_kind", help, MetricType::Gauge), &series)?;
    let reasons: Vec<[(&'static str, &str); 1]> =
        ConnectionRefusal::ALL.iter().map(|reason| [("reason", reason.name())]).collect();
    let series: Vec<(&Labels<'_>, u64)> = reasons
        .iter()
        .zip(ConnectionRefusal::ALL)
        .map(|(labels, reason)| (&labels[..], stats.refused(reason)))
        .collect();
    let help = "Connections refused or closed for a budget, by reason: at accept (peer_limit, pending_limit), at the first heartbeat, login or pick (backend_limit, client_limit), or for saying nothing of the kind in time (first_frame_timeout).";
    family(encoder, ("connection_refusals", help, MetricType::Counter), &series)?;
    encode_closes(encoder, stats)
}

/// Every accepted connection ends once, under one of a fixed set of reasons.
fn encode_closes(encoder: &mut DescriptorEncoder, stats: &WireSnapshot) -> Result<(), Error> {
    let reasons: Vec<[(&'static str, &str); 1]> =
        CloseReason::ALL.iter().map(|reason| [("reason", reason.name())]).collect();
    let series: Vec<(&Labels<'_>, u64)> = reasons
        .iter()
        .zip(CloseReason::ALL)
        .map(|(labels, reason)| (&labels[..], stats.closed(reason)))
        .collect();
    let help = "Accepted TCP connections that ended, by reason: peer_closed, peer_reset (or another I/O error), protocol_error, idle_timeout, frame_timeout, write_timeout, first_frame_timeout, budget, refused (a v2 refusal that ends the session), tls_handshake, shutdown.";
    family(encoder, ("connections_closed", help, MetricType::Counter), &series)
}

fn encode_protocol(encoder: &mut DescriptorEncoder, stats: &WireSnapshot) -> Result<(), Error> {
    let help = "Protocol errors: malformed frames close their connection; unknown commands are skipped.";
    family(
        encoder,
        ("protocol_errors", help, MetricType::Counter),
        &[
            (&[("kind", "malformed")], stats.protocol_errors),
            (&[("kind", "unknown_command")], stats.skipped_frames),
        ],
    )
}

fn encode_v2(encoder: &mut DescriptorEncoder, stats: &WireSnapshot) -> Result<(), Error> {
    let help = "v2 Registers accepted (Hello, Challenge, Register); backends that register by heartbeat alone, where no secret is configured, are not counted.";
    counter(encoder, "v2_registrations", help, stats.v2_registrations)?;
    let refusals = refusal_series(stats);
    let labels: Vec<[(&'static str, &str); 1]> =
        refusals.iter().map(|(code, _)| [("code", code.as_str())]).collect();
    let series: Vec<(&Labels<'_>, u64)> =
        labels.iter().zip(&refusals).map(|(labels, (_, value))| (&labels[..], *value)).collect();
    let help = "v2 refusals sent (Error messages and refused PickReplies), by error code; other counts codes this version does not name.";
    family(encoder, ("v2_refusals", help, MetricType::Counter), &series)
}

/// One `(code label, count)` per error code of [`ErrorCode::ALL`], then `other`.
fn refusal_series(stats: &WireSnapshot) -> Vec<(String, u64)> {
    let named = ErrorCode::ALL.iter().map(|&(code, name)| (code_label(name), stats.v2_refusals_with(code)));
    let other = stats.v2_refusals.last().copied().unwrap_or(0);
    named.chain(std::iter::once(("other".to_owned(), other))).collect()
}

/// A code's name as a label value: `authentication failed` is `authentication_failed`.
fn code_label(name: &str) -> String {
    name.to_ascii_lowercase().replace([' ', '-'], "_")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use loadwise_core::model::PickRequest;

    #[test]
    fn every_refusal_code_has_its_own_label_and_other_comes_last() {
        let stats = WireSnapshot::default();
        let labels: Vec<String> = refusal_series(&stats).into_iter().map(|(label, _)| label).collect();
        assert_eq!(labels.len(), ErrorCode::ALL.len() + 1);
        assert_eq!(labels.iter().collect::<BTreeSet<_>>().len(), labels.len(), "distinct: {labels:?}");
        assert_eq!(labels.last().map(String::as_str), Some("other"));
        assert!(labels.contains(&"authentication_failed".to_owned()), "{labels:?}");
        for label in &labels {
            assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{label}");
        }
    }

    /// The names and types dashboards and alerts rely on, from both sources: moving a
    /// counter between the dispatcher and the server must not change them.
    #[test]
    fn every_metric_family_keeps_its_name_and_type() {
        let dispatcher = Arc::new(Dispatcher::new(loadwise_core::dispatcher::DispatchSettings::default()));
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry(dispatcher, Arc::default())).unwrap();
        let families: Vec<&str> =
            body.lines().filter_map(|line| line.strip_prefix("# TYPE loadwise_")).collect();
        assert_eq!(
            families,
            [
                "build_info gauge",
                "picks counter",
                "pick_duration_seconds histogram",
                "backends gauge",
                "backends_out gauge",
                "failure_reports counter",
                "ejections counter",
                "ejection_returns counter",
                "slot_places gauge",
                "no_free_place counter",
                "keyed_picks counter",
                "keyed_first_choice_passed counter",
                "keyed_fallbacks counter",
                "heartbeats counter",
                "heartbeats_refused counter",
                "heartbeats_not_allowed counter",
                "refused_heartbeats counter",
                "invalid_load_reports counter",
                "evictions counter",
                "connections counter",
                "connections_open gauge",
                "connections_open_by_kind gauge",
                "connection_refusals counter",
                "connections_closed counter",
                "protocol_errors counter",
                "v2_registrations counter",
                "v2_refusals counter",
            ]
        );
    }

    #[test]
    fn connections_are_exposed_by_kind_and_refusals_by_reason() {
        let dispatcher = Arc::new(Dispatcher::new(loadwise_core::dispatcher::DispatchSettings::default()));
        let stats = Arc::new(WireStats::default());
        stats.connections_by_kind[ConnectionKind::Client.index()]
            .store(3, std::sync::atomic::Ordering::Relaxed);
        stats.count_connection_refusal(ConnectionRefusal::PeerLimit);
        stats.count_connection_refusal(ConnectionRefusal::ClientLimit);
        stats.count_connection_refusal(ConnectionRefusal::ClientLimit);
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry(dispatcher, stats)).unwrap();
        for line in [
            "loadwise_connections_open_by_kind{kind=\"pending\"} 0",
            "loadwise_connections_open_by_kind{kind=\"client\"} 3",
            "loadwise_connections_open_by_kind{kind=\"backend\"} 0",
            "loadwise_connection_refusals_total{reason=\"peer_limit\"} 1",
            "loadwise_connection_refusals_total{reason=\"client_limit\"} 2",
            "loadwise_connection_refusals_total{reason=\"first_frame_timeout\"} 0",
            "loadwise_connections_total{result=\"refused\"} 1",
        ] {
            assert!(body.lines().any(|l| l == line), "no {line} in:\n{body}");
        }
    }

    #[test]
    fn refusals_are_read_per_code_with_unknown_codes_as_other() {
        let stats = WireStats::default();
        stats.count_v2_refusal(ErrorCode::AUTH_FAILED);
        stats.count_v2_refusal(ErrorCode::AUTH_FAILED);
        stats.count_v2_refusal(ErrorCode::new(999).unwrap());
        let series = refusal_series(&stats.snapshot());
        let value = |label: &str| series.iter().find(|(l, _)| l == label).map(|(_, v)| *v);
        assert_eq!(value("authentication_failed"), Some(2));
        assert_eq!(value("no_backend"), Some(0));
        assert_eq!(value("other"), Some(1));
    }

    #[test]
    fn picks_are_counted_per_service_and_the_build_is_named() {
        use loadwise_core::model::ConnectionId;
        use loadwise_core::model::{DEFAULT_WEIGHT, Endpoint, Metrics, State, V2Report};
        let dispatcher = Arc::new(Dispatcher::new(loadwise_core::dispatcher::DispatchSettings::default()));
        let now = std::time::Instant::now();
        let game = ServiceName::new("game").unwrap();
        let heartbeat = V2Report {
            backend_id: 7,
            service: game.clone(),
            endpoint: Endpoint::from_socket_addr("10.0.0.7:7000".parse().unwrap()).unwrap(),
            metrics: Metrics { memory: Some(10.0), ..Metrics::default() },
            weight: DEFAULT_WEIGHT,
            state: State::Ready,
            health: loadwise_core::model::Health::Healthy,
            slots: None,
        };
        dispatcher.batch(now).heartbeat_v2(ConnectionId(1), heartbeat).unwrap();
        for _ in 0..2 {
            let outcome = dispatcher.batch(now).pick(&PickRequest::http(&game));
            assert!(outcome.picked().is_some());
        }
        let default_login = PickRequest::UNCLOCKED_LOGIN;
        assert!(dispatcher.batch(now).pick(&default_login).picked().is_none());
        let stats = dispatcher.stats();
        let wire = Arc::new(WireStats::default());
        for counter in [&stats.refused_heartbeats, &wire.heartbeats_not_allowed, &stats.refused_heartbeats] {
            loadwise_core::dispatcher::bump(counter);
        }
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry(Arc::clone(&dispatcher), wire))
            .unwrap();
        let version = env!("CARGO_PKG_VERSION");
        for line in [
            format!("loadwise_build_info{{version=\"{version}\"}} 1"),
            "loadwise_picks_total{service=\"game\",result=\"answered\"} 2".to_owned(),
            "loadwise_picks_total{service=\"default\",result=\"answered\"} 0".to_owned(),
            "loadwise_picks_total{service=\"default\",result=\"no_backend\"} 1".to_owned(),
            "loadwise_refused_heartbeats_total{reason=\"not_allowed\"} 1".to_owned(),
            "loadwise_refused_heartbeats_total{reason=\"other\"} 1".to_owned(),
        ] {
            assert!(body.lines().any(|l| l == line), "no {line} in:\n{body}");
        }
    }
}
