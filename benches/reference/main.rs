//! `spotter-reference`: the smallest server that speaks the subset of Spotter's contract
//! the benchmarks use, as a yardstick for `spotter-bench --compare`. No storage, no
//! presence, no rate limits: users and conversations live in memory, and a broadcast is
//! encoded once and handed to each socket actor.
//!
//! Speaks: `POST /api/auth/login` (a JWT HS256 with the same claims and secret),
//! `POST /api/users` (admin), `POST /api/users/heartbeat` (verifies the JWT),
//! `POST /api/chat/conversations {peer_id}`, `GET /healthz`, and `GET /ws?token=` with
//! `join_conversation` / `send_message` → `message_ack` + `new_message` (and ping/pong).
//! Environment: SPOTTER_BIND, SPOTTER_JWT_SECRET, SPOTTER_ADMIN_PASSWORD.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use bytestring::ByteString;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Lifetime of issued tokens.
const TOKEN_TTL_SECS: i64 = 7200;
/// Server ping interval, as Spotter's.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// A socket silent this long is closed, as Spotter's.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames a socket's mailbox holds, as Spotter's default `SPOTTER_WS_QUEUE`.
const SOCKET_QUEUE: usize = 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    jti: String,
    iat: i64,
    exp: i64,
}

struct User {
    id: i64,
    password: String,
    role: String,
}

#[derive(Default)]
struct Room {
    seq: i64,
    members: HashMap<u64, Recipient<Frame>>,
}

struct State {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    users: Mutex<HashMap<String, User>>,
    next_user: AtomicI64,
    conversations: Mutex<HashMap<(i64, i64), i64>>,
    participants: Mutex<HashMap<i64, (i64, i64)>>,
    rooms: Mutex<HashMap<i64, Room>>,
    next_message: AtomicI64,
    next_session: AtomicU64,
}

type Shared = web::Data<Arc<State>>;

fn error(status: actix_web::http::StatusCode, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": code}}))
}

impl State {
    fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }

    fn bearer(&self, req: &HttpRequest) -> Option<Claims> {
        let h = req.headers().get("authorization")?.to_str().ok()?;
        let (scheme, token) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| self.verify(token.trim()))?
    }

    fn issue(&self, id: i64, role: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: id.to_string(),
            role: role.into(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
        };
        // Cannot fail: HS256 over plain claims.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(state: Shared, body: web::Json<LoginBody>) -> HttpResponse {
    let found = {
        let users = state.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(&body.username)
            .filter(|u| u.password == body.password)
            .map(|u| (u.id, u.role.clone()))
    };
    let Some((id, role)) = found else {
        return error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        );
    };
    HttpResponse::Ok().json(json!({
        "access_token": state.issue(id, &role),
        "refresh_token": "",
        "token_type": "Bearer",
        "expires_in": TOKEN_TTL_SECS,
        "user": {"id": id, "username": body.username, "role": role},
    }))
}

#[derive(Deserialize)]
struct CreateBody {
    username: String,
    password: String,
    role: String,
}

async fn create_user(state: Shared, req: HttpRequest, body: web::Json<CreateBody>) -> HttpResponse {
    match state.bearer(&req) {
        Some(c) if c.role == "admin" => {}
        Some(_) => return error(actix_web::http::StatusCode::FORBIDDEN, "forbidden"),
        None => return error(actix_web::http::StatusCode::UNAUTHORIZED, "unauthorized"),
    }
    let body = body.into_inner();
    let mut users = state.users.lock().unwrap_or_else(|e| e.into_inner());
    if users.contains_key(&body.username) {
        return error(actix_web::http::StatusCode::CONFLICT, "conflict");
    }
    let id = state.next_user.fetch_add(1, Ordering::Relaxed);
    let view = json!({"id": id, "username": body.username, "role": body.role});
    users.insert(
        body.username,
        User {
            id,
            password: body.password,
            role: body.role,
        },
    );
    HttpResponse::Created().json(view)
}

/// The minimal handler Spotter's heartbeat is compared with: verify the JWT, answer.
async fn heartbeat(state: Shared, req: HttpRequest) -> HttpResponse {
    if state.bearer(&req).is_none() {
        return error(actix_web::http::StatusCode::UNAUTHORIZED, "unauthorized");
    }
    HttpResponse::Ok().json(json!({
        "status": "online",
        "last_seen": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
}

#[derive(Deserialize)]
struct ConversationBody {
    peer_id: i64,
}

async fn conversation(
    state: Shared,
    req: HttpRequest,
    body: web::Json<ConversationBody>,
) -> HttpResponse {
    let Some(me) = state.bearer(&req).and_then(|c| c.sub.parse::<i64>().ok()) else {
        return error(actix_web::http::StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let key = (me.min(body.peer_id), me.max(body.peer_id));
    let mut convs = state
        .conversations
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let next = convs.len() as i64 + 1;
    let id = *convs.entry(key).or_insert(next);
    state
        .participants
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, key);
    HttpResponse::Ok().json(json!({"id": id, "peer": {"id": body.peer_id}}))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// A frame for a socket, encoded once by whoever sends it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
struct Frame(ByteString);

struct Session {
    id: u64,
    user: i64,
    state: Arc<State>,
    rooms: Vec<i64>,
    heard: Instant,
}

#[derive(Deserialize)]
struct InFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
    #[serde(default)]
    payload: Value,
}

impl Session {
    fn reply(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        kind: &str,
        r: &Option<Value>,
        payload: Value,
    ) {
        let mut v = json!({"type": kind, "payload": payload});
        if let Some(r) = r {
            v["ref"] = r.clone();
        }
        ctx.text(v.to_string());
    }

    fn on_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let Ok(f) = serde_json::from_str::<InFrame>(text) else {
            return self.reply(
                ctx,
                "error",
                &None,
                json!({"code": "invalid_request", "message": "bad frame"}),
            );
        };
        let conv = f.payload["conversation_id"].as_i64().unwrap_or(0);
        match f.kind.as_str() {
            "ping" => self.reply(
                ctx,
                "pong",
                &f.reference,
                json!({"timestamp": f.payload["timestamp"]}),
            ),
            "heartbeat" => self.reply(ctx, "heartbeat_ack", &f.reference, json!({})),
            "join_conversation" => {
                let member = self
                    .state
                    .participants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&conv)
                    .is_some_and(|(a, b)| *a == self.user || *b == self.user);
                if !member {
                    return self.reply(
                        ctx,
                        "error",
                        &f.reference,
                        json!({"code": "forbidden", "message": "forbidden"}),
                    );
                }
                let last_seq = {
                    let mut rooms = self.state.rooms.lock().unwrap_or_else(|e| e.into_inner());
                    let room = rooms.entry(conv).or_default();
                    room.members.insert(self.id, ctx.address().recipient());
                    room.seq
                };
                self.rooms.push(conv);
                self.reply(ctx, "conversation_joined", &f.reference,
                    json!({"conversation_id": conv, "last_seq": last_seq, "missed": [], "recovered": true}));
            }
            "send_message" => {
                if !self.rooms.contains(&conv) {
                    return self.reply(
                        ctx,
                        "error",
                        &f.reference,
                        json!({"code": "forbidden", "message": "join first"}),
                    );
                }
                let id = self.state.next_message.fetch_add(1, Ordering::Relaxed);
                let mut rooms = self.state.rooms.lock().unwrap_or_else(|e| e.into_inner());
                let room = rooms.entry(conv).or_default();
                room.seq += 1;
                let message = json!({
                    "id": id,
                    "conversation_id": conv,
                    "seq": room.seq,
                    "sender_id": self.user,
                    "content": f.payload["content"],
                    "attachment": null,
                    "client_msg_id": f.payload["client_msg_id"],
                    "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                });
                let frame = Frame(
                    json!({"type": "new_message", "payload": {"message": &message}})
                        .to_string()
                        .into(),
                );
                for (sid, r) in &room.members {
                    if *sid != self.id {
                        let _ = r.try_send(frame.clone());
                    }
                }
                drop(rooms);
                let client_msg_id = f.payload["client_msg_id"].clone();
                self.reply(
                    ctx,
                    "message_ack",
                    &f.reference,
                    json!({"client_msg_id": client_msg_id, "message": message}),
                );
            }
            _ => self.reply(
                ctx,
                "error",
                &f.reference,
                json!({"code": "invalid_request", "message": "unknown frame type"}),
            ),
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(SOCKET_QUEUE);
        ctx.run_interval(PING_INTERVAL, |act, ctx| {
            if act.heard.elapsed() > IDLE_TIMEOUT {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        self.reply(
            ctx,
            "authentication_success",
            &None,
            json!({"user": {"id": self.user}}),
        );
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        let mut rooms = self.state.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for c in &self.rooms {
            if let Some(room) = rooms.get_mut(c) {
                room.members.remove(&self.id);
            }
        }
        Running::Stop
    }
}

impl Handler<Frame> for Session {
    type Result = ();

    fn handle(&mut self, msg: Frame, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(t)) => self.on_text(ctx, &t),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn socket(
    state: Shared,
    req: HttpRequest,
    stream: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let token = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
        .unwrap_or_default();
    let Some(user) = state.verify(&token).and_then(|c| c.sub.parse::<i64>().ok()) else {
        return Ok(error(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
        ));
    };
    let session = Session {
        id: state.next_session.fetch_add(1, Ordering::Relaxed),
        user,
        state: state.get_ref().clone(),
        rooms: Vec::new(),
        heard: Instant::now(),
    };
    ws::start(session, &req, stream)
}

fn main() -> std::io::Result<()> {
    let bind = std::env::var("SPOTTER_BIND").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let secret = std::env::var("SPOTTER_JWT_SECRET")
        .unwrap_or_else(|_| "spotter-reference-secret-0123456789abcdef".into());
    let admin_password = std::env::var("SPOTTER_ADMIN_PASSWORD").unwrap_or_else(|_| "admin".into());
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub", "iat", "jti"]);
    let state = Arc::new(State {
        encoding: EncodingKey::from_secret(secret.as_bytes()),
        decoding: DecodingKey::from_secret(secret.as_bytes()),
        validation,
        users: Mutex::new(HashMap::from([(
            "admin".to_string(),
            User {
                id: 1,
                password: admin_password,
                role: "admin".into(),
            },
        )])),
        next_user: AtomicI64::new(2),
        conversations: Mutex::new(HashMap::new()),
        participants: Mutex::new(HashMap::new()),
        rooms: Mutex::new(HashMap::new()),
        next_message: AtomicI64::new(1),
        next_session: AtomicU64::new(1),
    });
    let data = web::Data::new(state);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/api/auth/login", web::post().to(login))
                .route("/api/users", web::post().to(create_user))
                .route("/api/users/heartbeat", web::post().to(heartbeat))
                .route("/api/chat/conversations", web::post().to(conversation))
                .route("/ws", web::get().to(socket))
        })
        // As Spotter: small frames go out at once.
        .tcp_nodelay(true)
        .bind(&bind)?;
        for a in server.addrs() {
            eprintln!("spotter-reference listening on http://{a}");
        }
        server.run().await
    })
}
