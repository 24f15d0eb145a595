//! `idle`: N authenticated sockets held open for T seconds (answering the server's pings);
//! how many stayed open, and the server's resident memory per socket. With `--join` every
//! socket also joins its user's conversation (as a chat screen left open does), so the
//! server holds its room membership too.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use crate::client::{self, WsSink, WsStream};
use crate::report::Report;
use crate::server::Target;

/// Sockets connecting at once, per client thread.
const CONNECT_CONCURRENCY: usize = 128;
/// How long authentication may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often holding tasks look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct IdleSpec {
    pub sockets: usize,
    pub users: usize,
    pub hold: Duration,
    pub threads: usize,
    pub source_addrs: usize,
    /// Each socket joins its user's conversation (with a trainer) after authenticating.
    pub join: bool,
}

#[derive(Default)]
struct Shared {
    open: AtomicU64,
    closed_early: AtomicU64,
    stop: AtomicBool,
}

pub fn run(target: &mut Target, spec: &IdleSpec) -> Result<Report, String> {
    let limit = crate::server::raise_nofile();
    let t = target as &Target;
    // (token, conversation to join) per user.
    let tokens: Vec<(String, Option<i64>)> = if spec.join {
        client::members_with_conversations(t, spec.users)?
            .into_iter()
            .map(|(tok, c)| (tok, Some(c)))
            .collect()
    } else {
        client::member_tokens(t, spec.users)?
            .into_iter()
            .map(|tok| (tok, None))
            .collect()
    };
    // Let the server settle (login bursts, allocator) before the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = target.rss();
    let threads = spec.threads.max(1);
    let shared = Arc::new(Shared::default());
    let connected = Arc::new(Barrier::new(threads + 1));
    let finished = Arc::new(Barrier::new(threads + 1));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine: Vec<usize> = (0..spec.sockets).filter(|i| i % threads == t).collect();
        let (shared, connected, finished) = (shared.clone(), connected.clone(), finished.clone());
        let tokens = tokens.clone();
        let urls = target.urls.clone();
        let spec = spec.clone();
        handles.push(std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let clients: Vec<awc::Client> = (0..spec.source_addrs.max(1))
                    .map(|i| client::http_client(client::source_addr(i, spec.source_addrs), 0))
                    .collect();
                let mut errors = Vec::new();
                let mut tasks = Vec::new();
                for chunk in mine.chunks(CONNECT_CONCURRENCY) {
                    let futs = chunk.iter().map(|&i| {
                        let http = &clients[i % clients.len()];
                        let url = &urls[i % urls.len()];
                        let (token, conversation) = &tokens[i % tokens.len()];
                        async move {
                            let (mut sink, mut stream) =
                                client::ws_connect(http, url, token).await?;
                            client::wait_for(
                                &mut sink,
                                &mut stream,
                                "authentication_success",
                                AUTH_TIMEOUT,
                            )
                            .await?;
                            if let Some(c) = conversation {
                                let join = json!({"type": "join_conversation", "ref": "j",
                                    "payload": {"conversation_id": c}});
                                sink.send(ws::Message::Text(join.to_string().into()))
                                    .await
                                    .map_err(|e| e.to_string())?;
                                client::wait_for(
                                    &mut sink,
                                    &mut stream,
                                    "conversation_joined",
                                    AUTH_TIMEOUT,
                                )
                                .await?;
                            }
                            Ok::<_, String>((sink, stream))
                        }
                    });
                    for r in futures_util::future::join_all(futs).await {
                        match r {
                            Ok((sink, stream)) => {
                                shared.open.fetch_add(1, Ordering::SeqCst);
                                tasks.push(actix_web::rt::spawn(hold(
                                    sink,
                                    stream,
                                    shared.clone(),
                                )));
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                }
                // Blocking is fine here: the holding tasks only need to answer pings,
                // which arrive every 25 s, and the wait is short.
                connected.wait();
                finished.wait();
                shared.stop.store(true, Ordering::SeqCst);
                for t in tasks {
                    let _ = t.await;
                }
                errors
            })
        }));
    }
    connected.wait();
    let connect_secs = start.elapsed().as_secs_f64();
    let opened = shared.open.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(1));
    let rss1 = target.rss();
    let hold_start = Instant::now();
    while hold_start.elapsed() < spec.hold {
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = opened - shared.closed_early.load(Ordering::SeqCst);
    let rss2 = target.rss();
    let alive = target.alive();
    finished.wait();
    let mut errors = Vec::new();
    for h in handles {
        errors.extend(
            h.join()
                .map_err(|_| "a client thread panicked".to_string())?,
        );
    }
    let mut report = Report::new("idle", &target.label());
    report.param("sockets", json!(spec.sockets));
    report.param("users", json!(spec.users));
    report.param("hold_s", json!(spec.hold.as_secs_f64()));
    report.param("joined_conversation", json!(spec.join));
    report.param("nofile_limit", json!(limit));
    report.metric("sockets_requested", spec.sockets as f64, "");
    report.metric("connect_errors", errors.len() as f64, "");
    report.metric("connected", opened as f64, "");
    report.metric("connect_time_s", connect_secs, "s");
    report.metric("held", held as f64, "");
    report.metric("server_rss_before_mb", rss0 as f64 / 1048576.0, "MiB");
    report.metric("server_rss_connected_mb", rss1 as f64 / 1048576.0, "MiB");
    report.metric("server_rss_end_mb", rss2 as f64 / 1048576.0, "MiB");
    let per = |rss: u64| {
        if held > 0 {
            rss.saturating_sub(rss0) as f64 / held as f64 / 1024.0
        } else {
            0.0
        }
    };
    report.metric("server_kb_per_socket", per(rss2.max(rss1)), "KiB");
    if !alive {
        report.note(format!("the server died; its log:\n{}", target.log_tail()));
    }
    if let Some(e) = errors.first() {
        report.note(format!("{} socket(s) failed, first: {e}", errors.len()));
    }
    Ok(report)
}

async fn hold(mut sink: WsSink, mut stream: WsStream, shared: Arc<Shared>) {
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = sink.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(ws::Frame::Close(_))) | None | Some(Err(_)) => {
                    if !shared.stop.load(Ordering::SeqCst) {
                        shared.closed_early.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = poll.tick() => {
                if shared.stop.load(Ordering::SeqCst) {
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    }
}
