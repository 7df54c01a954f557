//! Prometheus metrics, read from the dispatcher's own counters at scrape time.
//!
//! Nothing is counted twice: the dispatcher keeps its atomics
//! ([`Stats`](crate::dispatcher::Stats)) and the collector turns a snapshot of them
//! into metrics on every scrape. Counter names get their `_total` suffix from the
//! encoder.

use std::fmt::Error;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::AdminState;
use super::error::ApiError;
use super::views::StateCounts;
use crate::dispatcher::{DEFAULT_SERVICE, Dispatcher, LatencyHistogram, StatsSnapshot};
use crate::selection::BackendState;

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry whose only source is the dispatcher's counters, under the `loadwise_` prefix.
pub(crate) fn registry(dispatcher: Arc<Dispatcher>) -> Registry {
    let mut registry = Registry::with_prefix("loadwise");
    registry.register_collector(Box::new(DispatcherCollector { dispatcher }));
    registry
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, state.metrics())
        .map_err(|error| ApiError::Internal(format!("encoding metrics: {error}")))?;
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// Turns the dispatcher's counters and table into metrics on each scrape.
#[derive(Debug)]
struct DispatcherCollector {
    dispatcher: Arc<Dispatcher>,
}

impl Collector for DispatcherCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        let stats = self.dispatcher.stats();
        let snapshot = stats.snapshot();
        encode_picks(&mut encoder, &snapshot)?;
        encode_latency(&mut encoder, &stats.pick_latency)?;
        encode_backends(&mut encoder, &self.dispatcher)?;
        encode_heartbeats(&mut encoder, &snapshot)?;
        encode_connections(&mut encoder, &snapshot)?;
        encode_protocol(&mut encoder, &snapshot)
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

fn encode_picks(encoder: &mut DescriptorEncoder, stats: &StatsSnapshot) -> Result<(), Error> {
    let service = ("service", DEFAULT_SERVICE);
    family(
        encoder,
        ("picks", "Client picks (TCP logins and HTTP picks) by outcome.", MetricType::Counter),
        &[
            (&[service, ("result", "answered")], stats.logins_answered),
            (&[service, ("result", "no_backend")], stats.logins_no_backend),
            (&[service, ("result", "clock_skew")], stats.logins_clock_skew),
        ],
    )
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

fn encode_backends(encoder: &mut DescriptorEncoder, dispatcher: &Dispatcher) -> Result<(), Error> {
    let counts = StateCounts::of(&dispatcher.snapshot());
    let series: Vec<_> = BackendState::ALL
        .into_iter()
        .map(|state| ([("service", DEFAULT_SERVICE), ("state", state.name())], counts.get(state) as u64))
        .collect();
    let series: Vec<(&Labels<'_>, u64)> =
        series.iter().map(|(labels, value)| (&labels[..], *value)).collect();
    let help = "Registered backends by state.";
    family(encoder, ("backends", help, MetricType::Gauge), &series)
}

fn encode_heartbeats(encoder: &mut DescriptorEncoder, stats: &StatsSnapshot) -> Result<(), Error> {
    counter(encoder, "heartbeats", "Heartbeats received, refused ones included.", stats.heartbeats)?;
    let help = "Heartbeats refused: an unusable address, a new backend while the table is full, or a legacy heartbeat from outside the allowed networks.";
    counter(encoder, "heartbeats_refused", help, stats.refused_heartbeats)?;
    let help = "Legacy heartbeats refused because the peer is outside legacy_heartbeat_networks.";
    counter(encoder, "heartbeats_not_allowed", help, stats.heartbeats_not_allowed)?;
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

fn encode_connections(encoder: &mut DescriptorEncoder, stats: &StatsSnapshot) -> Result<(), Error> {
    family(
        encoder,
        ("connections", "TCP connections, accepted or refused at the connection limit.", MetricType::Counter),
        &[
            (&[("result", "accepted")], stats.connections_accepted),
            (&[("result", "refused")], stats.connections_refused),
        ],
    )?;
    gauge(encoder, "connections_open", "TCP connections open now.", stats.connections_open)
}

fn encode_protocol(encoder: &mut DescriptorEncoder, stats: &StatsSnapshot) -> Result<(), Error> {
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
