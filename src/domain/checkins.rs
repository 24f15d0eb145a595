//! Check-ins: check in and out (front desk, turnstiles, members themselves), the live
//! statistics of the floor, and their recomputation by the sweeper.
//!
//! The statistics are kept in memory and changed by every check-in and check-out, so a
//! dashboard never waits on the database. Two locks keep them honest:
//! - the *gate*: every change holds it shared from its database write until its counters
//!   are applied; the sweeper's recomputation holds it exclusively, so what it reads from
//!   the database and what is in memory describe the same moment;
//! - the *publishing* lock: counters are applied and their `stats_update` published under
//!   it, so dashboards receive versions in increasing order.
//!
//! What the numbers mean (PROTOCOL §3 leaves these open): days and hours are UTC;
//! `by_location` counts who is in now, check-ins without a location under `"unknown"`;
//! `avg_visit_minutes_today` averages the visits that ended today, except the ones the
//! sweeper auto-closed (their length says nothing about the visit); `version` grows by
//! one with every change and starts from the clock at start-up; `computed_at` is when the
//! numbers last changed. Refusals: an unknown member is 404, a user who is not a member
//! 422, a non-active member cannot be checked in (403 `account_inactive`) but can be
//! checked out.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::Serialize;
use tokio::sync::{Mutex as AsyncMutex, RwLock};

use crate::auth::AuthUser;
use crate::db::checkins::{CheckinRow, DayRows, Inserted, NewCheckin};
use crate::db::{CheckinId, UserId};
use crate::domain::directory::{DirEntry, Directory};
use crate::domain::events::{Event, Notice, RoomEvent};
use crate::domain::rooms::RoomKey;
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The `by_location` key of the check-ins made without a location.
pub const UNKNOWN_LOCATION: &str = "unknown";
/// Longest `location` of a check-in, in characters.
pub const LOCATION_MAX: usize = 100;
/// Longest `notes` of a check-in, in characters.
pub const NOTES_MAX: usize = 1000;
/// Longest `idempotency_key` (check-ins and attendance), in characters.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;
const MICROS_PER_MINUTE: f64 = 60_000_000.0;

/// The contract's check-in object.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
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

impl Checkin {
    fn from_row(directory: &Directory, row: &CheckinRow) -> Checkin {
        Checkin {
            id: row.id,
            member_id: row.member_id,
            member_name: directory.name(row.member_id),
            location: row.location.clone(),
            notes: row.notes.clone(),
            checked_in_at: crate::time::from_db(row.checked_in_at),
            checked_out_at: row.checked_out_at.map(crate::time::from_db),
        }
    }
}

/// The contract's stats object (days and hours in UTC).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
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

/// The numbers behind [`Stats`], without their bookkeeping (`version`, `computed_at`):
/// what the sweeper compares with the database.
#[derive(Debug, Clone, PartialEq)]
struct Counters {
    /// The UTC day the `today_*` fields are about.
    day: NaiveDate,
    currently_checked_in: i64,
    by_location: BTreeMap<String, i64>,
    today_check_ins: i64,
    today_members: HashSet<UserId>,
    by_hour: [i64; 24],
    /// Visits that ended today (not auto-closed) and their total length.
    ended_visits: i64,
    ended_visit_micros: i64,
}

fn location_key(location: Option<&str>) -> String {
    location.unwrap_or(UNKNOWN_LOCATION).to_string()
}

fn visit_micros(checked_in_at: NaiveDateTime, checked_out_at: NaiveDateTime) -> i64 {
    (checked_out_at - checked_in_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .max(0)
}

impl Counters {
    fn new(day: NaiveDate) -> Counters {
        Counters {
            day,
            currently_checked_in: 0,
            by_location: BTreeMap::new(),
            today_check_ins: 0,
            today_members: HashSet::new(),
            by_hour: [0; 24],
            ended_visits: 0,
            ended_visit_micros: 0,
        }
    }

    /// The statistics of `day` from the database's rows.
    fn from_rows(day: NaiveDate, rows: &DayRows) -> Counters {
        let mut c = Counters::new(day);
        for (_, location) in &rows.open {
            c.add_present(location.as_deref(), 1);
        }
        for (member, at) in &rows.opened {
            c.count_check_in(*member, *at);
        }
        for (checked_in_at, checked_out_at) in &rows.ended {
            c.count_visit(*checked_in_at, *checked_out_at);
        }
        c
    }

    fn add_present(&mut self, location: Option<&str>, delta: i64) {
        self.currently_checked_in += delta;
        let key = location_key(location);
        let n = self.by_location.entry(key.clone()).or_insert(0);
        *n += delta;
        if *n == 0 {
            self.by_location.remove(&key);
        }
    }

    fn count_check_in(&mut self, member: UserId, at: NaiveDateTime) {
        if at.date() != self.day {
            return;
        }
        self.today_check_ins += 1;
        self.today_members.insert(member);
        self.by_hour[at.hour() as usize] += 1;
    }

    fn count_visit(&mut self, checked_in_at: NaiveDateTime, checked_out_at: NaiveDateTime) {
        if checked_out_at.date() != self.day {
            return;
        }
        self.ended_visits += 1;
        self.ended_visit_micros = self
            .ended_visit_micros
            .saturating_add(visit_micros(checked_in_at, checked_out_at));
    }

    /// Starts a new day when `day` is after the current one; true if it did.
    fn roll_to(&mut self, day: NaiveDate) -> bool {
        if day <= self.day {
            return false;
        }
        *self = Counters {
            currently_checked_in: self.currently_checked_in,
            by_location: std::mem::take(&mut self.by_location),
            ..Counters::new(day)
        };
        true
    }

    fn checked_in(&mut self, row: &CheckinRow) {
        self.roll_to(row.checked_in_at.date());
        self.add_present(row.location.as_deref(), 1);
        self.count_check_in(row.member_id, row.checked_in_at);
    }

    fn checked_out(&mut self, row: &CheckinRow) {
        let Some(out) = row.checked_out_at else {
            return;
        };
        self.roll_to(out.date());
        self.add_present(row.location.as_deref(), -1);
        if !row.auto_closed {
            self.count_visit(row.checked_in_at, out);
        }
    }

    fn avg_visit_minutes(&self) -> f64 {
        if self.ended_visits == 0 {
            return 0.0;
        }
        let minutes = self.ended_visit_micros as f64 / self.ended_visits as f64 / MICROS_PER_MINUTE;
        (minutes * 100.0).round() / 100.0
    }

    fn stats(&self, computed_at: DateTime<Utc>, version: i64) -> Stats {
        Stats {
            currently_checked_in: self.currently_checked_in,
            today_check_ins: self.today_check_ins,
            today_unique_members: self.today_members.len() as i64,
            avg_visit_minutes_today: self.avg_visit_minutes(),
            by_location: self.by_location.clone(),
            by_hour: self.by_hour.to_vec(),
            computed_at,
            version,
        }
    }
}

/// The live numbers and their bookkeeping.
struct Live {
    counters: Counters,
    version: i64,
    /// When the numbers last changed.
    computed_at: DateTime<Utc>,
    /// Changed without a `stats_update` yet (a new day seen by a snapshot, auto-closes):
    /// the sweeper publishes them.
    unpublished: bool,
    /// The newest statistics another instance published, when newer than ours.
    remote: Option<Stats>,
}

impl Live {
    fn bump(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.computed_at = now;
    }

    fn stats(&self) -> Stats {
        self.counters.stats(self.computed_at, self.version)
    }
}

/// The live statistics (`state.stats`).
pub struct StatsTracker {
    live: Mutex<Live>,
    gate: RwLock<()>,
    publishing: AsyncMutex<()>,
}

impl Default for StatsTracker {
    fn default() -> Self {
        let now = crate::time::now();
        StatsTracker {
            live: Mutex::new(Live {
                counters: Counters::new(now.date_naive()),
                version: 0,
                computed_at: now,
                unpublished: false,
                remote: None,
            }),
            gate: RwLock::new(()),
            publishing: AsyncMutex::new(()),
        }
    }
}

impl StatsTracker {
    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock leaves whole numbers behind (every change is a
        // few integer updates); the sweeper corrects them if they drifted.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current statistics. The first look on a new UTC day starts the day's counters
    /// (the sweeper publishes that change).
    pub fn snapshot(&self) -> Stats {
        let now = crate::time::now();
        let mut live = self.live();
        if live.counters.roll_to(now.date_naive()) {
            live.bump(now);
            live.unpublished = true;
        }
        match &live.remote {
            Some(remote) if remote.version > live.version => remote.clone(),
            _ => live.stats(),
        }
    }

    /// Another instance's newer statistics: what this instance shows until it computes
    /// newer ones itself.
    pub fn adopt(&self, stats: &Stats) {
        let mut live = self.live();
        if stats.version > live.version
            && live
                .remote
                .as_ref()
                .is_none_or(|r| r.version < stats.version)
        {
            live.remote = Some(stats.clone());
        }
    }

    /// Applies a change and publishes `events`, then the new `stats_update`, in order.
    /// With several instances the numbers are read from the database with the next shared
    /// version instead (`shared_stats`): the other instances' changes are in them.
    async fn record(
        &self,
        state: &AppState,
        events: Vec<Notice>,
        change: impl FnOnce(&mut Counters),
    ) {
        let _order = self.publishing.lock().await;
        let stats = {
            let mut live = self.live();
            change(&mut live.counters);
            live.bump(crate::time::now());
            live.unpublished = false;
            live.stats()
        };
        let stats = if state.cluster.clustered() {
            match shared_stats(state).await {
                Ok(stats) => stats,
                Err(e) => {
                    log::error!("check-in stats: reading the shared numbers failed: {e}");
                    stats
                }
            }
        } else {
            stats
        };
        for event in events {
            publish(state, event).await;
        }
        publish(state, Notice::StatsUpdate { stats }).await;
    }
}

/// Reads the day's numbers from the database with the next shared version (several
/// instances) and makes them this instance's live numbers.
async fn shared_stats(state: &AppState) -> AppResult<Stats> {
    let now = crate::time::now();
    let day = now.date_naive();
    let (from, to) = day_bounds(day);
    let floor = now.timestamp_millis();
    let (version, rows) = state
        .db
        .write(move |c| crate::db::checkins::versioned_day_rows(c, floor, from, to))
        .await?;
    let mut live = state.stats.live();
    live.counters = Counters::from_rows(day, &rows);
    live.version = live.version.max(version);
    live.computed_at = now;
    live.unpublished = false;
    if live
        .remote
        .as_ref()
        .is_some_and(|r| r.version <= live.version)
    {
        live.remote = None;
    }
    Ok(live.stats())
}

/// Sends a notice to the check-in room.
async fn publish(state: &AppState, notice: Notice) {
    let event = RoomEvent::one(RoomKey::Checkins, notice);
    state.broker.publish(Event::Room(event)).await;
}

/// A check-in request (socket `check_in` or `POST /api/checkins`).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckInRequest {
    pub member_id: UserId,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Staff, admins and devices check anyone in or out; a member only themself.
fn authorize(actor: &AuthUser, member: UserId) -> AppResult<()> {
    match actor.role {
        Role::Staff | Role::Admin | Role::Device => Ok(()),
        Role::Member if actor.id == member => Ok(()),
        Role::Member => Err(AppError::Forbidden(
            "members may only check themselves in and out".into(),
        )),
        Role::Trainer => Err(AppError::Forbidden(
            "only staff, admins, devices or the member may do this".into(),
        )),
    }
}

/// The member must exist (404) and be a member (422).
fn require_member(directory: &Directory, member: UserId) -> AppResult<DirEntry> {
    let entry = directory
        .get(member)
        .ok_or_else(|| AppError::not_found("member"))?;
    if entry.role != Role::Member {
        return Err(AppError::Validation(format!(
            "user {member} is not a member (role {})",
            entry.role.as_str()
        )));
    }
    Ok(entry)
}

/// Trims an optional text field; empty means absent; too long is refused.
pub(crate) fn clean_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> AppResult<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max {
        return Err(AppError::Validation(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(Some(value.to_string()))
}

/// An idempotency key is 1..=`IDEMPOTENCY_KEY_MAX` characters, taken as given.
pub(crate) fn clean_key(value: Option<String>) -> AppResult<Option<String>> {
    match value {
        None => Ok(None),
        Some(k) if !k.trim().is_empty() && k.chars().count() <= IDEMPOTENCY_KEY_MAX => Ok(Some(k)),
        Some(_) => Err(AppError::Validation(format!(
            "idempotency_key must be 1..{IDEMPOTENCY_KEY_MAX} characters"
        ))),
    }
}

/// What a check-in's write did.
enum CheckInOutcome {
    Created(CheckinRow),
    /// The idempotency key was seen before: its original record.
    Replayed(CheckinRow),
    AlreadyIn,
}

/// Runs `fut` as its own task and waits for it. The caller may go away (a client that
/// disconnects drops its request's future), but a change that reached the database is
/// then still counted and broadcast.
pub(crate) async fn run_to_completion<T: 'static>(
    fut: impl std::future::Future<Output = AppResult<T>> + 'static,
) -> AppResult<T> {
    actix_web::rt::spawn(fut)
        .await
        .map_err(|e| AppError::internal(format!("task failed: {e}")))?
}

/// Checks a member in. A repeated `idempotency_key` returns the original check-in and
/// changes nothing (no broadcast, no stats change).
pub async fn check_in(
    state: &AppState,
    actor: &AuthUser,
    req: CheckInRequest,
) -> AppResult<Checkin> {
    let (state, actor) = (state.clone(), actor.clone());
    run_to_completion(async move { store_check_in(&state, &actor, req).await }).await
}

async fn store_check_in(
    state: &AppState,
    actor: &AuthUser,
    req: CheckInRequest,
) -> AppResult<Checkin> {
    let member = req.member_id;
    authorize(actor, member)?;
    let location = clean_text("location", req.location, LOCATION_MAX)?;
    let notes = clean_text("notes", req.notes, NOTES_MAX)?;
    let key = clean_key(req.idempotency_key)?;
    if !require_member(&state.directory, member)?.status.is_active() {
        return Err(AppError::AccountInactive);
    }

    let _gate = state.stats.gate.read().await;
    let new = NewCheckin {
        member_id: member,
        location,
        notes,
        checked_in_at: crate::time::to_db(crate::time::now()),
        idempotency_key: key,
        created_by: actor.id,
    };
    let outcome = state
        .db
        .write(move |c| {
            if let Some(k) = &new.idempotency_key {
                if let Some(row) = crate::db::checkins::find_by_key(c, k)? {
                    return Ok(CheckInOutcome::Replayed(row));
                }
            }
            match crate::db::checkins::insert(c, &new)? {
                Inserted::Created(row) => Ok(CheckInOutcome::Created(row)),
                // Either the member is in, or a concurrent retry took the key first.
                Inserted::Duplicate => match &new.idempotency_key {
                    Some(k) => Ok(crate::db::checkins::find_by_key(c, k)?
                        .map(CheckInOutcome::Replayed)
                        .unwrap_or(CheckInOutcome::AlreadyIn)),
                    None => Ok(CheckInOutcome::AlreadyIn),
                },
            }
        })
        .await?;
    let row = match outcome {
        CheckInOutcome::Created(row) => row,
        CheckInOutcome::Replayed(row) if row.member_id == member => {
            log::info!(
                "check-in {} of member {member} replayed for its idempotency key",
                row.id
            );
            return Ok(Checkin::from_row(&state.directory, &row));
        }
        CheckInOutcome::Replayed(_) => {
            return Err(AppError::Conflict(
                "idempotency_key was already used for another member's check-in".into(),
            ))
        }
        CheckInOutcome::AlreadyIn => {
            return Err(AppError::Conflict(format!(
                "member {member} is already checked in"
            )))
        }
    };
    state
        .metrics
        .checkins
        .with_label_values(&["check_in"])
        .inc();
    log::info!(
        "member {member} checked in (check-in {}) by user {}",
        row.id,
        actor.id
    );
    let checkin = Checkin::from_row(&state.directory, &row);
    let event = Notice::MemberCheckedIn {
        checkin: checkin.clone(),
    };
    state
        .stats
        .record(state, vec![event], |c| c.checked_in(&row))
        .await;
    Ok(checkin)
}

/// Checks a member out; 409 when they are not checked in. Members who were made
/// non-active can still be checked out: they are leaving.
pub async fn check_out(state: &AppState, actor: &AuthUser, member: UserId) -> AppResult<Checkin> {
    let (state, actor) = (state.clone(), actor.clone());
    run_to_completion(async move { store_check_out(&state, &actor, member).await }).await
}

async fn store_check_out(state: &AppState, actor: &AuthUser, member: UserId) -> AppResult<Checkin> {
    authorize(actor, member)?;
    require_member(&state.directory, member)?;
    let _gate = state.stats.gate.read().await;
    let at = crate::time::to_db(crate::time::now());
    let row = state
        .db
        .write(move |c| crate::db::checkins::close_open(c, member, at))
        .await?
        .ok_or_else(|| AppError::Conflict(format!("member {member} is not checked in")))?;
    state
        .metrics
        .checkins
        .with_label_values(&["check_out"])
        .inc();
    log::info!(
        "member {member} checked out (check-in {}) by user {}",
        row.id,
        actor.id
    );
    let checkin = Checkin::from_row(&state.directory, &row);
    let event = Notice::MemberCheckedOut {
        checkin: checkin.clone(),
    };
    state
        .stats
        .record(state, vec![event], |c| c.checked_out(&row))
        .await;
    Ok(checkin)
}

/// `[start, end)` of a UTC day, as stored.
pub fn day_bounds(day: NaiveDate) -> (NaiveDateTime, NaiveDateTime) {
    let start = day.and_time(NaiveTime::MIN);
    let end = day
        .succ_opt()
        .map(|d| d.and_time(NaiveTime::MIN))
        .unwrap_or(NaiveDateTime::MAX);
    (start, end)
}

/// The check-ins opened on a UTC day, oldest first, optionally of one member (staff
/// and admins).
pub async fn list(
    state: &AppState,
    actor: &AuthUser,
    day: NaiveDate,
    member: Option<UserId>,
) -> AppResult<Vec<Checkin>> {
    actor.require(&[Role::Staff, Role::Admin])?;
    let (from, to) = day_bounds(day);
    let rows = state
        .db
        .read(move |c| crate::db::checkins::list_opened_between(c, from, to, member))
        .await?;
    Ok(rows
        .iter()
        .map(|r| Checkin::from_row(&state.directory, r))
        .collect())
}

/// Who is in now: every open check-in, whatever day it was opened, oldest first (staff
/// and admins; the front desk's list).
pub async fn list_open(state: &AppState, actor: &AuthUser) -> AppResult<Vec<Checkin>> {
    actor.require(&[Role::Staff, Role::Admin])?;
    let rows = state.db.read(crate::db::checkins::list_open).await?;
    Ok(rows
        .iter()
        .map(|r| Checkin::from_row(&state.directory, r))
        .collect())
}

/// The live statistics (staff and admins).
pub fn stats(state: &AppState, actor: &AuthUser) -> AppResult<Stats> {
    actor.require(&[Role::Staff, Role::Admin])?;
    Ok(state.stats.snapshot())
}

async fn load_counters(state: &AppState, day: NaiveDate) -> AppResult<Counters> {
    let (from, to) = day_bounds(day);
    let rows = state
        .db
        .read(move |c| crate::db::checkins::day_rows(c, from, to))
        .await?;
    Ok(Counters::from_rows(day, &rows))
}

/// Closes the check-ins left open longer than `SPOTTER_CHECKIN_MAX_OPEN_HOURS` and tells
/// the dashboards; their `stats_update` follows from [`recompute`].
async fn auto_close_stale(state: &AppState) -> AppResult<usize> {
    let tracker = &state.stats;
    let _gate = tracker.gate.read().await;
    let now = crate::time::now();
    let max_open = chrono::Duration::from_std(state.config.checkin_max_open)
        .map_err(|e| AppError::internal(format!("SPOTTER_CHECKIN_MAX_OPEN_HOURS: {e}")))?;
    let Some(cutoff) = now.checked_sub_signed(max_open) else {
        return Ok(0);
    };
    let (cutoff, at) = (crate::time::to_db(cutoff), crate::time::to_db(now));
    let rows = state
        .db
        .write(move |c| crate::db::checkins::auto_close(c, cutoff, at))
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let _order = tracker.publishing.lock().await;
    {
        let mut live = tracker.live();
        for row in &rows {
            live.counters.checked_out(row);
        }
        live.bump(now);
        live.unpublished = true;
    }
    for row in &rows {
        state
            .metrics
            .checkins
            .with_label_values(&["auto_close"])
            .inc();
        log::info!(
            "check-in {} of member {} auto-closed: open since {}",
            row.id,
            row.member_id,
            row.checked_in_at
        );
        let checkin = Checkin::from_row(&state.directory, row);
        publish(state, Notice::MemberCheckedOut { checkin }).await;
    }
    Ok(rows.len())
}

/// Recomputes the statistics from the database. A new UTC day first starts the day's
/// counters. When the numbers then differ from the live ones (a change made behind
/// Spotter's back, a lost update) the database wins: they are replaced, `version` grows
/// and a `stats_update` goes out. Changes not yet published (a new day, auto-closes) go
/// out too.
async fn recompute(state: &AppState) -> AppResult<()> {
    if state.cluster.clustered() {
        return recompute_shared(state).await;
    }
    let tracker = &state.stats;
    let _gate = tracker.gate.write().await;
    let now = crate::time::now();
    let day = now.date_naive();
    let fresh = match load_counters(state, day).await {
        Ok(c) => c,
        Err(e) => {
            state
                .metrics
                .stats_recomputations
                .with_label_values(&["failed"])
                .inc();
            return Err(e);
        }
    };
    let _order = tracker.publishing.lock().await;
    let (outcome, stats) = {
        let mut live = tracker.live();
        if live.counters.roll_to(day) {
            live.bump(now);
            live.unpublished = true;
        }
        if live.counters.day > day {
            // Midnight passed while the database was read: the next run checks the new day.
            ("unchanged", None)
        } else if live.counters != fresh {
            log::warn!(
                "check-in stats drifted, corrected from the database: currently_checked_in {} -> {}, \
                 today_check_ins {} -> {}, unique {} -> {}, ended visits {} -> {}, by_location {:?} -> {:?}",
                live.counters.currently_checked_in,
                fresh.currently_checked_in,
                live.counters.today_check_ins,
                fresh.today_check_ins,
                live.counters.today_members.len(),
                fresh.today_members.len(),
                live.counters.ended_visits,
                fresh.ended_visits,
                live.counters.by_location,
                fresh.by_location,
            );
            live.counters = fresh;
            live.bump(now);
            live.unpublished = false;
            ("corrected", Some(live.stats()))
        } else if live.unpublished {
            live.unpublished = false;
            ("unchanged", Some(live.stats()))
        } else {
            ("unchanged", None)
        }
    };
    state
        .metrics
        .stats_recomputations
        .with_label_values(&[outcome])
        .inc();
    if let Some(stats) = stats {
        publish(state, Notice::StatsUpdate { stats }).await;
    }
    Ok(())
}

/// The recomputation with several instances: the numbers the dashboards were last shown
/// (this instance's or another's) against the database; a difference (a new day, a change
/// behind Spotter's back, an update lost with Redis) goes out with the next shared version.
async fn recompute_shared(state: &AppState) -> AppResult<()> {
    let tracker = &state.stats;
    let _gate = tracker.gate.write().await;
    let _order = tracker.publishing.lock().await;
    let now = crate::time::now();
    let shown = tracker.snapshot();
    let fresh = load_counters(state, now.date_naive()).await?;
    let fresh = fresh.stats(shown.computed_at, shown.version);
    let outcome = if fresh != shown {
        let stats = shared_stats(state).await?;
        publish(state, Notice::StatsUpdate { stats }).await;
        "corrected"
    } else {
        "unchanged"
    };
    state
        .metrics
        .stats_recomputations
        .with_label_values(&[outcome])
        .inc();
    Ok(())
}

/// Publishes changes that are still waiting for their `stats_update` (when the
/// recomputation that would have carried them failed).
async fn flush_unpublished(state: &AppState) {
    let tracker = &state.stats;
    let _order = tracker.publishing.lock().await;
    let stats = {
        let mut live = tracker.live();
        if !live.unpublished {
            return;
        }
        live.unpublished = false;
        live.stats()
    };
    publish(state, Notice::StatsUpdate { stats }).await;
}

/// The sweeper's check-in maintenance: close stale check-ins, recompute the stats from the
/// database and publish a correction when the live numbers drifted. Both steps run even
/// if one fails; the first failure is returned.
pub async fn sweep(state: &AppState) -> AppResult<()> {
    let closed = auto_close_stale(state).await;
    let recomputed = recompute(state).await;
    if recomputed.is_err() {
        flush_unpublished(state).await;
    }
    match (closed, recomputed) {
        (Err(closing), Err(recomputing)) => {
            log::error!("closing stale check-ins failed: {closing}");
            Err(recomputing)
        }
        (Err(closing), Ok(())) => Err(closing),
        (Ok(_), recomputed) => recomputed,
    }
}

/// Loads the statistics from the database at start-up. `version` starts from the clock
/// (milliseconds) so that it keeps growing across restarts.
pub async fn init(state: &AppState) -> AppResult<()> {
    let tracker = &state.stats;
    let _gate = tracker.gate.write().await;
    let now = crate::time::now();
    let counters = load_counters(state, now.date_naive()).await?;
    // Several instances share one sequence of versions: start from the last one taken,
    // so that every instance shows the same version for the same numbers.
    let shared = if state.cluster.clustered() {
        Some(
            state
                .db
                .read(crate::db::checkins::current_stats_version)
                .await?,
        )
    } else {
        None
    };
    let mut live = tracker.live();
    log::info!(
        "check-in stats loaded: {} checked in, {} check-ins today",
        counters.currently_checked_in,
        counters.today_check_ins
    );
    live.counters = counters;
    live.version = match shared {
        Some(v) => v,
        None => now.timestamp_millis().max(live.version + 1),
    };
    live.computed_at = now;
    live.unpublished = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn row(
        id: i64,
        member: i64,
        location: Option<&str>,
        inn: &str,
        out: Option<&str>,
    ) -> CheckinRow {
        CheckinRow {
            id: CheckinId(id),
            member_id: UserId(member),
            location: location.map(String::from),
            notes: None,
            checked_in_at: at(inn),
            checked_out_at: out.map(at),
            auto_closed: false,
            idempotency_key: None,
            created_by: UserId(1),
        }
    }

    #[test]
    fn live_changes_match_a_recomputation() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        let mut live = Counters::new(day);
        let a = row(1, 10, Some("floor"), "2026-03-04 08:10:00", None);
        let b = row(2, 11, None, "2026-03-04 09:00:00", None);
        live.checked_in(&a);
        live.checked_in(&b);
        let a_out = row(
            1,
            10,
            Some("floor"),
            "2026-03-04 08:10:00",
            Some("2026-03-04 09:40:00"),
        );
        live.checked_out(&a_out);
        let again = row(3, 10, Some("pool"), "2026-03-04 10:00:00", None);
        live.checked_in(&again);

        let rows = DayRows {
            open: vec![(UserId(11), None), (UserId(10), Some("pool".into()))],
            opened: vec![
                (UserId(10), at("2026-03-04 08:10:00")),
                (UserId(11), at("2026-03-04 09:00:00")),
                (UserId(10), at("2026-03-04 10:00:00")),
            ],
            ended: vec![(at("2026-03-04 08:10:00"), at("2026-03-04 09:40:00"))],
        };
        assert_eq!(live, Counters::from_rows(day, &rows));
        let s = live.stats(crate::time::now(), 7);
        assert_eq!(s.currently_checked_in, 2);
        assert_eq!(s.today_check_ins, 3);
        assert_eq!(s.today_unique_members, 2);
        assert_eq!(s.avg_visit_minutes_today, 90.0);
        assert_eq!(s.by_location.get(UNKNOWN_LOCATION), Some(&1));
        assert_eq!(s.by_location.get("pool"), Some(&1));
        assert!(!s.by_location.contains_key("floor"));
        assert_eq!(s.by_hour[8] + s.by_hour[9] + s.by_hour[10], 3);
        assert_eq!(s.by_hour.len(), 24);
    }

    #[test]
    fn a_new_day_keeps_who_is_in_and_resets_the_rest() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        let mut c = Counters::new(day);
        c.checked_in(&row(1, 10, Some("floor"), "2026-03-04 23:00:00", None));
        // Checked out after midnight: the visit counts for the new day.
        c.checked_out(&row(
            1,
            10,
            Some("floor"),
            "2026-03-04 23:00:00",
            Some("2026-03-05 00:30:00"),
        ));
        assert_eq!(c.day, day.succ_opt().unwrap());
        assert_eq!(c.today_check_ins, 0);
        assert_eq!(c.currently_checked_in, 0);
        assert_eq!(c.ended_visits, 1);
        assert_eq!(c.avg_visit_minutes(), 90.0);
        assert!(!c.roll_to(day), "days never go back");
    }

    #[test]
    fn auto_closed_visits_do_not_count_in_the_average() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 4).unwrap();
        let mut c = Counters::new(day);
        let mut r = row(
            1,
            10,
            None,
            "2026-03-03 06:00:00",
            Some("2026-03-04 07:00:00"),
        );
        c.add_present(None, 1);
        r.auto_closed = true;
        c.checked_out(&r);
        assert_eq!(c.currently_checked_in, 0);
        assert_eq!(c.ended_visits, 0);
        assert!(c.by_location.is_empty());
    }

    #[test]
    fn keys_and_texts_are_checked() {
        assert_eq!(clean_text("location", Some("  ".into()), 5).unwrap(), None);
        assert_eq!(
            clean_text("location", Some(" desk ".into()), 5).unwrap(),
            Some("desk".into())
        );
        assert_eq!(
            clean_text("location", Some("x".repeat(6)), 5)
                .unwrap_err()
                .code(),
            "validation_failed"
        );
        assert!(clean_key(Some(String::new())).is_err());
        assert!(clean_key(Some("k".repeat(IDEMPOTENCY_KEY_MAX + 1))).is_err());
        assert_eq!(clean_key(Some("abc".into())).unwrap(), Some("abc".into()));
    }
}
