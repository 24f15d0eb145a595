//! Authentication: password hashing, access tokens, refresh-token rotation, revocation,
//! login throttling, and the `AuthUser` extractor that every protected handler takes.

pub mod jwt;
pub mod password;
pub mod revocation;
pub mod throttle;
pub mod tokens;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

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
    /// The token generation it was issued in.
    pub gen: i64,
}

impl AuthUser {
    /// Checks a bearer token (signature, expiry, revocation, generation, account status).
    pub fn from_token(state: &AppState, token: &str) -> AppResult<AuthUser> {
        AuthUser::from_claims(state, state.jwt.verify(token)?)
    }

    /// The caller of already verified claims.
    fn from_claims(state: &AppState, claims: jwt::Claims) -> AppResult<AuthUser> {
        let id = claims.user_id().ok_or_else(AppError::unauthorized)?;
        AuthUser {
            id,
            role: Role::Member,
            jti: claims.jti,
            exp: claims.exp,
            gen: claims.gen,
        }
        .recheck(state)
    }

    /// The same caller as now known: refused if the token was revoked or belongs to an
    /// earlier generation, or the account is no longer active; the role is the current
    /// one. A socket runs this before every frame, so no right outlives its removal.
    pub fn recheck(&self, state: &AppState) -> AppResult<AuthUser> {
        if state.revoked.is_revoked(&self.jti) {
            return Err(AppError::unauthorized());
        }
        let access = state
            .directory
            .access(self.id)
            .ok_or_else(AppError::unauthorized)?;
        if !access.status.is_active() {
            return Err(AppError::AccountInactive);
        }
        if access.token_gen != self.gen {
            return Err(AppError::unauthorized());
        }
        Ok(AuthUser {
            role: access.role,
            ..self.clone()
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

/// The user of a validly signed token that this instance's directory does not know (a
/// user created through another instance): the caller loads it before checking.
pub fn unknown_user(state: &AppState, token: &str) -> Option<UserId> {
    let id = state.jwt.verify(token).ok()?.user_id()?;
    state.directory.access(id).is_none().then_some(id)
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<AuthUser, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return futures_util::future::ready(Err(AppError::internal("AppState missing")))
                .boxed_local();
        };
        // The signature is checked once; only a user this instance has not heard of
        // costs a database read.
        let claims = match bearer(req).map(|token| state.jwt.verify(token)) {
            Some(Ok(claims)) => claims,
            Some(Err(e)) => return futures_util::future::ready(Err(e)).boxed_local(),
            None => {
                return futures_util::future::ready(Err(AppError::unauthorized())).boxed_local()
            }
        };
        match claims.user_id() {
            Some(id) if state.directory.access(id).is_none() => {
                let state = state.clone();
                async move {
                    crate::domain::directory::reload(&state, id).await;
                    AuthUser::from_claims(&state, claims)
                }
                .boxed_local()
            }
            _ => futures_util::future::ready(AuthUser::from_claims(state, claims)).boxed_local(),
        }
    }
}
