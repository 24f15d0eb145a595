//! The conversation-room engine behind `fanout` and `chat-store`: R conversations with S
//! sockets each, publishers sending `send_message` at a fixed rate (open loop) or as fast as
//! acks come back (closed loop, a window of unacked messages per publisher), and every
//! socket counting what it receives by message id.
//!
//! A conversation is direct (two users), so a room of S sockets is S sockets of the same
//! two users: one trainer and one member per room, sockets alternating between them, each
//! socket joining the conversation. Spotter delivers `new_message` to every joined socket
//! but the sender's own, which gets `message_ack`; so every acked message is expected once
//! on each of the other S-1 sockets.
//!
//! With one publisher per room only the trainer sends (one-way); with two or more, sockets
//! of both users send (two-way chat, `fanout --two-way`).
//!
//! With several instances (`--spawn-instances 2`, or `--url` twice) every room spans them:
//! each user's sockets alternate between the instances, the first two publishers of a room
//! sit on different instances, and the rooms' first publishers alternate too (see
//! `instance_for`). So about half of every message's receivers are on another instance
//! than its sender, and each of those deliveries crosses Redis.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;

use crate::client::{self, BenchUser, WsSink, WsStream};
use crate::report::{hist_new, Report};
use crate::server::Target;

/// How long after the last send the run waits for deliveries to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the stop flag a send already under way may still be counted.
const SEND_GRACE: Duration = Duration::from_millis(50);
/// How often idle socket tasks look at the run's flags.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Sockets connecting at once, per client thread.
const CONNECT_CONCURRENCY: usize = 64;
/// How long a join or an authentication may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run does.
#[derive(Debug, Clone)]
pub struct RoomsSpec {
    pub rooms: usize,
    pub sockets_per_room: usize,
    pub publishers_per_room: usize,
    /// Messages per second over the whole run; 0 = closed loop.
    pub rate: f64,
    /// Unacked messages a publisher may have in flight in closed loop.
    pub window: usize,
    pub duration: Duration,
    pub threads: usize,
    pub source_addrs: usize,
    pub content_bytes: usize,
}

/// The base of every timestamp carried in a message's content.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// One socket of the run.
#[derive(Clone)]
struct SocketPlan {
    room: usize,
    conversation: i64,
    base: String,
    token: String,
    publisher: bool,
    /// A publisher's place in the send period, 0 ≤ phase < 1: publishers are spread over
    /// the whole run's period, a room's publishers apart from each other.
    phase: f64,
    source: usize,
}

/// Counters shared by every client thread.
#[derive(Default)]
struct Shared {
    stop_sending: AtomicBool,
    done: AtomicBool,
    sent: AtomicU64,
    answered: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    start: Mutex<Option<Instant>>,
}

/// What one socket saw.
#[derive(Default)]
struct SocketResult {
    room: usize,
    own: HashSet<i64>,
    received: HashSet<i64>,
    duplicates: u64,
    sent: u64,
    acked: u64,
    errors: u64,
    closed: bool,
}

/// What one client thread saw.
struct ThreadResult {
    sockets: Vec<SocketResult>,
    deliver_us: Histogram<u64>,
    ack_us: Histogram<u64>,
    connect_errors: Vec<String>,
}

#[derive(Deserialize)]
struct InFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    payload: Option<InPayload<'a>>,
}

#[derive(Deserialize)]
struct InPayload<'a> {
    #[serde(default, borrow)]
    message: Option<InMessage<'a>>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    id: i64,
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
}

/// The send time (µs since the epoch) a bench message carries: `t<micros> …`.
fn sent_at(content: &str) -> Option<u64> {
    let rest = content.strip_prefix('t')?;
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The instance (index into the target's URLs, of `n`) of socket `j` of room `room`.
/// Sockets alternate between the room's two users (even `j`: the trainer, odd: the
/// member); the `k`-th socket of a user goes to instance `room + user + k` (mod n). So
/// each user's sockets go round the instances, publishers 0 and 1 (the trainer's and the
/// member's first sockets) are on different instances, and the receivers of any socket's
/// messages are spread evenly over the instances (with two: half on the sender's, half
/// on the other).
pub fn instance_for(room: usize, j: usize, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    (room + j % 2 + j / 2) % n
}

/// The share of deliveries whose receiver is on another instance than the sender, over
/// every publisher of every room (0 with one instance).
fn cross_instance_share(plans: &[SocketPlan]) -> f64 {
    let (mut cross, mut all) = (0usize, 0usize);
    for p in plans.iter().filter(|p| p.publisher) {
        for q in plans
            .iter()
            .filter(|q| q.room == p.room && q.source != p.source)
        {
            all += 1;
            cross += (q.base != p.base) as usize;
        }
    }
    if all == 0 {
        0.0
    } else {
        cross as f64 / all as f64
    }
}

/// Where in the send period the publisher `j` of `room` sends: every publisher of the run
/// has its own slot (`j · rooms + room` of `rooms · publishers`), so no two send at once
/// and a room's two participants take turns, half a period apart in two-way chat. (Until
/// 2026-12-07 the slots were counted per client thread: a room's two publishers sat on two
/// threads in the same slot and sent in lockstep.)
fn publisher_phase(room: usize, j: usize, spec: &RoomsSpec) -> f64 {
    let publishers = spec.publishers_per_room.max(1);
    if j >= publishers {
        return 0.0;
    }
    let slots = (spec.rooms * publishers).max(1);
    (j * spec.rooms + room) as f64 / slots as f64
}

/// Creates the users and conversations and plans every socket.
async fn plan(target: &Target, spec: &RoomsSpec) -> Result<Vec<SocketPlan>, String> {
    let http = client::http_client(None, 16);
    let base = &target.urls[0];
    let admin = client::login(&http, base, "admin", &target.admin_password).await?;
    let trainers = client::create_users(&http, target, &admin, "trainer", 1).await?;
    let trainer = &trainers[0];
    let members = client::create_users(&http, target, &admin, "member", spec.rooms).await?;
    let mut plans = Vec::new();
    let mut n = 0usize;
    for (room, member) in members.iter().enumerate() {
        let conversation = client::conversation(&http, base, trainer, member.id).await?;
        for j in 0..spec.sockets_per_room {
            let user: &BenchUser = if j % 2 == 0 { trainer } else { member };
            plans.push(SocketPlan {
                room,
                conversation,
                base: target.urls[instance_for(room, j, target.urls.len())].clone(),
                token: user.token.clone(),
                publisher: j < spec.publishers_per_room,
                phase: publisher_phase(room, j, spec),
                source: n,
            });
            n += 1;
        }
    }
    Ok(plans)
}

/// Runs one measurement against `target`.
pub fn run(target: &mut Target, spec: &RoomsSpec, scenario: &str) -> Result<Report, String> {
    let _ = epoch();
    let t = target as &Target;
    let plans = actix_web::rt::System::new().block_on(plan(t, spec))?;
    let threads = spec.threads.max(1);
    let shared = Arc::new(Shared::default());
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let finished = Arc::new(Barrier::new(threads + 1));
    let publishers = plans.iter().filter(|p| p.publisher).count().max(1);
    let per_publisher_rate = spec.rate / publishers as f64;
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine: Vec<SocketPlan> = plans
            .iter()
            .enumerate()
            .filter(|(i, _)| i % threads == t)
            .map(|(_, p)| p.clone())
            .collect();
        let (shared, ready, go, finished) =
            (shared.clone(), ready.clone(), go.clone(), finished.clone());
        let spec = spec.clone();
        handles.push(std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(client_thread(
                mine,
                spec,
                per_publisher_rate,
                shared,
                ready,
                go,
                finished,
            ))
        }));
    }
    ready.wait();
    let cpu0 = target.cpu();
    let storage0 = target.storage_cpu();
    let start = Instant::now();
    *shared.start.lock().unwrap_or_else(|e| e.into_inner()) = Some(start);
    go.wait();
    std::thread::sleep(spec.duration);
    shared.stop_sending.store(true, Ordering::SeqCst);
    let send_end = Instant::now();
    // A send that saw the flag too late is counted within this grace period.
    std::thread::sleep(SEND_GRACE);
    let drain_start = Instant::now();
    // Every send answered (ack or error), then every acked message delivered.
    while (shared.answered.load(Ordering::SeqCst) < shared.sent.load(Ordering::SeqCst)
        || shared.delivered.load(Ordering::SeqCst) < shared.expected.load(Ordering::SeqCst))
        && drain_start.elapsed() < DRAIN_TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let end = Instant::now();
    let cpu1 = target.cpu();
    let storage1 = target.storage_cpu();
    let drain_secs = end.duration_since(send_end).as_secs_f64();
    shared.done.store(true, Ordering::SeqCst);
    finished.wait();
    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| "a client thread panicked".to_string())?,
        );
    }

    // Merge.
    let mut deliver = hist_new();
    let mut ack = hist_new();
    let mut sockets = Vec::new();
    let mut connect_errors = Vec::new();
    for r in results {
        deliver.add(&r.deliver_us).ok();
        ack.add(&r.ack_us).ok();
        sockets.extend(r.sockets);
        connect_errors.extend(r.connect_errors);
    }
    let mut acked_by_room: HashMap<usize, HashSet<i64>> = HashMap::new();
    for s in &sockets {
        acked_by_room.entry(s.room).or_default().extend(&s.own);
    }
    let (mut lost, mut dups, mut deliveries, mut sent, mut acked, mut errors, mut closed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for s in &sockets {
        let room = &acked_by_room[&s.room];
        lost += room
            .iter()
            .filter(|id| !s.own.contains(id) && !s.received.contains(id))
            .count() as u64;
        dups += s.duplicates;
        deliveries += s.received.len() as u64;
        sent += s.sent;
        acked += s.acked;
        errors += s.errors;
        closed += s.closed as u64;
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    let send_secs = send_end.duration_since(start).as_secs_f64();
    let cpu = cpu1.saturating_sub(cpu0).as_secs_f64();
    let storage = storage1.saturating_sub(storage0).as_secs_f64();
    let mut report = Report::new(scenario, &target.label());
    report.param("rooms", json!(spec.rooms));
    report.param("sockets_per_room", json!(spec.sockets_per_room));
    report.param("publishers_per_room", json!(spec.publishers_per_room));
    report.param(
        "direction",
        json!(if spec.publishers_per_room >= 2 {
            "two-way"
        } else {
            "one-way"
        }),
    );
    if spec.rate > 0.0 {
        report.param(
            "msg_per_s_per_publisher",
            json!(spec.rate / (spec.rooms * spec.publishers_per_room).max(1) as f64),
        );
    }
    report.param(
        "mode",
        json!(if spec.rate > 0.0 {
            format!("open loop, {} msg/s", spec.rate)
        } else {
            format!("closed loop, window {}", spec.window)
        }),
    );
    report.param("duration_s", json!(spec.duration.as_secs_f64()));
    report.param("client_threads", json!(threads));
    if target.urls.len() > 1 {
        report.param("instances", json!(target.urls.len()));
        report.param(
            "receivers_on_another_instance",
            json!((cross_instance_share(&plans) * 1000.0).round() / 1000.0),
        );
    }
    report.metric("sockets", plans.len() as f64, "");
    report.metric("connect_errors", connect_errors.len() as f64, "");
    report.metric("sent", sent as f64, "msg");
    report.metric("acked", acked as f64, "msg");
    report.metric("acks_per_s", acked as f64 / send_secs, "msg/s");
    report.metric("deliveries", deliveries as f64, "");
    report.metric("deliveries_per_s", deliveries as f64 / elapsed, "/s");
    report.metric("lost", lost as f64, "");
    report.metric("duplicates", dups as f64, "");
    report.metric("error_frames", errors as f64, "");
    report.metric(
        "unanswered",
        sent.saturating_sub(acked + errors) as f64,
        "msg",
    );
    report.metric("sockets_closed", closed as f64, "");
    report.metric("drain_s", drain_secs, "s");
    report.latency("deliver", &deliver);
    report.latency("ack", &ack);
    report.metric("server_cpu_s", cpu, "s");
    report.metric(
        "server_cpu_per_delivery_us",
        if deliveries > 0 {
            cpu * 1e6 / deliveries as f64
        } else {
            0.0
        },
        "µs",
    );
    report.metric(
        "server_cpu_per_ack_us",
        if acked > 0 {
            cpu * 1e6 / acked as f64
        } else {
            0.0
        },
        "µs",
    );
    // Where Spotter's CPU goes besides delivery: the threads that store each message
    // (the references store nothing, so theirs is 0).
    report.metric("server_cpu_storage_s", storage, "s");
    report.metric(
        "server_cpu_per_delivery_without_storage_us",
        if deliveries > 0 {
            (cpu - storage).max(0.0) * 1e6 / deliveries as f64
        } else {
            0.0
        },
        "µs",
    );
    if target.pids.len() < target.urls.len() {
        report.note(format!(
            "server CPU and memory cover {} process(es) for {} instance(s): give --server-pid for each",
            target.pids.len(),
            target.urls.len()
        ));
    }
    if let Some(e) = connect_errors.first() {
        report.note(format!(
            "{} socket(s) failed to connect, first: {e}",
            connect_errors.len()
        ));
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn client_thread(
    plans: Vec<SocketPlan>,
    spec: RoomsSpec,
    rate: f64,
    shared: Arc<Shared>,
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
    finished: Arc<Barrier>,
) -> ThreadResult {
    let clients: Vec<awc::Client> = (0..spec.source_addrs.max(1))
        .map(|i| client::http_client(client::source_addr(i, spec.source_addrs), 0))
        .collect();
    let mut connected = Vec::new();
    let mut connect_errors = Vec::new();
    for chunk in plans.chunks(CONNECT_CONCURRENCY) {
        let futs = chunk.iter().map(|p| {
            let http = &clients[p.source % clients.len()];
            async move {
                let (mut sink, mut stream) = client::ws_connect(http, &p.base, &p.token).await?;
                client::wait_for(
                    &mut sink,
                    &mut stream,
                    "authentication_success",
                    REPLY_TIMEOUT,
                )
                .await?;
                let join = json!({"type": "join_conversation", "ref": "j",
                    "payload": {"conversation_id": p.conversation}});
                sink.send(ws::Message::Text(join.to_string().into()))
                    .await
                    .map_err(|e| e.to_string())?;
                client::wait_for(&mut sink, &mut stream, "conversation_joined", REPLY_TIMEOUT)
                    .await?;
                Ok::<_, String>((p.clone(), sink, stream))
            }
        });
        for r in futures_util::future::join_all(futs).await {
            match r {
                Ok(c) => connected.push(c),
                Err(e) => connect_errors.push(e),
            }
        }
    }
    // Blocking here is fine: nothing else runs on this thread until the start.
    ready.wait();
    go.wait();
    let start = shared
        .start
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    let deliver = Arc::new(Mutex::new(hist_new()));
    let ack = Arc::new(Mutex::new(hist_new()));
    let mut tasks = Vec::new();
    for (plan, sink, stream) in connected {
        let offset = if plan.publisher && rate > 0.0 {
            // Publishers spread over one period so that they do not send in lockstep.
            Duration::from_secs_f64(plan.phase / rate)
        } else {
            Duration::ZERO
        };
        tasks.push(actix_web::rt::spawn(socket_task(
            plan,
            sink,
            stream,
            spec.clone(),
            rate,
            start + offset,
            shared.clone(),
            deliver.clone(),
            ack.clone(),
        )));
    }
    let mut sockets = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            sockets.push(r);
        }
    }
    finished.wait();
    let deliver_us = std::mem::replace(
        &mut *deliver.lock().unwrap_or_else(|e| e.into_inner()),
        hist_new(),
    );
    let ack_us = std::mem::replace(
        &mut *ack.lock().unwrap_or_else(|e| e.into_inner()),
        hist_new(),
    );
    ThreadResult {
        sockets,
        deliver_us,
        ack_us,
        connect_errors,
    }
}

#[allow(clippy::too_many_arguments)]
async fn socket_task(
    plan: SocketPlan,
    mut sink: WsSink,
    mut stream: WsStream,
    spec: RoomsSpec,
    rate: f64,
    first_send: Instant,
    shared: Arc<Shared>,
    deliver: Arc<Mutex<Histogram<u64>>>,
    ack: Arc<Mutex<Histogram<u64>>>,
) -> SocketResult {
    let mut res = SocketResult {
        room: plan.room,
        ..Default::default()
    };
    let period = if rate > 0.0 {
        Duration::from_secs_f64(1.0 / rate)
    } else {
        Duration::ZERO
    };
    let mut next_send = tokio::time::Instant::from_std(first_send);
    let mut inflight = 0usize;
    let mut seq = 0u64;
    let pad = "x".repeat(spec.content_bytes.saturating_sub(24));
    let others = (spec.sockets_per_room.max(1) - 1) as u64;
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        if shared.done.load(Ordering::Relaxed) {
            break;
        }
        let sending = plan.publisher && !res.closed && !shared.stop_sending.load(Ordering::Relaxed);
        // Closed loop: keep the window full.
        if sending && rate == 0.0 && inflight < spec.window {
            let msg = message_text(plan.conversation, now_us(), &mut seq, &pad);
            // Counted before the send, so that the drain never sees it answered-but-unsent.
            shared.sent.fetch_add(1, Ordering::SeqCst);
            if sink.send(ws::Message::Text(msg.into())).await.is_err() {
                shared.sent.fetch_sub(1, Ordering::SeqCst);
                res.closed = true;
                continue;
            }
            res.sent += 1;
            inflight += 1;
            continue;
        }
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(ws::Frame::Text(bytes))) => {
                    on_text(&bytes, &mut res, &shared, others, &deliver, &ack, &mut inflight)
                }
                Some(Ok(ws::Frame::Ping(p))) => {
                    let _ = sink.send(ws::Message::Pong(p)).await;
                }
                Some(Ok(ws::Frame::Close(_))) | None | Some(Err(_)) => {
                    res.closed = true;
                    // Nothing more will arrive: wait for the end of the run.
                    while !shared.done.load(Ordering::Relaxed) {
                        poll.tick().await;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(next_send), if sending && rate > 0.0 => {
                if shared.stop_sending.load(Ordering::SeqCst) {
                    continue;
                }
                // Open loop: the timestamp is the planned time, so a late send counts.
                let planned = next_send.into_std().saturating_duration_since(epoch());
                let msg = message_text(plan.conversation, planned.as_micros() as u64, &mut seq, &pad);
                shared.sent.fetch_add(1, Ordering::SeqCst);
                if sink.send(ws::Message::Text(msg.into())).await.is_err() {
                    shared.sent.fetch_sub(1, Ordering::SeqCst);
                    res.closed = true;
                } else {
                    res.sent += 1;
                }
                next_send += period;
            }
            _ = poll.tick() => {}
        }
    }
    let _ = sink.close().await;
    res
}

fn message_text(conversation: i64, at_us: u64, seq: &mut u64, pad: &str) -> String {
    *seq += 1;
    format!(
        r#"{{"type":"send_message","ref":{seq},"payload":{{"conversation_id":{conversation},"content":"t{at_us} {pad}","client_msg_id":"{}-{seq}"}}}}"#,
        uuid::Uuid::new_v4().simple()
    )
}

fn on_text(
    bytes: &[u8],
    res: &mut SocketResult,
    shared: &Shared,
    others: u64,
    deliver: &Mutex<Histogram<u64>>,
    ack: &Mutex<Histogram<u64>>,
    inflight: &mut usize,
) {
    let Ok(frame) = serde_json::from_slice::<InFrame>(bytes) else {
        res.errors += 1;
        return;
    };
    let now = now_us();
    let message = frame.payload.and_then(|p| p.message);
    match (frame.kind.as_ref(), message) {
        ("new_message", Some(m)) => {
            if res.own.contains(&m.id) || !res.received.insert(m.id) {
                res.duplicates += 1;
                return;
            }
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = sent_at(&m.content) {
                let mut h = deliver.lock().unwrap_or_else(|e| e.into_inner());
                h.saturating_record(now.saturating_sub(t).max(1));
            }
        }
        ("message_ack", Some(m)) => {
            *inflight = inflight.saturating_sub(1);
            shared.answered.fetch_add(1, Ordering::SeqCst);
            if res.own.insert(m.id) {
                res.acked += 1;
                shared.expected.fetch_add(others, Ordering::Relaxed);
                if let Some(t) = sent_at(&m.content) {
                    let mut h = ack.lock().unwrap_or_else(|e| e.into_inner());
                    h.saturating_record(now.saturating_sub(t).max(1));
                }
            }
        }
        ("error", _) => {
            *inflight = inflight.saturating_sub(1);
            shared.answered.fetch_add(1, Ordering::Relaxed);
            res.errors += 1;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plans `rooms` × `sockets` over `n` instances as `plan` does, without a server.
    fn plans(rooms: usize, sockets: usize, publishers: usize, n: usize) -> Vec<SocketPlan> {
        let mut out = Vec::new();
        for room in 0..rooms {
            for j in 0..sockets {
                out.push(SocketPlan {
                    room,
                    conversation: room as i64,
                    base: format!("http://instance-{}", instance_for(room, j, n)),
                    token: if j % 2 == 0 { "trainer" } else { "member" }.into(),
                    publisher: j < publishers,
                    phase: 0.0,
                    source: out.len(),
                });
            }
        }
        out
    }

    fn spec(rooms: usize, publishers: usize) -> RoomsSpec {
        RoomsSpec {
            rooms,
            sockets_per_room: 50,
            publishers_per_room: publishers,
            rate: 200.0,
            window: 16,
            duration: Duration::from_secs(1),
            threads: 2,
            source_addrs: 4,
            content_bytes: 64,
        }
    }

    #[test]
    fn every_publisher_has_its_own_slot_and_a_room_takes_turns() {
        for (rooms, publishers) in [(10, 1), (10, 2), (3, 4), (1, 2)] {
            let s = spec(rooms, publishers);
            let mut phases: Vec<f64> = (0..rooms)
                .flat_map(|r| (0..publishers).map(move |j| (r, j)))
                .map(|(r, j)| publisher_phase(r, j, &s))
                .collect();
            for p in &phases {
                assert!((0.0..1.0).contains(p), "{p}");
            }
            // Evenly spread: sorted, the phases are k / slots.
            phases.sort_by(f64::total_cmp);
            let slots = (rooms * publishers) as f64;
            for (k, p) in phases.iter().enumerate() {
                assert!(
                    (p - k as f64 / slots).abs() < 1e-9,
                    "{rooms}×{publishers}: {phases:?}"
                );
            }
        }
        // Two-way: a room's two participants (sockets 0 and 1, on different client
        // threads) are half a period apart, not in lockstep.
        let s = spec(10, 2);
        for room in 0..10 {
            let gap = publisher_phase(room, 1, &s) - publisher_phase(room, 0, &s);
            assert!((gap - 0.5).abs() < 1e-9, "room {room}: {gap}");
        }
        assert_eq!(publisher_phase(3, 7, &s), 0.0, "not a publisher");
    }

    #[test]
    fn one_instance_takes_every_socket() {
        for room in 0..5 {
            for j in 0..50 {
                assert_eq!(instance_for(room, j, 1), 0);
                assert_eq!(instance_for(room, j, 0), 0);
            }
        }
        assert_eq!(cross_instance_share(&plans(10, 50, 1, 1)), 0.0);
    }

    #[test]
    fn two_instances_split_every_room_and_every_user() {
        for sockets in [2usize, 3, 4, 5, 50, 51] {
            for room in 0..4 {
                let on = |j: usize| instance_for(room, j, 2);
                // The first two publishers (trainer and member) are on different instances.
                assert_ne!(on(0), on(1), "room {room}, {sockets} sockets");
                // Rooms' first publishers alternate: both instances store messages.
                assert_eq!(on(0), room % 2);
                // Each user's sockets alternate between the instances.
                for user in 0..2 {
                    let mine: Vec<usize> = (user..sockets).step_by(2).map(on).collect();
                    for w in mine.windows(2) {
                        assert_ne!(w[0], w[1], "user {user}: {mine:?}");
                    }
                }
                // The receivers of publisher 0 are split in half: their instances run
                // away, away, home, home, … so the two counts differ by at most 2.
                let others: Vec<usize> = (1..sockets).map(on).collect();
                let away = others.iter().filter(|&&i| i != on(0)).count();
                let home = others.len() - away;
                assert!(away.abs_diff(home) <= 2, "{sockets}: {away} vs {home}");
                assert!(away >= 1);
            }
        }
    }

    #[test]
    fn about_half_the_deliveries_cross_instances() {
        // The benchmark's shapes: 10 rooms × 50 sockets, one-way and two-way.
        for publishers in [1, 2] {
            let share = cross_instance_share(&plans(10, 50, publishers, 2));
            assert!((0.45..=0.55).contains(&share), "{publishers}: {share}");
        }
        // Three instances: two thirds of the receivers are elsewhere.
        let share = cross_instance_share(&plans(10, 51, 1, 3));
        assert!((0.6..=0.72).contains(&share), "{share}");
    }
}
