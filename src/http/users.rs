//! `/api/users`: the caller, heartbeats, the admin's user list and user management, and
//! the presence log.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::db::UserId;
use crate::domain::users::{self, CreateUser, PatchUser, Role, UserView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::post().to(create_user))
        .route("/me", web::get().to(get_me))
        .route("/heartbeat", web::post().to(post_heartbeat))
        .route(
            "/me/checkin-code",
            web::get().to(super::people::get_my_checkin_code),
        )
        .route(
            "/{id}/checkin-code",
            web::get().to(super::people::get_checkin_code),
        )
        .route("/all-users", web::get().to(list_users))
        .route("/{id}", web::patch().to(patch_user))
        .route("/{id}", web::get().to(get_user))
        .route("/{id}/presence-log", web::get().to(get_presence_log));
}

async fn live_view(state: &AppState, id: UserId) -> AppResult<UserView> {
    let row = state
        .db
        .read(move |c| crate::db::users::find(c, id))
        .await?
        .ok_or_else(|| AppError::not_found("user"))?;
    let live = state.presence.snapshot().await.get(&id).copied();
    Ok(UserView::from_row(
        &row,
        Some(live.unwrap_or((false, row.last_seen.map(crate::time::from_db)))),
    ))
}

/// The caller.
#[utoipa::path(get, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "the caller", body = UserView)))]
async fn get_me(state: web::Data<AppState>, user: AuthUser) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(live_view(&state, user.id).await?))
}

/// One user: the caller themself, or anyone for an admin.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "user id")),
    responses(
        (status = 200, description = "the user", body = UserView),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn get_user(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> AppResult<HttpResponse> {
    let id = UserId(id.into_inner());
    if id != user.id && !user.is(Role::Admin) {
        return Err(AppError::forbidden());
    }
    Ok(HttpResponse::Ok().json(live_view(&state, id).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
struct HeartbeatReply {
    #[schema(value_type = String, example = "online")]
    status: &'static str,
    #[serde(with = "crate::time::rfc3339")]
    last_seen: chrono::DateTime<chrono::Utc>,
}

/// Touches memory only: `last_seen` reaches the database with the next write-behind flush.
/// Keeps the caller online.
#[utoipa::path(post, path = "/api/users/heartbeat", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "online", body = HeartbeatReply),
        (status = 403, description = "`account_inactive`", body = crate::error::ErrorEnvelope),
    ))]
async fn post_heartbeat(state: web::Data<AppState>, user: AuthUser) -> AppResult<HttpResponse> {
    // Memory only: the answer carries the heartbeat's own time.
    let last_seen = crate::time::now();
    state.presence.heartbeat(user.id, last_seen).await?;
    Ok(HttpResponse::Ok().json(HeartbeatReply {
        status: "online",
        last_seen,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// admin, trainer, member, staff or device
    role: Option<String>,
    /// true, false, 1 or 0
    online: Option<String>,
    /// part of the username or display name
    q: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Counts {
    total: usize,
    online: usize,
    offline: usize,
}

/// Every user with their live presence (admin).
#[utoipa::path(get, path = "/api/users/all-users", tag = "users", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "users and counts", body = super::openapi::UserList),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_users(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    user.require_admin()?;
    let role = match query.role.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => Some(
            Role::parse(r).ok_or_else(|| AppError::Validation(format!("unknown role {r:?}")))?,
        ),
        None => None,
    };
    let online = match query.online.as_deref().filter(|o| !o.is_empty()) {
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(o) => {
            return Err(AppError::Validation(format!(
                "online must be true or false, got {o:?}"
            )))
        }
        None => None,
    };
    let needle = query
        .q
        .as_deref()
        .map(str::to_lowercase)
        .filter(|q| !q.is_empty());
    let all = crate::realtime::dispatch::presence_snapshot(&state).await?;
    let users: Vec<UserView> = all
        .into_iter()
        .filter(|u| role.is_none_or(|r| u.role == r))
        .filter(|u| online.is_none_or(|o| u.is_online == o))
        .filter(|u| {
            needle.as_ref().is_none_or(|n| {
                u.username.to_lowercase().contains(n) || u.display_name.to_lowercase().contains(n)
            })
        })
        .collect();
    let on = users.iter().filter(|u| u.is_online).count();
    let counts = Counts {
        total: users.len(),
        online: on,
        offline: users.len() - on,
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users, "counts": counts })))
}

/// Creates a user (admin).
#[utoipa::path(post, path = "/api/users", tag = "users", security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "the new user", body = UserView),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`conflict`: the username is taken", body = crate::error::ErrorEnvelope),
    ))]
async fn create_user(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CreateUser>,
) -> AppResult<HttpResponse> {
    user.require_admin()?;
    let req = body.into_inner();
    let new = users::prepare_new_user_async(&req).await?;
    let username = req.username.clone();
    let row = state
        .db
        .write(move |c| crate::db::users::insert(c, &new))
        .await
        .map_err(|e| users::name_taken(e, &username))?;
    state.directory.upsert(&row);
    // The other instances learn of the new user at once.
    state
        .broker
        .publish(crate::domain::events::Event::UserChanged { user: row.id })
        .await;
    log::info!(
        "user {} ({}, {}) created by {}",
        row.id,
        row.username,
        row.role,
        user.id
    );
    Ok(HttpResponse::Created().json(UserView::from_row(&row, Some((false, None)))))
}

/// Changes a user (admin).
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "user id")),
    request_body = PatchUser,
    responses(
        (status = 200, description = "the user", body = UserView),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`conflict`: the last active admin", body = crate::error::ErrorEnvelope),
    ))]
async fn patch_user(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
    body: web::Json<PatchUser>,
) -> AppResult<HttpResponse> {
    user.require_admin()?;
    let id = UserId(id.into_inner());
    let patch = body.into_inner();
    users::update_user(&state, user.id, id, patch).await?;
    Ok(HttpResponse::Ok().json(live_view(&state, id).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
struct LogEntry {
    #[serde(with = "crate::time::rfc3339")]
    at: chrono::DateTime<chrono::Utc>,
    is_online: bool,
    reason: String,
    /// How many transitions this entry stands for: more than 1 when transitions that
    /// waited for the database during an outage were merged into the latest one.
    coalesced: i32,
}

/// Presence log entries returned at most.
const PRESENCE_LOG_LIMIT: i64 = 500;

/// A user's presence transitions, oldest first (admin).
#[utoipa::path(get, path = "/api/users/{id}/presence-log", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "user id")),
    responses(
        (status = 200, description = "the log", body = Vec<LogEntry>),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn get_presence_log(
    state: web::Data<AppState>,
    user: AuthUser,
    id: web::Path<i64>,
) -> AppResult<HttpResponse> {
    user.require_admin()?;
    let id = UserId(id.into_inner());
    if state.directory.get(id).is_none() {
        return Err(AppError::not_found("user"));
    }
    // Pending transitions are written first, so the log is never behind what was seen live.
    let _ = state.presence.flush_now().await;
    let rows = state
        .db
        .read(move |c| crate::db::users::presence_log(c, id, PRESENCE_LOG_LIMIT))
        .await?;
    let entries: Vec<LogEntry> = rows
        .into_iter()
        .map(|r| LogEntry {
            at: crate::time::from_db(r.at),
            is_online: r.is_online,
            reason: r.reason,
            coalesced: r.coalesced,
        })
        .collect();
    Ok(HttpResponse::Ok().json(entries))
}
