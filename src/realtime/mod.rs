//! The realtime core: the wire protocol, session actors, the hub, presence, rooms.

pub mod dispatch;
pub mod hub;
pub mod presence;
pub mod presence_pending;
pub mod protocol;
pub mod rooms;
pub mod session;
