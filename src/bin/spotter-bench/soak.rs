//! `soak`: a long, bounded, mixed run that checks nothing acked is lost and watches the
//! server's memory and file descriptors. Trainer/member pairs chat over sockets that
//! reconnect every so often and resume with `since_seq`, with `heartbeat` frames; members
//! post HTTP heartbeats; a device checks members in and out; the admin records attendance;
//! an admin socket follows presence, the check-in room and general attendance, and
//! reconnects too. Every `sample` the server's RSS and open fds are read from /proc/PID.
//! At the end every acked message must be in history with its seq, and every chatting
//! socket must have (or recover with `since_seq`) every message of its conversation.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::client::{self, BenchUser, WsSink, WsStream};
use crate::report::Report;
use crate::server::{proc_rss, Target};

/// How long a socket waits for its answers before it reconnects.
const DRAIN: Duration = Duration::from_secs(3);
/// Heartbeat frames on chat sockets, HTTP heartbeats of members.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// Check-ins/outs and attendance records.
const DESK_EVERY: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SoakSpec {
    pub duration: Duration,
    pub pairs: usize,
    /// Messages per second per chatting socket.
    pub rate: f64,
    /// A chatting socket reconnects after about this long.
    pub reconnect_every: Duration,
    pub sample_every: Duration,
}

/// What the run saw.
#[derive(Default)]
struct Tally {
    /// (conversation, client_msg_id) -> seq of every acked message.
    acked: BTreeMap<(i64, String), i64>,
    refused: u64,
    reconnects: u64,
    resyncs: u64,
    heartbeat_acks: u64,
    http_heartbeats: u64,
    checkins: u64,
    checkouts: u64,
    attendance: u64,
    feed_frames: u64,
    errors: Vec<String>,
}

/// One sample of the server process.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at_s: f64,
    pub rss: u64,
    pub fds: usize,
    pub acked: usize,
}

fn proc_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The highest seq `s` such that 1..=s are all in `have`.
fn contiguous(have: &BTreeSet<i64>) -> i64 {
    let mut n = 0;
    for s in have {
        if *s == n + 1 {
            n = *s;
        } else if *s > n + 1 {
            break;
        }
    }
    n
}

async fn get_json(http: &awc::Client, url: &str, token: &str) -> Result<Value, String> {
    let mut resp = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let body = resp
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
}

/// Every stored message of a conversation after `after`: (client_msg_id, seq), checking
/// that seqs follow each other.
async fn history_after(
    http: &awc::Client,
    base: &str,
    token: &str,
    conv: i64,
    mut after: i64,
) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    loop {
        let page = get_json(
            http,
            &format!("{base}/api/chat/history?conversation_id={conv}&after_seq={after}&limit=200"),
            token,
        )
        .await?;
        for m in page["messages"].as_array().ok_or("history: no messages")? {
            let seq = m["seq"].as_i64().ok_or("history: no seq")?;
            if seq != after + 1 {
                return Err(format!("conversation {conv}: seq {seq} follows {after}"));
            }
            after = seq;
            out.push((m["client_msg_id"].as_str().unwrap_or("").to_string(), seq));
        }
        if page["has_more"] != true {
            return Ok(out);
        }
    }
}

async fn send_frame(
    sink: &mut WsSink,
    kind: &str,
    reference: &str,
    payload: Value,
) -> Result<(), String> {
    let text = json!({"type": kind, "ref": reference, "payload": payload}).to_string();
    sink.send(ws::Message::Text(text.into()))
        .await
        .map_err(|e| format!("send {kind}: {e}"))
}

/// Joins `conv` resuming after what `have` holds contiguously; adds what was missed (from
/// the frame, or from history when the server says `recovered:false`).
#[allow(clippy::too_many_arguments)]
async fn join(
    http: &awc::Client,
    base: &str,
    user: &BenchUser,
    conv: i64,
    sink: &mut WsSink,
    stream: &mut WsStream,
    have: &mut BTreeSet<i64>,
    tally: &RefCell<Tally>,
) -> Result<i64, String> {
    let since = contiguous(have);
    send_frame(
        sink,
        "join_conversation",
        "join",
        json!({"conversation_id": conv, "since_seq": since}),
    )
    .await?;
    let joined = client::wait_for(sink, stream, "conversation_joined", WAIT).await?;
    let p = &joined["payload"];
    for m in p["missed"].as_array().into_iter().flatten() {
        have.insert(m["seq"].as_i64().unwrap_or(0));
    }
    if p["recovered"] == false {
        tally.borrow_mut().resyncs += 1;
        for (_, seq) in history_after(http, base, &user.token, conv, since).await? {
            have.insert(seq);
        }
    }
    Ok(p["last_seq"].as_i64().unwrap_or(0))
}

/// One chatting user: sockets that send, receive, heartbeat, and reconnect until `stop`.
/// Answers the seqs this user has of its conversation.
#[allow(clippy::too_many_arguments)]
async fn chatter(
    base: String,
    user: BenchUser,
    conv: i64,
    name: String,
    spec: SoakSpec,
    offset: Duration,
    stop: Rc<Cell<bool>>,
    tally: Rc<RefCell<Tally>>,
) -> Result<BTreeSet<i64>, String> {
    let http = client::http_client(None, 2);
    let mut have = BTreeSet::new();
    let mut n = 0u64;
    let gap = Duration::from_secs_f64(1.0 / spec.rate.max(0.01));
    let mut first = true;
    while !stop.get() {
        let (mut sink, mut stream) = client::ws_connect(&http, &base, &user.token).await?;
        client::wait_for(&mut sink, &mut stream, "authentication_success", WAIT).await?;
        join(
            &http,
            &base,
            &user,
            conv,
            &mut sink,
            &mut stream,
            &mut have,
            &tally,
        )
        .await?;
        // Sockets of different users reconnect at different times.
        let life = if first {
            spec.reconnect_every + offset
        } else {
            spec.reconnect_every
        };
        first = false;
        let until = Instant::now() + life;
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut next_send = tokio::time::Instant::now();
        let mut next_beat = tokio::time::Instant::now() + HEARTBEAT_EVERY;
        let mut draining: Option<Instant> = None;
        loop {
            if draining.is_none() && (stop.get() || Instant::now() >= until) {
                draining = Some(Instant::now() + DRAIN);
            }
            if let Some(d) = draining {
                if pending.is_empty() || Instant::now() >= d {
                    break;
                }
            }
            let sending = draining.is_none();
            tokio::select! {
                _ = tokio::time::sleep_until(next_send), if sending => {
                    n += 1;
                    let cmid = format!("{name}-{n}");
                    let content = format!("soak {cmid}");
                    send_frame(&mut sink, "send_message", &cmid, json!({"conversation_id": conv, "content": content, "client_msg_id": cmid})).await?;
                    pending.insert(cmid);
                    next_send += gap;
                }
                _ = tokio::time::sleep_until(next_beat), if sending => {
                    send_frame(&mut sink, "heartbeat", "hb", json!({})).await?;
                    next_beat += HEARTBEAT_EVERY;
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                frame = stream.next() => match frame {
                    Some(Ok(ws::Frame::Text(b))) => {
                        let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                        let r = v["ref"].as_str().unwrap_or("").to_string();
                        match v["type"].as_str().unwrap_or("") {
                            "message_ack" => {
                                let seq = v["payload"]["message"]["seq"].as_i64().unwrap_or(0);
                                have.insert(seq);
                                if pending.remove(&r) {
                                    tally.borrow_mut().acked.insert((conv, r), seq);
                                }
                            }
                            "new_message" => {
                                have.insert(v["payload"]["message"]["seq"].as_i64().unwrap_or(0));
                            }
                            "heartbeat_ack" => tally.borrow_mut().heartbeat_acks += 1,
                            "error" => {
                                let mut t = tally.borrow_mut();
                                if pending.remove(&r) {
                                    t.refused += 1;
                                }
                                if t.errors.len() < 20 {
                                    t.errors.push(format!("{name}: {v}"));
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(ws::Frame::Ping(p))) => {
                        let _ = sink.send(ws::Message::Pong(p)).await;
                    }
                    Some(Ok(ws::Frame::Close(reason))) => return Err(format!("{name}: socket closed {reason:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("{name}: {e}")),
                    None => return Err(format!("{name}: socket ended")),
                },
            }
        }
        let _ = sink.send(ws::Message::Close(None)).await;
        tally.borrow_mut().reconnects += 1;
    }
    // A last socket: resume once more and get everything the conversation has.
    let (mut sink, mut stream) = client::ws_connect(&http, &base, &user.token).await?;
    client::wait_for(&mut sink, &mut stream, "authentication_success", WAIT).await?;
    let last = join(
        &http,
        &base,
        &user,
        conv,
        &mut sink,
        &mut stream,
        &mut have,
        &tally,
    )
    .await?;
    let _ = sink.send(ws::Message::Close(None)).await;
    have.retain(|s| *s <= last);
    let missing: Vec<i64> = (1..=last).filter(|s| !have.contains(s)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "{name}: conversation {conv} never delivered seqs {missing:?}"
        ));
    }
    Ok(have)
}

/// Members' HTTP heartbeats.
async fn heartbeats(
    base: String,
    members: Vec<BenchUser>,
    stop: Rc<Cell<bool>>,
    tally: Rc<RefCell<Tally>>,
) -> Result<(), String> {
    let http = client::http_client(None, 4);
    while !stop.get() {
        for m in &members {
            client::post_json(
                &http,
                &format!("{base}/api/users/heartbeat"),
                Some(&m.token),
                &json!({}),
            )
            .await?;
            tally.borrow_mut().http_heartbeats += 1;
        }
        tokio::time::sleep(HEARTBEAT_EVERY / 2).await;
    }
    Ok(())
}

/// The front desk: a device checks members in and out; the admin records attendance.
async fn desk(
    base: String,
    device: BenchUser,
    admin: BenchUser,
    members: Vec<BenchUser>,
    employees: Vec<BenchUser>,
    stop: Rc<Cell<bool>>,
    tally: Rc<RefCell<Tally>>,
) -> Result<(), String> {
    let http = client::http_client(None, 4);
    let statuses = ["present", "left", "absent", "on_leave"];
    let mut i = 0usize;
    let mut inside = BTreeSet::new();
    while !stop.get() {
        let m = &members[i % members.len()];
        if inside.remove(&m.id) {
            client::post_json(
                &http,
                &format!("{base}/api/checkins/checkout"),
                Some(&device.token),
                &json!({"member_id": m.id}),
            )
            .await?;
            tally.borrow_mut().checkouts += 1;
        } else {
            client::post_json(
                &http,
                &format!("{base}/api/checkins"),
                Some(&device.token),
                &json!({"member_id": m.id, "location": format!("zone-{}", i % 3)}),
            )
            .await?;
            inside.insert(m.id);
            tally.borrow_mut().checkins += 1;
        }
        let e = &employees[i % employees.len()];
        client::post_json(
            &http,
            &format!("{base}/api/attendance"),
            Some(&admin.token),
            &json!({"employee_id": e.id, "status": statuses[i % statuses.len()], "idempotency_key": format!("soak-{}-{i}", client::run_tag())}),
        )
        .await?;
        tally.borrow_mut().attendance += 1;
        i += 1;
        tokio::time::sleep(DESK_EVERY).await;
    }
    for id in inside {
        client::post_json(
            &http,
            &format!("{base}/api/checkins/checkout"),
            Some(&device.token),
            &json!({"member_id": id}),
        )
        .await?;
    }
    Ok(())
}

/// The admin's dashboard: presence, check-ins and general attendance, reconnecting.
async fn dashboard(
    base: String,
    admin: BenchUser,
    reconnect_every: Duration,
    stop: Rc<Cell<bool>>,
    tally: Rc<RefCell<Tally>>,
) -> Result<(), String> {
    let http = client::http_client(None, 2);
    while !stop.get() {
        let (mut sink, mut stream) = client::ws_connect(&http, &base, &admin.token).await?;
        client::wait_for(&mut sink, &mut stream, "authentication_success", WAIT).await?;
        send_frame(&mut sink, "subscribe_presence", "p", json!({})).await?;
        client::wait_for(&mut sink, &mut stream, "presence_snapshot", WAIT).await?;
        send_frame(&mut sink, "join_general_attendance", "a", json!({})).await?;
        client::wait_for(&mut sink, &mut stream, "general_attendance_joined", WAIT).await?;
        send_frame(&mut sink, "subscribe_checkins", "c", json!({})).await?;
        client::wait_for(&mut sink, &mut stream, "initial_stats", WAIT).await?;
        let until = Instant::now() + reconnect_every;
        while !stop.get() && Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                Ok(Some(Ok(ws::Frame::Text(_)))) => tally.borrow_mut().feed_frames += 1,
                Ok(Some(Ok(ws::Frame::Ping(p)))) => {
                    let _ = sink.send(ws::Message::Pong(p)).await;
                }
                Ok(Some(Ok(ws::Frame::Close(r)))) => return Err(format!("dashboard closed {r:?}")),
                Ok(Some(Err(e))) => return Err(format!("dashboard: {e}")),
                Ok(None) => return Err("dashboard: socket ended".into()),
                _ => {}
            }
        }
        let _ = sink.send(ws::Message::Close(None)).await;
    }
    Ok(())
}

/// Runs the soak; answers the report and the samples.
pub fn run(t: &mut Target, spec: &SoakSpec) -> Result<(Report, Vec<Sample>), String> {
    let pid = t.pids.first().copied();
    let base = t.urls[0].clone();
    let admin_password = t.admin_password.clone();
    let spec2 = spec.clone();
    let target: &Target = t;
    let (tally, samples, delivered, failures) =
        actix_web::rt::System::new().block_on(async move {
            let spec = spec2;
            let http = client::http_client(None, 16);
            let admin = client::login(&http, &base, "admin", &admin_password).await?;
            let trainers =
                client::create_users(&http, target, &admin, "trainer", spec.pairs).await?;
            let members = client::create_users(&http, target, &admin, "member", spec.pairs).await?;
            let device = client::create_users(&http, target, &admin, "device", 1)
                .await?
                .remove(0);
            let mut convs = Vec::new();
            for (tr, m) in trainers.iter().zip(&members) {
                convs.push(client::conversation(&http, &base, m, tr.id).await?);
            }
            let stop = Rc::new(Cell::new(false));
            let tally = Rc::new(RefCell::new(Tally::default()));
            let mut chat = Vec::new();
            for (i, ((tr, m), conv)) in trainers.iter().zip(&members).zip(&convs).enumerate() {
                for (who, user) in [("t", tr), ("m", m)] {
                    let offset = Duration::from_millis(
                        ((i * 2 + (who == "m") as usize) as u64 * 1_700)
                            % spec.reconnect_every.as_millis().max(1) as u64,
                    );
                    chat.push(actix_web::rt::spawn(chatter(
                        base.clone(),
                        user.clone(),
                        *conv,
                        format!("{who}{i}"),
                        spec.clone(),
                        offset,
                        stop.clone(),
                        tally.clone(),
                    )));
                }
            }
            let others = vec![
                actix_web::rt::spawn(heartbeats(
                    base.clone(),
                    members.clone(),
                    stop.clone(),
                    tally.clone(),
                )),
                actix_web::rt::spawn(desk(
                    base.clone(),
                    device,
                    admin.clone(),
                    members.clone(),
                    trainers.clone(),
                    stop.clone(),
                    tally.clone(),
                )),
                actix_web::rt::spawn(dashboard(
                    base.clone(),
                    admin.clone(),
                    spec.reconnect_every * 2,
                    stop.clone(),
                    tally.clone(),
                )),
            ];
            // Sample until the end.
            let started = Instant::now();
            let mut samples = Vec::new();
            let sample = |samples: &mut Vec<Sample>| {
                let (rss, fds) = pid.map(|p| (proc_rss(p), proc_fds(p))).unwrap_or((0, 0));
                let s = Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    rss,
                    fds,
                    acked: tally.borrow().acked.len(),
                };
                println!(
                    "soak: {:>5.0} s  rss {:>7.1} MiB  fds {:>4}  acked {:>7}",
                    s.at_s,
                    s.rss as f64 / 1048576.0,
                    s.fds,
                    s.acked
                );
                samples.push(s);
            };
            sample(&mut samples);
            while started.elapsed() < spec.duration {
                let left = spec.duration.saturating_sub(started.elapsed());
                tokio::time::sleep(left.min(spec.sample_every)).await;
                sample(&mut samples);
                let t = tally.borrow();
                if !t.errors.is_empty() && t.errors.len() >= 20 {
                    break;
                }
            }
            stop.set(true);
            let mut failures = Vec::new();
            let mut delivered = 0usize;
            for h in chat {
                match h.await {
                    Ok(Ok(have)) => delivered += have.len(),
                    Ok(Err(e)) => failures.push(e),
                    Err(e) => failures.push(format!("chatter panicked: {e}")),
                }
            }
            for h in others {
                match h.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(e),
                    Err(e) => failures.push(format!("task panicked: {e}")),
                }
            }
            // Nothing acked was lost: every ack is in history with its seq.
            let mut stored = BTreeMap::new();
            for (conv, m) in convs.iter().zip(&members) {
                for (cmid, seq) in history_after(&http, &base, &m.token, *conv, 0).await? {
                    stored.insert((*conv, cmid), seq);
                }
            }
            let t = tally.borrow();
            let lost: Vec<_> = t
                .acked
                .iter()
                .filter(|(k, seq)| stored.get(*k) != Some(*seq))
                .map(|(k, _)| k.clone())
                .collect();
            if !lost.is_empty() {
                failures.push(format!(
                    "{} acked message(s) not in history: {:?}",
                    lost.len(),
                    &lost[..lost.len().min(10)]
                ));
            }
            sample(&mut samples);
            drop(t);
            let tally = Rc::try_unwrap(tally)
                .map(RefCell::into_inner)
                .unwrap_or_default();
            Ok::<_, String>((
                tally,
                samples,
                (delivered, stored.len(), lost.len()),
                failures,
            ))
        })?;
    let (have, stored, lost) = delivered;
    let mut r = Report::new("soak", &t.label());
    r.param("duration_s", json!(spec.duration.as_secs()));
    r.param("pairs", json!(spec.pairs));
    r.param("rate_per_socket", json!(spec.rate));
    r.param("reconnect_every_s", json!(spec.reconnect_every.as_secs()));
    r.metric("acked", tally.acked.len() as f64, "msgs");
    r.metric("stored", stored as f64, "msgs");
    r.metric("lost", lost as f64, "msgs");
    r.metric("refused", tally.refused as f64, "msgs");
    r.metric(
        "delivered_per_user",
        have as f64 / (spec.pairs * 2).max(1) as f64,
        "msgs",
    );
    r.metric("reconnects", tally.reconnects as f64, "");
    r.metric("resyncs", tally.resyncs as f64, "");
    r.metric("heartbeat_acks", tally.heartbeat_acks as f64, "");
    r.metric("http_heartbeats", tally.http_heartbeats as f64, "");
    r.metric("checkins", tally.checkins as f64, "");
    r.metric("checkouts", tally.checkouts as f64, "");
    r.metric("attendance", tally.attendance as f64, "");
    r.metric("feed_frames", tally.feed_frames as f64, "");
    if let (Some(first), Some(last)) = (samples.get(1).or(samples.first()), samples.last()) {
        let max = samples.iter().map(|s| s.rss).max().unwrap_or(0);
        r.metric("rss_first_mib", first.rss as f64 / 1048576.0, "MiB");
        r.metric("rss_last_mib", last.rss as f64 / 1048576.0, "MiB");
        r.metric("rss_max_mib", max as f64 / 1048576.0, "MiB");
        r.metric("fds_first", first.fds as f64, "");
        r.metric("fds_last", last.fds as f64, "");
        r.metric(
            "fds_max",
            samples.iter().map(|s| s.fds).max().unwrap_or(0) as f64,
            "",
        );
    }
    for e in &tally.errors {
        r.note(format!("error frame: {e}"));
    }
    if !failures.is_empty() {
        for f in &failures {
            r.note(format!("FAILED: {f}"));
        }
        report_samples(&samples);
        crate::report::print("soak", &[&r]);
        return Err(format!("soak failed: {}", failures.join("; ")));
    }
    Ok((r, samples))
}

/// The memory curve as a Markdown table (pasted into BENCHMARKS.md).
pub fn report_samples(samples: &[Sample]) {
    println!("\n| t (s) | RSS (MiB) | open fds | acked so far |\n|---:|---:|---:|---:|");
    for s in samples {
        println!(
            "| {:.0} | {:.1} | {} | {} |",
            s.at_s,
            s.rss as f64 / 1048576.0,
            s.fds,
            s.acked
        );
    }
}
