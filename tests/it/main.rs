//! Spotter's integration tests: one binary; each test starts the real server.

mod common;

mod attendance;
mod auth;
mod browser;
mod chat;
mod checkins;
mod cli;
mod faults;
mod files;
mod fuzz;
mod openapi;
mod presence;
mod realtime;
