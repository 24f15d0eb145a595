//! Queries on `conversations`, `conversation_members` and `messages`.
//!
//! A message's `seq` comes from `conversations.last_seq`, incremented in the same write
//! transaction that inserts the message: PostgreSQL's row lock (and SQLite's single
//! writer) serialize concurrent sends, and a failed insert rolls the increment back, so the
//! numbers have no gaps. `UNIQUE (conversation_id, seq)` guards the invariant.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{conversation_members, conversations, messages};
use super::{Conn, ConversationId, FileId, MessageId, UserId};
use crate::error::{AppError, AppResult};
use crate::with_conn;

/// A row of `conversations`: a direct conversation, its pair stored lowest id first.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = conversations)]
pub struct ConversationRow {
    pub id: ConversationId,
    pub user_low: UserId,
    pub user_high: UserId,
    pub last_seq: i64,
    pub created_at: NaiveDateTime,
    pub last_message_at: Option<NaiveDateTime>,
}

impl ConversationRow {
    /// The other participant.
    pub fn peer_of(&self, user: UserId) -> UserId {
        if self.user_low == user {
            self.user_high
        } else {
            self.user_low
        }
    }
}

/// A row of `messages`.
#[derive(Debug, Clone, Queryable, Selectable, QueryableByName)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub seq: i64,
    pub sender_id: UserId,
    pub content: String,
    pub attachment_id: Option<FileId>,
    pub client_msg_id: String,
    pub created_at: NaiveDateTime,
}

/// What to store for a new message (its `seq` is assigned on insert).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: ConversationId,
    pub sender_id: UserId,
    pub content: String,
    pub attachment_id: Option<FileId>,
    pub client_msg_id: String,
    pub created_at: NaiveDateTime,
}

/// A message row to insert, its `seq` given (the bulk insert on PostgreSQL).
struct MessageInsert<'a> {
    conversation_id: ConversationId,
    seq: i64,
    sender_id: UserId,
    content: &'a str,
    attachment_id: Option<FileId>,
    client_msg_id: &'a str,
    created_at: NaiveDateTime,
}

/// Orders a pair the way `conversations` stores it.
pub fn ordered(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

pub fn find_conversation(
    conn: &mut Conn,
    id: ConversationId,
) -> AppResult<Option<ConversationRow>> {
    Ok(with_conn!(conn, c => conversations::table
        .find(id)
        .select(ConversationRow::as_select())
        .first(c)
        .optional())?)
}

/// The conversation of a pair, created (with both members' read markers) if there is none
/// yet; true when it was created. Safe under concurrent calls for the same pair.
pub fn get_or_create(
    conn: &mut Conn,
    a: UserId,
    b: UserId,
    now: NaiveDateTime,
) -> AppResult<(ConversationRow, bool)> {
    let (low, high) = ordered(a, b);
    crate::transaction!(conn, c => {
        let created = diesel::insert_into(conversations::table)
            .values((
                conversations::user_low.eq(low),
                conversations::user_high.eq(high),
                conversations::last_seq.eq(0),
                conversations::created_at.eq(now),
            ))
            .on_conflict((conversations::user_low, conversations::user_high))
            .do_nothing()
            .execute(c)?
            == 1;
        let row = conversations::table
            .filter(conversations::user_low.eq(low))
            .filter(conversations::user_high.eq(high))
            .select(ConversationRow::as_select())
            .first(c)?;
        for user in [low, high] {
            diesel::insert_into(conversation_members::table)
                .values((
                    conversation_members::conversation_id.eq(row.id),
                    conversation_members::user_id.eq(user),
                    conversation_members::last_read_seq.eq(0),
                ))
                .on_conflict_do_nothing()
                .execute(c)?;
        }
        Ok((row, created))
    })
}

pub fn find_by_client_id(
    conn: &mut Conn,
    conversation: ConversationId,
    sender: UserId,
    client_msg_id: &str,
) -> AppResult<Option<MessageRow>> {
    Ok(with_conn!(conn, c => messages::table
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::sender_id.eq(sender))
        .filter(messages::client_msg_id.eq(client_msg_id))
        .select(MessageRow::as_select())
        .first(c)
        .optional())?)
}

/// The stored message with this (conversation, sender, client_msg_id), if any.
macro_rules! find_repeat {
    ($c:expr, $new:expr) => {
        messages::table
            .filter(messages::conversation_id.eq($new.conversation_id))
            .filter(messages::sender_id.eq($new.sender_id))
            .filter(messages::client_msg_id.eq(&$new.client_msg_id))
            .select(MessageRow::as_select())
            .first($c)
            .optional()?
    };
}

/// Inserts the message row with its `seq`; answers the row.
macro_rules! insert_row {
    ($c:expr, $new:expr, $seq:expr) => {
        diesel::insert_into(messages::table)
            .values((
                messages::conversation_id.eq($new.conversation_id),
                messages::seq.eq($seq),
                messages::sender_id.eq($new.sender_id),
                messages::content.eq(&$new.content),
                messages::attachment_id.eq($new.attachment_id),
                messages::client_msg_id.eq(&$new.client_msg_id),
                messages::created_at.eq($new.created_at),
            ))
            .returning(MessageRow::as_returning())
            .get_result::<MessageRow>($c)?
    };
}

/// The statements that store one message inside an open transaction: the conversation's
/// next `seq`, the row, and the sender's read marker moved to it. A message with the same
/// (conversation, sender, client_msg_id) already stored is returned instead, with `false`.
/// One body for both backends (and for the SQLite writer's one-by-one fallback).
macro_rules! insert_statements {
    ($c:ident, $new:expr) => {{
        let new: &NewMessage = $new;
        let c = &mut *$c;
        if let Some(row) = find_repeat!(c, new) {
            return Ok((row, false));
        }
        let seq: i64 = diesel::update(conversations::table.find(new.conversation_id))
            .set((
                conversations::last_seq.eq(conversations::last_seq + 1),
                conversations::last_message_at.eq(Some(new.created_at)),
            ))
            .returning(conversations::last_seq)
            .get_result(c)?;
        let row = insert_row!(c, new, seq);
        super::fixed::MoveReadMarker {
            conversation: new.conversation_id,
            user: new.sender_id,
            seq,
        }
        .execute(c)?;
        Ok((row, true))
    }};
}

/// The body of [`insert_batch`]'s transaction on SQLite; `tails` holds each
/// conversation's `last_seq` as read at its start. Every statement is one diesel keeps
/// prepared (the message's repeat lookup and INSERT per message; per conversation the
/// tail, per sender the read marker, at the end).
fn insert_grouped_sqlite(
    c: &mut diesel::SqliteConnection,
    batch: &[&NewMessage],
    tails: Vec<(ConversationId, i64)>,
) -> AppResult<Vec<AppResult<(MessageRow, bool)>>> {
    use super::fixed::{InsertMessage, LastRowid, MoveReadMarker, SetTail};
    // Per conversation: the last seq given and the newest message's time.
    let mut tails: HashMap<ConversationId, (i64, Option<NaiveDateTime>)> = tails
        .into_iter()
        .map(|(id, seq)| (id, (seq, None)))
        .collect();
    // Per (conversation, sender): the seq their read marker moves to.
    let mut marks: HashMap<(ConversationId, UserId), i64> = HashMap::new();
    let mut results = Vec::with_capacity(batch.len());
    for new in batch {
        let Some(tail) = tails.get_mut(&new.conversation_id) else {
            return Err(AppError::not_found("conversation"));
        };
        let seq = tail.0 + 1;
        // The insert probes the unique (conversation, sender, client_msg_id) index
        // anyway: a repeat is what it declines, looked up only then (one probe per new
        // message instead of two). Ids are SQLite's rowids (no AUTOINCREMENT, so no
        // sqlite_sequence page per commit): messages are never deleted, so each new id
        // is the largest so far plus one, increasing and unique.
        let inserted = InsertMessage { message: new, seq }.execute(c)?;
        if inserted == 0 {
            let row = find_repeat!(c, new).ok_or_else(|| {
                AppError::internal("a message declined as a repeat is not stored")
            })?;
            results.push(Ok((row, false)));
            continue;
        }
        let row = MessageRow {
            id: MessageId(LastRowid.get_result::<i64>(c)?),
            conversation_id: new.conversation_id,
            seq,
            sender_id: new.sender_id,
            content: new.content.clone(),
            attachment_id: new.attachment_id,
            client_msg_id: new.client_msg_id.clone(),
            created_at: new.created_at,
        };
        *tail = (seq, Some(new.created_at));
        marks.insert((new.conversation_id, new.sender_id), seq);
        results.push(Ok((row, true)));
    }
    for (conversation, (seq, at)) in tails {
        if let Some(at) = at {
            SetTail {
                conversation,
                seq,
                at,
            }
            .execute(c)?;
        }
    }
    for ((conversation, user), seq) in marks {
        MoveReadMarker {
            conversation,
            user,
            seq,
        }
        .execute(c)?;
    }
    Ok(results)
}

/// Stores a batch of messages in ONE transaction (group commit), in the given order
/// (several of one conversation get consecutive `seq`s). Answers one result per message;
/// `Err` as a whole when it could not even be retried.
///
/// The conversations' rows are read first, in id order (on PostgreSQL `FOR UPDATE`, so
/// that another instance's batch on the same conversation waits for this one's commit,
/// and two batches always lock in the same order). `last_seq`, `last_message_at` and the
/// senders' read markers are written once per conversation at the end. On SQLite every
/// statement stays prepared ([`super::fixed`]); on PostgreSQL a batch is three statements
/// between BEGIN and COMMIT whatever its size. If any statement fails, the
/// whole batch is rolled back and each message is stored in a transaction of its own, so
/// that a failing one fails alone.
pub fn insert_batch(
    conn: &mut Conn,
    batch: &[&NewMessage],
) -> AppResult<Vec<AppResult<(MessageRow, bool)>>> {
    let ids = {
        let mut ids: Vec<ConversationId> = batch.iter().map(|m| m.conversation_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let grouped = match conn {
        Conn::Sqlite(pooled) => {
            let c: &mut diesel::SqliteConnection = pooled;
            super::fixed::immediate(c, |c| {
                let tails: Vec<(ConversationId, i64)> = match ids.as_slice() {
                    // The everyday case, kept prepared (an `eq_any` is parsed each time).
                    [one] => conversations::table
                        .filter(conversations::id.eq(*one))
                        .select((conversations::id, conversations::last_seq))
                        .load(c)?,
                    _ => conversations::table
                        .filter(conversations::id.eq_any(&ids))
                        .order(conversations::id)
                        .select((conversations::id, conversations::last_seq))
                        .load(c)?,
                };
                insert_grouped_sqlite(c, batch, tails)
            })
        }
        Conn::Pg(pooled) => {
            let c: &mut diesel::PgConnection = pooled;
            c.transaction::<_, AppError, _>(|c| {
                let tails: Vec<(ConversationId, i64)> = conversations::table
                    .filter(conversations::id.eq_any(&ids))
                    .order(conversations::id)
                    .select((conversations::id, conversations::last_seq))
                    .for_update()
                    .load(c)?;
                insert_grouped_pg(c, batch, tails)
            })
        }
    };
    match grouped {
        Ok(results) => Ok(results),
        Err(e) if batch.len() > 1 => {
            log::debug!("group commit failed ({e}): storing the batch one by one");
            Ok(batch.iter().map(|new| insert_message(conn, new)).collect())
        }
        Err(e) => Ok(vec![Err(e)]),
    }
}

/// The body of [`insert_batch`]'s transaction on PostgreSQL, where every statement is a
/// round trip: the batch's repeats are found with one query, and one more inserts its new
/// rows and writes `last_seq`, `last_message_at` and the read markers once per
/// conversation, as on SQLite.
fn insert_grouped_pg(
    c: &mut diesel::PgConnection,
    batch: &[&NewMessage],
    tails: Vec<(ConversationId, i64)>,
) -> AppResult<Vec<AppResult<(MessageRow, bool)>>> {
    type Key<'a> = (ConversationId, UserId, &'a str);
    use diesel::sql_types::{Array, BigInt, Text, Timestamp};
    // The batch's (conversation, sender, client_msg_id) keys joined against their unique
    // index: one lookup per key, however long the conversations' histories are.
    let stored: Vec<MessageRow> = diesel::sql_query(
        "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.content, m.attachment_id, \
         m.client_msg_id, m.created_at FROM messages m \
         JOIN unnest($1, $2, $3) AS k(cid, sid, cmid) \
         ON m.conversation_id = k.cid AND m.sender_id = k.sid AND m.client_msg_id = k.cmid",
    )
    .bind::<Array<BigInt>, _>(
        batch
            .iter()
            .map(|m| m.conversation_id.0)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<BigInt>, _>(batch.iter().map(|m| m.sender_id.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        batch
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect::<Vec<_>>(),
    )
    .load(c)?;
    let mut repeats: HashMap<Key<'_>, MessageRow> = HashMap::new();
    for row in &stored {
        repeats.insert(
            (
                row.conversation_id,
                row.sender_id,
                row.client_msg_id.as_str(),
            ),
            row.clone(),
        );
    }
    let mut tails: HashMap<ConversationId, (i64, Option<NaiveDateTime>)> = tails
        .into_iter()
        .map(|(id, seq)| (id, (seq, None)))
        .collect();
    let mut marks: HashMap<(ConversationId, UserId), i64> = HashMap::new();
    // Per message: a repeat of a stored row, or the (conversation, seq) it is inserted as
    // (a repeat inside the batch points at the earlier one's).
    enum Slot {
        Stored(MessageRow),
        New(ConversationId, i64, bool),
    }
    let mut slots = Vec::with_capacity(batch.len());
    let mut fresh: HashMap<Key<'_>, (ConversationId, i64)> = HashMap::new();
    let mut inserts = Vec::new();
    for new in batch {
        let k = (
            new.conversation_id,
            new.sender_id,
            new.client_msg_id.as_str(),
        );
        if let Some(row) = repeats.get(&k) {
            slots.push(Slot::Stored(row.clone()));
            continue;
        }
        if let Some((conversation, seq)) = fresh.get(&k) {
            slots.push(Slot::New(*conversation, *seq, false));
            continue;
        }
        let Some(tail) = tails.get_mut(&new.conversation_id) else {
            return Err(AppError::not_found("conversation"));
        };
        let seq = tail.0 + 1;
        *tail = (seq, Some(new.created_at));
        marks.insert((new.conversation_id, new.sender_id), seq);
        fresh.insert(k, (new.conversation_id, seq));
        slots.push(Slot::New(new.conversation_id, seq, true));
        inserts.push(MessageInsert {
            conversation_id: new.conversation_id,
            seq,
            sender_id: new.sender_id,
            content: &new.content,
            attachment_id: new.attachment_id,
            client_msg_id: &new.client_msg_id,
            created_at: new.created_at,
        });
    }
    // The rows, the conversations' tails and the senders' read markers in ONE statement
    // (data-modifying CTEs run once each, to completion): a round trip, not three.
    let inserted: HashMap<(ConversationId, i64), MessageRow> = if inserts.is_empty() {
        HashMap::new()
    } else {
        use diesel::sql_types::Nullable;
        let (mut ids, mut seqs, mut ats) = (Vec::new(), Vec::new(), Vec::new());
        for (id, (seq, at)) in tails {
            if let Some(at) = at {
                ids.push(id.0);
                seqs.push(seq);
                ats.push(at);
            }
        }
        let (mut cids, mut uids, mut marked) = (Vec::new(), Vec::new(), Vec::new());
        for ((conversation, sender), seq) in marks {
            cids.push(conversation.0);
            uids.push(sender.0);
            marked.push(seq);
        }
        diesel::sql_query(
            "WITH ins AS (\
               INSERT INTO messages (conversation_id, seq, sender_id, content, attachment_id, \
                 client_msg_id, created_at) \
               SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7) \
               RETURNING id, conversation_id, seq, sender_id, content, attachment_id, \
                 client_msg_id, created_at), \
             tails AS (\
               UPDATE conversations SET last_seq = v.seq, last_message_at = v.at \
               FROM unnest($8, $9, $10) AS v(id, seq, at) WHERE conversations.id = v.id), \
             marks AS (\
               UPDATE conversation_members SET last_read_seq = v.seq \
               FROM unnest($11, $12, $13) AS v(cid, uid, seq) \
               WHERE conversation_members.conversation_id = v.cid \
               AND conversation_members.user_id = v.uid \
               AND conversation_members.last_read_seq < v.seq) \
             SELECT * FROM ins",
        )
        .bind::<Array<BigInt>, _>(
            inserts
                .iter()
                .map(|m| m.conversation_id.0)
                .collect::<Vec<_>>(),
        )
        .bind::<Array<BigInt>, _>(inserts.iter().map(|m| m.seq).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(inserts.iter().map(|m| m.sender_id.0).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(inserts.iter().map(|m| m.content).collect::<Vec<_>>())
        .bind::<Array<Nullable<BigInt>>, _>(
            inserts
                .iter()
                .map(|m| m.attachment_id.map(|f| f.0))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Text>, _>(inserts.iter().map(|m| m.client_msg_id).collect::<Vec<_>>())
        .bind::<Array<Timestamp>, _>(inserts.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<BigInt>, _>(seqs)
        .bind::<Array<Timestamp>, _>(ats)
        .bind::<Array<BigInt>, _>(cids)
        .bind::<Array<BigInt>, _>(uids)
        .bind::<Array<BigInt>, _>(marked)
        .load::<MessageRow>(c)?
        .into_iter()
        .map(|row| ((row.conversation_id, row.seq), row))
        .collect()
    };
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Stored(row) => Ok(Ok((row, false))),
            Slot::New(conversation, seq, created) => inserted
                .get(&(conversation, seq))
                .cloned()
                .map(|row| Ok((row, created)))
                .ok_or_else(|| AppError::internal("an inserted message went missing")),
        })
        .collect()
}

pub fn insert_message(conn: &mut Conn, new: &NewMessage) -> AppResult<(MessageRow, bool)> {
    let stored = crate::transaction!(conn, c => insert_statements!(c, new));
    match stored {
        // The same client_msg_id committed by a concurrent transaction (another instance)
        // between our check and our insert: answer with that one.
        Err(AppError::Conflict(detail)) => {
            find_by_client_id(conn, new.conversation_id, new.sender_id, &new.client_msg_id)?
                .map(|row| (row, false))
                .ok_or(AppError::Conflict(detail))
        }
        other => other,
    }
}

/// Messages with `after < seq <= upto`, oldest first.
pub fn range(
    conn: &mut Conn,
    conversation: ConversationId,
    after: i64,
    upto: i64,
) -> AppResult<Vec<MessageRow>> {
    Ok(with_conn!(conn, c => messages::table
        .filter(messages::conversation_id.eq(conversation))
        .filter(messages::seq.gt(after))
        .filter(messages::seq.le(upto))
        .order(messages::seq.asc())
        .select(MessageRow::as_select())
        .load(c))?)
}

/// Where a history page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest messages.
    Newest,
    /// Older than this seq (exclusive).
    Before(i64),
    /// Newer than this seq (exclusive).
    After(i64),
}

/// One page of at most `limit` messages, oldest first, and whether more exist in the
/// paging direction (older for `Newest`/`Before`, newer for `After`).
pub fn page(
    conn: &mut Conn,
    conversation: ConversationId,
    cursor: Cursor,
    limit: i64,
) -> AppResult<(Vec<MessageRow>, bool)> {
    let fetch = limit + 1;
    let mut rows: Vec<MessageRow> = match cursor {
        Cursor::Newest => with_conn!(conn, c => messages::table
            .filter(messages::conversation_id.eq(conversation))
            .order(messages::seq.desc())
            .limit(fetch)
            .select(MessageRow::as_select())
            .load(c))?,
        Cursor::Before(before) => with_conn!(conn, c => messages::table
            .filter(messages::conversation_id.eq(conversation))
            .filter(messages::seq.lt(before))
            .order(messages::seq.desc())
            .limit(fetch)
            .select(MessageRow::as_select())
            .load(c))?,
        Cursor::After(after) => with_conn!(conn, c => messages::table
            .filter(messages::conversation_id.eq(conversation))
            .filter(messages::seq.gt(after))
            .order(messages::seq.asc())
            .limit(fetch)
            .select(MessageRow::as_select())
            .load(c))?,
    };
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    if !matches!(cursor, Cursor::After(_)) {
        rows.reverse();
    }
    Ok((rows, has_more))
}

/// Moves a member's read marker forward to `seq`, clamped to the conversation's last seq;
/// answers the new marker, or `None` when it did not move.
pub fn mark_read(
    conn: &mut Conn,
    conversation: ConversationId,
    user: UserId,
    seq: i64,
) -> AppResult<Option<i64>> {
    let last: i64 = with_conn!(conn, c => conversations::table
        .find(conversation)
        .select(conversations::last_seq)
        .first(c))?;
    let target = seq.min(last);
    // `last_read_seq < target` in the statement itself: a concurrent, smaller marker
    // cannot move it back.
    let moved = with_conn!(conn, c => diesel::update(
        conversation_members::table
            .filter(conversation_members::conversation_id.eq(conversation))
            .filter(conversation_members::user_id.eq(user))
            .filter(conversation_members::last_read_seq.lt(target)),
    )
    .set(conversation_members::last_read_seq.eq(target))
    .execute(c))?;
    Ok((moved > 0).then_some(target))
}

/// One of a user's conversations, as the lists show it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub conversation: ConversationRow,
    pub last_read_seq: i64,
    pub last_message: Option<MessageRow>,
    /// Messages from the peer after the user's read marker.
    pub unread: i64,
}

/// Every conversation of `user`, most recently active first. Both conversation lists
/// (`/api/chat/conversations`, `/api/trainer/clients`) come from here, so their unread
/// counts agree.
pub fn summaries(conn: &mut Conn, user: UserId) -> AppResult<Vec<Summary>> {
    let convs: Vec<(ConversationRow, i64)> = with_conn!(conn, c => conversations::table
        .inner_join(conversation_members::table)
        .filter(conversation_members::user_id.eq(user))
        .select((ConversationRow::as_select(), conversation_members::last_read_seq))
        .load(c))?;
    if convs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<ConversationId> = convs.iter().map(|(c, _)| c.id).collect();
    let last: Vec<MessageRow> = with_conn!(conn, c => messages::table
        .inner_join(
            conversations::table.on(conversations::id
                .eq(messages::conversation_id)
                .and(conversations::last_seq.eq(messages::seq))),
        )
        .filter(messages::conversation_id.eq_any(&ids))
        .select(MessageRow::as_select())
        .load(c))?;
    let unread: Vec<(ConversationId, i64)> = with_conn!(conn, c => messages::table
        .inner_join(
            conversation_members::table.on(conversation_members::conversation_id
                .eq(messages::conversation_id)
                .and(conversation_members::user_id.eq(user))),
        )
        .filter(messages::sender_id.ne(user))
        .filter(messages::seq.gt(conversation_members::last_read_seq))
        .group_by(messages::conversation_id)
        .select((messages::conversation_id, diesel::dsl::count_star()))
        .load(c))?;
    let mut last: HashMap<ConversationId, MessageRow> =
        last.into_iter().map(|m| (m.conversation_id, m)).collect();
    let unread: HashMap<ConversationId, i64> = unread.into_iter().collect();
    let mut out: Vec<Summary> = convs
        .into_iter()
        .map(|(conversation, last_read_seq)| Summary {
            last_message: last.remove(&conversation.id),
            unread: unread.get(&conversation.id).copied().unwrap_or(0),
            last_read_seq,
            conversation,
        })
        .collect();
    out.sort_by(|a, b| {
        let at = |s: &Summary| {
            s.conversation
                .last_message_at
                .unwrap_or(s.conversation.created_at)
        };
        at(b)
            .cmp(&at(a))
            .then(b.conversation.id.cmp(&a.conversation.id))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;
    use crate::db::users::{self, NewUser};
    use crate::db::Db;

    fn user(conn: &mut Conn, name: &str, role: &str) -> UserId {
        let now = crate::time::to_db(crate::time::now());
        users::insert(
            conn,
            &NewUser {
                username: name.into(),
                display_name: name.into(),
                password_hash: "x".into(),
                role: role.into(),
                account_status: "active".into(),
                created_at: now,
                updated_at: now,
            },
        )
        .unwrap()
        .id
    }

    fn message(conversation: ConversationId, sender: UserId, id: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation,
            sender_id: sender,
            content: format!("text {id}"),
            attachment_id: None,
            client_msg_id: id.into(),
            created_at: crate::time::to_db(crate::time::now()),
        }
    }

    /// One commit: consecutive seqs per conversation in queue order, a repeat inside the
    /// batch finds the original, and a failing message (an unknown conversation) fails
    /// alone while the others are stored.
    #[test]
    fn group_commit_orders_dedupes_and_isolates_failures() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("t.db").display().to_string());
        group_commit_on(&url);
    }

    /// The same on PostgreSQL (its bulk insert), when a server is reachable; in CI it must be.
    #[test]
    fn group_commit_orders_dedupes_and_isolates_failures_postgres() {
        use diesel::Connection;
        let admin = std::env::var("SPOTTER_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("spotter_unit_{}", std::process::id());
        let create = diesel::PgConnection::establish(&format!("{admin}/postgres"))
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut c)
                    .and_then(|_| {
                        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut c)
                    })
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = create {
            assert!(
                std::env::var("CI").is_err(),
                "PostgreSQL is required in CI: {e}"
            );
            eprintln!("!!! SKIPPED: PostgreSQL unreachable ({e}) !!!");
            return;
        }
        group_commit_on(&DatabaseUrl::Postgres(format!("{admin}/{name}")));
        if let Ok(mut c) = diesel::PgConnection::establish(&format!("{admin}/postgres")) {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c);
        }
    }

    fn group_commit_on(url: &DatabaseUrl) {
        let db = Db::connect(url, 2).unwrap();
        db.migrate().unwrap();
        let mut conn = db.write_conn().unwrap();
        let (t, m) = (
            user(&mut conn, "t", "trainer"),
            user(&mut conn, "m", "member"),
        );
        let now = crate::time::to_db(crate::time::now());
        let (a, _) = get_or_create(&mut conn, t, m, now).unwrap();
        // A message of another conversation first: ids and seqs then differ.
        let other = user(&mut conn, "o", "member");
        let (b, _) = get_or_create(&mut conn, t, other, now).unwrap();
        insert_batch(&mut conn, &[&message(b.id, t, "b1")]).unwrap();
        let good = [
            message(a.id, t, "1"),
            message(a.id, m, "2"),
            message(a.id, t, "1"),
            message(a.id, t, "3"),
        ];
        let refs: Vec<&NewMessage> = good.iter().collect();
        let results = insert_batch(&mut conn, &refs).unwrap();
        let got: Vec<(i64, bool)> = results
            .iter()
            .map(|r| r.as_ref().map(|(row, new)| (row.seq, *new)).unwrap())
            .collect();
        assert_eq!(got, vec![(1, true), (2, true), (1, false), (3, true)]);
        // What the writer answers is the row as stored (its id, its time to the
        // fraction of a second), new or repeated.
        let key = |r: &MessageRow| {
            (
                r.id,
                r.conversation_id,
                r.seq,
                r.sender_id,
                r.content.clone(),
                r.attachment_id,
                r.client_msg_id.clone(),
                r.created_at,
            )
        };
        let stored = range(&mut conn, a.id, 0, 3).unwrap();
        let answered: Vec<_> = results
            .iter()
            .map(|r| key(&r.as_ref().unwrap().0))
            .collect();
        let expected: Vec<_> = [0, 1, 0, 2].iter().map(|&i| key(&stored[i])).collect();
        assert_eq!(answered, expected);

        let mixed = [
            message(a.id, m, "4"),
            message(ConversationId(9_999), t, "x"),
            message(a.id, t, "5"),
            // A repeat of an earlier commit's message: the original, nothing stored.
            message(a.id, m, "2"),
        ];
        let refs: Vec<&NewMessage> = mixed.iter().collect();
        let results = insert_batch(&mut conn, &refs).unwrap();
        assert_eq!(results[0].as_ref().unwrap().0.seq, 4);
        assert!(results[1].is_err(), "{:?}", results[1]);
        assert_eq!(results[2].as_ref().unwrap().0.seq, 5);
        let repeat = results[3].as_ref().unwrap();
        assert_eq!((key(&repeat.0), repeat.1), (key(&stored[1]), false));

        let stored = find_conversation(&mut conn, a.id).unwrap().unwrap();
        assert_eq!(stored.last_seq, 5);
        let seqs: Vec<i64> = range(&mut conn, a.id, 0, 5)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }
}
