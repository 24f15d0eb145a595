//! The hub actor (the ChatServer of the actix chat example): owns every live session of
//! this instance and the rooms they are in, and delivers published frames to the sessions
//! of a room. Rooms are indexed both ways (room → sessions, session → rooms) and dropped
//! when empty, so a disconnect touches only the session's own rooms.
//!
//! A delivery is a batch of frames for one room, serialized once and shared (`Arc`) by
//! every recipient: the chat writer publishes all the messages one commit stored for a
//! conversation as one batch, so each socket gets them in one mailbox message and one
//! write instead of one per frame.
//!
//! Every delivery is bounded: a session's mailbox holds at most `SPOTTER_WS_QUEUE`
//! batches (a chat batch holds at most one commit's messages, 256). When it is full,
//! stats frames are coalesced (the newest is kept and retried), and any other frame
//! closes the session with 4029 so that the client resumes with `since_seq`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use super::rooms::RoomKey;
use crate::db::{ConversationId, UserId};
use crate::metrics::Metrics;

/// A session's id, unique within this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// How often stats frames that could not be delivered are retried.
const STATS_RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Bound of the hub's own mailbox: publishers wait (`send().await`) when it is full.
const HUB_MAILBOX: usize = 16_384;

/// What a delivered frame is, for the slow-consumer policy and per-socket ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A chat message with its sequence number: never dropped.
    Chat {
        conversation: ConversationId,
        seq: i64,
    },
    /// Check-in statistics: latest wins, intermediate ones may be skipped.
    Stats,
    /// Any other event: never dropped.
    Event,
}

/// A frame on its way to the sessions of a room: the same bytes for every recipient.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub text: ByteString,
    pub kind: FrameKind,
    /// The session that must not get this frame (the sender's socket, which gets an ack
    /// instead).
    pub skip: Option<SessionId>,
}

/// Frames in the order they are to be sent, shared by every recipient.
pub type Batch = Arc<[Outbound]>;

/// What the hub tells a session.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToSession {
    Frames(Batch),
    /// Close the socket with this code and reason.
    Close {
        code: u16,
        reason: String,
    },
}

/// A session has authenticated: register it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub id: SessionId,
    pub user: UserId,
    pub jti: String,
    pub addr: Recipient<ToSession>,
}

/// A session is gone: drop it from its rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: SessionId,
}

/// Put a session in a room (authorization is the caller's job).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub id: SessionId,
    pub room: RoomKey,
}

/// Take a session out of a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: SessionId,
    pub room: RoomKey,
}

/// Deliver frames, in order, to every session in a room of this instance.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Deliver {
    pub room: RoomKey,
    pub frames: Batch,
    /// Skip every socket of this user (typing indicators go to others only).
    pub except_user: Option<UserId>,
}

impl Outbound {
    /// A frame serialized here, once for all its recipients.
    pub fn new(frame: &crate::realtime::protocol::ServerFrame, kind: FrameKind) -> Outbound {
        Outbound {
            text: frame.encode(None),
            kind,
            skip: None,
        }
    }
}

impl Deliver {
    /// One frame for everyone in `room`, serialized here once for all recipients.
    pub fn to_room(
        room: RoomKey,
        frame: &crate::realtime::protocol::ServerFrame,
        kind: FrameKind,
    ) -> Deliver {
        Deliver::batch(room, vec![Outbound::new(frame, kind)])
    }

    /// Several frames for everyone in `room`, sent in this order.
    pub fn batch(room: RoomKey, frames: Vec<Outbound>) -> Deliver {
        Deliver {
            room,
            frames: frames.into(),
            except_user: None,
        }
    }

    /// Stats only: a slow dashboard may skip it for a newer one.
    fn coalescible(&self) -> bool {
        !self.frames.is_empty() && self.frames.iter().all(|f| f.kind == FrameKind::Stats)
    }
}

/// Close every socket of a user (account made non-active: 4003).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CloseUser {
    pub user: UserId,
    pub code: u16,
    pub reason: String,
}

/// Close every socket opened with one of these tokens (revocation: 4001).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CloseTokens {
    pub jtis: Vec<String>,
    pub code: u16,
    pub reason: String,
}

/// Close every socket (shutdown: 4200). Answers how many were open.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    pub code: u16,
    pub reason: String,
}

/// Does this user have a live socket here, other than those opened with `except_jti`?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct HasLiveSocket {
    pub user: UserId,
    pub except_jti: Option<String>,
}

/// A session changed its token (`refresh_token` frame).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetToken {
    pub id: SessionId,
    pub jti: String,
}

/// Who the hub told about a user's first socket opening or last socket closing.
pub trait SocketPresence: Send + Sync {
    fn first_socket(&self, user: UserId);
    fn last_socket_closed(&self, user: UserId);
}

struct SessionEntry {
    user: UserId,
    jti: String,
    addr: Recipient<ToSession>,
    rooms: HashSet<RoomKey>,
    /// The newest stats frame that did not fit in the mailbox.
    pending_stats: Option<Batch>,
}

/// The hub actor.
pub struct Hub {
    sessions: HashMap<SessionId, SessionEntry>,
    rooms: HashMap<RoomKey, HashSet<SessionId>>,
    users: HashMap<UserId, HashSet<SessionId>>,
    presence: Arc<dyn SocketPresence>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(presence: Arc<dyn SocketPresence>, metrics: Arc<Metrics>) -> Hub {
        Hub {
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            users: HashMap::new(),
            presence,
            metrics,
        }
    }

    fn remove_session(&mut self, id: SessionId) {
        let Some(entry) = self.sessions.remove(&id) else {
            return;
        };
        for room in &entry.rooms {
            if let Some(members) = self.rooms.get_mut(room) {
                members.remove(&id);
                if members.is_empty() {
                    self.rooms.remove(room);
                }
            }
        }
        if let Some(set) = self.users.get_mut(&entry.user) {
            set.remove(&id);
            if set.is_empty() {
                self.users.remove(&entry.user);
                self.presence.last_socket_closed(entry.user);
            }
        }
        self.metrics.ws_open.set(self.sessions.len() as i64);
    }

    /// Sends a close and forgets the session at once: it receives nothing more.
    fn close_session(&mut self, id: SessionId, code: u16, reason: &str) {
        if let Some(entry) = self.sessions.get(&id) {
            // `do_send` ignores the mailbox bound on purpose: one control message per
            // session, and it must get through even when the queue is full.
            entry.addr.do_send(ToSession::Close {
                code,
                reason: reason.to_string(),
            });
        }
        self.remove_session(id);
    }

    fn deliver_to(&mut self, id: SessionId, frames: &Batch, coalescible: bool) {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return;
        };
        match entry.addr.try_send(ToSession::Frames(frames.clone())) {
            Ok(()) => {
                if coalescible {
                    entry.pending_stats = None;
                }
                self.metrics.ws_frames_out.inc_by(frames.len() as u64);
            }
            Err(SendError::Full(_)) if coalescible => {
                entry.pending_stats = Some(frames.clone());
                self.metrics.ws_stats_coalesced.inc();
            }
            Err(SendError::Full(_)) => {
                log::warn!(
                    "session {} of user {} is too slow: closing with 4029",
                    id.0,
                    entry.user
                );
                self.metrics.ws_slow_closed.inc();
                self.close_session(id, 4029, "too slow to keep up");
            }
            Err(SendError::Closed(_)) => self.remove_session(id),
        }
    }

    fn retry_pending_stats(&mut self) {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.pending_stats.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(frames) = self.sessions.get(&id).and_then(|e| e.pending_stats.clone()) {
                self.deliver_to(id, &frames, true);
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
        ctx.run_interval(STATS_RETRY_INTERVAL, |hub, _| hub.retry_pending_stats());
    }
}

impl Handler<Connect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        let first = !self.users.contains_key(&msg.user);
        self.users.entry(msg.user).or_default().insert(msg.id);
        let own_room = RoomKey::User(msg.user);
        self.rooms.entry(own_room).or_default().insert(msg.id);
        self.sessions.insert(
            msg.id,
            SessionEntry {
                user: msg.user,
                jti: msg.jti,
                addr: msg.addr,
                rooms: HashSet::from([own_room]),
                pending_stats: None,
            },
        );
        self.metrics.ws_open.set(self.sessions.len() as i64);
        if first {
            self.presence.first_socket(msg.user);
        }
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.remove_session(msg.id);
    }
}

impl Handler<Join> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&msg.id) {
            entry.rooms.insert(msg.room);
            self.rooms.entry(msg.room).or_default().insert(msg.id);
        }
    }
}

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(entry) = self.sessions.get_mut(&msg.id) {
            entry.rooms.remove(&msg.room);
        }
        if let Some(members) = self.rooms.get_mut(&msg.room) {
            members.remove(&msg.id);
            if members.is_empty() {
                self.rooms.remove(&msg.room);
            }
        }
    }
}

impl Handler<Deliver> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let Some(members) = self.rooms.get(&msg.room) else {
            return;
        };
        // A single event skips its sender here. Chat frames reach the sending socket too:
        // its own messages move its place in the conversation (`ordering`), unsent.
        let skip = match &*msg.frames {
            [only] if !matches!(only.kind, FrameKind::Chat { .. }) => only.skip,
            _ => None,
        };
        let targets: Vec<SessionId> = members
            .iter()
            .copied()
            .filter(|id| Some(*id) != skip)
            .filter(|id| match msg.except_user {
                Some(u) => self.sessions.get(id).map(|e| e.user != u).unwrap_or(false),
                None => true,
            })
            .collect();
        self.metrics.broadcast_fanout.observe(targets.len() as f64);
        let coalescible = msg.coalescible();
        for id in targets {
            self.deliver_to(id, &msg.frames, coalescible);
        }
    }
}

impl Handler<CloseUser> for Hub {
    type Result = ();

    fn handle(&mut self, msg: CloseUser, _: &mut Context<Self>) {
        let ids: Vec<SessionId> = self
            .users
            .get(&msg.user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.close_session(id, msg.code, &msg.reason);
        }
    }
}

impl Handler<CloseTokens> for Hub {
    type Result = ();

    fn handle(&mut self, msg: CloseTokens, _: &mut Context<Self>) {
        let jtis: HashSet<&str> = msg.jtis.iter().map(String::as_str).collect();
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| jtis.contains(e.jti.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close_session(id, msg.code, &msg.reason);
        }
    }
}

impl Handler<CloseAll> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        let n = ids.len();
        for id in ids {
            self.close_session(id, msg.code, &msg.reason);
        }
        n
    }
}

impl Handler<HasLiveSocket> for Hub {
    type Result = bool;

    fn handle(&mut self, msg: HasLiveSocket, _: &mut Context<Self>) -> bool {
        self.users.get(&msg.user).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.sessions
                    .get(id)
                    .is_some_and(|e| msg.except_jti.as_deref() != Some(e.jti.as_str()))
            })
        })
    }
}

impl Handler<SetToken> for Hub {
    type Result = ();

    fn handle(&mut self, msg: SetToken, _: &mut Context<Self>) {
        if let Some(e) = self.sessions.get_mut(&msg.id) {
            e.jti = msg.jti;
        }
    }
}
