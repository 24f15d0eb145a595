//! `/api/attendance`: employees' attendance records.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::checkins::{parse_date, parse_user_id};
use super::csv::{self, Format};
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
    format: Option<String>,
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
    let format = csv::parse_format(query.format.as_deref())?;
    let records = attendance::list(&state, &user, date, employee).await?;
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(RecordList { records }),
        Format::Csv => csv::response(&format!("attendance-{date}.csv"), records_csv(&records)),
    })
}

/// The day's attendance as CSV: one line per record, `late` as `yes` / `no`.
fn records_csv(records: &[AttendanceRecord]) -> String {
    let rows = records.iter().map(|r| {
        vec![
            r.employee_id.to_string(),
            r.employee_name.clone(),
            r.status.clone(),
            r.date.to_string(),
            csv::stamp(r.timestamp),
            r.device.clone().unwrap_or_default(),
            if r.is_late { "yes" } else { "no" }.to_string(),
        ]
    });
    csv::document(
        &[
            "employee_id",
            "employee_name",
            "status",
            "date",
            "timestamp",
            "device",
            "late",
        ],
        rows,
    )
}
