//! Queries on `checkin_codes`: each member's short code for the front desk.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::checkin_codes;
use super::{Conn, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// The member's code, if they have one yet.
pub fn of_user(conn: &mut Conn, user: UserId) -> AppResult<Option<String>> {
    Ok(with_conn!(conn, c => checkin_codes::table
        .filter(checkin_codes::user_id.eq(user))
        .select(checkin_codes::code)
        .first(c)
        .optional())?)
}

/// The member a code belongs to.
pub fn find_user(conn: &mut Conn, code: &str) -> AppResult<Option<UserId>> {
    Ok(with_conn!(conn, c => checkin_codes::table
        .filter(checkin_codes::code.eq(code))
        .select(checkin_codes::user_id)
        .first(c)
        .optional())?)
}

/// Every code, by member (the demo and the desk's search).
pub fn all(conn: &mut Conn) -> AppResult<Vec<(UserId, String)>> {
    Ok(with_conn!(conn, c => checkin_codes::table
        .select((checkin_codes::user_id, checkin_codes::code))
        .load(c))?)
}

/// Stores `code` for `user`. `false` when the code (or the user's row) is already taken,
/// so that the caller draws another code or reads the one a concurrent call stored.
pub fn insert(conn: &mut Conn, user: UserId, code: &str, at: NaiveDateTime) -> AppResult<bool> {
    let res: Result<usize, DieselError> = with_conn!(conn, c => diesel::insert_into(checkin_codes::table)
        .values((
            checkin_codes::user_id.eq(user),
            checkin_codes::code.eq(code),
            checkin_codes::created_at.eq(at),
        ))
        .execute(c));
    match res {
        Ok(_) => Ok(true),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
