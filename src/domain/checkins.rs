//! Check-ins: check in and out (front desk, turnstiles, members themselves), the live
//! statistics of the floor, and their recomputation by the sweeper.
//!
//! NOTE FOR IMPLEMENTERS (issue #5): the bodies below are placeholders to be replaced.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::AuthUser;
use crate::db::{CheckinId, UserId};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The contract's check-in object.
#[derive(Debug, Clone, Serialize)]
pub struct Checkin {
    pub id: CheckinId,
    pub member_id: UserId,
    pub member_name: String,
    pub location: Option<String>,
    pub notes: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub checked_in_at: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339::option")]
    pub checked_out_at: Option<DateTime<Utc>>,
}

/// The contract's stats object (days and hours in UTC).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub currently_checked_in: i64,
    pub today_check_ins: i64,
    pub today_unique_members: i64,
    pub avg_visit_minutes_today: f64,
    pub by_location: BTreeMap<String, i64>,
    pub by_hour: Vec<i64>,
    #[serde(with = "crate::time::rfc3339")]
    pub computed_at: DateTime<Utc>,
    pub version: i64,
}

impl Stats {
    pub fn empty() -> Stats {
        Stats {
            currently_checked_in: 0,
            today_check_ins: 0,
            today_unique_members: 0,
            avg_visit_minutes_today: 0.0,
            by_location: BTreeMap::new(),
            by_hour: vec![0; 24],
            computed_at: crate::time::now(),
            version: 0,
        }
    }
}

/// The live statistics.
pub struct StatsTracker {
    current: Mutex<Stats>,
}

impl Default for StatsTracker {
    fn default() -> Self {
        StatsTracker {
            current: Mutex::new(Stats::empty()),
        }
    }
}

impl StatsTracker {
    pub fn snapshot(&self) -> Stats {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A check-in request (socket `check_in` or `POST /api/checkins`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CheckInRequest {
    pub member_id: UserId,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub async fn check_in(
    _state: &AppState,
    _actor: &AuthUser,
    _req: CheckInRequest,
) -> AppResult<Checkin> {
    Err(AppError::Unavailable("check-ins are not built yet".into()))
}

pub async fn check_out(
    _state: &AppState,
    _actor: &AuthUser,
    _member: UserId,
) -> AppResult<Checkin> {
    Err(AppError::Unavailable("check-ins are not built yet".into()))
}

/// The sweeper's check-in maintenance: close stale check-ins, recompute the stats from the
/// database and publish a correction when the live numbers drifted.
pub async fn sweep(_state: &AppState) -> AppResult<()> {
    Ok(())
}

/// Loads the statistics from the database at start-up.
pub async fn init(_state: &AppState) -> AppResult<()> {
    Ok(())
}
