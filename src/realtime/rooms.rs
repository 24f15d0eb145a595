//! Typed room keys: the unit of fan-out for every realtime feature.

use serde::{Deserialize, Serialize};

use crate::db::{ConversationId, UserId};

/// A room a socket can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RoomKey {
    /// A direct conversation's participants' joined sockets.
    Conversation(ConversationId),
    /// Dashboards: staff, admins and devices (check-in events and stats).
    Checkins,
    /// One employee's attendance records.
    Attendance(UserId),
    /// Every attendance record (admins).
    AttendanceGeneral,
    /// Presence changes of every user (admins).
    Presence,
    /// Every socket of one user (per-user notifications).
    User(UserId),
}

impl std::fmt::Display for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomKey::Conversation(id) => write!(f, "conversation:{id}"),
            RoomKey::Checkins => f.write_str("checkins"),
            RoomKey::Attendance(id) => write!(f, "attendance:{id}"),
            RoomKey::AttendanceGeneral => f.write_str("attendance:general"),
            RoomKey::Presence => f.write_str("presence"),
            RoomKey::User(id) => write!(f, "user:{id}"),
        }
    }
}
