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
mod cluster;
mod demo;
mod faults;
mod files;
mod fuzz;
mod handover;
mod integrity;
mod limits;
mod openapi;
mod people;
mod presence;
mod realtime;
