//! Spotter's integration tests: one binary; each test starts the real server.

mod common;

mod auth;
mod chat;
mod cli;
mod files;
