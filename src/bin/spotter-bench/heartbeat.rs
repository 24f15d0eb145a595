//! `heartbeat`: authenticated `POST /api/users/heartbeat`, at a fixed rate (open loop:
//! latency counts from the planned send time, so a stalled server cannot hide its queue)
//! and as fast as C connections allow (closed loop). By default each request carries the
//! JSON body `{}` as browser frontends send it (`axios.post('/api/users/heartbeat/', {})`)
//! and requests rotate over many users' tokens; `--body none` sends the old bodyless
//! request. Responses that close the connection (`connection: close`) are counted: a
//! client-shaped heartbeat should stay on its kept-alive connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::client;
use crate::report::{hist_new, Report};
use crate::server::Target;

#[derive(Debug, Clone)]
pub struct HeartbeatSpec {
    /// Requests per second; 0 = closed loop.
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
    pub threads: usize,
    /// Send the JSON body `{}` (as frontends do) instead of no body.
    pub json_body: bool,
}

/// The body a frontend's heartbeat carries.
const JSON_BODY: &str = "{}";

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Responses with `connection: close` (the server drops the kept-alive connection).
    closes: AtomicU64,
    stop: AtomicBool,
}

/// One phase with `tokens` (users created beforehand, so that phases share them).
pub fn run(target: &mut Target, spec: &HeartbeatSpec, tokens: &[String]) -> Result<Report, String> {
    if tokens.is_empty() {
        return Err("heartbeat: no user tokens".into());
    }
    let threads = spec.threads.max(1);
    let counters = Arc::new(Counters::default());
    let go = Arc::new(Barrier::new(threads + 1));
    let hist = Arc::new(Mutex::new(hist_new()));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (counters, go, hist) = (counters.clone(), go.clone(), hist.clone());
        let tokens = tokens.to_vec();
        let urls = target.urls.clone();
        let spec = spec.clone();
        handles.push(std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(worker(t, spec, tokens, urls, counters, go, hist))
        }));
    }
    go.wait();
    let cpu0 = target.cpu();
    let start = Instant::now();
    std::thread::sleep(spec.duration);
    counters.stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join()
            .map_err(|_| "a client thread panicked".to_string())?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = target.cpu().saturating_sub(cpu0).as_secs_f64();
    let ok = counters.ok.load(Ordering::SeqCst);
    let failed = counters.failed.load(Ordering::SeqCst);
    let h = hist.lock().unwrap_or_else(|e| e.into_inner());
    let mut report = Report::new("heartbeat", &target.label());
    report.param(
        "mode",
        json!(if spec.rate > 0.0 {
            format!("open loop, {} req/s", spec.rate)
        } else {
            "closed loop".to_string()
        }),
    );
    report.param("connections", json!(spec.connections));
    report.param("users", json!(tokens.len()));
    report.param(
        "body",
        json!(if spec.json_body { JSON_BODY } else { "none" }),
    );
    report.param("duration_s", json!(spec.duration.as_secs_f64()));
    report.metric("requests_ok", ok as f64, "");
    report.metric("requests_failed", failed as f64, "");
    report.metric(
        "responses_closing_connection",
        counters.closes.load(Ordering::SeqCst) as f64,
        "",
    );
    report.metric("req_per_s", ok as f64 / elapsed, "/s");
    report.latency("latency", &h);
    report.metric("server_cpu_s", cpu, "s");
    report.metric(
        "server_cpu_per_req_us",
        if ok > 0 { cpu * 1e6 / ok as f64 } else { 0.0 },
        "µs",
    );
    Ok(report)
}

async fn worker(
    t: usize,
    spec: HeartbeatSpec,
    tokens: Vec<String>,
    urls: Vec<String>,
    counters: Arc<Counters>,
    go: Arc<Barrier>,
    hist: Arc<Mutex<Histogram<u64>>>,
) {
    let threads = spec.threads.max(1);
    let conns = (spec.connections / threads).max(1);
    let http = client::http_client(None, conns);
    let url = format!("{}/api/users/heartbeat", urls[t % urls.len()]);
    let local = std::rc::Rc::new(std::cell::RefCell::new(hist_new()));
    go.wait();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    if spec.rate > 0.0 {
        let period = Duration::from_secs_f64(threads as f64 / spec.rate);
        // Spread the threads' schedules over one period.
        let mut next = start + period.mul_f64(t as f64 / threads as f64);
        let mut i = t;
        while !counters.stop.load(Ordering::Relaxed) {
            tokio::time::sleep_until(next).await;
            let planned = next;
            next += period;
            let req = http.post(&url).bearer_auth(&tokens[i % tokens.len()]);
            i += threads;
            let (counters, local) = (counters.clone(), local.clone());
            let json_body = spec.json_body;
            tasks.push(actix_web::rt::spawn(async move {
                let ok = exchange(req, json_body, &counters).await;
                record(&counters, &local, ok, planned.elapsed());
            }));
            if tasks.len() > 4096 {
                tasks.retain(|t| !t.is_finished());
            }
        }
    } else {
        for c in 0..conns {
            let (counters, local, http) = (counters.clone(), local.clone(), http.clone());
            let url = url.clone();
            let tokens = tokens.clone();
            let json_body = spec.json_body;
            // Each connection walks over every user's token, starting at its own.
            let mut i = t + c * threads;
            tasks.push(actix_web::rt::spawn(async move {
                while !counters.stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let req = http.post(&url).bearer_auth(&tokens[i % tokens.len()]);
                    i += conns * threads;
                    let ok = exchange(req, json_body, &counters).await;
                    record(&counters, &local, ok, sent.elapsed());
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let local = local.borrow();
    hist.lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&*local)
        .ok();
}

/// Sends one heartbeat and reads its answer; true when it succeeded.
async fn exchange(req: awc::ClientRequest, json_body: bool, counters: &Counters) -> bool {
    let sent = if json_body {
        req.insert_header(("content-type", "application/json"))
            .send_body(JSON_BODY)
            .await
    } else {
        req.send().await
    };
    let Ok(mut r) = sent else {
        return false;
    };
    let closes = r
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if closes && !counters.stop.load(Ordering::Relaxed) {
        counters.closes.fetch_add(1, Ordering::Relaxed);
    }
    r.status().is_success() && r.body().await.is_ok()
}

fn record(
    counters: &Counters,
    local: &std::cell::RefCell<Histogram<u64>>,
    ok: bool,
    latency: Duration,
) {
    if counters.stop.load(Ordering::Relaxed) {
        return;
    }
    if ok {
        counters.ok.fetch_add(1, Ordering::Relaxed);
        local
            .borrow_mut()
            .saturating_record((latency.as_micros() as u64).max(1));
    } else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }
}
