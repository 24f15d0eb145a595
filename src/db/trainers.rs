//! Queries on `trainer_clients`: which members a trainer looks after.

use diesel::prelude::*;

use super::schema::trainer_clients;
use super::{Conn, UserId};
use crate::error::AppResult;
use crate::with_conn;

/// Assigns members to a trainer (already assigned ones are left as they are).
pub fn assign(conn: &mut Conn, trainer: UserId, members: &[UserId]) -> AppResult<()> {
    let now = crate::time::to_db(crate::time::now());
    for m in members {
        with_conn!(conn, c => diesel::insert_into(trainer_clients::table)
            .values((
                trainer_clients::trainer_id.eq(trainer),
                trainer_clients::member_id.eq(m),
                trainer_clients::created_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok(())
}

/// Removes an assignment; true if there was one.
pub fn unassign(conn: &mut Conn, trainer: UserId, member: UserId) -> AppResult<bool> {
    let n = with_conn!(conn, c => diesel::delete(
        trainer_clients::table
            .filter(trainer_clients::trainer_id.eq(trainer))
            .filter(trainer_clients::member_id.eq(member)),
    )
    .execute(c))?;
    Ok(n > 0)
}

/// The members assigned to a trainer.
pub fn clients_of(conn: &mut Conn, trainer: UserId) -> AppResult<Vec<UserId>> {
    Ok(with_conn!(conn, c => trainer_clients::table
        .filter(trainer_clients::trainer_id.eq(trainer))
        .select(trainer_clients::member_id)
        .load(c))?)
}

/// The trainers a member is assigned to.
pub fn trainers_of(conn: &mut Conn, member: UserId) -> AppResult<Vec<UserId>> {
    Ok(with_conn!(conn, c => trainer_clients::table
        .filter(trainer_clients::member_id.eq(member))
        .select(trainer_clients::trainer_id)
        .load(c))?)
}

/// Every assignment, as (trainer, member) pairs.
pub fn all(conn: &mut Conn) -> AppResult<Vec<(UserId, UserId)>> {
    Ok(with_conn!(conn, c => trainer_clients::table
        .select((trainer_clients::trainer_id, trainer_clients::member_id))
        .order((trainer_clients::trainer_id, trainer_clients::member_id))
        .load(c))?)
}
