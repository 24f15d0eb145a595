//! Spotter: a realtime server for gyms — chat, presence, check-ins and attendance over
//! HTTP and WebSocket, on embedded SQLite or PostgreSQL.
//!
//! The hub actors are at the centre: [`realtime::hub::Hub`] routes frames by room to the
//! session actors ([`realtime::session`]); [`realtime::presence::PresenceServer`] keeps who
//! is online; [`jobs::sweeper::Sweeper`] runs the scheduled work. Every action lives once
//! in [`domain`] and is called by both [`http`] and the socket.

pub mod app;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod realtime;
pub mod state;
pub mod time;
