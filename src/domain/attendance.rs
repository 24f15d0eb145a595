//! Attendance: employees' records posted by devices and admins, lateness against the
//! shift start, and their rooms.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::AuthUser;
use crate::db::attendance::{AttendanceRow, NewAttendance};
use crate::db::{AttendanceId, UserId};
use crate::domain::checkins::{clean_key, clean_text, run_to_completion};
use crate::domain::directory::Directory;
use crate::domain::events::{Event, Notice, RoomEvent};
use crate::domain::rooms::RoomKey;
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Longest `device` name of a record, in characters.
pub const DEVICE_MAX: usize = 100;

/// The contract's attendance record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AttendanceRecord {
    pub id: AttendanceId,
    pub employee_id: UserId,
    pub employee_name: String,
    pub status: String,
    pub date: NaiveDate,
    #[serde(with = "crate::time::rfc3339")]
    pub timestamp: DateTime<Utc>,
    pub device: Option<String>,
    #[serde(rename = "isLate")]
    pub is_late: bool,
}

impl AttendanceRecord {
    fn from_row(directory: &Directory, row: &AttendanceRow) -> AttendanceRecord {
        AttendanceRecord {
            id: row.id,
            employee_id: row.employee_id,
            employee_name: directory.name(row.employee_id),
            status: row.status.clone(),
            date: row.date,
            timestamp: crate::time::from_db(row.timestamp),
            device: row.device.clone(),
            is_late: row.is_late,
        }
    }
}

/// An attendance status (PROTOCOL §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Present,
    Absent,
    Left,
    OnLeave,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "present" => Status::Present,
            "absent" => Status::Absent,
            "left" => Status::Left,
            "on_leave" => Status::OnLeave,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Absent => "absent",
            Status::Left => "left",
            Status::OnLeave => "on_leave",
        }
    }
}

/// Only `present` can be late, and only strictly after the shift start (UTC): a record
/// at 09:00:00 is on time, at 09:00:01 late.
pub fn is_late(status: Status, timestamp: DateTime<Utc>, shift_start: NaiveTime) -> bool {
    status == Status::Present && timestamp.time() > shift_start
}

/// A record to store (`POST /api/attendance`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct RecordRequest {
    pub employee_id: UserId,
    pub status: String,
    #[serde(default)]
    pub device: Option<String>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn parse_timestamp(value: Option<&str>) -> AppResult<DateTime<Utc>> {
    let Some(value) = value else {
        return Ok(crate::time::now());
    };
    let t = DateTime::parse_from_rfc3339(value.trim())
        .map_err(|e| {
            AppError::Validation(format!(
                "timestamp must be RFC 3339 (2026-01-15T09:00:00Z): {e}"
            ))
        })?
        .with_timezone(&Utc);
    // Stored with microseconds: keep what is answered equal to what is read back later.
    Ok(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t))
}

/// Sends a notice to a room.
async fn publish(state: &AppState, room: RoomKey, notice: Notice) {
    let event = RoomEvent::one(room, notice);
    state.broker.publish(Event::Room(event)).await;
}

/// What a record's write did.
enum Written {
    Created(AttendanceRow),
    Replayed(AttendanceRow),
}

/// Stores an attendance record (admins and devices) and broadcasts it to the employee's
/// room and the general room. A repeated `idempotency_key` returns the original record
/// and changes nothing. A device that names no `device` is recorded under its username.
pub async fn record(
    state: &AppState,
    actor: &AuthUser,
    req: RecordRequest,
) -> AppResult<AttendanceRecord> {
    let (state, actor) = (state.clone(), actor.clone());
    run_to_completion(async move { store_record(&state, &actor, req).await }).await
}

async fn store_record(
    state: &AppState,
    actor: &AuthUser,
    req: RecordRequest,
) -> AppResult<AttendanceRecord> {
    actor.require(&[Role::Admin, Role::Device])?;
    let status = Status::parse(&req.status).ok_or_else(|| {
        AppError::Validation(format!(
            "status must be one of present, absent, left, on_leave, got {:?}",
            req.status
        ))
    })?;
    let timestamp = parse_timestamp(req.timestamp.as_deref())?;
    let key = clean_key(req.idempotency_key)?;
    let device = match clean_text("device", req.device, DEVICE_MAX)? {
        Some(d) => Some(d),
        None if actor.is(Role::Device) => state.directory.get(actor.id).map(|e| e.username),
        None => None,
    };
    let employee = req.employee_id;
    let entry = state
        .directory
        .get(employee)
        .ok_or_else(|| AppError::not_found("employee"))?;
    if !entry.role.is_employee() {
        return Err(AppError::Validation(format!(
            "user {employee} is not an employee (trainer or staff)"
        )));
    }
    let new = NewAttendance {
        employee_id: employee,
        status: status.as_str().to_string(),
        date: timestamp.date_naive(),
        timestamp: crate::time::to_db(timestamp),
        device,
        is_late: is_late(status, timestamp, state.config.shift_start),
        idempotency_key: key,
        created_at: crate::time::to_db(crate::time::now()),
    };
    let written = state
        .db
        .write(move |c| {
            if let Some(k) = &new.idempotency_key {
                if let Some(row) = crate::db::attendance::find_by_key(c, k)? {
                    return Ok(Written::Replayed(row));
                }
            }
            match crate::db::attendance::insert(c, &new)? {
                Some(row) => Ok(Written::Created(row)),
                // The only unique column: a concurrent retry stored it first.
                None => new
                    .idempotency_key
                    .as_deref()
                    .map(|k| crate::db::attendance::find_by_key(c, k))
                    .transpose()?
                    .flatten()
                    .map(Written::Replayed)
                    .ok_or_else(|| AppError::Conflict("attendance record already exists".into())),
            }
        })
        .await?;
    let row = match written {
        Written::Created(row) => row,
        Written::Replayed(row) if row.employee_id == employee => {
            log::info!(
                "attendance record {} of employee {employee} replayed for its idempotency key",
                row.id
            );
            return Ok(AttendanceRecord::from_row(&state.directory, &row));
        }
        Written::Replayed(_) => {
            return Err(AppError::Conflict(
                "idempotency_key was already used for another employee's record".into(),
            ))
        }
    };
    state.metrics.attendance_records.inc();
    log::info!(
        "attendance record {} of employee {employee}: {} at {} (late: {}) by user {}",
        row.id,
        row.status,
        row.timestamp,
        row.is_late,
        actor.id
    );
    let record = AttendanceRecord::from_row(&state.directory, &row);
    publish(
        state,
        RoomKey::Attendance(employee),
        Notice::AttendanceUpdate {
            record: record.clone(),
        },
    )
    .await;
    publish(
        state,
        RoomKey::AttendanceGeneral,
        Notice::GeneralAttendanceUpdate {
            record: record.clone(),
        },
    )
    .await;
    Ok(record)
}

/// The records of a UTC day: admins see everyone's (or one employee's), staff only
/// their own (asking for someone else is 403); nobody else may look.
pub async fn list(
    state: &AppState,
    actor: &AuthUser,
    date: NaiveDate,
    employee: Option<UserId>,
) -> AppResult<Vec<AttendanceRecord>> {
    let employee = match actor.role {
        Role::Admin => employee,
        Role::Staff => match employee {
            None => Some(actor.id),
            Some(e) if e == actor.id => Some(e),
            Some(_) => {
                return Err(AppError::Forbidden(
                    "staff may only see their own attendance".into(),
                ))
            }
        },
        Role::Trainer | Role::Member | Role::Device => return Err(AppError::forbidden()),
    };
    let rows = state
        .db
        .read(move |c| crate::db::attendance::list_day(c, date, employee))
        .await?;
    Ok(rows
        .iter()
        .map(|r| AttendanceRecord::from_row(&state.directory, r))
        .collect())
}

/// Who may join an employee's attendance room: that employee, staff and admins. The
/// permission is checked first, so that others cannot probe which ids are employees.
pub fn authorize_employee_room(
    state: &AppState,
    user: &AuthUser,
    employee: UserId,
) -> AppResult<()> {
    if user.id != employee && !matches!(user.role, Role::Staff | Role::Admin) {
        return Err(AppError::Forbidden(
            "only that employee, staff and admins may join an employee's attendance room".into(),
        ));
    }
    let target = state
        .directory
        .get(employee)
        .ok_or_else(|| AppError::not_found("employee"))?;
    if !target.role.is_employee() {
        return Err(AppError::not_found("employee"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn lateness_is_strictly_after_the_shift_start() {
        let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        assert!(!is_late(Status::Present, utc("2026-01-15T09:00:00Z"), nine));
        assert!(is_late(Status::Present, utc("2026-01-15T09:00:01Z"), nine));
        assert!(is_late(
            Status::Present,
            utc("2026-01-15T09:00:00.000001Z"),
            nine
        ));
        assert!(!is_late(Status::Absent, utc("2026-01-15T11:00:00Z"), nine));
        // Time of day in UTC: 10:30+02:00 is 08:30Z.
        assert!(!is_late(
            Status::Present,
            utc("2026-01-15T10:30:00+02:00"),
            nine
        ));
    }

    #[test]
    fn statuses_and_timestamps_are_checked() {
        assert_eq!(Status::parse("on_leave"), Some(Status::OnLeave));
        assert_eq!(Status::parse("late"), None);
        assert_eq!(
            parse_timestamp(Some("yesterday")).unwrap_err().code(),
            "validation_failed"
        );
        assert_eq!(
            parse_timestamp(Some("2026-01-15T23:30:00-02:00"))
                .unwrap()
                .date_naive(),
            NaiveDate::from_ymd_opt(2026, 1, 16).unwrap()
        );
    }
}
