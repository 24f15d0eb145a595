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

async fn post_record(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<RecordRequest>,
) -> AppResult<HttpResponse> {
    let record = attendance::record(&state, &user, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(record))
}

#[derive(Deserialize)]
struct ListQuery {
    date: Option<String>,
    employee_id: Option<String>,
}

#[derive(Serialize)]
struct RecordList {
    records: Vec<AttendanceRecord>,
}

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
