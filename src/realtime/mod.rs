//! The realtime core: the wire protocol, session actors, the hub, presence, rooms.

pub mod dispatch;
pub mod gate;
pub mod hub;
pub mod lane;
pub mod ordering;
pub mod outflow;
pub mod port;
pub mod presence;
pub mod presence_pending;
pub mod protocol;
pub mod session;
pub mod wire;
