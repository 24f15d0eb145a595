//! The hub actor (the ChatServer of the actix chat example): owns every live session of
//! this instance and the rooms they are in. It subscribes to the broker: each domain event
//! ([`crate::domain::events`]), published here or by another instance, becomes frames for
//! the sessions of a room (serialized once per instance), or closes or re-checks sessions. Rooms are indexed both ways (room → sessions, session → rooms) and dropped
//! when empty, so a disconnect touches only the session's own rooms.
//!
//! A delivery is a batch of frames for one room, serialized once and shared (`Arc`) by
//! every recipient: the chat writer publishes all the messages one commit stored for a
//! conversation as one batch, so each socket gets them in one hand-over and one write
//! instead of one per frame.
//!
//! The hub sends a delivery once per worker thread that has recipients, to that thread's
//! [`super::lane`], which queues it in each socket's port there and applies the
//! slow-consumer policy: every delivery is bounded (a socket's unsent bytes by
//! `SPOTTER_WS_MAX_BUFFER_BYTES`, its queue by `SPOTTER_WS_QUEUE` frames; a chat batch
//! holds at most one commit's messages, 256). Past a bound, stats frames are coalesced
//! (the newest is kept and retried), and any other frame closes the session with 4029 so
//! that the client resumes with `since_seq`.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;

use super::lane::{LaneDeliver, LaneHandle, LaneId, LaneSend};
use super::port::framed;
use super::protocol::{
    ServerFrame, CLOSE_FORBIDDEN, CLOSE_RATE_LIMITED, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED,
};
use crate::broker::Incoming;
use crate::db::{ConversationId, UserId};
use crate::domain::directory::Directory;
use crate::domain::events::{Event, Item, Notice, RoomEvent};
use crate::domain::rooms::RoomKey;
use crate::metrics::Metrics;

pub use crate::domain::events::SocketId;

/// Bound of the hub's own mailbox: publishers wait (`send().await`) when it is full.
pub const HUB_MAILBOX: usize = 16_384;

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

/// A frame on its way to the sessions of a room: the same bytes for every recipient,
/// framed for the wire once (`port::framed`).
#[derive(Debug, Clone)]
pub struct Outbound {
    pub wire: Bytes,
    pub kind: FrameKind,
    /// The socket that must not get this frame (the sender's socket, which gets an ack
    /// instead): an (instance, session) pair, so another instance's session is never
    /// mistaken for one of this instance's.
    pub skip: Option<SocketId>,
}

/// Frames in the order they are to be sent, shared by every recipient.
pub type Batch = Arc<[Outbound]>;

/// What the hub tells a session.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToSession {
    /// Frames to queue for the socket, past its caps (a control notice); the port
    /// counts their bytes as it queues them.
    Frames { frames: Batch },
    /// Close the socket with this code and reason.
    Close { code: u16, reason: String },
}

/// A session has authenticated: register it. The hub checks the account again here, so
/// that a suspension or revocation that landed since the token was checked is not missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub id: SocketId,
    pub user: UserId,
    pub jti: String,
    /// The token generation the session authenticated with.
    pub gen: i64,
    /// The lane of the session's thread, which has registered it already.
    pub lane: LaneHandle,
}

/// A session is gone: drop it from its rooms.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub id: SocketId,
}

/// Put a session in a room. Answers false, and leaves it out, when the user's current
/// role may not be there ([`RoomKey::admits`]); participation in a conversation is the
/// caller's check.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Join {
    pub id: SocketId,
    pub room: RoomKey,
}

/// Take a session out of a room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub id: SocketId,
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
    /// A domain notice as its frame, serialized here once for all its recipients.
    pub fn notice(item: &Item) -> Outbound {
        let kind = match &item.notice {
            Notice::NewMessage { message } => FrameKind::Chat {
                conversation: message.conversation_id,
                seq: message.seq,
            },
            Notice::StatsUpdate { .. } => FrameKind::Stats,
            _ => FrameKind::Event,
        };
        Outbound {
            wire: framed(super::protocol::encode_notice(&item.notice).as_bytes()),
            kind,
            skip: item.skip,
        }
    }

    /// A frame serialized here, once for all its recipients.
    pub fn new(frame: &crate::realtime::protocol::ServerFrame, kind: FrameKind) -> Outbound {
        Outbound {
            wire: framed(frame.encode(None).as_bytes()),
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

/// Check every socket against its user's current account (after the directory was
/// reloaded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecheckAll;

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

/// A session changed its token (`refresh_token` frame); its rooms are checked again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetToken {
    pub id: SocketId,
    pub jti: String,
    pub gen: i64,
}

/// Who the hub told about a user's first socket opening or last socket closing.
pub trait SocketPresence: Send + Sync {
    fn first_socket(&self, user: UserId);
    fn last_socket_closed(&self, user: UserId);
}

struct SessionEntry {
    user: UserId,
    jti: String,
    gen: i64,
    lane: LaneId,
    rooms: HashSet<RoomKey>,
}

/// The hub actor.
pub struct Hub {
    sessions: HashMap<SocketId, SessionEntry>,
    rooms: HashMap<RoomKey, HashSet<SocketId>>,
    users: HashMap<UserId, HashSet<SocketId>>,
    presence: Arc<dyn SocketPresence>,
    metrics: Arc<Metrics>,
    /// Current roles, statuses and token generations.
    directory: Arc<Directory>,
    /// The worker threads' lanes that have sessions here.
    lanes: HashMap<LaneId, Addr<super::lane::Lane>>,
    /// Sockets one user may have open (0: no cap).
    max_per_user: usize,
    /// The newest stats version delivered: an older one (another instance's, published
    /// late) is not sent, so that every dashboard sees `version` only grow.
    stats_version: i64,
}

/// The bytes of a batch, as counted against a socket's buffer cap.
pub(super) fn batch_bytes(frames: &Batch) -> usize {
    frames.iter().map(|f| f.wire.len()).sum()
}

/// The frame that tells a session it was taken out of a room.
fn left_frame(room: RoomKey) -> Option<ServerFrame> {
    Some(match room {
        RoomKey::Checkins => ServerFrame::CheckinsUnsubscribed {},
        RoomKey::Attendance(employee_id) => ServerFrame::AttendanceRoomLeft { employee_id },
        RoomKey::AttendanceGeneral => ServerFrame::GeneralAttendanceLeft {},
        RoomKey::Presence => ServerFrame::PresenceUnsubscribed {},
        RoomKey::Conversation(_) | RoomKey::User(_) => return None,
    })
}

impl Hub {
    pub fn new(
        presence: Arc<dyn SocketPresence>,
        metrics: Arc<Metrics>,
        directory: Arc<Directory>,
        max_per_user: usize,
    ) -> Hub {
        Hub {
            sessions: HashMap::default(),
            rooms: HashMap::default(),
            users: HashMap::default(),
            presence,
            metrics,
            directory,
            lanes: HashMap::default(),
            max_per_user,
            stats_version: i64::MIN,
        }
    }

    /// A room event as the frames to send: each notice serialized once here; a stats
    /// notice older than one already delivered is left out.
    fn frames_of(&mut self, event: &RoomEvent) -> Option<Deliver> {
        let mut frames = Vec::with_capacity(event.items.len());
        for item in &event.items {
            if let Notice::StatsUpdate { stats } = &item.notice {
                if stats.version <= self.stats_version {
                    continue;
                }
                self.stats_version = stats.version;
            }
            frames.push(Outbound::notice(item));
        }
        if frames.is_empty() {
            return None;
        }
        Some(Deliver {
            except_user: event.except_user,
            ..Deliver::batch(event.room, frames)
        })
    }

    /// Delivers frames, in order, to every session in a room of this instance.
    fn deliver(&mut self, msg: Deliver) {
        let Some(members) = self.rooms.get(&msg.room) else {
            return;
        };
        // A single event skips its sender here. Chat frames reach the sending socket too:
        // its own messages move its place in the conversation (`ordering`), unsent.
        let skip = match &*msg.frames {
            [only] if !matches!(only.kind, FrameKind::Chat { .. }) => only.skip,
            _ => None,
        };
        // Grouped by lane (worker thread): one message per thread, not per socket.
        let mut groups: Vec<(LaneId, Vec<SocketId>)> = Vec::new();
        let mut count = 0;
        for id in members.iter().copied().filter(|id| Some(*id) != skip) {
            let Some(entry) = self.sessions.get(&id) else {
                continue;
            };
            if msg.except_user == Some(entry.user) {
                continue;
            }
            count += 1;
            match groups.iter_mut().find(|(lane, _)| *lane == entry.lane) {
                Some((_, ids)) => ids.push(id),
                None => groups.push((entry.lane, vec![id])),
            }
        }
        self.metrics.broadcast_fanout.observe(count as f64);
        let coalescible = msg.coalescible();
        let bytes = batch_bytes(&msg.frames);
        for (lane, targets) in groups {
            let Some(addr) = self.lanes.get(&lane) else {
                continue;
            };
            let sent = addr.try_send(LaneDeliver {
                frames: msg.frames.clone(),
                bytes,
                coalescible,
                targets,
            });
            if let Err(SendError::Full(d) | SendError::Closed(d)) = sent {
                // A worker this far behind cannot keep up: its recipients resume with
                // `since_seq` (a stats frame is simply skipped).
                if coalescible {
                    continue;
                }
                log::warn!(
                    "a worker's lane is full: closing {} of its sockets with 4029",
                    d.targets.len()
                );
                for id in d.targets {
                    self.metrics.ws_slow_closed.inc();
                    self.close_session(id, CLOSE_TOO_SLOW, "too slow to keep up");
                }
            }
        }
    }

    fn recheck_user(&mut self, user: UserId) {
        for id in self.sessions_of(user) {
            self.recheck_session(id);
        }
    }

    fn close_tokens(&mut self, jtis: &[(String, i64)]) {
        let jtis: HashSet<&str> = jtis.iter().map(|(j, _)| j.as_str()).collect();
        let ids: Vec<SocketId> = self
            .sessions
            .iter()
            .filter(|(_, e)| jtis.contains(e.jti.as_str()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close_session(id, CLOSE_UNAUTHORIZED, "token revoked");
        }
    }

    /// The sessions of one user on this instance.
    fn sessions_of(&self, user: UserId) -> Vec<SocketId> {
        self.users
            .get(&user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Tells one session something through its lane, behind the deliveries already
    /// sent there (`do_send`: a control message gets through even when the socket's
    /// queue is full).
    fn tell(&self, id: SocketId, msg: ToSession) {
        let lane = self.sessions.get(&id).and_then(|e| self.lanes.get(&e.lane));
        if let Some(lane) = lane {
            lane.do_send(LaneSend { id, msg });
        }
    }

    fn leave_room(&mut self, id: SocketId, room: RoomKey) -> bool {
        let was_in = self
            .sessions
            .get_mut(&id)
            .is_some_and(|e| e.rooms.remove(&room));
        if let Some(members) = self.rooms.get_mut(&room) {
            members.remove(&id);
            if members.is_empty() {
                self.rooms.remove(&room);
            }
        }
        was_in
    }

    /// Checks one session against its user's current account: closes it, or takes it out
    /// of the rooms its role no longer admits.
    fn recheck_session(&mut self, id: SocketId) {
        let Some(entry) = self.sessions.get(&id) else {
            return;
        };
        let user = entry.user;
        let access = self.directory.access(user);
        let Some(access) = access.filter(|a| a.status.is_active()) else {
            log::info!(
                "session {} of user {user}: account not active, closing",
                id.session
            );
            return self.close_session(id, CLOSE_FORBIDDEN, "account is not active");
        };
        if access.token_gen != entry.gen {
            log::info!(
                "session {} of user {user}: token revoked, closing",
                id.session
            );
            return self.close_session(id, CLOSE_UNAUTHORIZED, "token revoked");
        }
        let denied: Vec<RoomKey> = entry
            .rooms
            .iter()
            .copied()
            .filter(|room| !room.admits(user, access.role))
            .collect();
        for room in denied {
            self.leave_room(id, room);
            log::info!(
                "session {} of user {user} left {room}: not allowed for {}",
                id.session,
                access.role.as_str()
            );
            if let Some(frame) = left_frame(room) {
                let frames: Batch = vec![Outbound::new(&frame, FrameKind::Event)].into();
                self.tell(id, ToSession::Frames { frames });
            }
        }
    }

    fn remove_session(&mut self, id: SocketId) {
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
    fn close_session(&mut self, id: SocketId, code: u16, reason: &str) {
        if self.sessions.contains_key(&id) {
            // Through the lane, which also cuts off a client that does not read (it
            // would never get to the close).
            self.tell(
                id,
                ToSession::Close {
                    code,
                    reason: reason.to_string(),
                },
            );
        }
        self.remove_session(id);
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(HUB_MAILBOX);
    }
}

impl Handler<Connect> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        let refuse = |code: u16, reason: &str| {
            msg.lane.addr.do_send(LaneSend {
                id: msg.id,
                msg: ToSession::Close {
                    code,
                    reason: reason.to_string(),
                },
            });
        };
        match self.directory.access(msg.user) {
            Some(a) if !a.status.is_active() => {
                return refuse(CLOSE_FORBIDDEN, "account is not active")
            }
            Some(a) if a.token_gen != msg.gen => {
                return refuse(CLOSE_UNAUTHORIZED, "token revoked")
            }
            Some(_) => {}
            None => return refuse(CLOSE_UNAUTHORIZED, "unknown user"),
        }
        let open = self.users.get(&msg.user).map_or(0, HashSet::len);
        if self.max_per_user > 0 && open >= self.max_per_user {
            log::warn!(
                "user {} already has {open} sockets open: refusing another (4008)",
                msg.user
            );
            return refuse(CLOSE_RATE_LIMITED, "too many sockets open for this user");
        }
        let first = !self.users.contains_key(&msg.user);
        self.users.entry(msg.user).or_default().insert(msg.id);
        let own_room = RoomKey::User(msg.user);
        self.rooms.entry(own_room).or_default().insert(msg.id);
        self.sessions.insert(
            msg.id,
            SessionEntry {
                user: msg.user,
                jti: msg.jti,
                gen: msg.gen,
                lane: msg.lane.id,
                rooms: HashSet::from_iter([own_room]),
            },
        );
        self.lanes.entry(msg.lane.id).or_insert(msg.lane.addr);
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
    type Result = bool;

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> bool {
        let Some(entry) = self.sessions.get_mut(&msg.id) else {
            return false;
        };
        let role = self.directory.access(entry.user).map(|a| a.role);
        if !role.is_some_and(|role| msg.room.admits(entry.user, role)) {
            return false;
        }
        entry.rooms.insert(msg.room);
        self.rooms.entry(msg.room).or_default().insert(msg.id);
        true
    }
}

impl Handler<Leave> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.leave_room(msg.id, msg.room);
    }
}

impl Handler<Deliver> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        self.deliver(msg);
    }
}

impl Handler<Incoming> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Incoming, _: &mut Context<Self>) {
        match &msg.0.event {
            Event::Room(event) => {
                if let Some(deliver) = self.frames_of(event) {
                    self.deliver(deliver);
                }
            }
            Event::TokensRevoked { jtis } => self.close_tokens(jtis),
            Event::UserChanged { user } => self.recheck_user(*user),
            // Presence facts are for the presence replicas.
            Event::Presence(_) => {}
        }
    }
}

impl Handler<RecheckAll> for Hub {
    type Result = ();

    fn handle(&mut self, _: RecheckAll, _: &mut Context<Self>) {
        let ids: Vec<SocketId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.recheck_session(id);
        }
    }
}

impl Handler<CloseAll> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let ids: Vec<SocketId> = self.sessions.keys().copied().collect();
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
            e.gen = msg.gen;
        }
        self.recheck_session(msg.id);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::users::UserRow;
    use std::time::Duration;

    struct NoPresence;
    impl SocketPresence for NoPresence {
        fn first_socket(&self, _: UserId) {}
        fn last_socket_closed(&self, _: UserId) {}
    }

    /// A session stand-in that records what it is told (`close <code>`, `fill a..b`, or
    /// the texts of frames sent to it directly).
    pub(crate) struct Probe(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    impl Actor for Probe {
        type Context = Context<Self>;
    }
    impl Handler<ToSession> for Probe {
        type Result = ();
        fn handle(&mut self, msg: ToSession, _: &mut Context<Self>) {
            let text = match msg {
                ToSession::Frames { frames } => frames
                    .iter()
                    .map(|f| String::from_utf8_lossy(super::super::port::payload(&f.wire)))
                    .collect(),
                ToSession::Close { code, .. } => format!("close {code}"),
            };
            self.0.lock().unwrap().push(text);
        }
    }
    impl Handler<super::super::lane::Fill> for Probe {
        type Result = ();
        fn handle(&mut self, msg: super::super::lane::Fill, _: &mut Context<Self>) {
            let (after, upto) = (msg.gap.after, msg.gap.upto);
            self.0.lock().unwrap().push(format!("fill {after}..{upto}"));
        }
    }

    fn row(id: i64, role: &str, gen: i64) -> UserRow {
        let now = chrono::Utc::now().naive_utc();
        UserRow {
            id: UserId(id),
            username: format!("u{id}"),
            display_name: format!("U {id}"),
            password_hash: String::new(),
            role: role.into(),
            account_status: "active".into(),
            is_online: false,
            last_seen: None,
            created_at: now,
            updated_at: now,
            token_gen: gen,
        }
    }

    /// A join that reaches the hub after the role changed is refused, even when the
    /// session's own check (made earlier) passed: the hub checks the current role.
    #[actix::test]
    async fn join_is_checked_against_the_current_role() {
        let directory = Arc::new(Directory::load(&[row(1, "admin", 0)]));
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(Arc::new(NoPresence), metrics.clone(), directory.clone(), 0).start();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let probe_log = seen.clone();
        let probe = Probe(seen.clone()).start();
        let id = SocketId {
            instance: crate::domain::events::InstanceId(1),
            session: 1,
        };
        let port = super::super::port::Port::new(Arc::new(super::super::outflow::Outflow::new(
            None,
            Duration::from_secs(1),
        )));
        super::super::port::hand_over(id, port.clone());
        let caps = super::super::lane::Caps {
            bytes: 1 << 20,
            frames: 1024,
        };
        let lane = super::super::lane::current(hub.clone().recipient(), metrics, caps);
        lane.addr.do_send(super::super::lane::Register {
            id,
            user: UserId(1),
            addr: probe.clone().recipient(),
            fill: probe.clone().recipient(),
        });
        hub.do_send(Connect {
            id,
            user: UserId(1),
            jti: "j".into(),
            gen: 0,
            lane,
        });
        let room = RoomKey::Presence;
        assert!(hub.send(Join { id, room }).await.unwrap());
        // Demoted between the session's check and its next join.
        directory.upsert(&row(1, "member", 0));
        assert!(!hub.send(Join { id, room }).await.unwrap());
        // The recheck takes the session out of the room it was in, and says so.
        hub.send(changed(UserId(1))).await.unwrap();
        let frame = ServerFrame::Error(crate::error::ErrorBody {
            code: "x",
            message: String::new(),
            conversation_id: None,
        });
        hub.send(Deliver::to_room(room, &frame, FrameKind::Event))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = port.take_texts();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert!(queued[0].contains("presence_unsubscribed"), "{queued:?}");
        assert!(seen.lock().unwrap().is_empty());
        // A new token generation closes the session with 4001.
        directory.upsert(&row(1, "member", 1));
        hub.send(changed(UserId(1))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen_last(&probe_log), "close 4001");
    }

    fn changed(user: UserId) -> Incoming {
        Incoming(Arc::new(crate::domain::events::Envelope {
            origin: crate::domain::events::InstanceId(1),
            event: Event::UserChanged { user },
        }))
    }

    fn seen_last(log: &std::sync::Mutex<Vec<String>>) -> String {
        log.lock().unwrap().last().cloned().unwrap_or_default()
    }
}
