//! Spotter's integration tests: one binary; each test starts the real server.

mod common;

mod abuse;
mod accounts;
mod attendance;
mod auth;
mod browser;
mod chat;
mod checkins;
mod cli;
mod files;
mod integrity;
mod limits;
mod presence;
mod realtime;
