//! Typed room keys: the unit of fan-out for every realtime feature.

use serde::{Deserialize, Serialize};

use crate::db::{ConversationId, UserId};
use crate::domain::users::Role;

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

impl RoomKey {
    /// Whether a user of `role` may be in this room (PROTOCOL §4, "Who may join what").
    /// Conversations admit their participants whatever their role; chat checks that.
    /// The hub asks this on every join and again whenever the user's role changes.
    pub fn admits(self, user: UserId, role: Role) -> bool {
        match self {
            RoomKey::Conversation(_) => true,
            RoomKey::User(owner) => owner == user,
            RoomKey::Checkins => matches!(role, Role::Staff | Role::Admin | Role::Device),
            RoomKey::Attendance(employee) => {
                employee == user || matches!(role, Role::Staff | Role::Admin)
            }
            RoomKey::AttendanceGeneral | RoomKey::Presence => role == Role::Admin,
        }
    }
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
