//! `spotter demo --live`: drives a running Spotter through its public API at a gentle
//! pace, as the demo's people would: members check in and out (the studio door over its
//! WebSocket, the main turnstile and the desk over HTTP), post heartbeats while they are
//! in, staff clock in and out, and trainers and members exchange messages. A newcomer
//! watches the dashboard and the chat move.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{password_of, LOCATIONS, PEOPLE, SUSPENDED};

/// How long one HTTP call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the studio door waits for its socket's answer.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// Members the simulation keeps in the gym at least.
const MIN_INSIDE: usize = 3;
/// What trainers say.
const TRAINER_LINES: [&str; 8] = [
    "How are the knees today?",
    "Nice work this morning, keep the tempo slow on the way down.",
    "Remember to log your sets in the app.",
    "Let's add one more set of rows next time.",
    "Hydrate! And stretch for 10 minutes after.",
    "Your form on the deadlift looked much better today.",
    "Shall we move Friday's session to 18:30?",
    "Rest day tomorrow, a walk is fine.",
];
/// What members say.
const MEMBER_LINES: [&str; 8] = [
    "On my way to the gym 🏃",
    "Just finished the circuit, that was tough!",
    "Can I swap squats for leg press today?",
    "Thanks for the plan!",
    "Running 10 minutes late, sorry",
    "What should I eat before a morning session?",
    "Is the studio free at 19:00?",
    "Felt strong today 💪",
];

/// What to drive.
pub struct LiveOptions {
    /// The server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Time between two actions.
    pub pace: Duration,
    /// Stop after this long; forever when `None`.
    pub run_for: Option<Duration>,
}

/// A logged-in demo user.
struct Actor {
    username: &'static str,
    name: &'static str,
    id: i64,
    token: String,
}

type DoorSink = futures_util::stream::SplitSink<
    actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    awc::ws::Message,
>;
type DoorStream =
    futures_util::stream::SplitStream<actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>>;

/// The studio door: a device that checks members in over its socket (PROTOCOL §4
/// `check_in`), as a turnstile kept online would.
struct Door {
    sink: DoorSink,
    stream: DoorStream,
    next_ref: u64,
}

impl Door {
    async fn open(client: &awc::Client, base: &str, token: &str) -> Result<Door, String> {
        let url = format!("{}/ws?token={token}", base.replacen("http", "ws", 1));
        let (_, framed) = tokio::time::timeout(SOCKET_WAIT, client.ws(&url).connect())
            .await
            .map_err(|_| "the door's socket did not connect in time".to_string())?
            .map_err(|e| format!("the door's socket: {e}"))?;
        let (sink, stream) = futures_util::StreamExt::split(framed);
        let mut door = Door {
            sink,
            stream,
            next_ref: 1,
        };
        door.answer(|v| v["type"] == "authentication_success")
            .await?;
        Ok(door)
    }

    /// Reads frames (answering pings, skipping broadcasts) until one that `wanted` takes.
    async fn answer(&mut self, wanted: impl Fn(&Value) -> bool) -> Result<Value, String> {
        use awc::ws::{Frame, Message};
        use futures_util::{SinkExt, StreamExt};
        let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| "the door's socket did not answer in time".to_string())?;
            match frame {
                Some(Ok(Frame::Text(bytes))) => {
                    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    if wanted(&v) {
                        return Ok(v);
                    }
                }
                Some(Ok(Frame::Ping(p))) => {
                    let _ = self.sink.send(Message::Pong(p)).await;
                }
                Some(Ok(Frame::Close(reason))) => {
                    return Err(format!("the door's socket was closed: {reason:?}"))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the door's socket: {e}")),
                None => return Err("the door's socket ended".into()),
            }
        }
    }

    /// A `heartbeat` frame: the socket is never silent long enough to be closed (its
    /// `heartbeat_ack` is read, with any broadcasts, at the next check-in).
    async fn keep_alive(&mut self) -> Result<(), String> {
        use futures_util::SinkExt;
        let frame = json!({"type": "heartbeat"}).to_string();
        self.sink
            .send(awc::ws::Message::Text(frame.into()))
            .await
            .map_err(|e| format!("the door's socket: {e}"))
    }

    /// `check_in` over the socket; answers the reply frame (`check_in_success` or `error`).
    async fn check_in(&mut self, member: i64, location: &str) -> Result<Value, String> {
        use futures_util::SinkExt;
        let reference = format!("door-{}", self.next_ref);
        self.next_ref += 1;
        let frame = json!({
            "type": "check_in",
            "ref": reference,
            "payload": {"member_id": member, "location": location},
        });
        self.sink
            .send(awc::ws::Message::Text(frame.to_string().into()))
            .await
            .map_err(|e| format!("the door's socket: {e}"))?;
        self.answer(|v| v["ref"] == reference.as_str()).await
    }
}

struct Driver {
    door: Option<Door>,
    client: awc::Client,
    base: String,
    actors: HashMap<&'static str, Actor>,
    inside: HashSet<&'static str>,
    on_shift: HashSet<&'static str>,
    conversations: HashMap<(&'static str, &'static str), i64>,
    rng: StdRng,
    sent: u64,
}

/// Runs the simulation until `run_for` has passed (or forever).
pub async fn run(options: LiveOptions) -> Result<(), String> {
    let client = awc::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .max_http_version(awc::http::Version::HTTP_11)
        .finish();
    let mut driver = Driver {
        door: None,
        client,
        base: options.url.trim_end_matches('/').to_string(),
        actors: HashMap::new(),
        inside: HashSet::new(),
        on_shift: HashSet::new(),
        conversations: HashMap::new(),
        rng: StdRng::from_entropy(),
        sent: 0,
    };
    driver.log_in_everyone().await?;
    driver.learn_who_is_in().await?;
    let door_token = driver.actors["device.studio"].token.clone();
    driver.door = Some(Door::open(&driver.client, &driver.base, &door_token).await?);
    log::info!(
        "demo live: driving {} every {:?} ({} members in); Ctrl-C stops",
        driver.base,
        options.pace,
        driver.inside.len()
    );
    let started = std::time::Instant::now();
    let mut ticks: u64 = 0;
    loop {
        if options.run_for.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if let Err(e) = driver.step(ticks).await {
            log::warn!("demo live: {e}");
        }
        ticks += 1;
        tokio::time::sleep(options.pace).await;
    }
    log::info!(
        "demo live: done after {ticks} steps, {} messages",
        driver.sent
    );
    Ok(())
}

impl Driver {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(&url),
            _ => self.client.post(&url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let sent = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(4 << 20)
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn log_in(&self, username: &str, role: &str) -> Result<(i64, String), String> {
        let body = json!({"username": username, "password": password_of(role)});
        let (status, v) = self
            .call("POST", "/api/auth/login", None, Some(body))
            .await?;
        if status != 200 {
            return Err(format!(
                "login {username}: {status} {v} (load the demo first: spotter demo)"
            ));
        }
        let id = v["user"]["id"]
            .as_i64()
            .ok_or("login answer without user id")?;
        let token = v["access_token"]
            .as_str()
            .ok_or("login answer without token")?;
        Ok((id, token.to_string()))
    }

    async fn log_in_everyone(&mut self) -> Result<(), String> {
        for (username, name, role) in PEOPLE {
            if username == SUSPENDED {
                continue;
            }
            let (id, token) = self.log_in(username, role).await?;
            self.actors.insert(
                username,
                Actor {
                    username,
                    name,
                    id,
                    token,
                },
            );
        }
        Ok(())
    }

    /// Calls as `who`; logs in again once when the token has run out.
    async fn act(
        &mut self,
        who: &'static str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let token = self.actors[who].token.clone();
        let (status, v) = self.call(method, path, Some(&token), body.clone()).await?;
        if status != 401 {
            return Ok((status, v));
        }
        let role = PEOPLE
            .iter()
            .find(|p| p.0 == who)
            .map(|p| p.2)
            .unwrap_or("member");
        let (_, token) = self.log_in(who, role).await?;
        if let Some(a) = self.actors.get_mut(who) {
            a.token = token.clone();
        }
        self.call(method, path, Some(&token), body).await
    }

    async fn learn_who_is_in(&mut self) -> Result<(), String> {
        let (status, v) = self
            .act("staff.gina", "GET", "/api/checkins/open", None)
            .await?;
        if status != 200 {
            return Err(format!("who is in: {status} {v}"));
        }
        let open: HashSet<i64> = v["checkins"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["member_id"].as_i64()).collect())
            .unwrap_or_default();
        self.inside = self
            .actors
            .values()
            .filter(|a| open.contains(&a.id))
            .map(|a| a.username)
            .collect();
        Ok(())
    }

    fn members(&self) -> Vec<&'static str> {
        let mut m: Vec<&'static str> = self
            .actors
            .keys()
            .copied()
            .filter(|u| u.starts_with("member."))
            .collect();
        m.sort();
        m
    }

    async fn step(&mut self, tick: u64) -> Result<(), String> {
        // Members in the gym keep their app open: a heartbeat every few steps.
        if tick.is_multiple_of(5) {
            let inside: Vec<&'static str> = self.inside.iter().copied().collect();
            for who in inside {
                self.act(who, "POST", "/api/users/heartbeat", None).await?;
            }
            if let Some(door) = self.door.as_mut() {
                if let Err(e) = door.keep_alive().await {
                    log::info!("demo live: {e}; the studio door reconnects at its next check-in");
                    self.door = None;
                }
            }
        }
        // The floor stays busy: people leave only while a few are in. The first step is a
        // check-in, so that even a short run moves the dashboard.
        let roll = if tick == 0 {
            0
        } else {
            self.rng.gen_range(0..100)
        };
        match roll {
            0..=34 => self.check_someone_in(tick == 0).await,
            35..=54 if self.inside.len() > MIN_INSIDE => self.check_someone_out().await,
            35..=54 => self.check_someone_in(tick == 0).await,
            55..=89 => self.chat().await,
            _ => self.clock().await,
        }
    }

    /// Checks a member in; `studio` picks the studio door (its socket), else either door.
    async fn check_someone_in(&mut self, studio: bool) -> Result<(), String> {
        let out: Vec<&'static str> = self
            .members()
            .into_iter()
            .filter(|m| !self.inside.contains(m))
            .collect();
        let Some(&who) = out.choose(&mut self.rng) else {
            return self.check_someone_out().await;
        };
        let location = if studio {
            "Studio"
        } else {
            LOCATIONS[self.rng.gen_range(0..LOCATIONS.len())]
        };
        let id = self.actors[who].id;
        let how = if location == "Studio" {
            self.door_check_in(id, location).await?
        } else {
            let body = json!({"member_id": id, "location": location});
            let (status, v) = self
                .act("device.turnstile1", "POST", "/api/checkins", Some(body))
                .await?;
            if status != 201 && status != 409 {
                return Err(format!("check-in of {who}: {status} {v}"));
            }
            "turnstile"
        };
        self.inside.insert(who);
        self.act(who, "POST", "/api/users/heartbeat", None).await?;
        log::info!(
            "demo live: {} checked in at {location} ({how})",
            self.actors[who].name
        );
        Ok(())
    }

    /// The studio door's check-in over its socket; reconnects once if the socket was lost.
    async fn door_check_in(&mut self, member: i64, location: &str) -> Result<&'static str, String> {
        let first = match self.door.as_mut() {
            Some(door) => door.check_in(member, location).await,
            None => Err("no socket".into()),
        };
        let reply = match first {
            Ok(v) => v,
            Err(e) => {
                log::info!("demo live: the studio door reconnects ({e})");
                let (_, token) = self.log_in("device.studio", "device").await?;
                let mut door = Door::open(&self.client, &self.base, &token).await?;
                let v = door.check_in(member, location).await?;
                self.door = Some(door);
                v
            }
        };
        match (reply["type"].as_str(), reply["payload"]["code"].as_str()) {
            (Some("check_in_success"), _) | (Some("error"), Some("conflict")) => Ok("socket"),
            _ => Err(format!("check-in of member {member} at the door: {reply}")),
        }
    }

    async fn check_someone_out(&mut self) -> Result<(), String> {
        let mut inside: Vec<&'static str> = self.inside.iter().copied().collect();
        inside.sort();
        let Some(&who) = inside.choose(&mut self.rng) else {
            return Ok(());
        };
        let id = self.actors[who].id;
        let (status, v) = self
            .act(
                "staff.gina",
                "POST",
                "/api/checkins/checkout",
                Some(json!({"member_id": id})),
            )
            .await?;
        match status {
            200 | 409 => {
                self.inside.remove(who);
                log::info!("demo live: {} checked out", self.actors[who].name);
                Ok(())
            }
            _ => Err(format!("check-out of {who}: {status} {v}")),
        }
    }

    async fn chat(&mut self) -> Result<(), String> {
        let pairs: Vec<(&'static str, &'static str)> = super::ASSIGNMENTS
            .iter()
            .flat_map(|(t, ms)| ms.iter().map(move |m| (*t, *m)))
            .collect();
        let Some(&(trainer, member)) = pairs.choose(&mut self.rng) else {
            return Ok(());
        };
        let conversation = match self.conversations.get(&(trainer, member)) {
            Some(id) => *id,
            None => {
                let peer = self.actors[member].id;
                let (status, v) = self
                    .act(
                        trainer,
                        "POST",
                        "/api/chat/conversations",
                        Some(json!({"peer_id": peer})),
                    )
                    .await?;
                let id = v["id"].as_i64().ok_or(format!("open chat: {status} {v}"))?;
                self.conversations.insert((trainer, member), id);
                id
            }
        };
        let from_trainer = self.rng.gen_bool(0.5);
        let (who, line) = if from_trainer {
            (
                trainer,
                *TRAINER_LINES.choose(&mut self.rng).unwrap_or(&"Hi!"),
            )
        } else {
            (
                member,
                *MEMBER_LINES.choose(&mut self.rng).unwrap_or(&"Hi!"),
            )
        };
        let body = json!({
            "conversation_id": conversation,
            "content": line,
            "client_msg_id": uuid::Uuid::new_v4().to_string(),
        });
        let (status, v) = self
            .act(who, "POST", "/api/chat/messages", Some(body))
            .await?;
        if status != 201 {
            return Err(format!("message from {who}: {status} {v}"));
        }
        self.sent += 1;
        log::info!("demo live: {} wrote: {line}", self.actors[who].name);
        Ok(())
    }

    async fn clock(&mut self) -> Result<(), String> {
        let staff: Vec<&'static str> = PEOPLE
            .iter()
            .filter(|p| p.2 == "staff" || p.2 == "trainer")
            .map(|p| p.0)
            .collect();
        let Some(&who) = staff.choose(&mut self.rng) else {
            return Ok(());
        };
        let status = if self.on_shift.contains(who) {
            "left"
        } else {
            "present"
        };
        let id = self.actors[who].id;
        let body = json!({"employee_id": id, "status": status, "device": "Front desk"});
        let (code, v) = self
            .act("device.turnstile1", "POST", "/api/attendance", Some(body))
            .await?;
        if code != 201 {
            return Err(format!("attendance of {who}: {code} {v}"));
        }
        if status == "left" {
            self.on_shift.remove(who);
        } else {
            self.on_shift.insert(who);
        }
        log::info!("demo live: {} {status}", self.actors[who].name);
        Ok(())
    }
}
