//! `/api/auth`: login, refresh, logout.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::auth::{tokens, AuthUser};
use crate::error::AppResult;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::post().to(login))
        .route("/refresh", web::post().to(refresh))
        .route("/logout", web::post().to(logout));
}

#[derive(Deserialize, utoipa::ToSchema)]
struct LoginBody {
    username: String,
    password: String,
}

/// Logs in; marks the user online.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "tokens and the user", body = crate::auth::tokens::TokenPair),
        (status = 401, description = "`invalid_credentials`", body = crate::error::ErrorEnvelope),
        (status = 403, description = "`account_inactive`", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`rate_limited`: too many failed logins", body = crate::error::ErrorEnvelope),
    ))]
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginBody>,
) -> AppResult<HttpResponse> {
    let addr = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let body = body.into_inner();
    let pair = tokens::login(&state, body.username, body.password, addr).await?;
    Ok(HttpResponse::Ok().json(pair))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct RefreshBody {
    refresh_token: String,
}

/// A new token pair for a refresh token (which is used up).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "a new pair", body = crate::auth::tokens::TokenPair),
        (status = 401, description = "`unauthorized`: unknown, reused, expired or revoked", body = crate::error::ErrorEnvelope),
        (status = 403, description = "`account_inactive`", body = crate::error::ErrorEnvelope),
    ))]
async fn refresh(
    state: web::Data<AppState>,
    body: web::Json<RefreshBody>,
) -> AppResult<HttpResponse> {
    let pair = tokens::refresh(&state, body.into_inner().refresh_token).await?;
    Ok(HttpResponse::Ok().json(pair))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Revokes the access token (and the refresh token when given).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body(content = Option<LogoutBody>),
    security(("bearer" = [])),
    responses((status = 204, description = "logged out")))]
async fn logout(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Option<web::Json<LogoutBody>>,
) -> AppResult<HttpResponse> {
    let body = body.map(|b| b.into_inner()).unwrap_or_default();
    tokens::logout(&state, &user, body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}
