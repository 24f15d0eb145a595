//! Queries on `files`: the uploaded images' metadata (their bytes live in the data dir).

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{files, messages, users};
use super::{Conn, FileId, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// A row of `files`.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = files)]
pub struct FileRow {
    pub id: FileId,
    pub owner_id: UserId,
    pub content_type: String,
    pub size: i64,
    pub created_at: NaiveDateTime,
}

pub fn find(conn: &mut Conn, id: FileId) -> AppResult<Option<FileRow>> {
    Ok(with_conn!(conn, c => files::table
        .find(id)
        .select(FileRow::as_select())
        .first(c)
        .optional())?)
}

/// The files among `ids` that exist, by id.
pub fn find_many(conn: &mut Conn, ids: &[FileId]) -> AppResult<HashMap<FileId, FileRow>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<FileRow> = with_conn!(conn, c => files::table
        .filter(files::id.eq_any(ids))
        .select(FileRow::as_select())
        .load(c))?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

pub fn delete(conn: &mut Conn, id: FileId) -> AppResult<()> {
    with_conn!(conn, c => diesel::delete(files::table.find(id)).execute(c))?;
    Ok(())
}

/// Bytes of the files `owner` keeps.
fn used_by(c: &mut impl UsedBytes, owner: UserId) -> diesel::QueryResult<i64> {
    c.used_bytes(owner)
}

/// The per-backend part of the quota check: summing sizes (as BIGINT on both backends),
/// and, on PostgreSQL, locking the owner's row so that two uploads of one user are
/// checked one after the other (SQLite's `BEGIN IMMEDIATE` already does that).
trait UsedBytes {
    fn used_bytes(&mut self, owner: UserId) -> diesel::QueryResult<i64>;
    fn lock_owner(&mut self, owner: UserId) -> diesel::QueryResult<()>;
}

/// `SUM(size)` is NUMERIC on PostgreSQL: cast back to BIGINT for both backends.
const SUM_SIZE: &str = "CAST(COALESCE(SUM(size), 0) AS BIGINT)";

impl UsedBytes for diesel::SqliteConnection {
    fn used_bytes(&mut self, owner: UserId) -> diesel::QueryResult<i64> {
        files::table
            .filter(files::owner_id.eq(owner))
            .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(SUM_SIZE))
            .first(self)
    }

    fn lock_owner(&mut self, _owner: UserId) -> diesel::QueryResult<()> {
        Ok(())
    }
}

impl UsedBytes for diesel::PgConnection {
    fn used_bytes(&mut self, owner: UserId) -> diesel::QueryResult<i64> {
        files::table
            .filter(files::owner_id.eq(owner))
            .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(SUM_SIZE))
            .first(self)
    }

    fn lock_owner(&mut self, owner: UserId) -> diesel::QueryResult<()> {
        users::table
            .find(owner)
            .select(users::id)
            .for_update()
            .load::<UserId>(self)
            .map(|_| ())
    }
}

/// Bytes of uploads `owner` keeps.
pub fn used_bytes(conn: &mut Conn, owner: UserId) -> AppResult<i64> {
    Ok(with_conn!(conn, c => used_by(c, owner))?)
}

/// Inserts `row` unless its owner's files would then pass `quota` bytes; answers whether
/// it was inserted. Concurrent uploads of one owner are checked one at a time.
pub fn insert_within_quota(conn: &mut Conn, row: &FileRow, quota: u64) -> AppResult<bool> {
    crate::transaction!(conn, c => {
        c.lock_owner(row.owner_id)?;
        let used = used_by(c, row.owner_id)?;
        if (used.max(0) as u64).saturating_add(row.size.max(0) as u64) > quota {
            return Ok(false);
        }
        diesel::insert_into(files::table).values(row).execute(c)?;
        Ok(true)
    })
}

/// Deletes the files created before `before` that no message refers to; answers their
/// ids. One statement, so a message attaching one of them meanwhile either lands first
/// (the file stays) or fails on its foreign key.
pub fn delete_unattached(conn: &mut Conn, before: NaiveDateTime) -> AppResult<Vec<FileId>> {
    Ok(with_conn!(conn, c => {
        let attached = messages::table
            .filter(messages::attachment_id.is_not_null())
            .select(messages::attachment_id);
        diesel::delete(
            files::table
                .filter(files::created_at.lt(before))
                .filter(files::id.nullable().ne_all(attached)),
        )
        .returning(files::id)
        .get_results(c)
    })?)
}
