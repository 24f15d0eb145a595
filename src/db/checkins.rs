//! Queries on `checkins`: opening and closing visits, the rows behind the live statistics,
//! and the daily listing.
//!
//! One open check-in per member is the database's job (the partial unique index
//! `checkins_one_open`), so it holds under concurrency and across instances.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::checkins;
use super::{CheckinId, Conn, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// A row of `checkins`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = checkins)]
pub struct CheckinRow {
    pub id: CheckinId,
    pub member_id: UserId,
    pub location: Option<String>,
    pub notes: Option<String>,
    pub checked_in_at: NaiveDateTime,
    pub checked_out_at: Option<NaiveDateTime>,
    pub auto_closed: bool,
    pub idempotency_key: Option<String>,
    pub created_by: UserId,
}

/// Insert form of `checkins`: a visit that starts now.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = checkins)]
pub struct NewCheckin {
    pub member_id: UserId,
    pub location: Option<String>,
    pub notes: Option<String>,
    pub checked_in_at: NaiveDateTime,
    pub idempotency_key: Option<String>,
    pub created_by: UserId,
}

/// What an insert ran into.
#[derive(Debug)]
pub enum Inserted {
    Created(CheckinRow),
    /// A unique index refused the row: the member is already in, or the idempotency key
    /// was taken (by a concurrent retry). The caller tells the two apart by the key.
    Duplicate,
}

/// Inserts a check-in; a unique violation is an answer, not an error.
pub fn insert(conn: &mut Conn, new: &NewCheckin) -> AppResult<Inserted> {
    let res: Result<CheckinRow, DieselError> = with_conn!(conn, c => diesel::insert_into(checkins::table)
        .values(new)
        .returning(CheckinRow::as_returning())
        .get_result(c));
    match res {
        Ok(row) => Ok(Inserted::Created(row)),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            Ok(Inserted::Duplicate)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn find_by_key(conn: &mut Conn, key: &str) -> AppResult<Option<CheckinRow>> {
    Ok(with_conn!(conn, c => checkins::table
        .filter(checkins::idempotency_key.eq(key))
        .select(CheckinRow::as_select())
        .first(c)
        .optional())?)
}

/// Closes the member's open check-in at `at`; `None` when they are not checked in.
pub fn close_open(
    conn: &mut Conn,
    member: UserId,
    at: NaiveDateTime,
) -> AppResult<Option<CheckinRow>> {
    Ok(with_conn!(conn, c => diesel::update(
        checkins::table
            .filter(checkins::member_id.eq(member))
            .filter(checkins::checked_out_at.is_null()),
    )
    .set(checkins::checked_out_at.eq(Some(at)))
    .returning(CheckinRow::as_returning())
    .get_result(c)
    .optional())?)
}

/// Closes every check-in opened before `opened_before` and still open, marking it
/// `auto_closed`; returns the closed rows.
pub fn auto_close(
    conn: &mut Conn,
    opened_before: NaiveDateTime,
    at: NaiveDateTime,
) -> AppResult<Vec<CheckinRow>> {
    Ok(with_conn!(conn, c => diesel::update(
        checkins::table
            .filter(checkins::checked_out_at.is_null())
            .filter(checkins::checked_in_at.lt(opened_before)),
    )
    .set((
        checkins::checked_out_at.eq(Some(at)),
        checkins::auto_closed.eq(true),
    ))
    .returning(CheckinRow::as_returning())
    .get_results(c))?)
}

/// Check-ins opened in `[from, to)`, oldest first, optionally of one member.
pub fn list_opened_between(
    conn: &mut Conn,
    from: NaiveDateTime,
    to: NaiveDateTime,
    member: Option<UserId>,
) -> AppResult<Vec<CheckinRow>> {
    Ok(with_conn!(conn, c => {
        let mut q = checkins::table
            .filter(checkins::checked_in_at.ge(from))
            .filter(checkins::checked_in_at.lt(to))
            .select(CheckinRow::as_select())
            .order((checkins::checked_in_at, checkins::id))
            .into_boxed();
        if let Some(m) = member {
            q = q.filter(checkins::member_id.eq(m));
        }
        q.load(c)
    })?)
}

/// The rows the statistics of one day are computed from.
#[derive(Debug, Clone, Default)]
pub struct DayRows {
    /// `(member, location)` of every open check-in, whatever day it was opened.
    pub open: Vec<(UserId, Option<String>)>,
    /// `(member, checked_in_at)` of every check-in opened in the day.
    pub opened: Vec<(UserId, NaiveDateTime)>,
    /// `(checked_in_at, checked_out_at)` of every visit that ended in the day, except the
    /// ones the sweeper closed (their length says nothing about the visit).
    pub ended: Vec<(NaiveDateTime, NaiveDateTime)>,
}

/// Loads the rows behind the statistics of the day `[from, to)`.
pub fn day_rows(conn: &mut Conn, from: NaiveDateTime, to: NaiveDateTime) -> AppResult<DayRows> {
    Ok(with_conn!(conn, c => {
        let open = checkins::table
            .filter(checkins::checked_out_at.is_null())
            .select((checkins::member_id, checkins::location))
            .load(c)?;
        let opened = checkins::table
            .filter(checkins::checked_in_at.ge(from))
            .filter(checkins::checked_in_at.lt(to))
            .select((checkins::member_id, checkins::checked_in_at))
            .load(c)?;
        let ended: Vec<(NaiveDateTime, Option<NaiveDateTime>)> = checkins::table
            .filter(checkins::checked_out_at.ge(from))
            .filter(checkins::checked_out_at.lt(to))
            .filter(checkins::auto_closed.eq(false))
            .select((checkins::checked_in_at, checkins::checked_out_at))
            .load(c)?;
        let ended = ended
            .into_iter()
            .filter_map(|(i, o)| o.map(|o| (i, o)))
            .collect();
        Ok::<_, DieselError>(DayRows { open, opened, ended })
    })?)
}

/// Every open check-in (who is in now, whatever day they came), oldest first.
pub fn list_open(conn: &mut Conn) -> AppResult<Vec<CheckinRow>> {
    Ok(with_conn!(conn, c => checkins::table
        .filter(checkins::checked_out_at.is_null())
        .select(CheckinRow::as_select())
        .order((checkins::checked_in_at, checkins::id))
        .load(c))?)
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    version: i64,
}

/// Takes the next statistics version (at least `floor`) and loads the day's rows, in one
/// transaction: the version's row lock orders recomputations, so a higher version has seen
/// every check-in a lower one saw (several instances, one sequence of versions).
pub fn versioned_day_rows(
    conn: &mut Conn,
    floor: i64,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> AppResult<(i64, DayRows)> {
    let version = crate::transaction!(conn, c => {
        let row: VersionRow = diesel::sql_query(
            "UPDATE stats_version SET version = CASE WHEN version + 1 > $1 THEN version + 1 \
             ELSE $1 END WHERE id = 1 RETURNING version",
        )
        .bind::<diesel::sql_types::BigInt, _>(floor)
        .get_result(c)?;
        Ok(row.version)
    })?;
    // Read after the version's transaction committed: everything committed before it is
    // seen, and a later version reads later still.
    let rows = day_rows(conn, from, to)?;
    Ok((version, rows))
}

/// The statistics version last taken (several instances).
pub fn current_stats_version(conn: &mut Conn) -> AppResult<i64> {
    let row: VersionRow = with_conn!(conn, c => {
        diesel::sql_query("SELECT version FROM stats_version WHERE id = 1").get_result(c)?
    });
    Ok(row.version)
}
