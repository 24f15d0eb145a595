//! `spotter demo --live`: drives a running Spotter through its public HTTP API at a
//! gentle pace, as the demo's people would: members check in and out (at the turnstile or
//! the desk), post heartbeats while they are in, staff clock in and out, and trainers and
//! members exchange messages. A newcomer watches the dashboard and the chat move.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{password_of, LOCATIONS, PEOPLE, SUSPENDED};

/// How long one HTTP call may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
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

struct Driver {
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
        }
        // The floor stays busy: people leave only while a few are in.
        match self.rng.gen_range(0..100) {
            0..=34 => self.check_someone_in().await,
            35..=54 if self.inside.len() > MIN_INSIDE => self.check_someone_out().await,
            35..=54 => self.check_someone_in().await,
            55..=89 => self.chat().await,
            _ => self.clock().await,
        }
    }

    async fn check_someone_in(&mut self) -> Result<(), String> {
        let out: Vec<&'static str> = self
            .members()
            .into_iter()
            .filter(|m| !self.inside.contains(m))
            .collect();
        let Some(&who) = out.choose(&mut self.rng) else {
            return self.check_someone_out().await;
        };
        let location = LOCATIONS[self.rng.gen_range(0..LOCATIONS.len())];
        let by = if location == "Studio" {
            "device.studio"
        } else {
            "device.turnstile1"
        };
        let id = self.actors[who].id;
        let (status, v) = self
            .act(
                by,
                "POST",
                "/api/checkins",
                Some(json!({"member_id": id, "location": location})),
            )
            .await?;
        match status {
            201 | 409 => {
                self.inside.insert(who);
                self.act(who, "POST", "/api/users/heartbeat", None).await?;
                log::info!(
                    "demo live: {} checked in at {location}",
                    self.actors[who].name
                );
                Ok(())
            }
            _ => Err(format!("check-in of {who}: {status} {v}")),
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
