//! The HTTP API: one module per area, and `configure()` that mounts every route (used by
//! `main` and by the integration tests' server alike).

pub mod attendance;
pub mod auth;
pub mod chat;
pub mod checkins;
pub mod csv;
pub mod drain;
pub mod files;
pub mod headers;
pub mod openapi;
pub mod ops;
pub mod people;
pub mod static_files;
pub mod takeover;
pub mod users;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{error, web, HttpRequest, HttpResponse};

use crate::db::ConversationId;
use crate::error::AppError;
use crate::state::AppState;

/// Mounts every route on an app.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    cfg.app_data(json_config(state.config.json_max_bytes))
        .app_data(web::QueryConfig::default().error_handler(|e, _| {
            AppError::InvalidRequest(format!("bad query string: {e}")).into()
        }))
        .app_data(
            web::PathConfig::default().error_handler(|_, _| AppError::not_found("resource").into()),
        )
        .service(web::scope("/api/auth").configure(auth::routes))
        .service(web::scope("/api/users").configure(users::routes))
        .configure(chat::routes)
        .configure(files::routes)
        .configure(checkins::routes)
        .configure(attendance::routes)
        .configure(ops::routes)
        .configure(people::routes)
        .configure(openapi::routes)
        .route("/ws", web::get().to(ws_plain))
        .route("/ws/chat", web::get().to(ws_plain))
        .route("/ws/conversations/{id}", web::get().to(ws_conversation))
        .configure(static_files::routes)
        .default_service(web::to(not_found));
}

fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|e, _| json_error(&e).into())
}

/// The contract's error for a JSON body that could not be read.
pub(crate) fn json_error(e: &error::JsonPayloadError) -> AppError {
    use actix_web::error::JsonPayloadError as J;
    match e {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => {
            AppError::TooLarge("request body is too large".into())
        }
        J::ContentType => AppError::UnsupportedMediaType("send application/json".into()),
        J::Deserialize(de) if de.is_data() => AppError::Validation(de.to_string()),
        J::Deserialize(de) => AppError::InvalidRequest(format!("malformed JSON: {de}")),
        other => AppError::InvalidRequest(format!("bad request body: {other}")),
    }
}

#[cfg(test)]
#[path = "body_props.rs"]
mod body_props;

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("route"))
}

/// The WebSocket (PROTOCOL §4): authenticate with `?token=` or an `authenticate` frame.
#[utoipa::path(get, path = "/ws", tag = "realtime",
    params(("token" = Option<String>, Query, description = "an access token")),
    responses(
        (status = 101, description = "switched to the WebSocket protocol"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = crate::error::ErrorEnvelope),
    ))]
async fn ws_plain(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    crate::realtime::session::upgrade(req, state, None).await
}

/// The WebSocket, joined to conversation `id` once authenticated.
#[utoipa::path(get, path = "/ws/conversations/{id}", tag = "realtime",
    params(("id" = i64, Path, description = "conversation id"), ("token" = Option<String>, Query, description = "an access token")),
    responses(
        (status = 101, description = "switched to the WebSocket protocol"),
        (status = 400, description = "`invalid_request`: not a WebSocket handshake", body = crate::error::ErrorEnvelope),
    ))]
async fn ws_conversation(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path
        .into_inner()
        .parse::<i64>()
        .map_err(|_| AppError::not_found("conversation"))?;
    crate::realtime::session::upgrade(req, state, Some(ConversationId(id))).await
}

/// Trailing slashes are optional and repeated slashes count as one: `/api/users/` is
/// `/api/users`. A rewrite, not a redirect. Does what actix's `NormalizePath::trim()`
/// does, without running a regex on every path that needs nothing done (most of them).
pub async fn normalize_path(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let path = req.path();
    if (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
        let mut clean = String::with_capacity(path.len());
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            clean.push('/');
            clean.push_str(segment);
        }
        if clean.is_empty() {
            clean.push('/');
        }
        let query = req.query_string();
        if !query.is_empty() {
            clean.push('?');
            clean.push_str(query);
        }
        if let Ok(uri) = clean.parse::<actix_web::http::Uri>() {
            // Outermost middleware: nothing has been matched yet, so the match info is
            // simply started again on the new path.
            *req.match_info_mut() =
                actix_web::dev::Path::new(actix_web::dev::Url::new(uri.clone()));
            req.head_mut().uri = uri;
        }
    }
    next.call(req).await
}

/// Per request: one log line (path only: query strings may carry tokens), metrics, and
/// the contract's JSON error body on errors that actix produced without one (405, …).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let res = next.call(req).await?;
    let status = res.status();
    let elapsed = started.elapsed();
    let request = res.request();
    if let Some(m) = metrics {
        let route = request.match_pattern();
        let route = route.as_deref().unwrap_or("unmatched");
        let method = request.method().as_str();
        m.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        m.http_latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }
    if log::log_enabled!(log::Level::Info) {
        let peer = request
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        log::info!(
            "{peer} {} {} {} {:.1}ms",
            request.method(),
            request.path(),
            status.as_u16(),
            elapsed.as_secs_f64() * 1000.0
        );
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (code, message) = match status {
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
            StatusCode::NOT_FOUND => ("not_found", "not found"),
            StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "request body is too large"),
            s if s.is_server_error() => ("internal", "internal error"),
            _ => ("invalid_request", "bad request"),
        };
        let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
        let (req, _) = res.into_parts();
        let mut resp = HttpResponse::build(status).body(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(ServiceResponse::new(req, resp).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

/// Turns a multipart or payload error into the contract's error.
pub fn payload_error(e: error::PayloadError) -> AppError {
    match e {
        error::PayloadError::Overflow => AppError::TooLarge("upload is too large".into()),
        other => AppError::InvalidRequest(format!("bad request body: {other}")),
    }
}
