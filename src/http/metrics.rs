//! Prometheus metrics of one service instance, served at `GET /metrics`.
//!
//! Labels are limited to the route template, the method and the status code, each from a small
//! fixed set, so the number of series stays bounded whatever clients send. No metric carries
//! message text or anything derived from it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::infer::{Observer, Status};

/// Content type of the exposition format that [`Metrics::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    queue_depth: Gauge,
    batch_inputs: Histogram,
    batch_tokens: Histogram,
    batch_duration: Histogram,
    model_load: Gauge<f64, AtomicU64>,
    worker_restarts: Counter,
    prioritized_requests: Counter,
    workers_alive: Gauge,
    ready: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cybertriage");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests completed, by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response, by route template",
            Unit::Seconds,
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Requests waiting for a model worker", queue_depth.clone());
        let batch_inputs = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register("batch_inputs", "Inputs per classifier call", batch_inputs.clone());
        let batch_tokens = Histogram::new(exponential_buckets(16.0, 2.0, 12));
        registry.register("batch_tokens", "Encoder tokens per classifier call", batch_tokens.clone());
        let batch_duration = latency_histogram();
        registry.register_with_unit(
            "batch_duration",
            "Time of one classifier call",
            Unit::Seconds,
            batch_duration.clone(),
        );
        let model_load = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "model_load",
            "Time to fetch if needed, load and warm up the model at start",
            Unit::Seconds,
            model_load.clone(),
        );
        let worker_restarts = Counter::default();
        registry.register("worker_restarts", "Model workers restarted after dying", worker_restarts.clone());
        let prioritized_requests = Counter::default();
        registry.register(
            "prioritized_requests",
            "Requests put ahead of the queue because the rules raise one of their inputs to critical",
            prioritized_requests.clone(),
        );
        let workers_alive = Gauge::default();
        registry.register("workers_alive", "Model workers running", workers_alive.clone());
        let ready = Gauge::default();
        registry.register("ready", "1 when the service accepts classify requests, as /ready reports", ready.clone());
        Metrics {
            registry,
            requests,
            latency,
            queue_depth,
            batch_inputs,
            batch_tokens,
            batch_duration,
            model_load,
            worker_restarts,
            prioritized_requests,
            workers_alive,
            ready,
        }
    }

    /// Counts one completed request. `route` is the route template, never the raw path.
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { route: route.to_string(), method: method.to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabels { route: route.to_string() }).observe(elapsed.as_secs_f64());
    }

    pub fn model_loaded(&self, elapsed: Duration) {
        self.model_load.set(elapsed.as_secs_f64());
    }

    /// Writes every metric in the OpenMetrics text format, after refreshing the gauges that
    /// mirror the engine's state. The queue depth is read here, at scrape time: a value pushed by
    /// the request and worker threads could be overwritten out of order and stay stale.
    pub fn encode(&self, status: Status) -> String {
        self.queue_depth.set(status.queue_depth as i64);
        self.workers_alive.set(status.alive as i64);
        self.ready.set(i64::from(status.is_ready()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Observer for Metrics {
    fn batch_done(&self, inputs: usize, tokens: usize, elapsed: Duration) {
        self.batch_inputs.observe(inputs as f64);
        self.batch_tokens.observe(tokens as f64);
        self.batch_duration.observe(elapsed.as_secs_f64());
    }

    fn worker_restarted(&self) {
        self.worker_restarts.inc();
    }

    fn request_prioritized(&self) {
        self.prioritized_requests.inc();
    }
}
