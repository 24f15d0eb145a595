//! Login, refresh-token rotation with reuse detection, and logout.
//!
//! Refresh tokens are random strings stored only as SHA-256 hashes. Each login starts a
//! family; each refresh consumes one token and issues the next of the same family. Using a
//! consumed token again revokes the whole family and the access tokens issued with it.

use chrono::Duration;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::auth::AuthUser;
use crate::db::users::{self as q, NewRefresh, UserRow};
use crate::db::UserId;
use crate::domain::events::{Event, Reason};
use crate::domain::users::{AccountStatus, UserView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Answer of login and refresh.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(value_type = String, example = "Bearer")]
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_expires_in: i64,
    pub user: UserView,
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_refresh_token() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Issues an access token and a refresh token of `family` (blocking thread).
fn issue_pair(
    state: &AppState,
    conn: &mut crate::db::Conn,
    user: &UserRow,
    family: &str,
) -> AppResult<(String, String)> {
    let access_ttl = state.config.access_ttl.as_secs() as i64;
    let (access, claims) = state
        .jwt
        .issue(user.id, &user.role, user.token_gen, access_ttl)?;
    let refresh = new_refresh_token();
    let now = crate::time::now();
    q::insert_refresh(
        conn,
        &NewRefresh {
            user_id: user.id,
            token_hash: hash_token(&refresh),
            family: family.to_string(),
            access_jti: claims.jti,
            expires_at: crate::time::to_db(
                now + Duration::seconds(state.config.refresh_ttl.as_secs() as i64),
            ),
            created_at: crate::time::to_db(now),
        },
    )?;
    Ok((access, refresh))
}

fn pair(
    state: &AppState,
    user: &UserRow,
    access: String,
    refresh: String,
    online: bool,
) -> TokenPair {
    let mut view = UserView::from_row(user, None);
    view.is_online = online;
    view.last_seen = Some(crate::time::now());
    TokenPair {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: state.config.access_ttl.as_secs() as i64,
        refresh_expires_in: state.config.refresh_ttl.as_secs() as i64,
        user: view,
    }
}

/// `POST /api/auth/login`: checks the password, marks the user online. The caller
/// throttles attempts (`http::auth` admits each one before the password is hashed).
pub async fn login(
    state: &AppState,
    username: String,
    password: String,
    addr: String,
) -> AppResult<TokenPair> {
    let name = username.clone();
    // The password is checked without holding a connection: argon2 takes tens of
    // milliseconds, and SQLite has a single writer.
    let row = state
        .db
        .read(move |conn| q::find_by_username(conn, &name))
        .await?;
    let ok = crate::auth::password::verify_async(
        password,
        row.as_ref().map(|r| r.password_hash.clone()),
    )
    .await?;
    let result = match (ok, row) {
        (true, Some(row))
            if AccountStatus::parse(&row.account_status) == Some(AccountStatus::Active) =>
        {
            let st = state.clone();
            state
                .db
                .write(move |conn| {
                    let family = uuid::Uuid::new_v4().simple().to_string();
                    let (access, refresh) = issue_pair(&st, conn, &row, &family)?;
                    Ok((row, access, refresh))
                })
                .await
        }
        (true, Some(_)) => Err(AppError::AccountInactive),
        _ => Err(AppError::InvalidCredentials),
    };
    match result {
        Ok((row, access, refresh)) => {
            state.directory.upsert(&row);
            state.presence.login(row.id).await;
            log::info!("login: user {} ({})", row.id, row.username);
            Ok(pair(state, &row, access, refresh, true))
        }
        Err(AppError::InvalidCredentials) => {
            log::info!("login failed for {username:?} from {addr}");
            Err(AppError::InvalidCredentials)
        }
        Err(e) => Err(e),
    }
}

/// `POST /api/auth/refresh`: rotates a refresh token; a reused one revokes its family.
pub async fn refresh(state: &AppState, token: String) -> AppResult<TokenPair> {
    let st = state.clone();
    let outcome = state
        .db
        .write(move |conn| {
            let now = crate::time::now();
            let Some(row) = q::find_refresh(conn, &hash_token(&token))? else {
                return Ok(Err(AppError::unauthorized()));
            };
            if row.used_at.is_some() || row.revoked_at.is_some() {
                let jtis = q::revoke_family(conn, &row.family, crate::time::to_db(now))?;
                return Ok(Ok(Refreshed::Reused(row.user_id, jtis)));
            }
            if crate::time::from_db(row.expires_at) <= now {
                return Ok(Err(AppError::unauthorized()));
            }
            let Some(user) = q::find(conn, row.user_id)? else {
                return Ok(Err(AppError::unauthorized()));
            };
            if AccountStatus::parse(&user.account_status) != Some(AccountStatus::Active) {
                return Ok(Err(AppError::AccountInactive));
            }
            if !q::consume_refresh(conn, row.id, crate::time::to_db(now))? {
                let jtis = q::revoke_family(conn, &row.family, crate::time::to_db(now))?;
                return Ok(Ok(Refreshed::Reused(row.user_id, jtis)));
            }
            let (access, refresh) = issue_pair(&st, conn, &user, &row.family)?;
            Ok(Ok(Refreshed::Issued(Box::new(user), access, refresh)))
        })
        .await??;
    match outcome {
        Refreshed::Issued(user, access, refresh) => Ok(pair(state, &user, access, refresh, true)),
        Refreshed::Reused(user, jtis) => {
            log::warn!(
                "refresh token reuse for user {user}: revoking its family ({} tokens)",
                jtis.len()
            );
            revoke_access(state, user, jtis).await?;
            Err(AppError::unauthorized())
        }
    }
}

enum Refreshed {
    Issued(Box<UserRow>, String, String),
    Reused(UserId, Vec<String>),
}

/// Revokes access tokens: persisted, in memory here, and their sockets closed with 4001.
pub async fn revoke_access(state: &AppState, user: UserId, jtis: Vec<String>) -> AppResult<()> {
    if jtis.is_empty() {
        return Ok(());
    }
    // A token lives at most its TTL: keep the revocation that long from now.
    let exp = chrono::Utc::now().timestamp() + state.config.access_ttl.as_secs() as i64;
    let exp_db = crate::time::to_db(
        chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now),
    );
    let entries: Vec<(String, UserId, chrono::NaiveDateTime)> =
        jtis.iter().map(|j| (j.clone(), user, exp_db)).collect();
    state
        .db
        .write(move |conn| q::insert_revoked(conn, &entries))
        .await?;
    state.revoked.revoke(jtis.iter().map(|j| (j.clone(), exp)));
    // Every instance refuses them from now on and closes their sockets (4001).
    let jtis = jtis.into_iter().map(|j| (j, exp)).collect();
    state.broker.publish(Event::TokensRevoked { jtis }).await;
    Ok(())
}

/// `POST /api/auth/logout`: revokes the access token (and the refresh token's family);
/// the user goes offline unless another session of theirs is live.
pub async fn logout(
    state: &AppState,
    user: &AuthUser,
    refresh_token: Option<String>,
) -> AppResult<()> {
    let mut jtis = vec![user.jti.clone()];
    if let Some(token) = refresh_token {
        let uid = user.id;
        let more = state
            .db
            .write(move |conn| {
                let now = crate::time::to_db(crate::time::now());
                match q::find_refresh(conn, &hash_token(&token))? {
                    Some(row) if row.user_id == uid => q::revoke_family(conn, &row.family, now),
                    _ => Ok(Vec::new()),
                }
            })
            .await?;
        jtis.extend(more);
    }
    jtis.sort();
    jtis.dedup();
    let keep_online = state
        .presence
        .other_live_socket(user.id, user.jti.clone())
        .await;
    revoke_access(state, user.id, jtis).await?;
    state
        .presence
        .go_offline(user.id, Reason::Logout, keep_online);
    log::info!("logout: user {}", user.id);
    Ok(())
}
