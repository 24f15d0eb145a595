//! `/api/attendance`: employees' attendance records.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::checkins::{parse_date, parse_user_id};
use crate::auth::AuthUser;
use crate::domain::attendance::{self, AttendanceRecord, RecordRequest};
use crate::domain::users::Role;
use crate::error::AppResult;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/attendance")
            .route(web::post().to(post_record))
            .route(web::get().to(list_records)),
    );
}

/// Records an employee's attendance (admin, device).
#[utoipa::path(post, path = "/api/attendance", tag = "attendance", security(("bearer" = [])),
    request_body = RecordRequest,
    responses(
        (status = 201, description = "the record", body = AttendanceRecord),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such employee", body = crate::error::ErrorEnvelope),
    ))]
async fn post_record(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<RecordRequest>,
) -> AppResult<HttpResponse> {
    let record = attendance::record(&state, &user, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(record))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// YYYY-MM-DD (UTC); today when absent
    date: Option<String>,
    /// an integer user id
    employee_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct RecordList {
    records: Vec<AttendanceRecord>,
}

/// A day's attendance records (admin; staff their own).
#[utoipa::path(get, path = "/api/attendance", tag = "attendance", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "records", body = RecordList),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_records(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    // Who may look comes before what was asked.
    user.require(&[Role::Staff, Role::Admin])?;
    let date = parse_date(query.date.as_deref())?;
    let employee = parse_user_id("employee_id", query.employee_id.as_deref())?;
    let records = attendance::list(&state, &user, date, employee).await?;
    Ok(HttpResponse::Ok().json(RecordList { records }))
}
