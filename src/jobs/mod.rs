//! Scheduled work.

pub mod sweeper;
