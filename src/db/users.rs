//! Queries on `users`, `presence_log`, `refresh_tokens` and `revoked_tokens`.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{presence_log, refresh_tokens, revoked_tokens, users};
use super::{Conn, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// A row of `users`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
    pub account_status: String,
    pub is_online: bool,
    pub last_seen: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Access tokens of another generation are refused (PROTOCOL §2: a password change,
    /// suspension or ban revokes every token issued before it).
    pub token_gen: i64,
}

/// Insert form of `users`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: String,
    pub account_status: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// Update form of `users`: `None` leaves a column as it is.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserUpdate {
    pub account_status: Option<String>,
    pub role: Option<String>,
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub token_gen: Option<i64>,
    pub updated_at: NaiveDateTime,
}

pub fn insert(conn: &mut Conn, new: &NewUser) -> AppResult<UserRow> {
    Ok(with_conn!(conn, c => diesel::insert_into(users::table)
        .values(new)
        .returning(UserRow::as_returning())
        .get_result(c))?)
}

pub fn find(conn: &mut Conn, id: UserId) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(conn, c => users::table
        .find(id)
        .select(UserRow::as_select())
        .first(c)
        .optional())?)
}

pub fn find_by_username(conn: &mut Conn, username: &str) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(conn, c => users::table
        .filter(users::username.eq(username))
        .select(UserRow::as_select())
        .first(c)
        .optional())?)
}

pub fn find_many(conn: &mut Conn, ids: &[UserId]) -> AppResult<Vec<UserRow>> {
    Ok(with_conn!(conn, c => users::table
        .filter(users::id.eq_any(ids))
        .select(UserRow::as_select())
        .load(c))?)
}

/// Every user, ordered by id.
pub fn list(conn: &mut Conn) -> AppResult<Vec<UserRow>> {
    Ok(with_conn!(conn, c => users::table
        .order(users::id)
        .select(UserRow::as_select())
        .load(c))?)
}

pub fn count(conn: &mut Conn) -> AppResult<i64> {
    Ok(with_conn!(conn, c => users::table.count().get_result(c))?)
}

pub fn update(conn: &mut Conn, id: UserId, upd: &UserUpdate) -> AppResult<Option<UserRow>> {
    Ok(with_conn!(conn, c => diesel::update(users::table.find(id))
        .set(upd)
        .returning(UserRow::as_returning())
        .get_result(c)
        .optional())?)
}

/// Why a user update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateRefused {
    /// It would leave no active admin.
    LastAdmin,
}

/// A user before and after an update.
pub struct Updated {
    pub before: UserRow,
    pub after: UserRow,
}

/// Updates a user in one transaction that admin changes are serialized by, so that two
/// admins demoted at once cannot both pass the last-admin check. With `new_generation`,
/// the user's token generation moves on and their refresh tokens are deleted: every token
/// issued before is refused from then on.
pub fn update_checked(
    conn: &mut Conn,
    id: UserId,
    upd: &UserUpdate,
    new_generation: bool,
) -> AppResult<Option<Result<Updated, UpdateRefused>>> {
    macro_rules! body {
        ($c:ident) => {{
            let Some(before) = users::table
                .find(id)
                .select(UserRow::as_select())
                .first($c)
                .optional()?
            else {
                return Ok(None);
            };
            let is_active_admin = |role: &str, status: &str| role == "admin" && status == "active";
            let role = upd.role.as_deref().unwrap_or(&before.role);
            let status = upd
                .account_status
                .as_deref()
                .unwrap_or(&before.account_status);
            if is_active_admin(&before.role, &before.account_status)
                && !is_active_admin(role, status)
            {
                let admins: i64 = users::table
                    .filter(users::role.eq("admin"))
                    .filter(users::account_status.eq("active"))
                    .count()
                    .get_result($c)?;
                if admins <= 1 {
                    return Ok(Some(Err(UpdateRefused::LastAdmin)));
                }
            }
            let mut upd = upd.clone();
            if new_generation {
                upd.token_gen = Some(before.token_gen + 1);
                diesel::delete(refresh_tokens::table.filter(refresh_tokens::user_id.eq(id)))
                    .execute($c)?;
            }
            let after = diesel::update(users::table.find(id))
                .set(&upd)
                .returning(UserRow::as_returning())
                .get_result($c)?;
            Ok(Some(Ok(Updated { before, after })))
        }};
    }
    match conn {
        Conn::Sqlite(pooled) => {
            // BEGIN IMMEDIATE: SQLite's one writer serializes these transactions.
            let c: &mut diesel::SqliteConnection = pooled;
            c.immediate_transaction::<_, crate::error::AppError, _>(|c| body!(c))
        }
        Conn::Pg(pooled) => {
            let c: &mut diesel::PgConnection = pooled;
            c.transaction::<_, crate::error::AppError, _>(|c| {
                // Every user update takes this lock, so the admin count it reads cannot
                // change under it until it commits.
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({USER_UPDATE_LOCK})"))
                    .execute(c)?;
                body!(c)
            })
        }
    }
}

/// The PostgreSQL advisory lock that user updates take (an arbitrary, fixed key).
const USER_UPDATE_LOCK: i64 = 0x5350_4f54_5553; // "SPOTUS"

/// One presence change, for the write-behind flush.
#[derive(Debug, Clone)]
pub struct PresenceWrite {
    pub user_id: UserId,
    pub is_online: bool,
    pub last_seen: NaiveDateTime,
    /// `Some(reason)`: a transition, logged in `presence_log`.
    pub reason: Option<&'static str>,
    /// How many transitions this one stands for: 1, or more when transitions that waited
    /// for the database during an outage were merged into the user's latest.
    pub coalesced: i32,
    /// The order the change happened in (presence's own counter, not stored): a batch
    /// that failed goes back among newer changes in this order.
    pub seq: u64,
}

#[derive(Insertable)]
#[diesel(table_name = presence_log)]
struct NewPresenceLog<'a> {
    user_id: UserId,
    at: NaiveDateTime,
    is_online: bool,
    reason: &'a str,
    coalesced: i32,
}

/// Writes a batch of presence changes in one transaction: the latest state per user onto
/// `users`, every transition into `presence_log`.
pub fn write_presence(conn: &mut Conn, batch: &[PresenceWrite]) -> AppResult<()> {
    use std::collections::HashMap;
    let mut latest: HashMap<UserId, &PresenceWrite> = HashMap::new();
    for w in batch {
        latest.insert(w.user_id, w);
    }
    let logs: Vec<NewPresenceLog> = batch
        .iter()
        .filter_map(|w| {
            w.reason.map(|reason| NewPresenceLog {
                user_id: w.user_id,
                at: w.last_seen,
                is_online: w.is_online,
                reason,
                coalesced: w.coalesced.max(1),
            })
        })
        .collect();
    crate::transaction!(conn, c => {
        for w in latest.values() {
            diesel::update(users::table.find(w.user_id))
                .set((users::is_online.eq(w.is_online), users::last_seen.eq(Some(w.last_seen))))
                .execute(c)?;
        }
        for chunk in logs.chunks(500) {
            diesel::insert_into(presence_log::table).values(chunk).execute(c)?;
        }
        Ok(())
    })
}

/// A row of `presence_log`.
#[derive(Debug, Clone, Queryable)]
pub struct PresenceLogRow {
    pub at: NaiveDateTime,
    pub is_online: bool,
    pub reason: String,
    /// How many transitions the row stands for (more than 1 after a database outage).
    pub coalesced: i32,
}

/// The newest `limit` presence log entries of a user, oldest first.
pub fn presence_log(conn: &mut Conn, user: UserId, limit: i64) -> AppResult<Vec<PresenceLogRow>> {
    let mut rows: Vec<PresenceLogRow> = with_conn!(conn, c => presence_log::table
        .filter(presence_log::user_id.eq(user))
        .order(presence_log::id.desc())
        .limit(limit)
        .select((
            presence_log::at,
            presence_log::is_online,
            presence_log::reason,
            presence_log::coalesced,
        ))
        .load(c))?;
    rows.reverse();
    Ok(rows)
}

/// A row of `refresh_tokens`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshRow {
    pub id: i64,
    pub user_id: UserId,
    pub token_hash: String,
    pub family: String,
    pub access_jti: String,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// Insert form of `refresh_tokens`.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct NewRefresh {
    pub user_id: UserId,
    pub token_hash: String,
    pub family: String,
    pub access_jti: String,
    pub expires_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

pub fn insert_refresh(conn: &mut Conn, new: &NewRefresh) -> AppResult<()> {
    with_conn!(conn, c => diesel::insert_into(refresh_tokens::table).values(new).execute(c))?;
    Ok(())
}

pub fn find_refresh(conn: &mut Conn, token_hash: &str) -> AppResult<Option<RefreshRow>> {
    Ok(with_conn!(conn, c => refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(RefreshRow::as_select())
        .first(c)
        .optional())?)
}

/// Marks a refresh token used, only if it still is unused and unrevoked: returns false when
/// another request got there first (a reuse).
pub fn consume_refresh(conn: &mut Conn, id: i64, at: NaiveDateTime) -> AppResult<bool> {
    let n = with_conn!(conn, c => diesel::update(
        refresh_tokens::table
            .find(id)
            .filter(refresh_tokens::used_at.is_null())
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::used_at.eq(Some(at)))
    .execute(c))?;
    Ok(n == 1)
}

/// Revokes every refresh token of a family; returns the access-token ids issued with them.
pub fn revoke_family(conn: &mut Conn, family: &str, at: NaiveDateTime) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, c => {
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::family.eq(family))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(Some(at)))
        .execute(c)?;
        refresh_tokens::table
            .filter(refresh_tokens::family.eq(family))
            .select(refresh_tokens::access_jti)
            .load::<String>(c)
    })?)
}

/// Persists access-token revocations (ignoring ones already stored).
pub fn insert_revoked(
    conn: &mut Conn,
    entries: &[(String, UserId, NaiveDateTime)],
) -> AppResult<()> {
    for (jti, user, exp) in entries {
        with_conn!(conn, c => diesel::insert_into(revoked_tokens::table)
            .values((
                revoked_tokens::jti.eq(jti),
                revoked_tokens::user_id.eq(user),
                revoked_tokens::expires_at.eq(exp),
            ))
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok(())
}

/// Revocations still in force (unexpired), for the in-memory list at start-up.
pub fn load_revoked(
    conn: &mut Conn,
    now: NaiveDateTime,
) -> AppResult<Vec<(String, NaiveDateTime)>> {
    Ok(with_conn!(conn, c => revoked_tokens::table
        .filter(revoked_tokens::expires_at.gt(now))
        .select((revoked_tokens::jti, revoked_tokens::expires_at))
        .load(c))?)
}

/// Drops revocations and refresh tokens that have expired anyway.
pub fn prune_tokens(conn: &mut Conn, now: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, c => {
        let a = diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now)))
            .execute(c)?;
        let b = diesel::delete(refresh_tokens::table.filter(refresh_tokens::expires_at.le(now)))
            .execute(c)?;
        Ok::<_, diesel::result::Error>(a + b)
    })?)
}
