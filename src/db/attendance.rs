//! Queries on `attendance`: employees' records and the daily listing.

use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::attendance;
use super::{AttendanceId, Conn, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// A row of `attendance`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = attendance)]
pub struct AttendanceRow {
    pub id: AttendanceId,
    pub employee_id: UserId,
    pub status: String,
    pub date: NaiveDate,
    pub timestamp: NaiveDateTime,
    pub device: Option<String>,
    pub is_late: bool,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
}

/// Insert form of `attendance`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = attendance)]
pub struct NewAttendance {
    pub employee_id: UserId,
    pub status: String,
    pub date: NaiveDate,
    pub timestamp: NaiveDateTime,
    pub device: Option<String>,
    pub is_late: bool,
    pub idempotency_key: Option<String>,
    pub created_at: NaiveDateTime,
}

/// Inserts a record; `None` when the idempotency key is taken (a concurrent retry).
pub fn insert(conn: &mut Conn, new: &NewAttendance) -> AppResult<Option<AttendanceRow>> {
    let res: Result<AttendanceRow, DieselError> = with_conn!(conn, c => diesel::insert_into(attendance::table)
        .values(new)
        .returning(AttendanceRow::as_returning())
        .get_result(c));
    match res {
        Ok(row) => Ok(Some(row)),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn find_by_key(conn: &mut Conn, key: &str) -> AppResult<Option<AttendanceRow>> {
    Ok(with_conn!(conn, c => attendance::table
        .filter(attendance::idempotency_key.eq(key))
        .select(AttendanceRow::as_select())
        .first(c)
        .optional())?)
}

/// The records of one day, oldest first, optionally of one employee.
pub fn list_day(
    conn: &mut Conn,
    date: NaiveDate,
    employee: Option<UserId>,
) -> AppResult<Vec<AttendanceRow>> {
    Ok(with_conn!(conn, c => {
        let mut q = attendance::table
            .filter(attendance::date.eq(date))
            .select(AttendanceRow::as_select())
            .order((attendance::timestamp, attendance::id))
            .into_boxed();
        if let Some(e) = employee {
            q = q.filter(attendance::employee_id.eq(e));
        }
        q.load(c)
    })?)
}
