//! Spotter's integration tests: one binary; each test starts the real server.

mod common;

mod abuse;
mod accounts;
mod attendance;
mod auth;
mod browser;
mod browser_day;
mod chat;
mod checkins;
mod cli;
mod demo;
mod files;
mod integrity;
mod limits;
mod people;
mod presence;
mod realtime;
