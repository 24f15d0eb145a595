//! Authentication: password hashing, access tokens, refresh-token rotation, revocation,
//! login throttling, and the `AuthUser` extractor that every protected handler takes.

pub mod jwt;
pub mod password;
pub mod revocation;
pub mod throttle;
pub mod tokens;

use std::future::{ready, Ready};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::db::UserId;
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The authenticated caller: a valid, unrevoked token of an active user. Role and status
/// come from the directory, so a role change or suspension takes effect at once.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
    pub jti: String,
    /// Token expiry, Unix seconds.
    pub exp: i64,
}

impl AuthUser {
    /// Checks a bearer token (signature, expiry, revocation, account status).
    pub fn from_token(state: &AppState, token: &str) -> AppResult<AuthUser> {
        let claims = state.jwt.verify(token)?;
        if state.revoked.is_revoked(&claims.jti) {
            return Err(AppError::unauthorized());
        }
        let id = claims.user_id().ok_or_else(AppError::unauthorized)?;
        let (role, status) = state
            .directory
            .access(id)
            .ok_or_else(AppError::unauthorized)?;
        if !status.is_active() {
            return Err(AppError::AccountInactive);
        }
        Ok(AuthUser {
            id,
            role,
            jti: claims.jti,
            exp: claims.exp,
        })
    }

    pub fn is(&self, role: Role) -> bool {
        self.role == role
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> AppResult<()> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(AppError::forbidden())
        }
    }

    pub fn require_admin(&self) -> AppResult<()> {
        self.require(&[Role::Admin])
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Ready<Result<AuthUser, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(AppError::internal("AppState missing")));
        };
        ready(match bearer(req) {
            Some(token) => AuthUser::from_token(state, token),
            None => Err(AppError::unauthorized()),
        })
    }
}
