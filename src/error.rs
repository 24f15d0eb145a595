//! The one error type. Every failure a client can see is an `AppError`; it renders as
//! `{"error":{"code","message"}}` over HTTP and as an `error` frame over the socket, with
//! the same code. Internal details are logged once here and never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// A failure, by the contract's error codes (PROTOCOL §3).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("invalid username or password")]
    InvalidCredentials,
    #[error("{0}")]
    Forbidden(String),
    #[error("account is not active")]
    AccountInactive,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    RateLimited(String),
    /// A bug or an unexpected failure; the detail is logged, the client sees "internal error".
    #[error("internal error")]
    Internal(String),
    /// The database (or Redis) cannot be reached right now.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of every error, over HTTP and in `error` frames.
#[derive(Debug, Serialize, Clone, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One of the contract's codes (PROTOCOL §3).
    #[schema(value_type = String, example = "validation_failed")]
    pub code: &'static str,
    pub message: String,
    /// The conversation a socket's `resync_required` is about (an addition to the
    /// contract's `{code, message}`; absent everywhere else).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<crate::db::ConversationId>,
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::InvalidRequest(_) => "invalid_request",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::InvalidCredentials => "invalid_credentials",
            AppError::Forbidden(_) => "forbidden",
            AppError::AccountInactive => "account_inactive",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::TooLarge(_) => "too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::Validation(_) => "validation_failed",
            AppError::RateLimited(_) => "rate_limited",
            AppError::Internal(_) => "internal",
            AppError::Unavailable(_) => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) | AppError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::AccountInactive => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client is told. Internal errors say nothing about their cause.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code(),
            message: self.to_string(),
            conversation_id: None,
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> AppError {
        AppError::Internal(detail.to_string())
    }

    pub fn unauthorized() -> AppError {
        AppError::Unauthorized("missing, invalid, expired or revoked token".into())
    }

    pub fn forbidden() -> AppError {
        AppError::Forbidden("not allowed".into())
    }

    pub fn not_found(what: &str) -> AppError {
        AppError::NotFound(format!("{what} not found"))
    }
}

/// Every error over HTTP: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ErrorResponse)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Internal(detail) => log::error!("internal error: {detail}"),
            AppError::Unavailable(detail) => log::warn!("unavailable: {detail}"),
            _ => {}
        }
        HttpResponse::build(self.status()).json(ErrorEnvelope { error: self.body() })
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => AppError::NotFound("not found".into()),
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                AppError::Conflict("already exists".into())
            }
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
                AppError::NotFound("referenced record not found".into())
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                AppError::Unavailable(format!("database connection closed: {}", info.message()))
            }
            Error::DatabaseError(_, ref info) if is_unavailable_message(info.message()) => {
                AppError::Unavailable(format!("database: {}", info.message()))
            }
            // A commit that failed says why in `commit_error` (a full disk, a lost server).
            Error::RollbackErrorOnCommit { commit_error, .. } => AppError::from(*commit_error),
            // The connection lost its transaction state, which happens when the server or
            // the disk failed under it; the pool drops such a connection.
            Error::BrokenTransactionManager => {
                AppError::Unavailable("database connection broken".into())
            }
            other => AppError::Internal(format!("database: {other}")),
        }
    }
}

/// SQLite reports a full disk, a locked or read-only database as plain errors, and
/// PostgreSQL (libpq) a server that stopped or restarts: those are "try again later", not
/// bugs.
fn is_unavailable_message(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    const SIGNS: &[&str] = &[
        // SQLite
        "database or disk is full",
        "database is locked",
        "database table is locked",
        "readonly database",
        "disk i/o error",
        "unable to open database file",
        // PostgreSQL: the server stopping, restarting or out of reach
        "terminating connection",
        "server closed the connection",
        "no connection to the server",
        "connection to server",
        "could not connect",
        "could not receive data",
        "could not send data",
        "connection refused",
        "the database system is",
        "canceling statement due to conflict",
        "could not extend file",
        "no space left on device",
        "lost synchronization with server",
    ];
    SIGNS.iter().any(|s| m.contains(s))
}

impl From<diesel::r2d2::PoolError> for AppError {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        AppError::Unavailable(format!("database pool: {e}"))
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        AppError::Internal(format!("blocking task failed: {e}"))
    }
}

/// Shorthand for results carrying an `AppError`.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The error as an HTTP response (for handlers that return `HttpResponse` directly).
    pub fn error_response_json(&self) -> HttpResponse {
        ResponseError::error_response(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_unavailable_not_internal() {
        for msg in [
            "database or disk is full",
            "database is locked",
            "disk I/O error",
            "terminating connection due to administrator command",
            "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            "no connection to the server\n",
            "FATAL:  the database system is shutting down",
            "the database system is starting up",
            "could not extend file \"base/1/2\": No space left on device",
        ] {
            assert!(is_unavailable_message(msg), "{msg}");
        }
        assert!(!is_unavailable_message("syntax error at or near \"SELEC\""));
        assert!(!is_unavailable_message(
            "UNIQUE constraint failed: users.username"
        ));
        let broken = AppError::from(diesel::result::Error::BrokenTransactionManager);
        assert_eq!(broken.code(), "unavailable");
        assert_eq!(broken.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(broken.body().message, "database connection broken");
    }

    #[test]
    fn internal_errors_say_nothing_of_their_cause() {
        let e = AppError::internal("secret path /var/lib/x");
        assert_eq!(e.body().message, "internal error");
        assert_eq!(e.status().as_u16(), 500);
    }
}
