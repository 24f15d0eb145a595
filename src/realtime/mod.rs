//! The realtime core: the wire protocol, session actors, the hub, presence, rooms.

pub mod dispatch;
pub mod hub;
pub mod ordering;
pub mod presence;
pub mod protocol;
pub mod rooms;
pub mod session;
