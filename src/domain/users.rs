//! Users: roles, account statuses, the user object of the contract, and account actions
//! shared by the HTTP API and the CLI.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::db::users::{NewUser, UpdateRefused, Updated, UserRow, UserUpdate};
use crate::db::{Conn, UserId};
use crate::domain::events::{Event, Reason};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// A user's role (PROTOCOL §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Trainer,
    Member,
    Staff,
    Device,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Trainer => "trainer",
            Role::Member => "member",
            Role::Staff => "staff",
            Role::Device => "device",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "trainer" => Role::Trainer,
            "member" => Role::Member,
            "staff" => Role::Staff,
            "device" => Role::Device,
            _ => return None,
        })
    }

    /// Trainers and staff are employees: they have attendance records.
    pub fn is_employee(self) -> bool {
        matches!(self, Role::Trainer | Role::Staff)
    }
}

/// An account's status (PROTOCOL §2). Only `active` accounts log in or go online.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Inactive,
    Suspended,
    Banned,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Inactive => "inactive",
            AccountStatus::Suspended => "suspended",
            AccountStatus::Banned => "banned",
        }
    }

    pub fn parse(s: &str) -> Option<AccountStatus> {
        Some(match s {
            "active" => AccountStatus::Active,
            "inactive" => AccountStatus::Inactive,
            "suspended" => AccountStatus::Suspended,
            "banned" => AccountStatus::Banned,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        self == AccountStatus::Active
    }
}

/// The contract's user object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub account_status: AccountStatus,
    pub is_online: bool,
    #[serde(with = "crate::time::rfc3339::option")]
    pub last_seen: Option<DateTime<Utc>>,
}

impl UserView {
    /// Builds the view from a row; `presence` overrides the stored online state with the
    /// live one when known. Non-active users are never online.
    pub fn from_row(row: &UserRow, presence: Option<(bool, Option<DateTime<Utc>>)>) -> UserView {
        let role = Role::parse(&row.role).unwrap_or(Role::Member);
        let status = AccountStatus::parse(&row.account_status).unwrap_or(AccountStatus::Inactive);
        let (online, last_seen) =
            presence.unwrap_or((row.is_online, row.last_seen.map(crate::time::from_db)));
        UserView {
            id: row.id,
            username: row.username.clone(),
            display_name: row.display_name.clone(),
            role,
            account_status: status,
            is_online: online && status.is_active(),
            last_seen,
        }
    }
}

/// What an admin (or the CLI) gives to create a user.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct CreateUser {
    pub username: String,
    pub password: String,
    pub role: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// What an admin may change on a user.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    pub account_status: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

const USERNAME_MAX: usize = 64;
const PASSWORD_MIN: usize = 8;
const PASSWORD_MAX: usize = 256;
const DISPLAY_NAME_MAX: usize = 100;

fn validate_username(u: &str) -> AppResult<()> {
    let ok = !u.is_empty()
        && u.len() <= USERNAME_MAX
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AppError::Validation(format!(
            "username must be 1..{USERNAME_MAX} characters of letters, digits, _ - . @"
        )))
    }
}

pub fn validate_password(p: &str) -> AppResult<()> {
    let n = p.chars().count();
    if (PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        Ok(())
    } else {
        Err(AppError::Validation(format!(
            "password must be {PASSWORD_MIN}..{PASSWORD_MAX} characters"
        )))
    }
}

fn validate_display_name(d: &str) -> AppResult<String> {
    let d = d.trim();
    if d.is_empty() || d.chars().count() > DISPLAY_NAME_MAX {
        return Err(AppError::Validation(format!(
            "display_name must be 1..{DISPLAY_NAME_MAX} characters"
        )));
    }
    Ok(d.to_string())
}

fn parse_role(r: &str) -> AppResult<Role> {
    Role::parse(r).ok_or_else(|| {
        AppError::Validation("role must be one of admin, trainer, member, staff, device".into())
    })
}

fn parse_status(s: &str) -> AppResult<AccountStatus> {
    AccountStatus::parse(s).ok_or_else(|| {
        AppError::Validation(
            "account_status must be one of active, inactive, suspended, banned".into(),
        )
    })
}

/// Validates a new user and builds its row around `password_hash`.
fn new_user(req: &CreateUser, password_hash: String) -> AppResult<NewUser> {
    let role = parse_role(&req.role)?;
    let display_name = match &req.display_name {
        Some(d) => validate_display_name(d)?,
        None => req.username.clone(),
    };
    let now = crate::time::to_db(crate::time::now());
    Ok(NewUser {
        username: req.username.clone(),
        display_name,
        password_hash,
        role: role.as_str().to_string(),
        account_status: AccountStatus::Active.as_str().to_string(),
        created_at: now,
        updated_at: now,
    })
}

fn validate_new(req: &CreateUser) -> AppResult<()> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    parse_role(&req.role)?;
    Ok(())
}

/// Validates and hashes a new user (synchronously: the CLI and the first start).
pub fn prepare_new_user(req: &CreateUser) -> AppResult<NewUser> {
    validate_new(req)?;
    new_user(req, crate::auth::password::hash(&req.password)?)
}

/// Validates a new user, then hashes the password on a hasher thread (the API).
pub async fn prepare_new_user_async(req: &CreateUser) -> AppResult<NewUser> {
    validate_new(req)?;
    let hash = crate::auth::password::hash_async(req.password.clone()).await?;
    new_user(req, hash)
}

/// A unique violation on insert means the username is taken.
pub fn name_taken(e: AppError, username: &str) -> AppError {
    match e {
        AppError::Conflict(_) => AppError::Conflict(format!("username {username:?} is taken")),
        other => other,
    }
}

/// Creates a user; 409 when the username is taken (CLI and first start).
pub fn create_user(conn: &mut Conn, req: &CreateUser) -> AppResult<UserRow> {
    let new = prepare_new_user(req)?;
    crate::db::users::insert(conn, &new).map_err(|e| name_taken(e, &req.username))
}

/// [`prepare_update`] with the hashing on a hasher thread.
pub async fn prepare_update_async(patch: PatchUser) -> AppResult<UserUpdate> {
    let password = patch.password.clone();
    let mut upd = prepare_update(&PatchUser {
        password: None,
        ..patch
    })?;
    if let Some(p) = password {
        validate_password(&p)?;
        upd.password_hash = Some(crate::auth::password::hash_async(p).await?);
    }
    Ok(upd)
}

/// Validates a patch into an update (hashing a new password).
pub fn prepare_update(patch: &PatchUser) -> AppResult<UserUpdate> {
    Ok(UserUpdate {
        account_status: patch
            .account_status
            .as_deref()
            .map(parse_status)
            .transpose()?
            .map(|s| s.as_str().to_string()),
        role: patch
            .role
            .as_deref()
            .map(parse_role)
            .transpose()?
            .map(|r| r.as_str().to_string()),
        display_name: patch
            .display_name
            .as_deref()
            .map(validate_display_name)
            .transpose()?,
        password_hash: match &patch.password {
            Some(p) => {
                validate_password(p)?;
                Some(crate::auth::password::hash(p)?)
            }
            None => None,
        },
        token_gen: None,
        updated_at: crate::time::to_db(crate::time::now()),
    })
}

/// `PATCH /api/users/{id}`: applies an admin's change and makes it reach every live
/// socket and token at once (PROTOCOL §2):
/// - a password change, suspension or ban moves the user's token generation, so every
///   access and refresh token issued before is refused (reactivation revives none);
/// - made non-active: sockets closed with 4003 and the user offline; new password:
///   sockets closed with 4001;
/// - a role change: every socket leaves the rooms the new role may not be in;
/// - the last active admin cannot be demoted, suspended or banned (409).
pub async fn update_user(
    state: &AppState,
    by: UserId,
    id: UserId,
    patch: PatchUser,
) -> AppResult<UserRow> {
    let new_password = patch.password.is_some();
    let upd = prepare_update_async(patch).await?;
    let made_inactive = upd
        .account_status
        .as_deref()
        .and_then(AccountStatus::parse)
        .is_some_and(|s| !s.is_active());
    let new_generation = new_password || made_inactive;
    let Updated { before, after } = state
        .db
        .write(move |c| crate::db::users::update_checked(c, id, &upd, new_generation))
        .await?
        .ok_or_else(|| AppError::not_found("user"))?
        .map_err(|UpdateRefused::LastAdmin| {
            AppError::Conflict(
                "the last active admin cannot be demoted, suspended or banned".into(),
            )
        })?;
    state.directory.upsert(&after);
    let was_active = AccountStatus::parse(&before.account_status).is_some_and(|s| s.is_active());
    let now_active = AccountStatus::parse(&after.account_status).is_some_and(|s| s.is_active());
    if was_active && !now_active {
        log::info!(
            "user {id} made {} by {by}: closing their sockets",
            after.account_status
        );
        state.presence.go_offline(id, Reason::AccountStatus, false);
    } else if after.token_gen != before.token_gen {
        log::info!("user {id}: password changed by {by}: every earlier token revoked");
    }
    if after.role != before.role {
        log::info!(
            "user {id}: role {} -> {} by {by}: rechecking their sockets",
            before.role,
            after.role
        );
    }
    // Every instance reloads the user and checks their sockets against the new account:
    // closed with 4003 when no longer active, 4001 when the token generation moved, out
    // of every room the new role may not be in.
    state.broker.publish(Event::UserChanged { user: id }).await;
    Ok(after)
}
