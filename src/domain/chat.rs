//! Chat: direct conversations, messages with a gap-free per-conversation `seq`, typing
//! indicators and read markers. One function per action, called by both the HTTP API and
//! the socket, so both behave the same.
//!
//! NOTE FOR IMPLEMENTERS (issue #4): the bodies below are placeholders to be replaced.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::auth::AuthUser;
use crate::db::{ConversationId, FileId, MessageId, UserId};
use crate::error::{AppError, AppResult};
use crate::realtime::hub::SessionId;
use crate::state::AppState;

/// Chat's in-memory state (per-conversation ordering locks, typing throttles).
#[derive(Default)]
pub struct ChatState {}

/// An image attached to a message.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub id: FileId,
    pub url: String,
    pub content_type: String,
    pub size: i64,
}

/// The contract's message object.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, serde::Deserialize)]
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
    pub recovered: bool,
}

/// Joins session `id` to the conversation's room (participants only), then loads what
/// was missed after `since_seq`.
pub async fn join(
    _state: &AppState,
    _user: &AuthUser,
    _id: SessionId,
    _conversation: ConversationId,
    _since_seq: Option<i64>,
) -> AppResult<JoinResult> {
    Err(AppError::Unavailable("chat is not built yet".into()))
}

/// Stores a message (idempotent by `client_msg_id`) and broadcasts `new_message`.
pub async fn send_message(
    _state: &AppState,
    _user: &AuthUser,
    _origin: Option<SessionId>,
    _req: SendMessage,
) -> AppResult<Message> {
    Err(AppError::Unavailable("chat is not built yet".into()))
}

/// Broadcasts a typing indicator to the other participant.
pub async fn typing(
    _state: &AppState,
    _user: &AuthUser,
    _conversation: ConversationId,
    _is_typing: bool,
) -> AppResult<()> {
    Err(AppError::Unavailable("chat is not built yet".into()))
}

/// Moves the caller's read marker forward and broadcasts `read_receipt`.
pub async fn mark_read(
    _state: &AppState,
    _user: &AuthUser,
    _conversation: ConversationId,
    _seq: i64,
) -> AppResult<()> {
    Err(AppError::Unavailable("chat is not built yet".into()))
}
