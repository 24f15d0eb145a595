//! Prometheus metrics: one registry per server, rendered by `GET /metrics`.
//!
//! Every label has a bounded set of values, whatever clients send: the HTTP metrics
//! label unknown methods, unmatched paths and routes past [`MAX_ROUTES`] as `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// The value of a label whose real value is outside its bounded set.
pub const OTHER: &str = "other";
/// Methods labelled by name; any other method is [`OTHER`].
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Distinct route labels kept; a backstop (the routes are a fixed set of patterns).
const MAX_ROUTES: usize = 256;

/// A labelled metric family.
pub trait LabelledVec {
    type Metric;
    fn with_labels(&self, labels: &[&str]) -> Self::Metric;
}

impl LabelledVec for IntCounterVec {
    type Metric = IntCounter;
    fn with_labels(&self, labels: &[&str]) -> IntCounter {
        self.with_label_values(labels)
    }
}

impl LabelledVec for HistogramVec {
    type Metric = Histogram;
    fn with_labels(&self, labels: &[&str]) -> Histogram {
        self.with_label_values(labels)
    }
}

/// An HTTP metric labelled `method`, `route` (and maybe `status`), with every label
/// mapped into a bounded set before it reaches the registry.
pub struct HttpVec<V: LabelledVec> {
    inner: V,
    routes: Mutex<HashSet<String>>,
}

impl<V: LabelledVec> HttpVec<V> {
    fn new(inner: V) -> HttpVec<V> {
        HttpVec {
            inner,
            routes: Mutex::new(HashSet::new()),
        }
    }

    /// The metric for `[method, route, status…]`. `route` is a route pattern, or
    /// `unmatched`/empty when no route matched (labelled `other`); a status that is not
    /// three digits is `other`.
    pub fn with_label_values(&self, labels: &[&str]) -> V::Metric {
        let mut bounded: Vec<&str> = Vec::with_capacity(labels.len());
        for (i, value) in labels.iter().enumerate() {
            bounded.push(match i {
                0 => method_label(value),
                1 => self.route_label(value),
                2 => status_label(value),
                _ => OTHER,
            });
        }
        self.inner.with_labels(&bounded)
    }

    fn route_label<'a>(&self, route: &'a str) -> &'a str {
        if route.is_empty() || route == "unmatched" || !route.starts_with('/') {
            return OTHER;
        }
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.contains(route) {
            return route;
        }
        if routes.len() >= MAX_ROUTES {
            return OTHER;
        }
        routes.insert(route.to_string());
        route
    }
}

fn method_label(method: &str) -> &str {
    KNOWN_METHODS
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or(OTHER)
}

fn status_label(status: &str) -> &str {
    if status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()) {
        status
    } else {
        OTHER
    }
}

/// Every metric Spotter exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: HttpVec<IntCounterVec>,
    pub http_latency: HttpVec<HistogramVec>,
    pub ws_open: IntGauge,
    pub ws_frames_in: IntCounter,
    pub ws_frames_out: IntCounter,
    pub ws_bad_frames: IntCounter,
    pub ws_rate_limited: IntCounter,
    pub ws_slow_closed: IntCounter,
    /// Events for other instances not published (Redis away or its queue full).
    pub broker_dropped: IntCounter,
    /// Events published to the other instances.
    pub broker_published: IntCounter,
    pub ws_gaps_filled: IntCounter,
    pub ws_stats_coalesced: IntCounter,
    pub broadcast_fanout: Histogram,
    pub presence_transitions: IntCounterVec,
    pub presence_online: IntGauge,
    pub presence_flush_failures: IntCounter,
    pub sweeper_runs: IntCounter,
    pub chat_messages: IntCounter,
    pub checkins: IntCounterVec,
    pub attendance_records: IntCounter,
    pub stats_recomputations: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric name");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric name");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Metrics {
    // The `expect`s below run once at start with constant names: they cannot fail.
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("spotter".into()), None).expect("valid prefix");
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ],
            ),
            &["method", "route"],
        )
        .expect("valid metric");
        r.register(Box::new(http_latency.clone()))
            .expect("metric registered once");
        let broadcast_fanout = Histogram::with_opts(
            HistogramOpts::new("broadcast_fanout", "Sessions a room delivery reached").buckets(
                vec![0.0, 1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
            ),
        )
        .expect("valid metric");
        r.register(Box::new(broadcast_fanout.clone()))
            .expect("metric registered once");
        Metrics {
            http_requests: HttpVec::new(counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            )),
            http_latency: HttpVec::new(http_latency),
            ws_open: gauge(&r, "ws_open_sockets", "Authenticated sockets open"),
            ws_frames_in: counter(&r, "ws_frames_in_total", "Frames received from clients"),
            ws_frames_out: counter(&r, "ws_frames_out_total", "Frames queued to clients"),
            ws_bad_frames: counter(&r, "ws_bad_frames_total", "Frames refused as malformed"),
            ws_rate_limited: counter(&r, "ws_rate_limited_total", "Frames over the rate limit"),
            ws_slow_closed: counter(&r, "ws_slow_closed_total", "Sockets closed with 4029"),
            broker_dropped: counter(
                &r,
                "broker_dropped_total",
                "Events for other instances not published (Redis away or its queue full)",
            ),
            broker_published: counter(
                &r,
                "broker_published_total",
                "Events published to the other instances through Redis",
            ),
            ws_gaps_filled: counter(
                &r,
                "ws_gaps_filled_total",
                "Gaps in a socket's chat stream filled from storage",
            ),
            ws_stats_coalesced: counter(
                &r,
                "ws_stats_coalesced_total",
                "Stats frames skipped for slow dashboards",
            ),
            broadcast_fanout,
            presence_transitions: counter_vec(
                &r,
                "presence_transitions_total",
                "Online/offline transitions by reason",
                &["online", "reason"],
            ),
            presence_online: gauge(&r, "presence_online_users", "Users online"),
            presence_flush_failures: counter(
                &r,
                "presence_flush_failures_total",
                "Presence write-behind flushes that failed (retried)",
            ),
            sweeper_runs: counter(&r, "sweeper_runs_total", "Sweeper runs"),
            chat_messages: counter(&r, "chat_messages_total", "Chat messages stored"),
            checkins: counter_vec(
                &r,
                "checkins_total",
                "Check-ins and check-outs",
                &["action"],
            ),
            attendance_records: counter(
                &r,
                "attendance_records_total",
                "Attendance records stored",
            ),
            stats_recomputations: counter_vec(
                &r,
                "stats_recomputations_total",
                "Stats recomputations by outcome",
                &["outcome"],
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_labels_are_bounded() {
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["GET", "/api/users/{id}", "200"])
            .inc();
        for i in 0..(MAX_ROUTES * 2) {
            let method = format!("M{i}");
            let route = format!("/made/up/{i}");
            m.http_requests
                .with_label_values(&[&method, &route, "404"])
                .inc();
            m.http_requests
                .with_label_values(&["GET", "unmatched", "x"])
                .inc();
            m.http_latency
                .with_label_values(&[&method, "unmatched"])
                .observe(0.001);
        }
        let page = m.render();
        assert!(page.contains(r#"method="GET",route="/api/users/{id}",status="200""#));
        assert!(page.contains(r#"method="GET",route="other",status="other""#));
        assert!(page.contains(r#"method="other",route="other",status="404""#));
        assert!(!page.contains("M1"), "made-up methods never become labels");
        let series = page.lines().filter(|l| l.contains("route=")).count();
        assert!(series < MAX_ROUTES + 50, "{series} series");
    }
}
