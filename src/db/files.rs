//! Queries on `files`: the uploaded images' metadata (their bytes live in the data dir).

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::files;
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

pub fn insert(conn: &mut Conn, row: &FileRow) -> AppResult<()> {
    with_conn!(conn, c => diesel::insert_into(files::table).values(row).execute(c))?;
    Ok(())
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
