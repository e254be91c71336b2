//! What the server tells its operators: structured logs (`tracing`), Prometheus metrics, and the
//! per-request span and counters. Requests are labelled by route template (`/v1/subjects/{id}/
//! consents`), never by raw path, so that ids stay out of metrics and label sets stay small.

use crate::config::LogFormat;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tracing::Instrument;

pub const HTTP_REQUESTS: &str = "kept_http_requests_total";
pub const HTTP_DURATION: &str = "kept_http_request_duration_seconds";
pub const LEDGER_APPENDS: &str = "kept_ledger_appends_total";

/// A request that took longer than this is logged at `info` (every request is logged at
/// `debug`, failures at `warn`): slow ones stay visible with the default filter, while a
/// server answering thousands of requests a second does not write a line for each.
pub const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_millis(100);

/// Label for requests that matched no route.
const UNMATCHED: &str = "unmatched";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder, so
/// every app in the process (several in tests) shares it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS);
            let handle = match builder {
                Ok(b) => b.install_recorder(),
                Err(e) => Err(e),
            };
            let handle = handle.unwrap_or_else(|e| {
                // Another recorder was installed first (an embedding program's): keep serving
                // `/metrics`, empty, rather than refuse to start.
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            });
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "time to answer an HTTP request, by method, route and status"
    );
    metrics::describe_counter!(LEDGER_APPENDS, "consent records appended to the ledger");
}

/// Counts records appended to the ledger.
pub fn count_ledger_appends(n: usize) {
    metrics::counter!(LEDGER_APPENDS).increment(u64::try_from(n).unwrap_or(u64::MAX));
}

/// Wraps each request in a span labelled by route template, records its count and latency, and
/// logs its outcome: a server error at `warn`, a request slower than `SLOW_REQUEST` at `info`,
/// any other at `debug`.
pub async fn track(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        %method,
        %route,
        status = tracing::field::Empty,
        key = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        let ms = format_args!("{:.2}", elapsed.as_secs_f64() * 1000.0);
        if status >= 500 {
            tracing::warn!(status, %ms, "request failed");
        } else if elapsed >= SLOW_REQUEST {
            tracing::info!(status, %ms, "slow request");
        } else {
            tracing::debug!(status, %ms, "request");
        }
    });
    response
}

/// Installs the global log subscriber. Repeated calls (tests) keep the first.
pub fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: invalid log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
    // An error only means a subscriber is already installed, which is what a test wants.
    drop(installed);
}
