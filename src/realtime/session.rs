//! One WebSocket connection as an actor: authentication, the frame envelope, rate limits,
//! pings, token expiry, and per-socket ordering of chat frames. This is the only module
//! that uses actix-web-actors; moving to actix-ws touches this file alone.
//!
//! Frames from the client are processed one at a time, in the order they arrived (a
//! bounded queue), so that two `send_message`s from one socket are stored in that order;
//! deliveries from the hub are not held up meanwhile.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde_json::Value;

use super::dispatch::{self, Outcome};
use super::gate::Ticket;
use super::hub::{Connect, Disconnect, Outbound, SetToken, SocketId, ToSession};
use super::lane::{self, Caps, Fill, LaneHandle, Register, Unregister};
use super::ordering::{self, Gap};
use super::outflow::{ConnSocket, Outflow};
use super::port::{self, Port, Refused};
use super::protocol::{self, ClientFrame, Incoming, ServerFrame};
use super::wire::Takeover;
use crate::auth::AuthUser;
use crate::db::ConversationId;
use crate::domain::chat::Message;
use crate::error::AppError;
use crate::state::AppState;

/// Frames a socket may have waiting for processing before further ones are refused.
const INBOUND_QUEUE: usize = 64;
/// Messages a socket may have submitted and not yet acked; the next frame waits.
const UNACKED_MAX: usize = 64;
/// `token_expiring` is sent this long before the token expires.
const EXPIRY_WARNING: Duration = Duration::from_secs(60);
pub use super::protocol::{
    CLOSE_FORBIDDEN, CLOSE_RATE_LIMITED, CLOSE_RESTARTING, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED,
};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A token bucket: `rate` frames per second, `burst` at once.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A `send_message` waiting for its message to be stored.
struct Unacked {
    ticket: u64,
    reference: Option<Value>,
    result: Option<Result<Message, AppError>>,
}

/// The session actor.
pub struct WsSession {
    id: SocketId,
    /// Shared, not cloned: one pointer per session instead of every field's.
    state: web::Data<AppState>,
    auth: Option<AuthUser>,
    /// A token given in the URL, checked when the actor starts.
    url_token: Option<String>,
    /// A conversation named in the URL, joined after authentication.
    url_conversation: Option<ConversationId>,
    last_heard: Instant,
    bucket: Bucket,
    /// Frames refused by the rate limit since the bucket last had room.
    refused: u32,
    inbound: VecDeque<Incoming>,
    busy: bool,
    /// Messages submitted and waiting to be stored, oldest first: acked in this order.
    unacked: VecDeque<Unacked>,
    next_ticket: u64,
    /// The token's next expiry timer (warning, then close).
    expiry_timer: Option<SpawnHandle>,
    /// The socket's way out, shared with its lane and its writer: every text frame it
    /// sends is queued there, and it keeps the socket's chat order (every message it did
    /// not send itself, once, in seq order, gaps filled from storage) and its count of
    /// unsent bytes, which also cuts off the connection of a client that stops reading.
    port: Rc<Port>,
    /// Refused at the door (origin, too many unauthenticated sockets): closed at start.
    refuse: Option<(u16, &'static str)>,
    /// A place among the unauthenticated sockets of this address, until authenticated.
    gate_ticket: Option<Ticket>,
    /// The lane of this session's thread, once registered there (authenticated).
    lane: Option<LaneHandle>,
}

impl WsSession {
    fn new(
        state: web::Data<AppState>,
        url_token: Option<String>,
        url_conversation: Option<ConversationId>,
        conn: Option<ConnSocket>,
    ) -> WsSession {
        let port = Port::new(Arc::new(Outflow::new(conn, state.config.ws_close_grace)));
        let bucket = Bucket::new(state.config.ws_rate_per_sec, state.config.ws_burst);
        WsSession {
            id: SocketId {
                instance: state.broker.instance(),
                session: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            },
            state,
            auth: None,
            url_token,
            url_conversation,
            last_heard: Instant::now(),
            bucket,
            refused: 0,
            inbound: VecDeque::new(),
            busy: false,
            unacked: VecDeque::new(),
            next_ticket: 0,
            expiry_timer: None,
            port,
            refuse: None,
            gate_ticket: None,
            lane: None,
        }
    }

    fn send(&self, frame: &ServerFrame, reference: Option<&Value>) {
        self.port.send_text(&frame.encode(reference));
        self.state.metrics.ws_frames_out.inc();
    }

    fn send_error(&self, e: &AppError, reference: Option<&Value>) {
        if let AppError::Internal(detail) = e {
            log::error!("session {}: internal error: {detail}", self.id.session);
        }
        self.send(&ServerFrame::error(e), reference);
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        log::info!(
            "session {}: closing with {code} ({reason})",
            self.id.session
        );
        // Nothing is queued after the close frame; what is queued goes out before it.
        // A close from the hub is queued by the lane already, right behind the frames
        // before it.
        if !self.port.close_sent() {
            self.port.close();
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Other(code),
                description: Some(reason.to_string()),
            }));
        }
        ctx.stop();
    }

    fn authenticate(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        token: &str,
        reference: Option<&Value>,
    ) {
        // A user this instance has not heard of (created through another instance) is
        // loaded from the database first; frames wait meanwhile, in order.
        if let Some(id) = crate::auth::unknown_user(&self.state, token) {
            let state = self.state.clone();
            let (token, reference) = (token.to_string(), reference.cloned());
            let load = async move { crate::domain::directory::reload(&state, id).await };
            ctx.wait(
                load.into_actor(self).map(move |_, act, ctx| {
                    act.authenticate_known(ctx, &token, reference.as_ref())
                }),
            );
            return;
        }
        self.authenticate_known(ctx, token, reference)
    }

    fn authenticate_known(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        token: &str,
        reference: Option<&Value>,
    ) {
        let user = match AuthUser::from_token(&self.state, token) {
            Ok(u) => u,
            Err(AppError::AccountInactive) => {
                return self.close(ctx, CLOSE_FORBIDDEN, "account is not active")
            }
            Err(_) => return self.close(ctx, CLOSE_UNAUTHORIZED, "invalid or expired token"),
        };
        // Deliveries come through this thread's lane: registered there first.
        let caps = Caps {
            bytes: self.state.config.ws_max_buffer_bytes,
            frames: self.state.config.ws_queue,
        };
        let lane = lane::current(
            self.state.hub.clone().recipient(),
            self.state.metrics.clone(),
            caps,
        );
        self.lane = Some(lane.clone());
        port::hand_over(self.id, self.port.clone());
        let addr = ctx.address();
        lane.addr.do_send(Register {
            id: self.id,
            user: user.id,
            addr: addr.clone().recipient(),
            fill: addr.recipient(),
        });
        self.state.hub.do_send(Connect {
            id: self.id,
            user: user.id,
            jti: user.jti.clone(),
            gen: user.gen,
            lane,
        });
        self.gate_ticket = None;
        self.schedule_expiry(ctx, user.exp);
        log::info!(
            "session {}: user {} authenticated",
            self.id.session,
            user.id
        );
        let entry = self.state.directory.get(user.id);
        self.auth = Some(user.clone());
        if let Some(entry) = entry {
            let view = crate::domain::users::UserView {
                id: entry.id,
                username: entry.username,
                display_name: entry.display_name,
                role: entry.role,
                account_status: entry.status,
                is_online: true,
                last_seen: Some(crate::time::now()),
            };
            self.send(
                &ServerFrame::AuthenticationSuccess { user: view },
                reference,
            );
        }
        if dispatch::is_dashboard(user.role) {
            self.enqueue(
                ctx,
                Incoming {
                    reference: None,
                    frame: ClientFrame::SubscribeCheckins {},
                },
            );
        }
        if let Some(conversation_id) = self.url_conversation.take() {
            self.enqueue(
                ctx,
                Incoming {
                    reference: None,
                    frame: ClientFrame::JoinConversation {
                        conversation_id,
                        since_seq: None,
                    },
                },
            );
        }
    }

    /// `token_expiring` a minute before `exp` (at once if less is left), 4001 at `exp`.
    /// One timer at a time: the warning's sets the closing one (every pending timer is
    /// polled each time the session wakes).
    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>, exp: i64) {
        if let Some(h) = self.expiry_timer.take() {
            ctx.cancel_future(h);
        }
        let left = Duration::from_secs((exp - chrono::Utc::now().timestamp()).max(0) as u64);
        let warn_in = left.saturating_sub(EXPIRY_WARNING);
        let expires_at = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now);
        self.expiry_timer = Some(ctx.run_later(warn_in, move |act, ctx| {
            act.send(&ServerFrame::TokenExpiring { expires_at }, None);
            let left = Duration::from_secs((exp - chrono::Utc::now().timestamp()).max(0) as u64);
            act.expiry_timer = Some(ctx.run_later(left, |act, ctx| {
                act.close(ctx, CLOSE_UNAUTHORIZED, "token expired");
            }));
        }));
    }

    /// Every client frame (text, binary, ping, pong) takes a token from the socket's
    /// bucket; a refused one gets an error, and a burst of refused ones closes it (4008).
    fn admit(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        self.state.metrics.ws_frames_in.inc();
        if self.bucket.take() {
            self.refused = 0;
            return true;
        }
        self.state.metrics.ws_rate_limited.inc();
        self.refused += 1;
        if self.refused > self.state.config.ws_burst {
            self.close(ctx, CLOSE_RATE_LIMITED, "rate limited");
        } else {
            let e = AppError::RateLimited("too many frames, slow down".into());
            self.send_error(&e, None);
        }
        false
    }

    fn on_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        let incoming = match protocol::parse(text) {
            Ok(i) => i,
            Err(bad) => {
                self.state.metrics.ws_bad_frames.inc();
                return self.send_error(&bad.error, bad.reference.as_ref());
            }
        };
        let reference = incoming.reference.clone();
        if let Some(user) = &self.auth {
            // Every frame runs on the account as it is now, not as it was at connect.
            match user.recheck(&self.state) {
                Ok(current) => self.auth = Some(current),
                Err(AppError::AccountInactive) => {
                    return self.close(ctx, CLOSE_FORBIDDEN, "account is not active")
                }
                Err(_) => return self.close(ctx, CLOSE_UNAUTHORIZED, "token revoked"),
            }
        }
        match (&incoming.frame, &self.auth) {
            (ClientFrame::Authenticate { token }, None) => {
                let token = token.clone();
                self.authenticate(ctx, &token, reference.as_ref());
            }
            (ClientFrame::Authenticate { .. }, Some(_)) => {
                let e = AppError::InvalidRequest("already authenticated".into());
                self.send_error(&e, reference.as_ref());
            }
            (_, None) => {
                let e = AppError::Unauthorized("authenticate first".into());
                self.send_error(&e, reference.as_ref());
            }
            (ClientFrame::Ping { timestamp }, Some(_)) => {
                let timestamp = timestamp
                    .clone()
                    .unwrap_or_else(|| Value::from(chrono::Utc::now().timestamp_millis()));
                self.send(&ServerFrame::Pong { timestamp }, reference.as_ref());
            }
            (ClientFrame::Heartbeat {}, Some(_)) => {
                self.send(&ServerFrame::HeartbeatAck {}, reference.as_ref());
            }
            (_, Some(_)) => self.enqueue(ctx, incoming),
        }
    }

    fn enqueue(&mut self, ctx: &mut ws::WebsocketContext<Self>, incoming: Incoming) {
        if self.inbound.len() >= INBOUND_QUEUE {
            let e = AppError::RateLimited("too many frames waiting".into());
            return self.send_error(&e, incoming.reference.as_ref());
        }
        match &incoming.frame {
            ClientFrame::JoinConversation {
                conversation_id, ..
            } => self.port.streams(|s| s.begin_join(*conversation_id)),
            ClientFrame::SendMessage {
                conversation_id,
                client_msg_id,
                ..
            } => self
                .port
                .streams(|s| s.note_own(*conversation_id, client_msg_id)),
            _ => {}
        }
        self.inbound.push_back(incoming);
        self.process_next(ctx);
    }

    fn process_next(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.busy || self.unacked.len() >= UNACKED_MAX {
            return;
        }
        let (Some(incoming), Some(user)) = (self.inbound.pop_front(), self.auth.as_ref()) else {
            return;
        };
        if self.inbound.is_empty() {
            // A socket is idle most of its life: it keeps no queue memory meanwhile.
            self.inbound = VecDeque::new();
        }
        // A frame that waited in the queue runs on the account as it is now.
        let user = match user.recheck(&self.state) {
            Ok(current) => current,
            Err(AppError::AccountInactive) => {
                return self.close(ctx, CLOSE_FORBIDDEN, "account is not active")
            }
            Err(_) => return self.close(ctx, CLOSE_UNAUTHORIZED, "token revoked"),
        };
        self.auth = Some(user.clone());
        self.busy = true;
        let state = self.state.clone();
        let id = self.id;
        let frame = incoming.frame.clone();
        let fut = async move { dispatch::handle(&state, id, &user, frame).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.busy = false;
            act.finish(ctx, incoming, res);
            act.process_next(ctx);
        }));
    }

    fn finish(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        incoming: Incoming,
        res: Result<Outcome, AppError>,
    ) {
        if let (ClientFrame::SendMessage { .. }, Err(e)) = (&incoming.frame, &res) {
            if !self.unacked.is_empty() {
                // Behind the acks still due: a socket's sends are answered in order.
                let ticket = self.take_ticket();
                self.unacked.push_back(Unacked {
                    ticket,
                    reference: incoming.reference,
                    result: Some(Err(e.clone())),
                });
                return;
            }
        }
        let reference = incoming.reference.as_ref();
        if let ClientFrame::JoinConversation {
            conversation_id, ..
        } = &incoming.frame
        {
            if let Ok(Outcome::Joined {
                reply,
                notice,
                conversation,
                last_seq,
            }) = &res
            {
                self.send(reply, reference);
                if let Some(notice) = notice {
                    self.send(notice, reference);
                }
                let waited = self.port.streams(|s| s.joined(*conversation, *last_seq));
                self.deliver(ctx, waited);
                return;
            }
            let waited = self.port.streams(|s| s.join_failed(*conversation_id));
            self.deliver(ctx, waited);
        }
        match res {
            Ok(Outcome::Reply(frame)) => self.send(&frame, reference),
            Ok(Outcome::Joined { reply, .. }) => self.send(&reply, reference),
            Ok(Outcome::Left {
                reply,
                conversation,
            }) => {
                self.port.streams(|s| s.left(conversation));
                self.send(&reply, reference);
            }
            Ok(Outcome::Submitted(pending)) => {
                let ticket = self.take_ticket();
                self.unacked.push_back(Unacked {
                    ticket,
                    reference: incoming.reference,
                    result: None,
                });
                let state = self.state.clone();
                let stored = async move { pending.stored(&state).await };
                ctx.spawn(stored.into_actor(self).map(move |res, act, ctx| {
                    act.stored(ctx, ticket, res);
                }));
            }
            Ok(Outcome::Refreshed { reply, user }) => {
                self.state.hub.do_send(SetToken {
                    id: self.id,
                    jti: user.jti.clone(),
                    gen: user.gen,
                });
                self.schedule_expiry(ctx, user.exp);
                self.auth = Some(user);
                self.send(&reply, reference);
            }
            Ok(Outcome::Nothing) => {}
            Err(e) => self.send_error(&e, reference),
        }
    }

    fn take_ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// A submitted message is stored (or failed): acks go out in submission order.
    fn stored(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        ticket: u64,
        res: Result<Message, AppError>,
    ) {
        if let Some(u) = self.unacked.iter_mut().find(|u| u.ticket == ticket) {
            u.result = Some(res);
        }
        while self.unacked.front().is_some_and(|u| u.result.is_some()) {
            let Some(Unacked {
                reference,
                result: Some(res),
                ..
            }) = self.unacked.pop_front()
            else {
                break;
            };
            match res {
                Ok(message) => {
                    // The live stream, not the ack, moves this socket's cursor: an ack
                    // may overtake another sender's earlier message still on its way.
                    let reply = ServerFrame::MessageAck {
                        client_msg_id: message.client_msg_id.clone(),
                        message,
                    };
                    self.send(&reply, reference.as_ref());
                }
                Err(e) => self.send_error(&e, reference.as_ref()),
            }
        }
        self.process_next(ctx);
    }

    /// Queues frames from the hub that waited behind a join or a fill: chat frames in seq
    /// order without repeats, a gap filled from storage before anything after it.
    fn deliver(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        frames: impl IntoIterator<Item = Outbound>,
    ) {
        match self
            .port
            .deliver(self.id, frames, self.state.config.ws_queue)
        {
            Ok(gaps) => {
                for gap in gaps {
                    self.fill(ctx, gap);
                }
            }
            Err(Refused::Overflow) => self.close(ctx, CLOSE_TOO_SLOW, "too slow to keep up"),
            Err(Refused::Closed) => {}
        }
    }

    /// Loads a gap's messages from storage; what waited behind it follows.
    fn fill(&mut self, ctx: &mut ws::WebsocketContext<Self>, gap: Gap) {
        let Some(user) = self.auth.as_ref().map(|u| u.id) else {
            return;
        };
        log::warn!(
            "session {}: seqs {}..={} of conversation {} missing from the live stream: filling from storage",
            self.id.session,
            gap.after + 1,
            gap.upto,
            gap.conversation
        );
        self.state.metrics.ws_gaps_filled.inc();
        let state = self.state.clone();
        let load = async move {
            if !ordering::fillable(&gap) {
                return None;
            }
            match crate::domain::chat::between(&state, gap.conversation, gap.after, gap.upto).await
            {
                Ok(messages) => Some(messages),
                Err(e) => {
                    log::error!("filling a gap of conversation {}: {e}", gap.conversation);
                    None
                }
            }
        };
        ctx.spawn(load.into_actor(self).map(move |messages, act, ctx| {
            let waited = act.port.filled(gap, user, messages);
            act.deliver(ctx, waited);
        }));
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.state.config.ws_queue);
        if let Some((code, reason)) = self.refuse {
            // Upgraded first, so that a browser can read why.
            self.port.outflow().cut_off();
            return self.close(ctx, code, reason);
        }
        let cfg = self.state.config.clone();
        ctx.run_interval(cfg.ws_ping_interval, move |act, ctx| {
            if act.last_heard.elapsed() >= cfg.ws_idle_timeout {
                act.close(ctx, 1000, "idle timeout");
            } else {
                ctx.ping(b"");
            }
        });
        ctx.run_later(self.state.config.ws_auth_timeout, |act, ctx| {
            if act.auth.is_none() {
                act.close(ctx, CLOSE_UNAUTHORIZED, "authentication timeout");
            }
        });
        if let Some(token) = self.url_token.take() {
            self.authenticate(ctx, &token, None);
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.auth.is_some() {
            self.state.hub.do_send(Disconnect { id: self.id });
        }
        if let Some(lane) = &self.lane {
            lane.addr.do_send(Unregister { id: self.id });
        }
        Running::Stop
    }
}

impl Handler<ToSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        match msg {
            ToSession::Frames { frames } => self.deliver(ctx, frames.iter().cloned()),
            ToSession::Close { code, reason } => self.close(ctx, code, &reason),
        }
    }
}

impl Handler<Fill> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Fill, ctx: &mut Self::Context) {
        self.fill(ctx, msg.gap);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let counted = matches!(
            msg,
            Ok(ws::Message::Text(_))
                | Ok(ws::Message::Binary(_))
                | Ok(ws::Message::Ping(_))
                | Ok(ws::Message::Pong(_))
                | Ok(ws::Message::Continuation(_))
        );
        if counted && !self.admit(ctx) {
            return;
        }
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(ctx, &text),
            Ok(ws::Message::Binary(_)) => {
                let e = AppError::InvalidRequest("frames are JSON text".into());
                self.send_error(&e, None);
            }
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Close(reason)) => {
                self.port.close();
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Continuation(_)) | Ok(ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => self.close(ctx, 1009, "frame too big"),
            Err(e) => {
                log::info!("session {}: protocol error: {e}", self.id.session);
                self.close(ctx, 1002, "protocol error");
            }
        }
    }
}

/// `GET /ws`, `/ws/chat`, `/ws/conversations/{id}`: upgrades, then authenticates.
pub async fn upgrade(
    req: HttpRequest,
    state: web::Data<AppState>,
    conversation: Option<ConversationId>,
) -> Result<HttpResponse, actix_web::Error> {
    let token = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
        .filter(|t| !t.is_empty());
    let origin_ok = match (&state.config.allowed_origins, req.headers().get("origin")) {
        (Some(allowed), Some(origin)) => origin
            .to_str()
            .map(|o| allowed.iter().any(|a| a == o.trim_end_matches('/')))
            .unwrap_or(false),
        _ => true,
    };
    let conn = req.conn_data::<ConnSocket>().copied();
    let mut session = WsSession::new(state.clone(), token, conversation, conn);
    // Behind a trusted proxy, the client's address, not the proxy's.
    let peer = crate::http::auth::client_addr(&req, &state.config.trusted_proxies)
        .parse::<std::net::IpAddr>()
        .ok();
    if !origin_ok {
        session.refuse = Some((CLOSE_FORBIDDEN, "origin not allowed"));
    } else if let (Some(ip), None) = (peer, &session.url_token) {
        // A token in the URL is checked as the socket starts: only sockets that will
        // authenticate by frame wait at the gate.
        session.gate_ticket = state.ws_gate.enter(ip);
        if session.gate_ticket.is_none() {
            log::warn!("too many unauthenticated sockets from {ip}: refusing another (4008)");
            session.refuse = Some((
                CLOSE_RATE_LIMITED,
                "too many unauthenticated sockets from this address",
            ));
        }
    }
    if session.refuse.is_some() {
        session.url_token = None;
    }
    let port = session.port.clone();
    let codec = actix_http::ws::Codec::new().max_size(state.config.ws_max_frame);
    let mut res = ws::handshake(&req)?.finish();
    // The connection is handed to the socket once this 101 is written (`http::takeover`).
    res.extensions_mut()
        .insert(Takeover::new(port, move |reader| {
            Box::pin(ws::WebsocketContext::with_codec(session, reader, codec))
        }));
    Ok(res)
}
