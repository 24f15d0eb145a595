//! `/api/auth`: login, refresh, logout.

use std::net::IpAddr;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::auth::throttle::Refusal;
use crate::auth::{tokens, AuthUser};
use crate::error::{AppError, AppResult};
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

/// Longest username a login may name (PROTOCOL §2: usernames are 1..64 characters).
const USERNAME_MAX_CHARS: usize = 64;

/// Logins are admitted by the throttle before anything is hashed: a username longer than
/// any account's is refused (422) without hashing and without being logged, and too many
/// attempts from one address (at once, or failed in the window) get 429 at once.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "tokens and the user", body = crate::auth::tokens::TokenPair),
        (status = 401, description = "`invalid_credentials`", body = crate::error::ErrorEnvelope),
        (status = 403, description = "`account_inactive`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`: a username over 64 characters", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`rate_limited`: too many failed logins, or too many at once from one address", body = crate::error::ErrorEnvelope),
    ))]
async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginBody>,
) -> AppResult<HttpResponse> {
    let addr = client_addr(&req, &state.config.trusted_proxies);
    let body = body.into_inner();
    if body.username.chars().count() > USERNAME_MAX_CHARS {
        return Err(AppError::Validation(format!(
            "usernames are at most {USERNAME_MAX_CHARS} characters"
        )));
    }
    let attempt = state
        .throttle
        .admit(&body.username, &addr)
        .map_err(|refusal| {
            AppError::RateLimited(
                match refusal {
                    Refusal::TooManyFailures => "too many failed logins, try again later",
                    Refusal::TooManyAtOnce => "too many logins at once from this address",
                }
                .into(),
            )
        })?;
    match tokens::login(&state, body.username, body.password, addr).await {
        Ok(pair) => {
            attempt.succeeded();
            Ok(HttpResponse::Ok().json(pair))
        }
        // Dropped unsettled: counted as a failure.
        Err(AppError::InvalidCredentials) => Err(AppError::InvalidCredentials),
        Err(e) => {
            attempt.not_a_guess();
            Err(e)
        }
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy
/// (`SPOTTER_TRUSTED_PROXIES`), the last address in `X-Forwarded-For` that is not itself a
/// trusted proxy. Without trusted proxies the header is ignored: anyone could forge it.
pub fn client_addr(req: &HttpRequest, trusted: &[IpAddr]) -> String {
    let Some(peer) = req.peer_addr().map(|a| a.ip()) else {
        return String::new();
    };
    if !trusted.contains(&peer) {
        return peer.to_string();
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in req.headers().get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer.to_string();
        };
        hops.extend(value.split(',').map(str::trim));
    }
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip.to_string(),
            // A hop that is not an address: the chain cannot be trusted past it.
            Err(_) => break,
        }
    }
    peer.to_string()
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
