//! The actions of Spotter, one function per action, shared by the HTTP API, the socket
//! and the CLI.

pub mod attendance;
pub mod chat;
pub mod checkin_codes;
pub mod checkins;
pub mod directory;
pub mod events;
pub mod files;
pub mod presence;
pub mod rooms;
pub mod users;
