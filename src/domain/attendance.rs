//! Attendance: employees' records posted by devices and admins, lateness against the
//! shift start, and their rooms.
//!
//! NOTE FOR IMPLEMENTERS (issue #5): the bodies below are placeholders to be replaced.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::auth::AuthUser;
use crate::db::{AttendanceId, UserId};
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The contract's attendance record.
#[derive(Debug, Clone, Serialize)]
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

/// Who may join an employee's attendance room: that employee, staff and admins.
pub fn authorize_employee_room(
    state: &AppState,
    user: &AuthUser,
    employee: UserId,
) -> AppResult<()> {
    let target = state
        .directory
        .get(employee)
        .ok_or_else(|| AppError::not_found("employee"))?;
    if !target.role.is_employee() {
        return Err(AppError::not_found("employee"));
    }
    if user.id == employee || matches!(user.role, Role::Staff | Role::Admin) {
        Ok(())
    } else {
        Err(AppError::forbidden())
    }
}
