//! Operations endpoints: liveness, readiness, Prometheus metrics.

use actix_web::{web, HttpResponse};

use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "alive", body = super::openapi::Health)))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: the database answers, and with several instances Redis does too (events
/// reach the other instances).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "ready", body = super::openapi::Ready),
        (status = 503, description = "`unavailable`: the database or Redis does not answer", body = super::openapi::NotReady),
    ))]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let clustered = state.cluster.clustered();
    let (db, broker) = futures_util::join!(state.db.ping(), state.broker.check());
    let unavailable = |what: &str| {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": { "code": "unavailable", "message": format!("{what} unavailable") },
            "status": "unavailable",
        }))
    };
    if let Err(e) = db {
        log::warn!("readiness: database: {e}");
        return unavailable("database");
    }
    if let Err(e) = broker {
        log::warn!("readiness: {e}");
        return unavailable("redis");
    }
    let mut body = serde_json::json!({
        "status": "ready",
        "database": state.db.backend_name(),
    });
    if clustered {
        body["redis"] = "ok".into();
        body["instance"] = state.cluster.instance().to_string().into();
        body["sweeper_duty"] = state.cluster.holds_duty().into();
    }
    HttpResponse::Ok().json(body)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
