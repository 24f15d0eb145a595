//! `spotter-lean`: the leanest yardstick for `spotter-bench --compare` (issue 14). The same
//! subset of the contract as `spotter-reference` (benches/reference/main.rs), on the
//! smallest stack this machine can run instead of Spotter's: hyper 1 (HTTP/1 only) and
//! tokio-tungstenite, one single-threaded tokio runtime per core fed round-robin by one
//! acceptor thread (as actix does), no framework. It says how far Spotter is from the
//! machine, where the same-stack reference says what actix costs.
//!
//! - A broadcast is encoded once (`Utf8Bytes`, a reference-counted buffer) and the same
//!   bytes are queued to every recipient.
//! - Each socket has a bounded queue (`SOCKET_QUEUE` frames, as Spotter's default
//!   `SPOTTER_WS_QUEUE`); a full queue drops the frame for that socket.
//! - A socket's writer drains everything queued and flushes once (one write per wake-up).
//! - Small read and write buffers (`WS_READ_BUFFER`, `WS_WRITE_BUFFER`) instead of
//!   tungstenite's 128 KiB defaults.
//!
//! Speaks: `POST /api/auth/login` (a JWT HS256 with the same claims and secret),
//! `POST /api/users` (admin), `POST /api/users/heartbeat` (verifies the JWT, reads and
//! discards the body), `POST /api/chat/conversations {peer_id}`, `GET /healthz`, and
//! `GET /ws?token=` with `join_conversation` / `send_message` → `message_ack` +
//! `new_message` (and `ping`/`heartbeat`, WebSocket ping/pong).
//! Environment: SPOTTER_BIND, SPOTTER_JWT_SECRET, SPOTTER_ADMIN_PASSWORD.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Lifetime of issued tokens.
const TOKEN_TTL_SECS: i64 = 7200;
/// Server ping interval, as Spotter's.
const PING_INTERVAL: Duration = Duration::from_secs(25);
/// A socket silent this long is closed, as Spotter's.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames a socket's queue holds, as Spotter's default `SPOTTER_WS_QUEUE`.
const SOCKET_QUEUE: usize = 1024;
/// tungstenite's read buffer per socket (its default is 128 KiB).
const WS_READ_BUFFER: usize = 4096;
/// Bytes buffered before tungstenite writes; a flush writes whatever is buffered.
const WS_WRITE_BUFFER: usize = 16 * 1024;
/// Largest frame accepted from a client.
const WS_MAX_MESSAGE: usize = 64 * 1024;
/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

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
    members: Vec<(u64, mpsc::Sender<Utf8Bytes>)>,
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

type Body = Full<Bytes>;

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str) -> Response<Body> {
    json_response(status, &json!({"error": {"code": code, "message": code}}))
}

impl State {
    fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }

    fn bearer<B>(&self, req: &Request<B>) -> Option<Claims> {
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

/// Reads a whole (small) body; `None` when it is too large or the connection failed.
async fn read_body(body: Incoming) -> Option<Bytes> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    limited.collect().await.ok().map(|c| c.to_bytes())
}

async fn json_body<T: for<'de> Deserialize<'de>>(body: Incoming) -> Result<T, Response<Body>> {
    let bytes = read_body(body)
        .await
        .ok_or_else(|| error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"))?;
    serde_json::from_slice(&bytes).map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_request"))
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(state: &State, req: Request<Incoming>) -> Response<Body> {
    let body: LoginBody = match json_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let found = {
        let users = state.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(&body.username)
            .filter(|u| u.password == body.password)
            .map(|u| (u.id, u.role.clone()))
    };
    let Some((id, role)) = found else {
        return error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": state.issue(id, &role),
            "refresh_token": "",
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_SECS,
            "user": {"id": id, "username": body.username, "role": role},
        }),
    )
}

#[derive(Deserialize)]
struct CreateBody {
    username: String,
    password: String,
    role: String,
}

async fn create_user(state: &State, req: Request<Incoming>) -> Response<Body> {
    match state.bearer(&req) {
        Some(c) if c.role == "admin" => {}
        Some(_) => return error(StatusCode::FORBIDDEN, "forbidden"),
        None => return error(StatusCode::UNAUTHORIZED, "unauthorized"),
    }
    let body: CreateBody = match json_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut users = state.users.lock().unwrap_or_else(|e| e.into_inner());
    if users.contains_key(&body.username) {
        return error(StatusCode::CONFLICT, "conflict");
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
    json_response(StatusCode::CREATED, &view)
}

/// The bare heartbeat handler: verify the JWT, read and drop the body, answer.
async fn heartbeat(state: &State, req: Request<Incoming>) -> Response<Body> {
    if state.bearer(&req).is_none() {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if read_body(req.into_body()).await.is_none() {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    json_response(
        StatusCode::OK,
        &json!({"status": "online", "last_seen": now_rfc3339()}),
    )
}

#[derive(Deserialize)]
struct ConversationBody {
    peer_id: i64,
}

async fn conversation(state: &State, req: Request<Incoming>) -> Response<Body> {
    let Some(me) = state.bearer(&req).and_then(|c| c.sub.parse::<i64>().ok()) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let body: ConversationBody = match json_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key = (me.min(body.peer_id), me.max(body.peer_id));
    let id = {
        let mut convs = state
            .conversations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let next = convs.len() as i64 + 1;
        *convs.entry(key).or_insert(next)
    };
    state
        .participants
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, key);
    json_response(
        StatusCode::OK,
        &json!({"id": id, "peer": {"id": body.peer_id}}),
    )
}

fn query_token(query: Option<&str>) -> &str {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .unwrap_or("")
}

/// `GET /ws?token=`: checks the token, answers 101 and runs the socket once upgraded.
fn upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let Some(user) = state
        .verify(query_token(req.uri().query()))
        .and_then(|c| c.sub.parse::<i64>().ok())
    else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let is_ws = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").filter(|_| is_ws) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let config = WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(WS_WRITE_BUFFER)
                .max_message_size(Some(WS_MAX_MESSAGE))
                .max_frame_size(Some(WS_MAX_MESSAGE));
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            Session::run(state, user, ws).await;
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let r = match (req.method(), path) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, "/api/auth/login") => login(&state, req).await,
        (&Method::POST, "/api/users") => create_user(&state, req).await,
        (&Method::POST, "/api/users/heartbeat") => heartbeat(&state, req).await,
        (&Method::POST, "/api/chat/conversations") => conversation(&state, req).await,
        (&Method::GET, "/ws") => upgrade(state, req),
        _ => error(StatusCode::NOT_FOUND, "not_found"),
    };
    Ok(r)
}

/// One socket: its reader handles frames, its queue receives broadcasts.
struct Session {
    id: u64,
    user: i64,
    state: Arc<State>,
    rooms: Vec<i64>,
    tx: mpsc::Sender<Utf8Bytes>,
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

fn frame(kind: &str, r: &Option<Value>, payload: Value) -> Utf8Bytes {
    let mut v = json!({"type": kind, "payload": payload});
    if let Some(r) = r {
        v["ref"] = r.clone();
    }
    v.to_string().into()
}

impl Session {
    async fn run(
        state: Arc<State>,
        user: i64,
        ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(SOCKET_QUEUE);
        let mut session = Session {
            id: state.next_session.fetch_add(1, Ordering::Relaxed),
            user,
            state,
            rooms: Vec::new(),
            tx,
        };
        let (mut sink, mut stream) = ws.split();
        let mut heard = Instant::now();
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let hello = frame(
            "authentication_success",
            &None,
            json!({"user": {"id": user}}),
        );
        if sink.send(Message::Text(hello)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                incoming = stream.next() => {
                    heard = Instant::now();
                    let reply = match incoming {
                        Some(Ok(Message::Text(t))) => session.on_text(&t),
                        Some(Ok(Message::Ping(p))) => Some(Message::Pong(p)),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => None,
                    };
                    if let Some(m) = reply {
                        if sink.send(m).await.is_err() {
                            break;
                        }
                    }
                }
                first = rx.recv() => {
                    // The sender half lives in `session`, so the queue never closes here.
                    let Some(first) = first else { break };
                    // Everything queued goes out with one flush.
                    let mut failed = sink.feed(Message::Text(first)).await.is_err();
                    while !failed {
                        match rx.try_recv() {
                            Ok(f) => failed = sink.feed(Message::Text(f)).await.is_err(),
                            Err(_) => break,
                        }
                    }
                    if failed || sink.flush().await.is_err() {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > IDLE_TIMEOUT
                        || sink.send(Message::Ping(Bytes::new())).await.is_err()
                    {
                        break;
                    }
                }
            }
        }
        session.leave_all();
        let _ = sink.close().await;
    }

    fn leave_all(&mut self) {
        let mut rooms = self.state.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for c in &self.rooms {
            if let Some(room) = rooms.get_mut(c) {
                room.members.retain(|(id, _)| *id != self.id);
            }
        }
    }

    /// Handles one client frame; answers the frame to send back to this socket.
    fn on_text(&mut self, text: &str) -> Option<Message> {
        let Ok(f) = serde_json::from_str::<InFrame>(text) else {
            return Some(Message::Text(frame(
                "error",
                &None,
                json!({"code": "invalid_request", "message": "bad frame"}),
            )));
        };
        let conv = f.payload["conversation_id"].as_i64().unwrap_or(0);
        let reply = match f.kind.as_str() {
            "ping" => frame(
                "pong",
                &f.reference,
                json!({"timestamp": f.payload["timestamp"]}),
            ),
            "heartbeat" => frame("heartbeat_ack", &f.reference, json!({})),
            "join_conversation" => self.join(conv, &f.reference),
            "send_message" => self.send(conv, &f),
            _ => frame(
                "error",
                &f.reference,
                json!({"code": "invalid_request", "message": "unknown frame type"}),
            ),
        };
        Some(Message::Text(reply))
    }

    fn join(&mut self, conv: i64, reference: &Option<Value>) -> Utf8Bytes {
        let member = self
            .state
            .participants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conv)
            .is_some_and(|(a, b)| *a == self.user || *b == self.user);
        if !member {
            return frame(
                "error",
                reference,
                json!({"code": "forbidden", "message": "forbidden"}),
            );
        }
        let last_seq = {
            let mut rooms = self.state.rooms.lock().unwrap_or_else(|e| e.into_inner());
            let room = rooms.entry(conv).or_default();
            if !self.rooms.contains(&conv) {
                room.members.push((self.id, self.tx.clone()));
            }
            room.seq
        };
        if !self.rooms.contains(&conv) {
            self.rooms.push(conv);
        }
        frame(
            "conversation_joined",
            reference,
            json!({"conversation_id": conv, "last_seq": last_seq, "missed": [], "recovered": true}),
        )
    }

    fn send(&mut self, conv: i64, f: &InFrame) -> Utf8Bytes {
        if !self.rooms.contains(&conv) {
            return frame(
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
            "created_at": now_rfc3339(),
        });
        // Encoded once; every recipient gets the same bytes.
        let broadcast: Utf8Bytes = json!({"type": "new_message", "payload": {"message": &message}})
            .to_string()
            .into();
        for (sid, tx) in &room.members {
            if *sid != self.id {
                let _ = tx.try_send(broadcast.clone());
            }
        }
        drop(rooms);
        frame(
            "message_ack",
            &f.reference,
            json!({"client_msg_id": f.payload["client_msg_id"], "message": message}),
        )
    }
}

/// One worker: a single-threaded runtime serving the connections handed to it.
fn worker(state: Arc<State>, mut conns: mpsc::UnboundedReceiver<std::net::TcpStream>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("spotter-lean: cannot start a worker: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        while let Some(std_stream) = conns.recv().await {
            let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| route(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

fn main() -> std::io::Result<()> {
    let bind = std::env::var("SPOTTER_BIND").unwrap_or_else(|_| "127.0.0.1:8091".into());
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
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut senders = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = state.clone();
        std::thread::spawn(move || worker(state, rx));
        senders.push(tx);
    }
    let listener = std::net::TcpListener::bind(&bind)?;
    eprintln!(
        "spotter-lean listening on http://{}",
        listener.local_addr()?
    );
    // A blocking accept loop on the main thread; connections go to the workers in turn.
    let mut next = 0usize;
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        // As Spotter: small frames go out at once.
        let _ = stream.set_nodelay(true);
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if senders[next % workers].send(stream).is_err() {
            break;
        }
        next += 1;
    }
    Ok(())
}
