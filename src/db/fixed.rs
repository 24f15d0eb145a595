//! Statements with a fixed text that diesel keeps prepared. Diesel parses its own UPDATE
//! statements, an `eq_any` and every `BEGIN`/`COMMIT` again on each execution (they are
//! not safe to cache in general); on SQLite's one chat writer, at everyday rates where
//! each message is its own transaction, those parses were a fifth of the writer's time.
//! Each statement here is its own type, so diesel's statement cache keys it by type and
//! prepares it once per connection.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Timestamp};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl, SqliteConnection};

use super::{ConversationId, UserId};
use crate::error::{AppError, AppResult};

/// A statement type that diesel caches by the type itself.
macro_rules! cached_by_type {
    ($name:ident) => {
        impl QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl<C> RunQueryDsl<C> for $name {}
    };
}

/// A statement without parameters: a unit type per text.
macro_rules! fixed {
    ($name:ident, $sql:literal) => {
        struct $name;
        cached_by_type!($name);

        impl QueryFragment<Sqlite> for $name {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
}

fixed!(BeginImmediate, "BEGIN IMMEDIATE");
fixed!(Commit, "COMMIT");

/// Runs `body` in a `BEGIN IMMEDIATE` transaction whose `BEGIN` and `COMMIT` stay
/// prepared; rolls back when it fails. `body` must not open transactions of its own
/// (diesel's transaction manager does not see this one).
pub fn immediate<T>(
    c: &mut SqliteConnection,
    body: impl FnOnce(&mut SqliteConnection) -> AppResult<T>,
) -> AppResult<T> {
    BeginImmediate.execute(c)?;
    let done = body(c).and_then(|v| Commit.execute(c).map(|_| v).map_err(AppError::from));
    if done.is_err() {
        // Not cached: failures are rare. A failed rollback leaves the connection in a
        // transaction, which the next BEGIN reports.
        if let Err(e) = diesel::connection::SimpleConnection::batch_execute(c, "ROLLBACK") {
            log::error!("rolling back a chat batch: {e}");
        }
    }
    done
}

/// A conversation's `last_seq` and the time of its newest message.
pub struct SetTail {
    pub conversation: ConversationId,
    pub seq: i64,
    pub at: chrono::NaiveDateTime,
}

cached_by_type!(SetTail);

impl QueryFragment<Sqlite> for SetTail {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE conversations SET last_seq = ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(", last_message_at = ");
        out.push_bind_param::<Timestamp, _>(&self.at)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.conversation.0)?;
        Ok(())
    }
}

/// Moves a member's read marker forward to `seq` (never back). On both backends: the
/// one-message transaction uses it too.
pub struct MoveReadMarker {
    pub conversation: ConversationId,
    pub user: UserId,
    pub seq: i64,
}

cached_by_type!(MoveReadMarker);

impl<DB> QueryFragment<DB> for MoveReadMarker
where
    DB: Backend + HasSqlType<BigInt>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE conversation_members SET last_read_seq = ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(" WHERE conversation_id = ");
        out.push_bind_param::<BigInt, _>(&self.conversation.0)?;
        out.push_sql(" AND user_id = ");
        out.push_bind_param::<BigInt, _>(&self.user.0)?;
        out.push_sql(" AND last_read_seq < ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        Ok(())
    }
}

/// Inserts a message unless its (conversation, sender, client_msg_id) is stored already;
/// executes to 1 (inserted: [`LastRowid`] is its id) or 0 (a repeat). Without
/// `RETURNING`: SQLite gathers a `RETURNING` statement's rows in a temporary table it
/// builds and drops on every execution.
pub struct InsertMessage<'a> {
    pub message: &'a super::chat::NewMessage,
    pub seq: i64,
}

impl QueryId for InsertMessage<'_> {
    type QueryId = InsertMessage<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<C> RunQueryDsl<C> for InsertMessage<'_> {}

impl QueryFragment<Sqlite> for InsertMessage<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        use diesel::sql_types::{Nullable, Text};
        let m = self.message;
        out.push_sql(
            "INSERT INTO messages (conversation_id, seq, sender_id, content, attachment_id, \
             client_msg_id, created_at) VALUES (",
        );
        out.push_bind_param::<BigInt, _>(&m.conversation_id.0)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.seq)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&m.sender_id.0)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&m.content)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&m.attachment_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&m.client_msg_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&m.created_at)?;
        out.push_sql(") ON CONFLICT (conversation_id, sender_id, client_msg_id) DO NOTHING");
        Ok(())
    }
}

/// The rowid the connection's last successful INSERT gave.
pub struct LastRowid;

cached_by_type!(LastRowid);

impl diesel::query_builder::Query for LastRowid {
    type SqlType = BigInt;
}

impl QueryFragment<Sqlite> for LastRowid {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("SELECT last_insert_rowid()");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    fn conn() -> SqliteConnection {
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        c.batch_execute(
            "CREATE TABLE conversations (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL, \
             last_message_at TIMESTAMP); \
             CREATE TABLE conversation_members (conversation_id BIGINT, user_id BIGINT, \
             last_read_seq BIGINT NOT NULL); \
             INSERT INTO conversations VALUES (1, 0, NULL); \
             INSERT INTO conversation_members VALUES (1, 7, 5);",
        )
        .unwrap();
        c
    }

    fn tail(c: &mut SqliteConnection) -> i64 {
        diesel::dsl::sql::<BigInt>("SELECT last_seq FROM conversations WHERE id = 1")
            .get_result(c)
            .unwrap()
    }

    #[test]
    fn commits_or_rolls_back_and_stays_usable() {
        let mut c = conn();
        let at = chrono::NaiveDate::from_ymd_opt(2026, 12, 2)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        for seq in 1..=3 {
            immediate(&mut c, |c| {
                SetTail {
                    conversation: ConversationId(1),
                    seq,
                    at,
                }
                .execute(c)?;
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(tail(&mut c), 3);
        let failed: AppResult<()> = immediate(&mut c, |c| {
            SetTail {
                conversation: ConversationId(1),
                seq: 9,
                at,
            }
            .execute(c)?;
            Err(AppError::internal("fails after the update"))
        });
        assert!(failed.is_err());
        assert_eq!(tail(&mut c), 3, "rolled back");
        let moved = |c: &mut SqliteConnection, seq| {
            MoveReadMarker {
                conversation: ConversationId(1),
                user: UserId(7),
                seq,
            }
            .execute(c)
            .unwrap()
        };
        assert_eq!(moved(&mut c, 4), 0, "never back");
        assert_eq!(moved(&mut c, 6), 1);
        // A transaction opens again after the rollback.
        immediate(&mut c, |_| Ok(())).unwrap();
    }
}
