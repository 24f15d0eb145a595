//! `/api/checkins`: check in, check out, the day's list and the live statistics.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::csv::{self, Format};
use crate::auth::AuthUser;
use crate::db::UserId;
use crate::domain::checkin_codes;
use crate::domain::checkins::{self, CheckInRequest, Checkin};
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/checkins")
            .route(web::post().to(post_checkin))
            .route(web::get().to(list_checkins)),
    )
    .service(web::resource("/api/checkins/checkout").route(web::post().to(post_checkout)))
    .service(web::resource("/api/checkins/by-code").route(web::post().to(post_checkin_by_code)))
    .service(web::resource("/api/checkins/open").route(web::get().to(list_open)))
    .service(web::resource("/api/checkins/stats").route(web::get().to(get_stats)));
}

/// `?date=YYYY-MM-DD` (a UTC day); today when absent.
pub(crate) fn parse_date(value: Option<&str>) -> AppResult<NaiveDate> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(crate::time::now().date_naive()),
        Some(v) => {
            let ok = v.len() == 10 && v.as_bytes()[4] == b'-' && v.as_bytes()[7] == b'-';
            ok.then(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .flatten()
                .ok_or_else(|| AppError::Validation(format!("date must be YYYY-MM-DD, got {v:?}")))
        }
    }
}

/// An optional user id from the query string (`?member_id=`, `?employee_id=`).
pub(crate) fn parse_user_id(field: &str, value: Option<&str>) -> AppResult<Option<UserId>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(|id| Some(UserId(id)))
            .map_err(|_| AppError::Validation(format!("{field} must be an integer, got {v:?}"))),
    }
}

/// Checks a member in.
#[utoipa::path(post, path = "/api/checkins", tag = "checkins", security(("bearer" = [])),
    request_body = CheckInRequest,
    responses(
        (status = 201, description = "the check-in", body = Checkin),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such member", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`conflict`: already checked in", body = crate::error::ErrorEnvelope),
    ))]
async fn post_checkin(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CheckInRequest>,
) -> AppResult<HttpResponse> {
    let checkin = checkins::check_in(&state, &user, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(checkin))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct CheckOutRequest {
    member_id: UserId,
}

/// Checks a member out.
#[utoipa::path(post, path = "/api/checkins/checkout", tag = "checkins", security(("bearer" = [])),
    request_body = CheckOutRequest,
    responses(
        (status = 200, description = "the closed check-in", body = Checkin),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such member", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`conflict`: not checked in", body = crate::error::ErrorEnvelope),
    ))]
async fn post_checkout(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<CheckOutRequest>,
) -> AppResult<HttpResponse> {
    let checkin = checkins::check_out(&state, &user, body.member_id).await?;
    Ok(HttpResponse::Ok().json(checkin))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// YYYY-MM-DD (UTC); today when absent
    date: Option<String>,
    /// an integer user id
    member_id: Option<String>,
    format: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct CheckinList {
    checkins: Vec<Checkin>,
}

/// A day's check-ins (staff, admin).
#[utoipa::path(get, path = "/api/checkins", tag = "checkins", security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "check-ins", body = CheckinList),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_checkins(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> AppResult<HttpResponse> {
    // Who may look comes before what was asked.
    user.require(&[Role::Staff, Role::Admin])?;
    let date = parse_date(query.date.as_deref())?;
    let member = parse_user_id("member_id", query.member_id.as_deref())?;
    let format = csv::parse_format(query.format.as_deref())?;
    let checkins = checkins::list(&state, &user, date, member).await?;
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(CheckinList { checkins }),
        Format::Csv => csv::response(&format!("checkins-{date}.csv"), checkins_csv(&checkins)),
    })
}

/// The day's check-ins as CSV: one line per visit, times in RFC 3339 UTC.
fn checkins_csv(checkins: &[Checkin]) -> String {
    let rows = checkins.iter().map(|c| {
        vec![
            c.id.to_string(),
            c.member_id.to_string(),
            c.member_name.clone(),
            c.location.clone().unwrap_or_default(),
            csv::stamp(c.checked_in_at),
            c.checked_out_at.map(csv::stamp).unwrap_or_default(),
            c.checked_out_at
                .map(|out| (out - c.checked_in_at).num_minutes().to_string())
                .unwrap_or_default(),
            c.notes.clone().unwrap_or_default(),
        ]
    });
    csv::document(
        &[
            "id",
            "member_id",
            "member_name",
            "location",
            "checked_in_at",
            "checked_out_at",
            "minutes",
            "notes",
        ],
        rows,
    )
}

/// Who is in now, whatever day they came: `{"checkins":[…]}`, oldest first.
#[utoipa::path(get, path = "/api/checkins/open", tag = "checkins", security(("bearer" = [])),
    responses(
        (status = 200, description = "open check-ins", body = CheckinList),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_open(state: web::Data<AppState>, user: AuthUser) -> AppResult<HttpResponse> {
    let checkins = checkins::list_open(&state, &user).await?;
    Ok(HttpResponse::Ok().json(CheckinList { checkins }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ByCodeRequest {
    code: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The front desk's scanner: a member's check-in code instead of their id. Answers like
/// `POST /api/checkins`; a refusal that concerns the member (not active, already in)
/// also carries `member` (a user object) so that the desk can say who and why.
#[utoipa::path(post, path = "/api/checkins/by-code", tag = "checkins", security(("bearer" = [])),
    request_body = ByCodeRequest,
    responses(
        (status = 201, description = "the check-in", body = Checkin),
        (status = 403, description = "`forbidden` or `account_inactive` (with `member`)", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no member has this code", body = crate::error::ErrorEnvelope),
        (status = 409, description = "`conflict`: already checked in (with `member`)", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`", body = crate::error::ErrorEnvelope),
    ))]
async fn post_checkin_by_code(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ByCodeRequest>,
) -> AppResult<HttpResponse> {
    let body = body.into_inner();
    let member = checkin_codes::resolve(&state, &user, &body.code).await?;
    let req = CheckInRequest {
        member_id: member.id,
        location: body.location,
        notes: body.notes,
        idempotency_key: body.idempotency_key,
    };
    let refusal = match checkins::check_in(&state, &user, req).await {
        Ok(checkin) => return Ok(HttpResponse::Created().json(checkin)),
        Err(AppError::AccountInactive) => AppError::AccountInactive,
        Err(e @ AppError::Conflict(_)) => e,
        Err(e) => return Err(e),
    };
    let message = match &refusal {
        AppError::AccountInactive => format!(
            "{} cannot be checked in: their account is {}",
            member.display_name,
            member.status.as_str()
        ),
        _ => format!("{} is already checked in", member.display_name),
    };
    let view = serde_json::json!({
        "id": member.id,
        "username": member.username,
        "display_name": member.display_name,
        "role": member.role.as_str(),
        "account_status": member.status.as_str(),
    });
    Ok(
        HttpResponse::build(refusal.status()).json(serde_json::json!({
            "error": {"code": refusal.code(), "message": message},
            "member": view,
        })),
    )
}

/// The live statistics (staff, admin).
#[utoipa::path(get, path = "/api/checkins/stats", tag = "checkins", security(("bearer" = [])),
    responses(
        (status = 200, description = "stats", body = crate::domain::checkins::Stats),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn get_stats(state: web::Data<AppState>, user: AuthUser) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(checkins::stats(&state, &user)?))
}
