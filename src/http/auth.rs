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

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

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

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

async fn refresh(
    state: web::Data<AppState>,
    body: web::Json<RefreshBody>,
) -> AppResult<HttpResponse> {
    let pair = tokens::refresh(&state, body.into_inner().refresh_token).await?;
    Ok(HttpResponse::Ok().json(pair))
}

#[derive(Deserialize, Default)]
struct LogoutBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

async fn logout(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Option<web::Json<LogoutBody>>,
) -> AppResult<HttpResponse> {
    let body = body.map(|b| b.into_inner()).unwrap_or_default();
    tokens::logout(&state, &user, body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}
