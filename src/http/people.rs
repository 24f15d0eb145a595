//! Finding people: members find trainers to chat with (`GET /api/trainers`), trainers and
//! the front desk find members (`GET /api/members`), admins see a trainer's members, and
//! each member's check-in code (also as a QR code).

use std::collections::HashSet;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::db::UserId;
use crate::domain::checkin_codes;
use crate::domain::users::{Role, UserView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Most people one search answers (a gym's trainers fit; members are found by typing).
const SEARCH_LIMIT: usize = 50;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/trainers", web::get().to(list_trainers))
        .route("/api/members", web::get().to(list_members))
        .route(
            "/api/trainers/{trainer_id}/clients",
            web::get().to(list_assigned),
        );
}

#[derive(Deserialize)]
struct SearchQuery {
    q: Option<String>,
}

/// A user object with whether they are assigned to the caller (or the caller to them).
#[derive(Serialize)]
struct Found {
    #[serde(flatten)]
    user: UserView,
    assigned: bool,
    /// Staff and admins (the desk): when the member's open check-in started, else null.
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_in_at: Option<Option<String>>,
}

fn matches(user: &UserView, needle: &str) -> bool {
    needle.is_empty()
        || user.username.to_lowercase().contains(needle)
        || user.display_name.to_lowercase().contains(needle)
}

/// Assigned first, then by name.
fn sort_found(found: &mut [Found]) {
    found.sort_by(|a, b| {
        b.assigned
            .cmp(&a.assigned)
            .then_with(|| {
                a.user
                    .display_name
                    .to_lowercase()
                    .cmp(&b.user.display_name.to_lowercase())
            })
            .then(a.user.id.cmp(&b.user.id))
    });
}

fn needle(q: &Option<String>) -> AppResult<String> {
    let n = q.as_deref().unwrap_or("").trim().to_lowercase();
    if n.chars().count() > 64 {
        return Err(AppError::Validation("q is at most 64 characters".into()));
    }
    Ok(n)
}

/// `GET /api/trainers?q=`: active trainers matching `q`, the caller's assigned ones first.
#[utoipa::path(get, path = "/api/trainers", tag = "users", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "part of a name or username (at most 64 characters)")),
    responses(
        (status = 200, description = "`{\"trainers\":[user + {\"assigned\"}]}`", body = Object),
        (status = 422, description = "`validation_failed`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_trainers(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<SearchQuery>,
) -> AppResult<HttpResponse> {
    let needle = needle(&query.q)?;
    let me = user.id;
    let mine: HashSet<UserId> = state
        .db
        .read(move |c| crate::db::trainers::trainers_of(c, me))
        .await?
        .into_iter()
        .collect();
    let all = crate::realtime::dispatch::presence_snapshot(&state).await?;
    let mut found: Vec<Found> = all
        .into_iter()
        .filter(|u| u.role == Role::Trainer && u.account_status.is_active() && u.id != me)
        .filter(|u| matches(u, &needle))
        .map(|u| Found {
            assigned: mine.contains(&u.id),
            user: u,
            checked_in_at: None,
        })
        .collect();
    sort_found(&mut found);
    found.truncate(SEARCH_LIMIT);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "trainers": found })))
}

/// `GET /api/members?q=` (trainers, staff, admins): members matching `q` by name or
/// username; for staff and admins also by check-in code (that member first). A trainer
/// finds their clients: the active members assigned to them or with a conversation with
/// them, assigned ones first (so a trainer cannot list the gym's members and their
/// presence). Staff and admins see every member with `checked_in_at`, so the desk can
/// check in or out.
#[utoipa::path(get, path = "/api/members", tag = "users", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "part of a name or username, or a check-in code (staff, admins)")),
    responses(
        (status = 200, description = "`{\"members\":[user + {\"assigned\", \"checked_in_at\"}]}`", body = Object),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_members(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<SearchQuery>,
) -> AppResult<HttpResponse> {
    user.require(&[Role::Trainer, Role::Staff, Role::Admin])?;
    let needle = needle(&query.q)?;
    let desk = matches!(user.role, Role::Staff | Role::Admin);
    let me = user.id;
    let code = checkin_codes::normalize(&needle).filter(|_| desk);
    let (mine, peers, by_code, open) = state
        .db
        .read(move |c| {
            let mine = crate::db::trainers::clients_of(c, me)?;
            let peers: Vec<UserId> = if desk {
                Vec::new()
            } else {
                crate::db::chat::summaries(c, me)?
                    .iter()
                    .map(|s| s.conversation.peer_of(me))
                    .collect()
            };
            let by_code = match &code {
                Some(code) => crate::db::checkin_codes::find_user(c, code)?,
                None => None,
            };
            let open = if desk {
                crate::db::checkins::list_open(c)?
            } else {
                Vec::new()
            };
            Ok((mine, peers, by_code, open))
        })
        .await?;
    let mine: HashSet<UserId> = mine.into_iter().collect();
    let peers: HashSet<UserId> = peers.into_iter().collect();
    let all = crate::realtime::dispatch::presence_snapshot(&state).await?;
    let mut found: Vec<Found> = all
        .into_iter()
        .filter(|u| u.role == Role::Member)
        .filter(|u| {
            desk || (u.account_status.is_active()
                && (mine.contains(&u.id) || peers.contains(&u.id)))
        })
        .filter(|u| Some(u.id) == by_code || matches(u, &needle))
        .map(|u| Found {
            assigned: mine.contains(&u.id),
            checked_in_at: desk.then(|| {
                open.iter()
                    .find(|c| c.member_id == u.id)
                    .map(|c| super::csv::stamp(crate::time::from_db(c.checked_in_at)))
            }),
            user: u,
        })
        .collect();
    sort_found(&mut found);
    if let Some(id) = by_code {
        if let Some(pos) = found.iter().position(|f| f.user.id == id) {
            let hit = found.remove(pos);
            found.insert(0, hit);
        }
    }
    found.truncate(SEARCH_LIMIT);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "members": found })))
}

/// `GET /api/trainers/{id}/clients` (admins, and the trainer): the members assigned to
/// that trainer, as user objects, by name.
#[utoipa::path(get, path = "/api/trainers/{id}/clients", tag = "users", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the trainer")),
    responses(
        (status = 200, description = "`{\"trainer_id\", \"clients\":[user]}`", body = Object),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`: not a trainer", body = crate::error::ErrorEnvelope),
    ))]
async fn list_assigned(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> AppResult<HttpResponse> {
    let trainer = UserId(path.into_inner());
    if !(user.is(Role::Admin) || user.id == trainer) {
        return Err(AppError::Forbidden(
            "only admins and the trainer see a trainer's members".into(),
        ));
    }
    let entry = state
        .directory
        .get(trainer)
        .ok_or_else(|| AppError::not_found("trainer"))?;
    if entry.role != Role::Trainer {
        return Err(AppError::Validation(format!(
            "user {trainer} is not a trainer"
        )));
    }
    let ids: HashSet<UserId> = state
        .db
        .read(move |c| crate::db::trainers::clients_of(c, trainer))
        .await?
        .into_iter()
        .collect();
    let mut clients: Vec<UserView> = crate::realtime::dispatch::presence_snapshot(&state)
        .await?
        .into_iter()
        .filter(|u| ids.contains(&u.id))
        .collect();
    clients.sort_by(|a, b| a.display_name.cmp(&b.display_name).then(a.id.cmp(&b.id)));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "trainer_id": trainer, "clients": clients })))
}

#[derive(Deserialize)]
pub struct CodeQuery {
    format: Option<String>,
}

/// `GET /api/users/me/checkin-code`: the caller's check-in code.
#[utoipa::path(get, path = "/api/users/me/checkin-code", tag = "users", security(("bearer" = [])),
    params(("format" = Option<String>, Query, description = "`json` (default) or `svg` (a QR code)")),
    responses(
        (status = 200, description = "`{\"member_id\",\"code\"}`, or the QR code as image/svg+xml", body = Object),
        (status = 403, description = "`forbidden`: not a member", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`", body = crate::error::ErrorEnvelope),
    ))]
pub async fn get_my_checkin_code(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<CodeQuery>,
) -> AppResult<HttpResponse> {
    let me = user.id;
    checkin_code(&state, &user, me, query.format.as_deref()).await
}

/// `GET /api/users/{id}/checkin-code`: a member's code (the member, staff, admins).
#[utoipa::path(get, path = "/api/users/{id}/checkin-code", tag = "users", security(("bearer" = [])),
    params(
        ("id" = i64, Path, description = "the member"),
        ("format" = Option<String>, Query, description = "`json` (default) or `svg` (a QR code)"),
    ),
    responses(
        (status = 200, description = "`{\"member_id\",\"code\"}`, or the QR code as image/svg+xml", body = Object),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`", body = crate::error::ErrorEnvelope),
    ))]
pub async fn get_checkin_code(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    query: web::Query<CodeQuery>,
) -> AppResult<HttpResponse> {
    checkin_code(
        &state,
        &user,
        UserId(path.into_inner()),
        query.format.as_deref(),
    )
    .await
}

/// `{"member_id","code"}`, or with `?format=svg` the code as a QR code (`image/svg+xml`).
async fn checkin_code(
    state: &AppState,
    user: &AuthUser,
    member: UserId,
    format: Option<&str>,
) -> AppResult<HttpResponse> {
    let svg = match format.map(str::trim).filter(|f| !f.is_empty()) {
        None | Some("json") => false,
        Some("svg") => true,
        Some(f) => {
            return Err(AppError::Validation(format!(
                "format must be json or svg, got {f:?}"
            )))
        }
    };
    let code = checkin_codes::code_of(state, user, member).await?;
    if svg {
        let body = checkin_codes::qr_svg(&code)?;
        return Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "image/svg+xml"))
            .insert_header((header::CACHE_CONTROL, "private, no-cache"))
            .body(body));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "member_id": member, "code": code })))
}
