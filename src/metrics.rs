//! Prometheus metrics: one registry per server, rendered by `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric Spotter exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub ws_open: IntGauge,
    pub ws_frames_in: IntCounter,
    pub ws_frames_out: IntCounter,
    pub ws_bad_frames: IntCounter,
    pub ws_rate_limited: IntCounter,
    pub ws_slow_closed: IntCounter,
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
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            ),
            http_latency,
            ws_open: gauge(&r, "ws_open_sockets", "Authenticated sockets open"),
            ws_frames_in: counter(&r, "ws_frames_in_total", "Frames received from clients"),
            ws_frames_out: counter(&r, "ws_frames_out_total", "Frames queued to clients"),
            ws_bad_frames: counter(&r, "ws_bad_frames_total", "Frames refused as malformed"),
            ws_rate_limited: counter(&r, "ws_rate_limited_total", "Frames over the rate limit"),
            ws_slow_closed: counter(&r, "ws_slow_closed_total", "Sockets closed with 4029"),
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
