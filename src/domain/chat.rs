//! Chat: direct conversations, messages with a gap-free per-conversation `seq`, typing
//! indicators, read markers, and the trainer's client list. One function per action,
//! called by both the HTTP API and the socket, so both behave the same.
//!
//! Ordering, one pipeline for both backends: messages are queued to the group-commit
//! writer (`db::group_commit`), which stores them in queue order and hands each commit's
//! new messages, in order, to the publisher task, which broadcasts all of one
//! conversation's as one batch. A socket can therefore queue its next message before the
//! previous one is stored ([`submit_message`]), and a busy room's messages reach each
//! socket several per write. Each session keeps its own place in every conversation
//! (`realtime::ordering`): repeats dropped, gaps filled from storage, so that a commit
//! published late (another instance's, later) is never skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::AuthUser;
use crate::db::chat::{ConversationRow, Cursor, MessageRow, NewMessage, Summary};
use crate::db::files::FileRow;
use crate::db::{Conn, ConversationId, FileId, MessageId, UserId};
use crate::domain::events::{Event, Item, Notice, RoomEvent, SocketId};
use crate::domain::rooms::RoomKey;
use crate::domain::users::{Role, UserView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Longest message, in characters.
pub const CONTENT_MAX: usize = 4000;
/// Longest `client_msg_id`, in characters.
const CLIENT_MSG_ID_MAX: usize = 128;
/// A rejoin that missed more messages than this is told to resync instead.
pub const RECOVERY_MAX: i64 = 500;
/// History page size when none is asked for, and the largest allowed.
pub const HISTORY_DEFAULT: i64 = 50;
pub const HISTORY_MAX: i64 = 200;
/// At most one typing broadcast per user and conversation in this interval (a change of
/// `is_typing` still passes).
const TYPING_THROTTLE: Duration = Duration::from_secs(2);
/// A typing indicator not renewed or stopped within this time is broadcast as stopped.
const TYPING_TTL: Duration = Duration::from_secs(6);
/// Bounds of chat's in-memory maps.
const TYPING_ENTRIES_MAX: usize = 10_000;
const PAIRS_MAX: usize = 65_536;

/// One user's typing state in one conversation.
#[derive(Debug, Clone, Copy)]
struct TypingEntry {
    /// The value last broadcast, and when.
    shown: bool,
    shown_at: Instant,
    /// While typing: when the indicator expires unless renewed.
    expires_at: Option<Instant>,
    /// An expiry timer is running for this entry.
    timer: bool,
}

/// What the chat writer carries with each message to its broadcast.
pub struct Origin {
    /// The sending socket, which gets an ack instead of `new_message`.
    session: Option<SocketId>,
    /// The attachment, checked before queuing (files never change).
    attachment: Option<FileRow>,
}

/// One commit's new messages, in `seq` order per conversation.
type Committed = Vec<(Origin, MessageRow)>;
type Writer = crate::db::group_commit::MessageWriter<Origin>;

/// Commits waiting for the publisher: the writer waits when it is full.
const COMMITTED_QUEUE: usize = 256;

/// Chat's in-memory state: the message writer (SQLite) or per-conversation ordering locks
/// (PostgreSQL), the participants of known conversations (they never change), and typing
/// throttles. Every map and queue is bounded.
pub struct ChatState {
    /// Group commit, on both backends: the one place messages are stored and ordered.
    writer: std::sync::Arc<Writer>,
    /// What the writer committed, until [`start_publisher`] takes it.
    committed: Mutex<Option<tokio::sync::mpsc::Receiver<Committed>>>,
    pairs: Mutex<HashMap<ConversationId, (UserId, UserId)>>,
    typing: Mutex<HashMap<(UserId, ConversationId), TypingEntry>>,
}

impl ChatState {
    /// Chat state for `db`: messages are stored by the group-commit writer, whose commits
    /// [`start_publisher`] broadcasts.
    pub fn new(db: &crate::db::Db) -> AppResult<ChatState> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Committed>(COMMITTED_QUEUE);
        let hook: crate::db::group_commit::AfterCommit<Origin> = Box::new(move |batch| {
            if tx.blocking_send(batch).is_err() {
                log::error!("chat publisher is gone: stored messages are not broadcast");
            }
        });
        let writer = crate::db::group_commit::MessageWriter::start(db, hook)?;
        Ok(ChatState {
            writer,
            committed: Mutex::new(Some(rx)),
            pairs: Mutex::new(HashMap::new()),
            typing: Mutex::new(HashMap::new()),
        })
    }

    fn cached_pair(&self, id: ConversationId) -> Option<(UserId, UserId)> {
        self.pairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn remember(&self, row: &ConversationRow) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if pairs.len() >= PAIRS_MAX {
            // A cache: starting over costs one read per conversation.
            pairs.clear();
        }
        pairs.insert(row.id, (row.user_low, row.user_high));
    }

    fn typing_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(UserId, ConversationId), TypingEntry>> {
        self.typing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An image attached to a message.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Attachment {
    pub id: FileId,
    pub url: String,
    pub content_type: String,
    pub size: i64,
}

/// The contract's message object.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub seq: i64,
    pub sender_id: UserId,
    pub content: String,
    pub attachment: Option<Attachment>,
    pub client_msg_id: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A message to send (socket `send_message` or `POST /api/chat/messages`).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct SendMessage {
    pub conversation_id: ConversationId,
    pub content: String,
    pub client_msg_id: String,
    #[serde(default)]
    pub attachment_id: Option<FileId>,
}

/// What `join_conversation` answers.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub last_seq: i64,
    pub missed: Vec<Message>,
    /// False when more than [`RECOVERY_MAX`] were missed: the client must resync.
    pub recovered: bool,
}

/// A conversation as the caller's list shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: ConversationId,
    pub peer: UserView,
    pub last_message: Option<Message>,
    pub unread_count: i64,
    pub last_read_seq: i64,
}

/// A trainer's client: the user object plus the conversation's state (`conversation_id`
/// is null until one of them opens it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    #[serde(flatten)]
    pub user: UserView,
    pub conversation_id: Option<ConversationId>,
    pub unread_count: i64,
    pub last_message: Option<Message>,
}

/// One page of history, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub conversation_id: ConversationId,
    pub messages: Vec<Message>,
    pub has_more: bool,
}

fn to_message(row: MessageRow, files: &HashMap<FileId, FileRow>) -> Message {
    Message {
        id: row.id,
        conversation_id: row.conversation_id,
        seq: row.seq,
        sender_id: row.sender_id,
        content: row.content,
        attachment: row
            .attachment_id
            .and_then(|f| files.get(&f))
            .map(crate::domain::files::attachment),
        client_msg_id: row.client_msg_id,
        created_at: crate::time::from_db(row.created_at),
    }
}

/// Message rows as message objects, their attachments loaded in one query.
fn render(conn: &mut Conn, rows: Vec<MessageRow>) -> AppResult<Vec<Message>> {
    let ids: Vec<FileId> = rows.iter().filter_map(|r| r.attachment_id).collect();
    let files = crate::db::files::find_many(conn, &ids)?;
    Ok(rows.into_iter().map(|r| to_message(r, &files)).collect())
}

fn render_one(conn: &mut Conn, row: MessageRow) -> AppResult<Message> {
    render(conn, vec![row])?
        .pop()
        .ok_or_else(|| AppError::internal("a rendered message went missing"))
}

/// The participants of a conversation, if `user` is one: 404 for an unknown conversation,
/// 403 for anyone else.
async fn authorize(
    state: &AppState,
    user: UserId,
    conversation: ConversationId,
) -> AppResult<(UserId, UserId)> {
    let pair = match state.chat.cached_pair(conversation) {
        Some(p) => p,
        None => {
            let row = state
                .db
                .read(move |c| crate::db::chat::find_conversation(c, conversation))
                .await?
                .ok_or_else(|| AppError::not_found("conversation"))?;
            state.chat.remember(&row);
            (row.user_low, row.user_high)
        }
    };
    if pair.0 == user || pair.1 == user {
        Ok(pair)
    } else {
        Err(AppError::Forbidden(
            "not a participant of this conversation".into(),
        ))
    }
}

/// Hands one notice for the room to the broker.
async fn publish(
    state: &AppState,
    room: RoomKey,
    notice: Notice,
    skip: Option<SocketId>,
    except_user: Option<UserId>,
) {
    let event = RoomEvent {
        room,
        items: vec![Item { notice, skip }],
        except_user,
    };
    state.broker.publish(Event::Room(event)).await;
}

/// What follows a new message once it is broadcast: metrics, and the end of the sender's
/// typing indicator.
async fn after_broadcast(state: &AppState, message: &Message) {
    state.metrics.chat_messages.inc();
    log::debug!(
        "message {} (seq {}) stored in conversation {} by {}",
        message.id,
        message.seq,
        message.conversation_id,
        message.sender_id
    );
    set_typing(state, message.sender_id, message.conversation_id, false).await;
}

/// Broadcasts what the chat writer commits, in commit order, for the life of the server:
/// all of one commit's messages of a conversation go to its room as one batch.
pub fn start_publisher(state: &AppState) {
    let taken = state
        .chat
        .committed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut committed) = taken else {
        return;
    };
    let state = state.clone();
    actix_web::rt::spawn(async move {
        while let Some(batch) = committed.recv().await {
            publish_committed(&state, batch).await;
        }
    });
}

async fn publish_committed(state: &AppState, batch: Committed) {
    let mut rooms: Vec<(ConversationId, Vec<Item>)> = Vec::new();
    let mut messages = Vec::with_capacity(batch.len());
    for (origin, row) in batch {
        let files: HashMap<FileId, FileRow> =
            origin.attachment.map(|f| (f.id, f)).into_iter().collect();
        let message = to_message(row, &files);
        // The sending socket gets it too, unsent: it moves that socket's place in the
        // conversation (`realtime::ordering`).
        let item = Item {
            notice: Notice::NewMessage {
                message: message.clone(),
            },
            skip: origin.session,
        };
        match rooms
            .iter_mut()
            .find(|(c, _)| *c == message.conversation_id)
        {
            Some((_, items)) => items.push(item),
            None => rooms.push((message.conversation_id, vec![item])),
        }
        messages.push(message);
    }
    for (conversation, items) in rooms {
        let event = RoomEvent {
            room: RoomKey::Conversation(conversation),
            items,
            except_user: None,
        };
        state.broker.publish(Event::Room(event)).await;
    }
    for message in &messages {
        after_broadcast(state, message).await;
    }
}

/// Joins session `id` to the conversation's room (participants only), then loads what
/// was missed after `since_seq`. Joining first means nothing stored after the load can be
/// missed; the session drops what the load already covered.
pub async fn join(
    state: &AppState,
    user: &AuthUser,
    conversation: ConversationId,
    since_seq: Option<i64>,
    enter_room: impl std::future::Future<Output = AppResult<()>>,
) -> AppResult<JoinResult> {
    authorize(state, user.id, conversation).await?;
    if since_seq.is_some_and(|s| s < 0) {
        return Err(AppError::Validation(
            "since_seq must not be negative".into(),
        ));
    }
    enter_room.await?;
    state
        .db
        .read(move |c| {
            let last_seq = crate::db::chat::find_conversation(c, conversation)?
                .ok_or_else(|| AppError::not_found("conversation"))?
                .last_seq;
            let (missed, recovered) = match since_seq {
                None => (Vec::new(), true),
                Some(since) if last_seq - since > RECOVERY_MAX => (Vec::new(), false),
                Some(since) => {
                    let rows = crate::db::chat::range(c, conversation, since, last_seq)?;
                    (render(c, rows)?, true)
                }
            };
            Ok(JoinResult {
                last_seq,
                missed,
                recovered,
            })
        })
        .await
}

/// The stored messages of a conversation after `after` up to `upto` (both seqs), oldest
/// first: what a joined socket fills a gap in its live stream with. The caller has
/// already joined the conversation's room (participants only).
pub async fn between(
    state: &AppState,
    conversation: ConversationId,
    after: i64,
    upto: i64,
) -> AppResult<Vec<Message>> {
    state
        .db
        .read(move |c| {
            let rows = crate::db::chat::range(c, conversation, after, upto)?;
            render(c, rows)
        })
        .await
}

fn validate(req: &SendMessage) -> AppResult<()> {
    let n = req.content.chars().count();
    if n == 0 || n > CONTENT_MAX {
        return Err(AppError::Validation(format!(
            "content must be 1..{CONTENT_MAX} characters"
        )));
    }
    let n = req.client_msg_id.chars().count();
    if n == 0 || n > CLIENT_MSG_ID_MAX {
        return Err(AppError::Validation(format!(
            "client_msg_id must be 1..{CLIENT_MSG_ID_MAX} characters"
        )));
    }
    Ok(())
}

/// An attachment must be an uploaded file of the sender's.
fn check_attachment(conn: &mut Conn, sender: UserId, id: FileId) -> AppResult<FileRow> {
    let file =
        crate::db::files::find(conn, id)?.ok_or_else(|| AppError::not_found("attachment"))?;
    if file.owner_id != sender {
        return Err(AppError::Validation(
            "attachment_id must be a file you uploaded".into(),
        ));
    }
    Ok(file)
}

/// A message accepted for storing: its place in the conversation is taken, its answer
/// comes once it is stored.
#[derive(Debug)]
pub struct PendingMessage {
    /// Its place in the group-commit writer's queue.
    ticket: crate::db::group_commit::Ticket,
    attachment: Option<FileRow>,
}

impl PendingMessage {
    /// The stored message (the original one for a repeated `client_msg_id`).
    pub async fn stored(self, state: &AppState) -> AppResult<Message> {
        let (row, created) = self.ticket.stored().await?;
        if created || row.attachment_id.is_none() {
            let files = self.attachment.map(|f| (f.id, f)).into_iter().collect();
            Ok(to_message(row, &files))
        } else {
            state.db.read(move |c| render_one(c, row)).await
        }
    }
}

/// Stores a message (idempotent by `client_msg_id`) and broadcasts `new_message` to the
/// room, except to the `origin` socket, which is answered with an ack by its caller.
/// A repeat answers the original message and broadcasts nothing.
pub async fn send_message(
    state: &AppState,
    user: &AuthUser,
    origin: Option<SocketId>,
    req: SendMessage,
) -> AppResult<Message> {
    submit_message(state, user, origin, req)
        .await?
        .stored(state)
        .await
}

/// Checks a message and takes its place in the conversation: messages submitted one after
/// the other are stored, and broadcast, in that order, even when the caller does not wait
/// for one to be stored before submitting the next.
pub async fn submit_message(
    state: &AppState,
    user: &AuthUser,
    origin: Option<SocketId>,
    req: SendMessage,
) -> AppResult<PendingMessage> {
    validate(&req)?;
    let conversation = req.conversation_id;
    authorize(state, user.id, conversation).await?;
    let sender = user.id;
    let new = NewMessage {
        conversation_id: conversation,
        sender_id: sender,
        content: req.content,
        attachment_id: req.attachment_id,
        client_msg_id: req.client_msg_id,
        created_at: crate::time::to_db(crate::time::now()),
    };
    let attachment = match new.attachment_id {
        Some(file) => Some(
            state
                .db
                .read(move |c| check_attachment(c, sender, file))
                .await?,
        ),
        None => None,
    };
    let origin = Origin {
        session: origin,
        attachment: attachment.clone(),
    };
    let ticket = state.chat.writer.queue(new, origin).await?;
    Ok(PendingMessage { ticket, attachment })
}

/// Broadcasts a typing indicator to the other participant's sockets in the room, at most
/// once per [`TYPING_THROTTLE`] per user and conversation unless the value changes; a
/// `true` not renewed within [`TYPING_TTL`] is followed by a `false`.
pub async fn typing(
    state: &AppState,
    user: &AuthUser,
    conversation: ConversationId,
    is_typing: bool,
) -> AppResult<()> {
    authorize(state, user.id, conversation).await?;
    set_typing(state, user.id, conversation, is_typing).await;
    Ok(())
}

/// Applies a typing change for a participant (already authorized) and broadcasts it when
/// the throttle lets it through.
async fn set_typing(state: &AppState, user: UserId, conversation: ConversationId, is_typing: bool) {
    let key = (user, conversation);
    let now = Instant::now();
    let (broadcast, start_timer) = {
        let mut map = state.chat.typing_map();
        if map.len() >= TYPING_ENTRIES_MAX && !map.contains_key(&key) {
            map.retain(|_, e| e.timer || e.shown || now - e.shown_at < TYPING_THROTTLE);
            if map.len() >= TYPING_ENTRIES_MAX {
                log::warn!("typing: {TYPING_ENTRIES_MAX} indicators live, dropping one of user {user} in conversation {conversation}");
                return;
            }
        }
        if !is_typing && !map.contains_key(&key) {
            // Nothing was shown: nothing to take down.
            return;
        }
        let e = map.entry(key).or_insert(TypingEntry {
            shown: false,
            shown_at: now,
            expires_at: None,
            timer: false,
        });
        e.expires_at = is_typing.then(|| now + TYPING_TTL);
        // A stop passes whenever a start was shown; a start at most once per throttle.
        let broadcast = if is_typing {
            !e.shown || now - e.shown_at >= TYPING_THROTTLE
        } else {
            e.shown
        };
        if broadcast {
            e.shown = is_typing;
            e.shown_at = now;
        }
        let start_timer = is_typing && !e.timer;
        e.timer |= start_timer;
        (broadcast, start_timer)
    };
    if broadcast {
        publish_typing(state, user, conversation, is_typing).await;
    }
    if start_timer {
        let state = state.clone();
        actix_web::rt::spawn(async move { expire_typing(state, key).await });
    }
}

async fn publish_typing(
    state: &AppState,
    user: UserId,
    conversation: ConversationId,
    is_typing: bool,
) {
    let notice = Notice::Typing {
        conversation_id: conversation,
        user_id: user,
        is_typing,
    };
    publish(
        state,
        RoomKey::Conversation(conversation),
        notice,
        None,
        Some(user),
    )
    .await;
}

/// The expiry timer of one typing indicator: sleeps until the indicator's deadline
/// (renewals move it) and then, if it is still up, takes it down.
async fn expire_typing(state: AppState, key: (UserId, ConversationId)) {
    loop {
        let deadline = {
            let mut map = state.chat.typing_map();
            let Some(e) = map.get_mut(&key) else {
                return;
            };
            let now = Instant::now();
            match e.expires_at {
                Some(at) if at > now => at,
                Some(_) => {
                    e.expires_at = None;
                    e.timer = false;
                    if !e.shown {
                        return;
                    }
                    e.shown = false;
                    e.shown_at = now;
                    break;
                }
                None => {
                    e.timer = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(deadline).await;
    }
    publish_typing(&state, key.0, key.1, false).await;
}

/// Moves the caller's read marker forward (clamped to the last message) and broadcasts
/// `read_receipt` to the room, except to the `origin` socket that sent it (the user's
/// other sockets learn of it too). A marker that would not move changes nothing.
pub async fn mark_read(
    state: &AppState,
    user: &AuthUser,
    origin: Option<SocketId>,
    conversation: ConversationId,
    seq: i64,
) -> AppResult<()> {
    authorize(state, user.id, conversation).await?;
    if seq < 0 {
        return Err(AppError::Validation("seq must not be negative".into()));
    }
    let reader = user.id;
    let moved = state
        .db
        .write(move |c| crate::db::chat::mark_read(c, conversation, reader, seq))
        .await?;
    if let Some(seq) = moved {
        let notice = Notice::ReadReceipt {
            conversation_id: conversation,
            user_id: reader,
            seq,
        };
        publish(
            state,
            RoomKey::Conversation(conversation),
            notice,
            origin,
            None,
        )
        .await;
    }
    Ok(())
}

/// One page of a conversation's history (participants only).
pub async fn history(
    state: &AppState,
    user: &AuthUser,
    conversation: ConversationId,
    cursor: Cursor,
    limit: i64,
) -> AppResult<HistoryPage> {
    authorize(state, user.id, conversation).await?;
    if !(1..=HISTORY_MAX).contains(&limit) {
        return Err(AppError::Validation(format!(
            "limit must be 1..{HISTORY_MAX}"
        )));
    }
    state
        .db
        .read(move |c| {
            let (rows, has_more) = crate::db::chat::page(c, conversation, cursor, limit)?;
            Ok(HistoryPage {
                conversation_id: conversation,
                messages: render(c, rows)?,
                has_more,
            })
        })
        .await
}

/// Users as user objects, with their live presence.
async fn user_views(
    state: &AppState,
    rows: &[crate::db::users::UserRow],
) -> HashMap<UserId, UserView> {
    let live = state.presence.snapshot().await;
    rows.iter()
        .map(|r| {
            let p = live
                .get(&r.id)
                .copied()
                .unwrap_or((false, r.last_seen.map(crate::time::from_db)));
            (r.id, UserView::from_row(r, Some(p)))
        })
        .collect()
}

/// A user's conversation summaries with their last messages rendered, and the peers' rows.
struct Overview {
    summaries: Vec<(Summary, Option<Message>)>,
    peers: HashMap<UserId, UserView>,
}

/// Loads `user`'s conversations (only `only`'s when given), plus the rows of `extra` users.
async fn overview(
    state: &AppState,
    user: UserId,
    only: Option<ConversationId>,
    extra: Vec<UserId>,
) -> AppResult<Overview> {
    let (summaries, rows) = state
        .db
        .read(move |c| {
            let mut summaries = crate::db::chat::summaries(c, user)?;
            if let Some(id) = only {
                summaries.retain(|s| s.conversation.id == id);
            }
            let mut ids: Vec<UserId> = summaries
                .iter()
                .map(|s| s.conversation.peer_of(user))
                .chain(extra)
                .collect();
            ids.sort();
            ids.dedup();
            let rows = crate::db::users::find_many(c, &ids)?;
            let last: Vec<MessageRow> = summaries
                .iter_mut()
                .filter_map(|s| s.last_message.take())
                .collect();
            let mut last: HashMap<ConversationId, Message> = render(c, last)?
                .into_iter()
                .map(|m| (m.conversation_id, m))
                .collect();
            let summaries = summaries
                .into_iter()
                .map(|s| {
                    let m = last.remove(&s.conversation.id);
                    (s, m)
                })
                .collect::<Vec<_>>();
            Ok((summaries, rows))
        })
        .await?;
    for (s, _) in &summaries {
        state.chat.remember(&s.conversation);
    }
    Ok(Overview {
        summaries,
        peers: user_views(state, &rows).await,
    })
}

fn conversation_view(
    user: UserId,
    summary: Summary,
    last_message: Option<Message>,
    peers: &HashMap<UserId, UserView>,
) -> Option<ConversationView> {
    let peer = peers.get(&summary.conversation.peer_of(user))?.clone();
    Some(ConversationView {
        id: summary.conversation.id,
        peer,
        last_message,
        unread_count: summary.unread,
        last_read_seq: summary.last_read_seq,
    })
}

/// The caller's conversations, most recently active first (new empty ones included).
pub async fn conversations(state: &AppState, user: &AuthUser) -> AppResult<Vec<ConversationView>> {
    let o = overview(state, user.id, None, Vec::new()).await?;
    Ok(o.summaries
        .into_iter()
        .filter_map(|(s, m)| conversation_view(user.id, s, m, &o.peers))
        .collect())
}

/// Who may talk (PROTOCOL §3, `POST /api/chat/conversations`): two different users, one
/// of them a trainer or an admin; a member only with a trainer or an admin; never a
/// device. Anything else is 422, so that opening chats cannot be used to probe accounts.
fn check_pair(state: &AppState, a: UserId, b: UserId) -> AppResult<()> {
    if a == b {
        return Err(AppError::Validation(
            "a conversation needs two different users".into(),
        ));
    }
    let role = |id: UserId| {
        state
            .directory
            .get(id)
            .map(|e| e.role)
            .ok_or_else(|| AppError::not_found("user"))
    };
    let (ra, rb) = (role(a)?, role(b)?);
    pair_allowed(ra, rb).map_err(|why| AppError::Validation(why.into()))
}

/// The pairing rule on roles alone; the reason when refused.
fn pair_allowed(a: Role, b: Role) -> Result<(), &'static str> {
    let leads = |r: Role| matches!(r, Role::Trainer | Role::Admin);
    if a == Role::Device || b == Role::Device {
        return Err("devices do not chat");
    }
    if (a == Role::Member && !leads(b)) || (b == Role::Member && !leads(a)) {
        return Err("members chat only with trainers and admins");
    }
    if !(leads(a) || leads(b)) {
        return Err("conversations are with a trainer or an admin");
    }
    Ok(())
}

async fn get_or_create(
    state: &AppState,
    a: UserId,
    b: UserId,
) -> AppResult<(ConversationRow, bool)> {
    check_pair(state, a, b)?;
    let now = crate::time::to_db(crate::time::now());
    let (row, created) = state
        .db
        .write(move |c| crate::db::chat::get_or_create(c, a, b, now))
        .await?;
    state.chat.remember(&row);
    if created {
        log::info!("conversation {} opened between {a} and {b}", row.id);
        let notice = Notice::ConversationCreated {
            conversation_id: row.id,
            created_by: a,
        };
        for user in [a, b] {
            publish(state, RoomKey::User(user), notice.clone(), None, None).await;
        }
    }
    Ok((row, created))
}

/// Gets or creates the caller's direct conversation with `peer`; true when created.
pub async fn open_conversation(
    state: &AppState,
    user: &AuthUser,
    peer: UserId,
) -> AppResult<(ConversationView, bool)> {
    let (row, created) = get_or_create(state, user.id, peer).await?;
    let o = overview(state, user.id, Some(row.id), Vec::new()).await?;
    let view = o
        .summaries
        .into_iter()
        .next()
        .and_then(|(s, m)| conversation_view(user.id, s, m, &o.peers))
        .ok_or_else(|| AppError::internal(format!("conversation {} vanished", row.id)))?;
    Ok((view, created))
}

/// The conversation of a member and a trainer (the seed clients' `?userId=&trainerId=`),
/// opened if they have none yet; the caller must be one of the two.
pub async fn pair_conversation(
    state: &AppState,
    user: &AuthUser,
    member: UserId,
    trainer: UserId,
) -> AppResult<ConversationId> {
    if user.id != member && user.id != trainer {
        return Err(AppError::Forbidden(
            "not a participant of this conversation".into(),
        ));
    }
    Ok(get_or_create(state, member, trainer).await?.0.id)
}

/// A trainer's clients: the members assigned to them and the members they have messages
/// with, most recently active first, then by name.
pub async fn trainer_clients(state: &AppState, user: &AuthUser) -> AppResult<Vec<ClientView>> {
    user.require(&[Role::Trainer, Role::Admin])?;
    let trainer = user.id;
    let assigned = state
        .db
        .read(move |c| crate::db::trainers::clients_of(c, trainer))
        .await?;
    let o = overview(state, trainer, None, assigned.clone()).await?;
    let is_member = |id: UserId| o.peers.get(&id).is_some_and(|v| v.role == Role::Member);
    let assigned: HashSet<UserId> = assigned.into_iter().collect();
    let mut seen = HashSet::new();
    let mut clients = Vec::new();
    for (s, last_message) in o.summaries {
        let peer = s.conversation.peer_of(trainer);
        let has_history = s.conversation.last_seq > 0;
        if !(assigned.contains(&peer) || (has_history && is_member(peer))) {
            continue;
        }
        if let Some(view) = o.peers.get(&peer) {
            seen.insert(peer);
            clients.push(ClientView {
                user: view.clone(),
                conversation_id: Some(s.conversation.id),
                unread_count: s.unread,
                last_message,
            });
        }
    }
    let mut rest: Vec<ClientView> = assigned
        .iter()
        .filter(|id| !seen.contains(id))
        .filter_map(|id| o.peers.get(id))
        .map(|view| ClientView {
            user: view.clone(),
            conversation_id: None,
            unread_count: 0,
            last_message: None,
        })
        .collect();
    rest.sort_by(|a, b| {
        a.user
            .display_name
            .cmp(&b.user.display_name)
            .then(a.user.id.cmp(&b.user.id))
    });
    clients.extend(rest);
    Ok(clients)
}

/// Checks an assignment's two users: a trainer and a member.
fn check_assignment(state: &AppState, trainer: UserId, member: UserId) -> AppResult<()> {
    let t = state
        .directory
        .get(trainer)
        .ok_or_else(|| AppError::not_found("trainer"))?;
    let m = state
        .directory
        .get(member)
        .ok_or_else(|| AppError::not_found("member"))?;
    if t.role != Role::Trainer {
        return Err(AppError::Validation(format!(
            "user {trainer} is not a trainer"
        )));
    }
    if m.role != Role::Member {
        return Err(AppError::Validation(format!(
            "user {member} is not a member"
        )));
    }
    Ok(())
}

/// Assigns a member to a trainer (admins); assigning twice changes nothing.
pub async fn assign(
    state: &AppState,
    user: &AuthUser,
    trainer: UserId,
    member: UserId,
) -> AppResult<()> {
    user.require_admin()?;
    check_assignment(state, trainer, member)?;
    state
        .db
        .write(move |c| crate::db::trainers::assign(c, trainer, &[member]))
        .await?;
    log::info!(
        "member {member} assigned to trainer {trainer} by {}",
        user.id
    );
    Ok(())
}

/// Removes an assignment (admins); 404 when there was none.
pub async fn unassign(
    state: &AppState,
    user: &AuthUser,
    trainer: UserId,
    member: UserId,
) -> AppResult<()> {
    user.require_admin()?;
    check_assignment(state, trainer, member)?;
    let removed = state
        .db
        .write(move |c| crate::db::trainers::unassign(c, trainer, member))
        .await?;
    if !removed {
        return Err(AppError::not_found("assignment"));
    }
    log::info!(
        "member {member} unassigned from trainer {trainer} by {}",
        user.id
    );
    Ok(())
}
