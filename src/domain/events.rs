//! What the domain tells everyone else: typed, serializable events. Domain actions publish
//! them through the broker ([`crate::broker`]); each instance's hub turns room events into
//! frames (serialized once per instance) and acts on the control events; the presence
//! replicas take in presence facts. The domain never reaches into the hub: this file is
//! the whole vocabulary between them, and the same bytes cross instances (Redis).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::{ConversationId, UserId};
use crate::domain::attendance::AttendanceRecord;
use crate::domain::chat::Message;
use crate::domain::checkins::{Checkin, Stats};
use crate::domain::rooms::RoomKey;

/// One running Spotter process. Random at start, so a restarted instance is a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(pub u64);

impl InstanceId {
    /// A fresh id (63 random bits, so it stays exact in JSON readers that use doubles
    /// only when small; it is never shown to clients).
    pub fn random() -> InstanceId {
        InstanceId(rand::random::<u64>() >> 1)
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One socket in the whole deployment: the instance that holds it and its session there.
/// A "skip this socket" is always one of these, never a bare local number, so that
/// another instance's session 7 is not mistaken for this one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SocketId {
    pub instance: InstanceId,
    pub session: u64,
}

/// Why a user's presence changed (PROTOCOL §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Login,
    Heartbeat,
    Socket,
    Logout,
    Timeout,
    AccountStatus,
    NodeLost,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Login => "login",
            Reason::Heartbeat => "heartbeat",
            Reason::Socket => "socket",
            Reason::Logout => "logout",
            Reason::Timeout => "timeout",
            Reason::AccountStatus => "account_status",
            Reason::NodeLost => "node_lost",
        }
    }
}

/// What a room is told. Each variant serializes exactly as the server frame of the same
/// name (PROTOCOL §4: `{"type","payload"}`), so the hub encodes a notice as its frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Notice {
    /// A conversation was opened with this user (an addition to §4).
    ConversationCreated {
        conversation_id: ConversationId,
        created_by: UserId,
    },
    NewMessage {
        message: Message,
    },
    Typing {
        conversation_id: ConversationId,
        user_id: UserId,
        is_typing: bool,
    },
    ReadReceipt {
        conversation_id: ConversationId,
        user_id: UserId,
        seq: i64,
    },
    MemberCheckedIn {
        checkin: Checkin,
    },
    MemberCheckedOut {
        checkin: Checkin,
    },
    StatsUpdate {
        stats: Stats,
    },
    AttendanceUpdate {
        record: AttendanceRecord,
    },
    GeneralAttendanceUpdate {
        record: AttendanceRecord,
    },
    PresenceUpdate {
        user_id: UserId,
        is_online: bool,
        #[serde(with = "crate::time::rfc3339::option")]
        last_seen: Option<DateTime<Utc>>,
        reason: Reason,
    },
}

/// One notice for a room, and the socket that must not be sent it (the sender's own
/// socket, which gets an ack or already knows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    pub notice: Notice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<SocketId>,
}

/// Notices for every socket in a room, in this order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomEvent {
    pub room: RoomKey,
    pub items: Vec<Item>,
    /// Skip every socket of this user (typing indicators go to others only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_user: Option<UserId>,
}

impl RoomEvent {
    /// One notice for everyone in `room`.
    pub fn one(room: RoomKey, notice: Notice) -> RoomEvent {
        RoomEvent {
            room,
            items: vec![Item { notice, skip: None }],
            except_user: None,
        }
    }
}

/// A fact about presence, for the other instances' replicas (never delivered locally:
/// the instance that publishes it has applied it already).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PresenceFact {
    /// The publishing instance decided a transition (and announced it).
    Changed {
        user: UserId,
        online: bool,
        reason: Reason,
        #[serde(with = "crate::time::rfc3339")]
        at: DateTime<Utc>,
    },
    /// Users seen through the publishing instance (heartbeats, live sockets), newest time
    /// each; sent at most once a second.
    Seen { users: Vec<(UserId, i64)> },
    /// How many sockets the publishing instance now holds for a user.
    Sockets { user: UserId, count: u32 },
    /// Every user with sockets on the publishing instance, and how many: replaces what a
    /// replica knew of that instance (sent every few seconds, so a replica that missed
    /// events, or started late, converges).
    SocketTable { users: Vec<(UserId, u32)> },
    /// An instance stopped renewing its liveness key: forget its sockets.
    NodeLost { instance: InstanceId },
}

/// Everything that goes through the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// Notices for a room, on every instance.
    Room(RoomEvent),
    /// Access tokens revoked (id, expiry as Unix seconds): every instance refuses them
    /// from now on and closes the sockets opened with them (4001).
    TokensRevoked { jtis: Vec<(String, i64)> },
    /// A user's role, status or token generation changed, or the user is new: every
    /// instance reloads the user and checks their sockets again.
    UserChanged { user: UserId },
    /// Presence, for the other instances' replicas.
    Presence(PresenceFact),
}

/// An event with the instance that published it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub origin: InstanceId,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MessageId;

    fn message() -> Message {
        Message {
            id: MessageId(7),
            conversation_id: ConversationId(3),
            seq: 42,
            sender_id: UserId(5),
            content: "hi ✓".into(),
            attachment: None,
            client_msg_id: "c-1".into(),
            created_at: crate::time::now(),
        }
    }

    /// What one instance publishes, another reads back unchanged (the Redis broker sends
    /// these bytes), and a notice is the frame of the same name.
    #[test]
    fn events_cross_instances_unchanged() {
        let me = InstanceId::random();
        let events = vec![
            Event::Room(RoomEvent {
                room: RoomKey::Conversation(ConversationId(3)),
                items: vec![Item {
                    notice: Notice::NewMessage { message: message() },
                    skip: Some(SocketId {
                        instance: me,
                        session: 9,
                    }),
                }],
                except_user: None,
            }),
            Event::Room(RoomEvent::one(
                RoomKey::Presence,
                Notice::PresenceUpdate {
                    user_id: UserId(5),
                    is_online: false,
                    last_seen: Some(crate::time::now()),
                    reason: Reason::NodeLost,
                },
            )),
            Event::TokensRevoked {
                jtis: vec![("j".into(), 99)],
            },
            Event::UserChanged { user: UserId(5) },
            Event::Presence(PresenceFact::Seen {
                users: vec![(UserId(5), 1_700_000_000_123_456)],
            }),
            Event::Presence(PresenceFact::NodeLost { instance: me }),
        ];
        for event in events {
            let sent = Envelope { origin: me, event };
            let bytes = serde_json::to_vec(&sent).unwrap();
            let read: Envelope = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(read.origin, me);
            assert_eq!(serde_json::to_vec(&read).unwrap(), bytes);
        }
        let frame = serde_json::to_value(Notice::NewMessage { message: message() }).unwrap();
        assert_eq!(frame["type"], "new_message");
        assert_eq!(frame["payload"]["message"]["seq"], 42);
        let frame = serde_json::to_value(Notice::PresenceUpdate {
            user_id: UserId(5),
            is_online: true,
            last_seen: None,
            reason: Reason::NodeLost,
        })
        .unwrap();
        assert_eq!(frame["type"], "presence_update");
        assert_eq!(frame["payload"]["reason"], "node_lost");
    }
}
